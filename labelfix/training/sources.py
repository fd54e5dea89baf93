"""The examples of a ``labelfix to-tfrecord`` split, each named by its shard and record.

:func:`read_split` checks the shards against the manifest first (sizes always, sha256 digests
unless ``digests=False``; a mismatch is a :class:`~labelfix.errors.LabelfixError` naming the
shard), then reads ``(image float32 [H, W, 3], mask int32 [H, W], where string)`` with the
manifest's decoder (:func:`labelfix.data.make_decoder`). ``where`` reads
``"train-00000-of-00002.tfrecord: record 3 (2007_000032)"``: the shard, the record's index in
it and its ``image/source_id``, what the pipelines' label check names.

TensorFlow reports a damaged record as ``corrupted record at 1234`` without the file;
:func:`read_errors` turns that (and the pipelines' label check) into one line naming the shard,
found by re-reading the shards' framing and CRCs without TensorFlow.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from labelfix.errors import LabelfixError
from labelfix.labels import IGNORE_AS
from labelfix.records.example import feature_key
from labelfix.records.framing import CorruptRecord, read_records
from labelfix.records.manifest import read_manifest

__all__ = [
    "Split",
    "check_shards",
    "find_corruption",
    "read_errors",
    "read_split",
    "require_labelled_pixels",
    "tf_error_reason",
]


@dataclass(frozen=True)
class Split:
    """One split: its examples ``(image, mask, where)`` and its manifest."""

    name: str
    dataset: Any
    manifest: Mapping[str, Any]

    @property
    def num_records(self) -> int | None:
        count = self.manifest.get("num_records")
        return count if isinstance(count, int) else None


def check_shards(manifest: Mapping[str, Any], *, digests: bool = True) -> None:
    """Every shard the manifest lists exists with the manifest's size and (``digests``) sha256.

    Raises:
        LabelfixError: naming the first shard that differs, and how.
    """
    directory = manifest["directory"]
    for shard in manifest["shards"]:
        name = shard["file"]
        path = os.path.join(directory, name)
        try:
            size = os.path.getsize(path)
        except OSError:
            raise LabelfixError(f"{path}: shard listed in the manifest is missing") from None
        expected = shard.get("bytes")
        if expected is not None and size != expected:
            raise LabelfixError(
                f"{path}: {size} bytes, the manifest says {expected} (a changed or truncated "
                "shard; `labelfix verify` reads it)"
            )
        if digests and shard.get("sha256"):
            with open(path, "rb") as fh:
                digest = hashlib.file_digest(fh, "sha256").hexdigest()
            if digest != shard["sha256"]:
                raise LabelfixError(
                    f"{path}: sha256 {digest[:16]}... does not match the manifest's "
                    f"{shard['sha256'][:16]}... (a changed shard; `labelfix verify` reads it)"
                )


def read_split(
    data_dir: str | os.PathLike,
    split: str,
    *,
    ignore: int = IGNORE_AS,
    digests: bool = True,
) -> Split:
    """The checked shards of ``split`` as ``(image, mask, where)`` examples, in manifest order
    (``CYCLE_LENGTH`` shards interleaved), with the record count as the cardinality."""
    import tensorflow as tf

    from labelfix.data import CYCLE_LENGTH, make_decoder, shard_files
    from labelfix.training.pipelines import check_size

    manifest = read_manifest(data_dir, split)
    check_shards(manifest, digests=digests)
    files = shard_files(data_dir, split, manifest=manifest)
    compression = "GZIP" if manifest["compression"] == "gzip" else ""
    decode = make_decoder(manifest, ignore_as=ignore)
    id_spec = {feature_key("source_id"): tf.io.FixedLenFeature([], tf.string, default_value="")}

    def shard_records(path, name):
        records = tf.data.TFRecordDataset(path, compression_type=compression).enumerate()
        return records.map(lambda index, record: (record, name, index))

    def decode_one(record, name, index):
        image, mask = decode(record)
        source_id = tf.io.parse_single_example(record, id_spec)[feature_key("source_id")]
        label = tf.strings.join([name, ": record ", tf.strings.as_string(index)])
        label = tf.cond(
            tf.strings.length(source_id) > 0,
            lambda: tf.strings.join([label, " (", source_id, ")"]),
            lambda: label,
        )
        return image, check_size(image, mask, label), label

    names = [os.path.basename(f) for f in files]
    dataset = tf.data.Dataset.from_tensor_slices((files, names)).interleave(
        shard_records,
        cycle_length=min(len(files), CYCLE_LENGTH) or 1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if isinstance(manifest.get("num_records"), int):
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(manifest["num_records"]))
    dataset = dataset.map(decode_one, num_parallel_calls=tf.data.AUTOTUNE)
    return Split(split, dataset, manifest)


def require_labelled_pixels(
    manifest: Mapping[str, Any], *, data_dir: str | os.PathLike, split: str, use: str
) -> None:
    """LabelfixError when the manifest counts no labelled pixel in the split (every pixel is
    void): training on it reported loss 0, and scoring it mIoU 0, as if they were results.
    ``use`` says what cannot be done: ``"nothing to train on"``."""
    counts = manifest.get("class_pixel_counts")
    if not isinstance(counts, list) or sum(counts) > 0:
        return
    void = manifest.get("ignore_pixels")
    void_text = f"all {void:,} px are void" if isinstance(void, int) else "every pixel is void"
    raise LabelfixError(
        f"{os.fspath(data_dir)}: split {split!r} has no labelled pixels ({void_text}, ignore "
        f"{manifest.get('ignore')}): {use}; is the ignore value right?"
    )


def find_corruption(manifest: Mapping[str, Any]) -> str | None:
    """``"train-00001-of-00002.tfrecord: record 7: bad data checksum (corrupt record)"``: the
    first damaged record of the split's shards, read without TensorFlow; None if all read."""
    for shard in manifest["shards"]:
        path = os.path.join(manifest["directory"], shard["file"])
        count = 0
        try:
            with open(path, "rb") as fh:
                for _ in read_records(fh, compression=manifest["compression"]):
                    count += 1
        except CorruptRecord as err:
            return f"{path}: {err}"
        except (OSError, EOFError, zlib.error) as err:
            return f"{path}: record {count}: unreadable ({err})"
    return None


def tf_error_reason(message: str) -> str:
    """TensorFlow's error text without its graph context: ``corrupted record at 13061``.

    >>> tf_error_reason("{{function_node __wrapped__X}} corrupted record at 12 [Op:GetNext]")
    'corrupted record at 12'
    """
    first = message.strip().splitlines()[0] if message.strip() else message
    first = re.sub(r"\{\{[^}]*\}\}\s*", "", first)
    return first.split(" [Op:")[0].strip()


@contextlib.contextmanager
def read_errors(manifests: Sequence[Mapping[str, Any]]) -> Iterator[None]:
    """Turn the input pipeline's errors into one-line :class:`LabelfixError` s: a rejected
    label (naming its record), and a damaged record (naming its shard and record)."""
    import tensorflow as tf

    from labelfix.training.pipelines import bad_label_message

    try:
        yield
    except tf.errors.InvalidArgumentError as err:
        message = bad_label_message(err)
        if message is None:
            raise
        raise LabelfixError(message) from None
    except tf.errors.DataLossError as err:
        reason = tf_error_reason(err.message)
        for manifest in manifests:
            found = find_corruption(manifest)
            if found:
                raise LabelfixError(f"{found} (TensorFlow: {reason})") from None
        shards = ", ".join(s["file"] for m in manifests for s in m["shards"])
        raise LabelfixError(f"{reason} in one of {shards}") from None
