"""tf.data input pipeline for labelfix TFRecords: parse, decode, present the ignore value as -1.

The manifest beside the shards says how masks are stored (PNG 8/16-bit or raw signed integers),
which value marks void pixels and whether the shards are gzipped, so nothing has to be guessed:
masks decode to exactly the values written, and void pixels come out as ``ignore_as`` (-1 by
default, which is what ``keras.losses.SparseCategoricalCrossentropy(ignore_class=-1)`` and
:mod:`labelfix.losses` expect).

On a dataset of your own::

    ds = load("tfrecords", "train", shuffle=True, batch_size=8)
    image, mask = next(iter(ds))
    image.dtype, mask.dtype, int(tf.reduce_min(mask))
    # -> (tf.float32, tf.int32, -1)

For your own pipeline, map :func:`make_decoder` over the serialised records::

    manifest = read_manifest("tfrecords", "train")
    ds = records("tfrecords", "train").map(make_decoder(manifest), num_parallel_calls=AUTOTUNE)

Records another tool wrote (DeepLab's ``build_voc2012_data.py``, Model Garden's scripts) have
no manifest: :func:`load` reads them too, given the shards (a directory, a glob, files), the
stored void value (``ignore=255``) and, for other keys, ``keys``
(:class:`~labelfix.records.example.RecordKeys`); how masks are stored is told by the first
record (:func:`~labelfix.records.foreign.foreign_manifest`). Masks TensorFlow would misread (a
palette PNG, which ``decode_png`` turns into luminance) are refused, the first at once and any
later one when it is decoded.

This module imports TensorFlow only when a function needs it.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable

from labelfix.errors import LabelfixError, MissingExtra, UsageError
from labelfix.labels import IGNORE_AS
from labelfix.records.example import RecordKeys, feature_key
from labelfix.records.manifest import read_manifest

__all__ = ["decode_example", "load", "make_decoder", "read_manifest", "records", "shard_files"]

#: Records :func:`load` shuffles in (``shuffle=True``).
SHUFFLE_BUFFER = 256
#: Shards read at once by :func:`load` (records are interleaved across them).
CYCLE_LENGTH = 8


def _tf():
    try:
        import tensorflow as tf
    except ImportError:
        raise MissingExtra("labelfix.data needs TensorFlow: pip install 'labelfix[tf]'") from None
    return tf


def shard_files(
    path: str | os.PathLike, split: str = "train", *, manifest: dict | None = None
) -> list[str]:
    """The shard paths of ``split``: the manifest's list, or the files a glob pattern matches."""
    path = os.fspath(path)
    if manifest is not None and manifest.get("files"):  # shards without a manifest
        return list(manifest["files"])
    if glob.has_magic(path):
        files = sorted(glob.glob(path))
        if not files:
            raise LabelfixError(f"{path}: no file matches this pattern")
        return files
    manifest = manifest if manifest is not None else read_manifest(path, split)
    files = [os.path.join(manifest["directory"], s["file"]) for s in manifest["shards"]]
    for file in files:
        if not os.path.isfile(file):
            raise LabelfixError(f"{file}: shard listed in the manifest is missing")
    return files


def records(
    path: str | os.PathLike,
    split: str = "train",
    *,
    shuffle_files: bool = False,
    seed: int | None = None,
    manifest: dict | None = None,
):
    """The serialised records of ``split`` (gzip handled), read from several shards at once."""
    tf = _tf()
    manifest = manifest if manifest is not None else read_manifest(path, split)
    files = shard_files(path, split, manifest=manifest)
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_files:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    # a fixed number of shards read at once keeps the unshuffled order the same on every machine
    return tf.data.TFRecordDataset(
        ds,
        compression_type="GZIP" if manifest["compression"] == "gzip" else "",
        num_parallel_reads=min(len(files), CYCLE_LENGTH),
    )


def make_decoder(
    manifest: dict, *, ignore_as: int | None = IGNORE_AS
) -> Callable[[object], tuple[object, object]]:
    """A function ``serialized -> (image float32 [H,W,3], mask int32 [H,W])`` for ``tf.data``.

    Images are decoded by ``tf.io.decode_image`` (JPEG, PNG, ...) and cast to float32 without
    scaling (0..255). Masks decode to the stored values (``tf.io.decode_png`` with
    ``dtype=tf.uint16`` for 16-bit masks, ``tf.io.decode_raw`` little-endian for raw ones); the
    stored ignore value then becomes ``ignore_as`` (None keeps it as stored).
    """
    tf = _tf()
    keys = manifest.get("feature_keys") or {}
    image_key, mask_key = (
        keys.get("image", feature_key("image")),
        keys.get("mask", feature_key("mask")),
    )
    height_key = keys.get("height", feature_key("height"))
    width_key = keys.get("width", feature_key("width"))
    encoding, dtype, stored = manifest["mask_encoding"], manifest["mask_dtype"], manifest["ignore"]
    spec = {
        image_key: tf.io.FixedLenFeature([], tf.string),
        mask_key: tf.io.FixedLenFeature([], tf.string),
    }
    if encoding == "raw":  # PNG masks need no size (other tools' records may lack it)
        spec[height_key] = tf.io.FixedLenFeature([], tf.int64)
        spec[width_key] = tf.io.FixedLenFeature([], tf.int64)
    if encoding == "png" and dtype in ("uint8", "uint16"):
        png_dtype = tf.uint8 if dtype == "uint8" else tf.uint16
    elif encoding == "raw" and dtype in ("uint8", "int8", "int16", "int32"):
        raw_dtype = tf.as_dtype(dtype)
    else:
        raise LabelfixError(f"unsupported mask storage in the manifest: {encoding} {dtype}")
    remap = stored is not None and ignore_as is not None and ignore_as != stored
    # The usual case (void stored as 255 or 65535, read as -1, ids below 128 or 32768): a bitcast
    # to the signed type of the same width turns exactly the void value into -1, one op less.
    signed = None
    if remap and encoding == "png" and ignore_as == -1 and manifest.get("num_classes"):
        top = int(manifest["num_classes"]) - 1
        if dtype == "uint8" and stored == 0xFF and top < 0x80:
            signed = tf.int8
        elif dtype == "uint16" and stored == 0xFFFF and top < 0x8000:
            signed = tf.int16

    png_header = manifest.get("png_header")  # other tools' records: every mask as the first

    def decode(serialized):
        features = tf.io.parse_single_example(serialized, spec)
        image = tf.io.decode_image(features[image_key], channels=3, expand_animations=False)
        image = tf.cast(image, tf.float32)
        if encoding == "png":
            data = features[mask_key]
            if png_header is not None:
                data = _checked_png(tf, data, png_header)
            mask = tf.io.decode_png(data, channels=1, dtype=png_dtype)[:, :, 0]
            if signed is not None:
                return image, tf.cast(tf.bitcast(mask, signed), tf.int32)
        else:
            shape = tf.stack([features[height_key], features[width_key]])
            mask = tf.reshape(
                tf.io.decode_raw(features[mask_key], raw_dtype, little_endian=True), shape
            )
        mask = tf.cast(mask, tf.int32)
        if remap:
            mask = tf.where(mask == stored, tf.constant(ignore_as, tf.int32), mask)
        return image, mask

    return decode


def _checked_png(tf, data, header: bytes):
    """``data``, once its PNG bit depth and colour type are ``header``'s (an InvalidArgument
    error otherwise: a palette mask decoded as luminance must not train)."""
    found = tf.strings.substr(data, 24, 2)
    ok = tf.debugging.assert_equal(
        found,
        tf.constant(header),
        message=(
            f"labelfix.data: a mask is not a {header[0]}-bit grey PNG like the first (a palette "
            "PNG decodes to luminance, not ids); rewrite the records with labelfix to-tfrecord "
            "--from-records"
        ),
    )
    with tf.control_dependencies([ok]):
        return tf.identity(data)


def decode_example(serialized, manifest: dict, *, ignore_as: int | None = IGNORE_AS):
    """Decode one serialised record: ``(image float32 [H,W,3], mask int32 [H,W])``.

    On a dataset of your own::

        manifest = read_manifest("tfrecords", "val")
        for record in records("tfrecords", "val").take(1):
            image, mask = decode_example(record, manifest)
    """
    return make_decoder(manifest, ignore_as=ignore_as)(serialized)


def _manifest(path, split: str, *, keys: RecordKeys | None, ignore: int | None) -> dict:
    """The labelfix manifest of ``path``, or what the first record of another tool's shards
    says (:func:`~labelfix.records.foreign.foreign_manifest`) when there is none."""
    from labelfix.records import foreign

    text = os.fspath(path)
    directory = text if os.path.isdir(text) else os.path.dirname(text) or "."
    if keys is None and foreign.labelfix_manifests(directory):
        manifest = read_manifest(path, split)
        if ignore is not None and ignore != manifest["ignore"]:
            raise UsageError(
                f"{manifest['manifest_path']}: the manifest says void is stored as "
                f"{manifest['ignore']}, not {ignore}: leave ignore out"
            )
        return manifest
    if not foreign.looks_like_records([text]):
        return read_manifest(path, split)  # says what is missing
    shards = foreign.shards_of_split(text, split) if os.path.isdir(text) else [text]
    return foreign.foreign_manifest(shards, keys=keys, ignore=ignore)


def load(
    path: str | os.PathLike,
    split: str = "train",
    *,
    ignore_as: int | None = IGNORE_AS,
    shuffle: bool | int = False,
    seed: int | None = None,
    batch_size: int | None = None,
    drop_remainder: bool = False,
    deterministic: bool | None = None,
    keys: RecordKeys | None = None,
    ignore: int | None = None,
):
    """A ``tf.data.Dataset`` of ``(image float32 [H,W,3], mask int32 [H,W])`` for one split.

    ``path`` is the directory ``labelfix to-tfrecord`` wrote (or a shard glob beside its
    manifest), or another tool's shards (a directory without a labelfix manifest, whose
    ``split`` shards are read when they are named for splits; a glob; a file): then
    ``ignore`` is the stored value of void pixels (e.g. 255; None: there are none), presented
    as ``ignore_as`` like a manifest's, and ``keys`` says where the features are (default:
    DeepLab's and Model Garden's). Shards are read in parallel and records decoded in parallel
    (AUTOTUNE), then prefetched. ``shuffle`` shuffles the shard order and the
    records, reshuffled each epoch, in a buffer of :data:`SHUFFLE_BUFFER` records (or of
    ``shuffle`` records when it is a number). ``batch_size`` batches; masks of
    different sizes are padded at the bottom/right with the ignore value (images with 0), never
    with a class id.
    ``deterministic`` goes to the parallel decode (None: tf.data's default, in order).

    On a dataset of your own::

        ds = load("tfrecords", "val", batch_size=4)
        len(ds), ds.element_spec[1]
        # -> (363, TensorSpec(shape=(None, None, None), dtype=tf.int32, name=None))
    """
    tf = _tf()
    manifest = _manifest(path, split, keys=keys, ignore=ignore)
    autotune = tf.data.AUTOTUNE
    ds = records(path, split, shuffle_files=shuffle, seed=seed, manifest=manifest)
    if not glob.has_magic(os.fspath(path)) and isinstance(manifest.get("num_records"), int):
        # every shard of the manifest is read: len(ds) and Keras' progress bars know the count
        ds = ds.apply(tf.data.experimental.assert_cardinality(manifest["num_records"]))
    if shuffle:
        buffer = SHUFFLE_BUFFER if shuffle is True else int(shuffle)
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(
        make_decoder(manifest, ignore_as=ignore_as),
        num_parallel_calls=autotune,
        deterministic=deterministic,
    )
    if batch_size is not None:
        stored = manifest["ignore"]
        pad = (ignore_as if ignore_as is not None else stored) if stored is not None else None
        if pad is None:
            ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        else:
            ds = ds.padded_batch(
                batch_size,
                padded_shapes=([None, None, 3], [None, None]),
                padding_values=(tf.constant(0.0, tf.float32), tf.constant(pad, tf.int32)),
                drop_remainder=drop_remainder,
            )
    return ds.prefetch(autotune)
