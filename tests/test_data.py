"""labelfix.data: TFRecords written by labelfix.records read back exactly, ignore as -1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_tfrecord import make_pairs, voc_mask, write

from labelfix.labels.labelmap import LabelMap

tf = pytest.importorskip("tensorflow")
data = pytest.importorskip("labelfix.data")


def eight_bit_masks() -> dict[str, np.ndarray]:
    a = voc_mask(6, 8, cls=15)
    b = voc_mask(5, 9, cls=20)
    c = np.full((7, 4), 7, np.uint8)
    c[0, 0] = 255
    return {"a": a, "b": b, "c": c}


def sixteen_bit_masks() -> dict[str, np.ndarray]:
    a = np.zeros((6, 8), np.uint16)
    a[0, :3] = 299
    a[2, 2:5] = 1000  # void
    b = np.full((5, 9), 256, np.uint16)
    b[4, 8] = 1000
    return {"a": a, "b": b}


CASES = {
    8: (eight_bit_masks, 21, LabelMap(rules=((15, 3),), ignore=(255,), out=-1)),
    16: (sixteen_bit_masks, 300, LabelMap(ignore=(1000,), out=-1)),
}


@pytest.mark.parametrize("compression", ["none", "gzip"])
@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("encoding", ["png", "raw"])
def test_round_trip_equals_the_remapped_arrays(tmp_path: Path, encoding, bits, compression):
    make, num_classes, label_map = CASES[bits]
    masks = make()
    images, mask_dir = make_pairs(tmp_path, masks, palette=bits == 8)
    out = tmp_path / "tfr"
    result = write(
        images,
        mask_dir,
        out,
        num_classes=num_classes,
        label_map=label_map,
        mask_encoding=encoding,
        compression=compression,
    )
    if encoding == "png":
        assert result.mask_dtype == ("uint8" if bits == 8 else "uint16")
    ds = data.load(out, "train")
    assert len(ds) == len(masks)
    got = list(ds.as_numpy_iterator())
    for (image, mask), (sid, array) in zip(got, masks.items(), strict=True):
        expected = label_map.apply(array).astype(np.int32)
        assert mask.dtype == np.int32 and image.dtype == np.float32
        np.testing.assert_array_equal(mask, expected)
        original = tf.io.decode_image((images / f"{sid}.jpg").read_bytes(), channels=3)
        np.testing.assert_array_equal(image, original.numpy().astype(np.float32))
        assert image.shape == (*array.shape, 3)


def test_ignore_as_none_keeps_the_stored_value_and_other_values_are_presented(tmp_path: Path):
    masks = eight_bit_masks()
    images, mask_dir = make_pairs(tmp_path, masks)
    write(images, mask_dir, tmp_path / "png")
    write(
        images,
        mask_dir,
        tmp_path / "raw",
        mask_encoding="raw",
        label_map=LabelMap(ignore=(255,), out=-1),
    )
    first = masks["a"].astype(np.int32)
    (_, png), *_ = data.load(tmp_path / "png", ignore_as=None).as_numpy_iterator()
    np.testing.assert_array_equal(png, first)  # stored 255
    (_, raw), *_ = data.load(tmp_path / "raw", ignore_as=None).as_numpy_iterator()
    np.testing.assert_array_equal(raw, np.where(first == 255, -1, first))  # stored -1
    (_, shown), *_ = data.load(tmp_path / "raw", ignore_as=255).as_numpy_iterator()
    np.testing.assert_array_equal(shown, first)


def test_manifest_reader_contract(tmp_path: Path):
    images, mask_dir = make_pairs(tmp_path, eight_bit_masks())
    write(images, mask_dir, tmp_path / "tfr", split="val", num_shards=2)
    manifest = data.read_manifest(tmp_path / "tfr", "val")
    for key in (
        "num_classes",
        "class_names",
        "ignore",
        "ignore_as",
        "class_pixel_counts",
        "mask_encoding",
        "compression",
        "shards",
    ):
        assert key in manifest
    assert len(manifest["class_pixel_counts"]) == manifest["num_classes"] == 21
    assert data.shard_files(tmp_path / "tfr", "val") == [
        str(tmp_path / "tfr" / f"val-0000{i}-of-00002.tfrecord") for i in range(2)
    ]


def test_padded_batches_pad_masks_with_ignore_never_a_class(tmp_path: Path):
    images, mask_dir = make_pairs(tmp_path, eight_bit_masks())
    write(images, mask_dir, tmp_path / "tfr")
    image, mask = next(iter(data.load(tmp_path / "tfr", batch_size=3)))
    assert image.shape == (3, 7, 9, 3) and mask.shape == (3, 7, 9)
    assert (mask[0, 6:, :].numpy() == -1).all() and (mask[0, :, 8:].numpy() == -1).all()
    assert (image[0, 6:, :, :].numpy() == 0).all()
    _, kept = next(iter(data.load(tmp_path / "tfr", batch_size=3, ignore_as=None)))
    assert (kept[2, :, 4:].numpy() == 255).all()


def test_glob_pattern_shuffle_and_public_decoder(tmp_path: Path):
    masks = {f"{i:02d}": np.full((4, 5), i, np.uint8) for i in range(12)}
    images, mask_dir = make_pairs(tmp_path, masks, palette=False)
    out = tmp_path / "tfr"
    write(images, mask_dir, out, num_shards=3)
    pattern = str(out / "train-*.tfrecord")
    values = sorted(int(m[0, 0]) for _, m in data.load(pattern).as_numpy_iterator())
    assert values == list(range(12))
    runs = [
        [int(m[0, 0]) for _, m in data.load(out, shuffle=True, seed=5).as_numpy_iterator()]
        for _ in range(2)
    ]
    assert sorted(runs[0]) == list(range(12)) and runs[0] != list(range(12))

    manifest = data.read_manifest(out)
    record = next(iter(tf.data.TFRecordDataset(data.shard_files(out))))
    image, mask = data.decode_example(record, manifest)
    assert image.dtype == tf.float32 and mask.dtype == tf.int32
    mapped = data.records(out).map(data.make_decoder(manifest))
    assert sorted(int(m[0, 0]) for _, m in mapped) == list(range(12))


def test_missing_shard_is_a_one_line_error(tmp_path: Path):
    from labelfix.errors import LabelfixError

    images, mask_dir = make_pairs(tmp_path, eight_bit_masks())
    result = write(images, mask_dir, tmp_path / "tfr")
    Path(result.paths[0]).unlink()
    with pytest.raises(LabelfixError, match="shard listed in the manifest is missing"):
        data.load(tmp_path / "tfr")


def test_eight_bit_ids_above_127_are_not_mistaken_for_void(tmp_path: Path):
    mask = np.array([[150, 255], [127, 0]], np.uint8)
    images, mask_dir = make_pairs(tmp_path, {"a": mask}, palette=False)
    write(images, mask_dir, tmp_path / "tfr", num_classes=200)
    (_, got), *_ = data.load(tmp_path / "tfr").as_numpy_iterator()
    np.testing.assert_array_equal(got, [[150, -1], [127, 0]])
