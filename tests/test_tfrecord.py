"""labelfix.records and ``labelfix to-tfrecord``: pairing, checks, encodings, shards, manifest."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageOps

from labelfix._version import __version__
from labelfix.cli import main
from labelfix.errors import UsageError
from labelfix.io.images import image_header, quick_header
from labelfix.io.pairing import DatasetProblems, read_id_list
from labelfix.io.png import grey_png
from labelfix.labels.labelmap import LabelMap
from labelfix.labels.presets import preset, voc_palette
from labelfix.records.example import FEATURES, feature_key, parse_example, serialize_example
from labelfix.records.shards import shard_name
from labelfix.records.spec import parse_size
from labelfix.records.write import write_dataset

from conftest import save_oriented

tf = pytest.importorskip("tensorflow")

# ----------------------------------------------------------------------------- fixtures


def voc_mask(height: int = 6, width: int = 8, *, cls: int = 15) -> np.ndarray:
    """Background 0, a class ``cls`` block with a 255 border: small enough to count by hand."""
    m = np.zeros((height, width), np.uint8)
    m[1:5, 1:5] = 255
    m[2:4, 2:4] = cls
    return m


def save_mask(path: Path, array: np.ndarray, *, palette: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npy":
        np.save(path, array)
        return
    im = Image.fromarray(array)
    if palette and array.dtype == np.uint8:
        im.putpalette(voc_palette())
    im.save(path)


def save_image(path: Path, height: int, width: int, seed: int = 0) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    fmt = "JPEG" if path.suffix == ".jpg" else "PNG"
    Image.fromarray(pixels).save(path, format=fmt)
    return path.read_bytes()


def make_pairs(
    root: Path,
    masks: dict[str, np.ndarray],
    *,
    palette: bool = True,
    image_ext: str = ".jpg",
    mask_ext: str = ".png",
) -> tuple[Path, Path]:
    """images/ID.jpg + masks/ID.png for each ``id -> mask``; returns (images, masks)."""
    for i, (sid, mask) in enumerate(masks.items()):
        save_mask(root / "masks" / f"{sid}{mask_ext}", mask, palette=palette)
        save_image(root / "images" / f"{sid}{image_ext}", *mask.shape, seed=i)
    return root / "images", root / "masks"


def read_records(path: Path, compression: str = "") -> list[bytes]:
    return [r.numpy() for r in tf.data.TFRecordDataset(str(path), compression_type=compression)]


def deeplab_parse(record: bytes, *, dtype=tf.uint8):
    """What DeepLab's / Model Garden's decoders do: plain keys, decode_png(channels=1)."""
    keys = {
        "image/encoded": tf.io.FixedLenFeature((), tf.string),
        "image/filename": tf.io.FixedLenFeature((), tf.string),
        "image/format": tf.io.FixedLenFeature((), tf.string),
        "image/height": tf.io.FixedLenFeature((), tf.int64),
        "image/width": tf.io.FixedLenFeature((), tf.int64),
        "image/segmentation/class/encoded": tf.io.FixedLenFeature((), tf.string),
        "image/segmentation/class/format": tf.io.FixedLenFeature((), tf.string),
    }
    parsed = tf.io.parse_single_example(record, keys)
    label = tf.io.decode_png(parsed["image/segmentation/class/encoded"], channels=1, dtype=dtype)
    return parsed, label[:, :, 0].numpy()


@pytest.fixture
def voc_dir(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    masks = {f"2007_{i:06d}": voc_mask(cls=c) for i, c in enumerate((15, 5, 1, 20))}
    images, mask_dir = make_pairs(tmp_path, masks)
    return images, mask_dir, masks


def write(images: Path, masks: Path, output: Path, **kwargs):
    kwargs.setdefault("num_classes", 21)
    kwargs.setdefault("label_map", LabelMap(ignore=(255,)))
    return write_dataset(images=images, masks=masks, output=output, jobs=1, **kwargs)


def tfrecord_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("[!.]*")) if directory.exists() else []


# ----------------------------------------------------------------------------- wire format


def test_serialize_example_equals_tensorflow_deterministic_bytes():
    features = {
        "image/encoded": b"\xff\xd8" + bytes(range(256)) * 3,
        "image/format": "jpeg",
        "image/height": 375,
        "image/width": 500,
        "image/segmentation/class/encoded": b"",
        "big": 1 << 40,
        "negative": -1,
    }
    example = tf.train.Example()
    for key, value in features.items():
        feature = example.features.feature[key]
        if isinstance(value, int):
            feature.int64_list.value.append(value)
        else:
            feature.bytes_list.value.append(value.encode() if isinstance(value, str) else value)
    assert serialize_example(features) == example.SerializeToString(deterministic=True)
    parsed = parse_example(serialize_example(features))
    assert parsed["negative"] == [-1]
    assert parsed["image/format"] == [b"jpeg"]
    assert parsed["image/encoded"] == [features["image/encoded"]]


def test_parse_example_reads_what_tensorflow_writes():
    example = tf.train.Example()
    example.features.feature["f"].float_list.value.extend([0.5, 2.0])
    example.features.feature["i"].int64_list.value.extend([3, -4, 1 << 50])
    example.features.feature["b"].bytes_list.value.extend([b"x", b""])
    assert parse_example(example.SerializeToString()) == {
        "f": [0.5, 2.0],
        "i": [3, -4, 1 << 50],
        "b": [b"x", b""],
    }
    with pytest.raises(ValueError):
        parse_example(b"\x0a\x7f\x00")


def test_feature_keys_are_deeplab_and_model_garden_keys():
    keys = {key for key, _ in FEATURES.values()}
    assert {
        "image/encoded",
        "image/format",
        "image/filename",
        "image/height",
        "image/width",
        "image/channels",
        "image/segmentation/class/encoded",
        "image/segmentation/class/format",
        "image/source_id",
    } == keys
    assert feature_key("mask") == "image/segmentation/class/encoded"


@pytest.mark.parametrize(
    ("mode", "fmt", "extra"),
    [
        ("RGB", "JPEG", {}),
        ("L", "JPEG", {}),
        ("RGB", "PNG", {}),
        ("RGBA", "PNG", {}),
        ("L", "PNG", {}),
        ("P", "PNG", {}),
        ("P", "PNG", {"transparency": 0}),
        ("RGB", "JPEG", {"exif": b"Exif\x00\x00" + bytes(200)}),
        ("RGB", "BMP", {}),
    ],
)
def test_quick_image_header_agrees_with_pillow(mode, fmt, extra):
    buf = io.BytesIO()
    Image.new(mode, (7, 5)).save(buf, format=fmt, **extra)
    data = buf.getvalue()
    quick = quick_header(data)
    assert quick is None if fmt == "BMP" else quick == image_header(data)
    assert image_header(data)[1:3] == (5, 7)


def test_grey_png_turns_a_palette_png_into_its_indices_without_recompressing():
    indices = voc_mask()
    buf = io.BytesIO()
    im = Image.fromarray(indices)
    im.putpalette(voc_palette())
    im.save(buf, format="PNG")
    grey = grey_png(buf.getvalue())
    with Image.open(io.BytesIO(grey)) as out:
        assert out.mode == "L"
        np.testing.assert_array_equal(np.asarray(out), indices)
    decoded = tf.io.decode_png(grey, channels=1)[:, :, 0].numpy()
    np.testing.assert_array_equal(decoded, indices)
    # tf.io.decode_png of the original palette PNG gives luminance, not the class ids
    assert not np.array_equal(tf.io.decode_png(buf.getvalue(), channels=1)[:, :, 0], indices)


def test_parse_size_and_id_list(tmp_path: Path):
    assert parse_size("100MB") == 100_000_000
    assert parse_size("1.5 GB") == 1_500_000_000
    assert parse_size("2MiB") == 2 << 20
    assert parse_size("4096") == 4096
    for bad in ("ten", "5 parsecs", "0"):
        with pytest.raises(ValueError):
            parse_size(bad)
    ids = tmp_path / "train.txt"
    ids.write_text("2007_000032\n\n# comment\n2007_000039 1\n2007_000032\nb/c.png\n")
    assert read_id_list(ids) == ["2007_000032", "2007_000039", "b/c"]


# ----------------------------------------------------------------------------- writing


def test_write_dataset_manifest_and_deeplab_parser(voc_dir, tmp_path: Path):
    images, masks, arrays = voc_dir
    out = tmp_path / "tfr"
    result = write(images, masks, out, label_map=preset("voc"))
    assert result.num_records == 4
    assert [s.file for s in result.shards] == ["train-00000-of-00001.tfrecord"]
    assert result.passthrough == 4  # palette indices kept byte for byte, palette stripped
    manifest = json.loads((out / "train.labelfix.json").read_text())
    assert manifest["labelfix_version"] == __version__
    assert manifest["num_classes"] == 21
    assert manifest["class_names"][15] == "person"
    assert (manifest["ignore"], manifest["ignore_as"]) == (255, -1)
    assert (manifest["mask_encoding"], manifest["mask_dtype"], manifest["compression"]) == (
        "png",
        "uint8",
        "none",
    )
    assert manifest["mapping"] == preset("voc").to_dict()
    # per-class pixels, by hand: each 6x8 mask has 48 - 16 = 32 background, 4 of its class
    expected = [0] * 21
    expected[0] = 4 * 32
    for c in (15, 5, 1, 20):
        expected[c] += 4
    assert manifest["class_pixel_counts"] == expected
    assert manifest["ignore_pixels"] == 4 * 12
    shard = manifest["shards"][0]
    data = (out / shard["file"]).read_bytes()
    assert shard["records"] == 4
    assert shard["bytes"] == len(data)
    assert shard["sha256"] == hashlib.sha256(data).hexdigest()

    for record, (sid, mask) in zip(read_records(out / shard["file"]), arrays.items(), strict=True):
        parsed, label = deeplab_parse(record)
        np.testing.assert_array_equal(label, mask)
        assert parsed["image/encoded"].numpy() == (images / f"{sid}.jpg").read_bytes()
        assert parsed["image/format"].numpy() == b"jpeg"
        # DeepLab's convention: the stem (its vis.py saves each prediction as <filename>.png)
        assert parsed["image/filename"].numpy() == sid.encode()
        assert (int(parsed["image/height"]), int(parsed["image/width"])) == mask.shape
        assert parsed["image/segmentation/class/format"].numpy() == b"png"
        assert parse_example(record)["image/source_id"] == [sid.encode()]
        assert parse_example(record)["image/channels"] == [3]


def test_remapped_png_masks_store_minus_one_as_255_and_sixteen_bit_ids(tmp_path: Path):
    wide = np.zeros((4, 6), np.uint16)
    wide[0, :3] = 299
    wide[1, 1] = 7
    wide[3, :] = 1000
    images, masks = make_pairs(tmp_path, {"a": wide}, image_ext=".png")
    out = tmp_path / "tfr"
    result = write(images, masks, out, num_classes=300, label_map=LabelMap(ignore=(1000,), out=-1))
    assert (result.mask_dtype, result.ignore, result.passthrough) == ("uint16", 65535, 0)
    (record,) = read_records(out / result.shards[0].file)
    _, label = deeplab_parse(record, dtype=tf.uint16)
    np.testing.assert_array_equal(label, np.where(wide == 1000, 65535, wide))


def test_raw_encoding_stores_signed_little_endian_minus_one(voc_dir, tmp_path: Path):
    images, masks, arrays = voc_dir
    out = tmp_path / "tfr"
    result = write(
        images, masks, out, mask_encoding="raw", label_map=LabelMap(ignore=(255,), out=-1)
    )
    assert (result.mask_dtype, result.ignore) == ("int8", -1)
    record = read_records(out / result.shards[0].file)[0]
    features = parse_example(record)
    assert features["image/segmentation/class/format"] == [b"raw"]
    stored = np.frombuffer(features["image/segmentation/class/encoded"][0], "<i1").reshape(6, 8)
    mask = next(iter(arrays.values())).astype(np.int16)
    np.testing.assert_array_equal(stored, np.where(mask == 255, -1, mask))
    # DeepLab2's precedent: the ignore value kept as stored needs a wider signed type
    wide = write(images, masks, tmp_path / "wide", mask_encoding="raw")
    assert (wide.mask_dtype, wide.ignore) == ("int16", 255)


def test_eight_bit_grey_mask_passes_through_byte_for_byte(tmp_path: Path):
    images, masks = make_pairs(tmp_path, {"a": voc_mask()}, palette=False)
    out = tmp_path / "tfr"
    result = write(images, masks, out)
    assert result.passthrough == 1
    (record,) = read_records(out / result.shards[0].file)
    stored = parse_example(record)["image/segmentation/class/encoded"][0]
    assert stored == (masks / "a.png").read_bytes()


def test_npy_masks_with_negative_ignore_are_encoded(tmp_path: Path):
    npy = np.array([[0, 1], [255, -1]], np.int16)
    images, masks = make_pairs(tmp_path, {"a": npy}, mask_ext=".npy")
    out = tmp_path / "tfr"
    result = write(images, masks, out, num_classes=2, label_map=LabelMap(ignore=(255, -1)))
    (record,) = read_records(out / result.shards[0].file)
    _, label = deeplab_parse(record)
    np.testing.assert_array_equal(label, [[0, 1], [255, 255]])


def test_sharding_names_counts_and_empty_shards(voc_dir, tmp_path: Path):
    images, masks, _ = voc_dir
    result = write(images, masks, tmp_path / "a", num_shards=3)
    assert [s.file for s in result.shards] == [shard_name("train", i, 3) for i in range(3)]
    assert [s.records for s in result.shards] == [2, 1, 1]
    result = write(images, masks, tmp_path / "b", num_shards=6, split="val")
    assert [s.records for s in result.shards] == [1, 1, 0, 1, 1, 0]
    assert all((tmp_path / "b" / s.file).exists() for s in result.shards)
    one = result.shards[0].bytes
    result = write(images, masks, tmp_path / "c", shard_size=one * 2 + 10)
    assert [s.records for s in result.shards] == [2, 2]
    assert result.shards[-1].file == "train-00001-of-00002.tfrecord"


def test_same_inputs_same_shards_and_seeded_shuffle(voc_dir, tmp_path: Path):
    images, masks, _ = voc_dir
    digests = []
    for name in ("a", "b"):
        result = write(images, masks, tmp_path / name, num_shards=2, compression="gzip")
        digests.append([s.sha256 for s in result.shards])
    assert digests[0] == digests[1]

    def order(result):
        return [
            parse_example(r)["image/source_id"][0].decode()
            for r in read_records(Path(result.paths[0]))
        ]

    plain = order(write(images, masks, tmp_path / "p"))
    shuffled = [
        order(write(images, masks, tmp_path / f"s{i}", shuffle=True, seed=3)) for i in range(2)
    ]
    assert plain == sorted(plain)
    assert shuffled[0] == shuffled[1] != plain
    assert sorted(shuffled[0]) == plain


def test_parallel_workers_write_the_same_bytes(tmp_path: Path):
    masks = {f"{i:03d}": voc_mask(cls=1 + i % 20) for i in range(20)}
    images, mask_dir = make_pairs(tmp_path, masks)
    one = write(images, mask_dir, tmp_path / "one", num_shards=2)
    two = write_dataset(
        images=images,
        masks=mask_dir,
        output=tmp_path / "two",
        num_classes=21,
        label_map=LabelMap(ignore=(255,)),
        num_shards=2,
        jobs=2,
    )
    assert [s.sha256 for s in one.shards] == [s.sha256 for s in two.shards]


def test_parallel_run_with_a_bad_mask_reports_it_and_writes_nothing(tmp_path: Path):
    masks = {f"{i:03d}": voc_mask(cls=1 + i % 20) for i in range(40)}
    masks["031"][0, 0] = 77
    images, mask_dir = make_pairs(tmp_path, masks)
    with pytest.raises(DatasetProblems) as info:
        write_dataset(
            images=images,
            masks=mask_dir,
            output=tmp_path / "o",
            num_classes=21,
            label_map=LabelMap(ignore=(255,)),
            jobs=2,
        )
    assert len(info.value.problems) == 1 and "value 77" in info.value.problems[0]
    assert tfrecord_files(tmp_path / "o") == []


def test_pipeline_keeps_order_under_back_pressure():
    from labelfix.parallel import BackgroundMap

    items = list(range(-150, 150))
    pipeline = BackgroundMap(abs, items, jobs=2, size=lambda result: 1000, max_bytes=5000)
    try:
        pipeline.help_until_started()
        assert list(pipeline) == [abs(i) for i in items]
    finally:
        pipeline.close()


def test_rewrite_replaces_stale_shards_of_that_split_only(voc_dir, tmp_path: Path):
    images, masks, _ = voc_dir
    out = tmp_path / "tfr"
    write(images, masks, out, num_shards=3)
    write(images, masks, out, num_shards=1, split="val")
    write(images, masks, out, num_shards=2)
    assert tfrecord_files(out) == [
        "train-00000-of-00002.tfrecord",
        "train-00001-of-00002.tfrecord",
        "train.labelfix.json",
        "val-00000-of-00001.tfrecord",
        "val.labelfix.json",
    ]


# ----------------------------------------------------------------------------- refusals


def test_bad_mask_stops_the_run_and_leaves_no_shard(voc_dir, tmp_path: Path):
    images, masks, _ = voc_dir
    out = tmp_path / "tfr"
    write(images, masks, out, num_shards=2)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = voc_mask()
    bad[0, 7] = 37
    save_mask(masks / "2007_000002.png", bad)
    with pytest.raises(DatasetProblems) as info:
        write(images, masks, out, num_shards=2)
    assert info.value.problems == (
        f"{masks / '2007_000002.png'}: value 37 is not a class id (expected 0..20 or ignore 255):"
        " 1 px, first at y=0 x=7",
    )
    assert "no shard was written" in str(info.value)
    # the earlier dataset is untouched, and no temporary file is left
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    with pytest.raises(DatasetProblems):
        write(images, masks, tmp_path / "fresh")
    assert tfrecord_files(tmp_path / "fresh") == []


def test_mapped_value_out_of_range_names_both_values(voc_dir, tmp_path: Path):
    images, masks, _ = voc_dir
    with pytest.raises(DatasetProblems) as info:
        write(images, masks, tmp_path / "o", label_map=LabelMap(rules=((5, 40),), ignore=(255,)))
    # the value the record would hold, and the file's value it came from (the wording of remap)
    assert info.value.problems[0].endswith(
        "value 40 is not a class id (expected 0..20 or ignore 255): 4 px, first at y=2 x=2"
        " (mapped from 5)"
    )


def test_size_mismatch_names_both_files(voc_dir, tmp_path: Path):
    images, masks, _ = voc_dir
    save_image(images / "2007_000001.jpg", 7, 8)
    with pytest.raises(DatasetProblems) as info:
        write(images, masks, tmp_path / "o")
    (line,) = info.value.problems
    assert line == (
        f"{masks / '2007_000001.png'}: size 8x6 does not match its image "
        f"{images / '2007_000001.jpg'} (8x7)"
    )


def test_unpaired_files_are_listed_unless_skipped(voc_dir, tmp_path: Path):
    images, masks, _ = voc_dir
    (images / "2007_000000.jpg").unlink()
    save_image(images / "extra.jpg", 6, 8)
    with pytest.raises(DatasetProblems) as info:
        write(images, masks, tmp_path / "o")
    assert info.value.kind == "unpaired"
    assert sorted(info.value.problems) == sorted(
        [
            f"{images / 'extra.jpg'}: no mask for this image under {masks}",
            f"{masks / '2007_000000.png'}: no image for this mask under {images} "
            "(looked for 2007_000000.*; also with _leftImg8bit, _img, _image)",
        ]
    )
    result = write(images, masks, tmp_path / "o", skip_unpaired=True)
    assert result.num_records == 3
    assert len(result.skipped) == 2


def test_two_masks_for_one_image_are_reported(voc_dir, tmp_path: Path):
    images, masks, _ = voc_dir
    np.save(masks / "2007_000001.npy", voc_mask())
    with pytest.raises(DatasetProblems) as info:
        write(images, masks, tmp_path / "o")
    assert info.value.problems == (
        f"{masks / '2007_000001.png'}: a second mask for 2007_000001 "
        f"(the first is {masks / '2007_000001.npy'})",
    )


def test_unreadable_mask_and_image(voc_dir, tmp_path: Path):
    images, masks, _ = voc_dir
    (masks / "2007_000001.png").write_bytes(b"")
    (images / "2007_000002.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetProblems) as info:
        write(images, masks, tmp_path / "o")
    assert info.value.problems == (
        f"{masks / '2007_000001.png'}: empty file",
        f"{images / '2007_000002.jpg'}: not an image Pillow can identify",
    )


def test_cityscapes_suffixes_and_preset(tmp_path: Path):
    label_ids = np.full((4, 6), 7, np.uint8)  # road
    label_ids[0] = 23  # sky -> 10
    label_ids[3, :2] = 1  # ego vehicle -> ignore
    city = tmp_path / "gtFine" / "aachen"
    save_mask(city / "aachen_000000_000019_gtFine_labelIds.png", label_ids, palette=False)
    save_mask(
        city / "aachen_000000_000019_gtFine_color.png", np.zeros((4, 6, 3), np.uint8), palette=False
    )
    save_image(tmp_path / "leftImg8bit" / "aachen" / "aachen_000000_000019_leftImg8bit.png", 4, 6)
    out = tmp_path / "tfr"
    result = write_dataset(
        images=tmp_path / "leftImg8bit",
        masks=tmp_path / "gtFine",
        output=out,
        label_map=preset("cityscapes"),
        image_suffix="_leftImg8bit",
        mask_suffix="_gtFine_labelIds",
        jobs=1,
    )
    assert result.num_classes == 19
    (record,) = read_records(out / result.shards[0].file)
    _, label = deeplab_parse(record)
    expected = np.zeros((4, 6), np.uint8)
    expected[0] = 10
    expected[3, :2] = 255
    np.testing.assert_array_equal(label, expected)
    assert parse_example(record)["image/source_id"] == [b"aachen/aachen_000000_000019"]


def test_id_list_restricts_and_orders_pairs(voc_dir, tmp_path: Path):
    images, masks, _ = voc_dir
    result = write(images, masks, tmp_path / "o", ids=["2007_000003", "2007_000001"])
    records = read_records(Path(result.paths[0]))
    assert [parse_example(r)["image/source_id"][0] for r in records] == [
        b"2007_000003",
        b"2007_000001",
    ]
    with pytest.raises(DatasetProblems, match="unpaired") as info:
        write(images, masks, tmp_path / "p", ids=["2007_000003", "2008_999999"])
    assert info.value.problems[0].startswith("id 2008_999999: no mask under")


def test_ignore_value_that_is_a_class_is_refused(voc_dir, tmp_path: Path):
    images, masks, _ = voc_dir
    with pytest.raises(UsageError, match="void pixels would become 0, which is a class id"):
        write(images, masks, tmp_path / "o", label_map=LabelMap(ignore=(0,)))


def test_interrupted_run_leaves_nothing_that_looks_finished(voc_dir, tmp_path: Path):
    images, masks, _ = voc_dir
    out = tmp_path / "tfr"
    seen = []

    def interrupt(n, total=None):
        seen.append(n)
        if len(seen) == 4:  # the total, then two pairs, then Ctrl-C
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write(images, masks, out, on_record=interrupt)
    assert tfrecord_files(out) == []


def test_importing_the_writer_does_not_import_tensorflow():
    code = (
        "import sys, labelfix.records.write, labelfix.data, labelfix.cli.to_tfrecord, "
        "labelfix.cli.verify; assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- CLI


def run_cli(*args: str):
    return CliRunner().invoke(main, list(args))


def test_cli_writes_and_reports(voc_dir, tmp_path: Path):
    images, masks, _ = voc_dir
    out = tmp_path / "tfr"
    result = run_cli(
        "to-tfrecord",
        "--images",
        str(images),
        "--masks",
        str(masks),
        "--output",
        str(out),
        "--preset",
        "voc",
        "--num-shards",
        "2",
        "--split",
        "val",
        "-j",
        "1",
    )
    assert result.exit_code == 0, result.output
    assert "Wrote 4 records" in result.stdout
    assert "val-00000-of-00002.tfrecord .. val-00001-of-00002.tfrecord" in result.stdout
    assert "void stored as 255 (labelfix.data reads it as -1)" in result.stdout
    assert (out / "val.labelfix.json").exists()
    result = run_cli(
        "to-tfrecord",
        "--images",
        str(images),
        "--masks",
        str(masks),
        "--output",
        str(out),
        "-n",
        "21",
        "--ignore",
        "255",
        "--json",
        "--mask-encoding",
        "raw",
        "-j",
        "1",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["mask_dtype"] == "int16"


def test_cli_bad_mask_exit_1_validate_style_report(voc_dir, tmp_path: Path):
    images, masks, _ = voc_dir
    bad = voc_mask()
    bad[5, 0] = 99
    save_mask(masks / "2007_000003.png", bad)
    out = tmp_path / "tfr"
    result = run_cli(
        "to-tfrecord",
        "--images",
        str(images),
        "--masks",
        str(masks),
        "--output",
        str(out),
        "--preset",
        "voc",
        "--unmapped",
        "keep",
        "-j",
        "1",
    )
    assert result.exit_code == 1
    assert (
        f"{masks / '2007_000003.png'}: value 99 is not a class id "
        "(expected 0..20 or ignore 255): 1 px, first at y=5 x=0"
    ) in result.stderr
    assert "labelfix: error: 1 of 4 pair(s) cannot be written" in result.stderr
    assert "Traceback" not in result.output
    assert tfrecord_files(out) == []


def test_cli_unpaired_and_size_mismatch(voc_dir, tmp_path: Path):
    images, masks, _ = voc_dir
    save_image(images / "2007_000001.jpg", 9, 8)
    (masks / "2007_000002.png").rename(masks / "lonely.png")
    args = [
        "to-tfrecord",
        "--images",
        str(images),
        "--masks",
        str(masks),
        "--output",
        str(tmp_path / "o"),
        "-n",
        "21",
        "--ignore",
        "255",
        "-j",
        "1",
    ]
    result = run_cli(*args)
    assert result.exit_code == 1
    assert f"{masks / 'lonely.png'}: no image for this mask" in result.stderr
    assert f"{images / '2007_000002.jpg'}: no mask for this image" in result.stderr
    assert "2 unpaired file(s); nothing was written (--skip-unpaired" in result.stderr
    result = run_cli(*args, "--skip-unpaired")
    assert result.exit_code == 1
    assert f"size 8x6 does not match its image {images / '2007_000001.jpg'} (8x9)" in result.stderr


def test_cli_usage_errors_exit_2(voc_dir, tmp_path: Path):
    images, masks, _ = voc_dir
    base = [
        "to-tfrecord",
        "--images",
        str(images),
        "--masks",
        str(masks),
        "--output",
        str(tmp_path / "o"),
    ]
    result = run_cli(*base, "--ignore", "255")
    assert result.exit_code == 2
    assert "--num-classes is required" in result.output
    result = run_cli(*base, "-n", "3", "--num-shards", "2", "--shard-size", "1MB")
    assert result.exit_code == 2
    assert "not both" in result.output
    result = run_cli(*base, "-n", "3", "--shard-size", "lots")
    assert result.exit_code == 2
    assert "expected a size like 100MB" in result.output


def test_to_tfrecord_and_verify_run_without_tensorflow(voc_dir, tmp_path: Path):
    """Issue 15: writing and checking records needs no TensorFlow (`pip install labelfix`)."""
    images, masks, _ = voc_dir
    code = (
        "import sys; sys.modules['tensorflow'] = None\n"  # importing it now fails
        "from labelfix.cli import main\n"
        f"main(['to-tfrecord', '--images', {str(images)!r}, '--masks', {str(masks)!r},"
        f" '-o', {str(tmp_path / 'o')!r}, '--preset', 'voc'], standalone_mode=False)\n"
        f"main(['verify', {str(tmp_path / 'o')!r}])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "Wrote 4 records" in out.stdout
    assert out.stdout.strip().endswith("OK: 1 shard(s), 4 record(s), 0 problem(s)")


def test_read_manifest_errors(tmp_path: Path):
    from labelfix.errors import LabelfixError
    from labelfix.records.manifest import read_manifest

    (tmp_path / "val.labelfix.json").write_text("{not json")
    with pytest.raises(LabelfixError, match=r"no manifest for split 'train' \(splits there: val\)"):
        read_manifest(tmp_path, "train")
    with pytest.raises(LabelfixError, match="invalid JSON"):
        read_manifest(tmp_path, "val")


def test_colour_masks_are_written_through_a_colormap(tmp_path):
    """Issue 6: --colormap reaches to-tfrecord; the records hold class ids, not colours."""
    import tensorflow as tf

    from labelfix.data import load
    from labelfix.labels.colormap import ColourPolicy, builtin
    from labelfix.records.write import write_dataset

    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[1, 1] = (192, 128, 128)  # VOC person
    rgb[0, :] = (224, 224, 192)  # VOC void
    (tmp_path / "img").mkdir()
    (tmp_path / "gt").mkdir()
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(tmp_path / "img" / "a.png")
    Image.fromarray(rgb).save(tmp_path / "gt" / "a.png")
    write_dataset(
        images=tmp_path / "img", masks=tmp_path / "gt", output=tmp_path / "tfr",
        num_classes=21, label_map=LabelMap(ignore=(255,)), colours=ColourPolicy(builtin("voc")),
    )  # fmt: skip
    [(_, mask)] = list(load(str(tmp_path / "tfr"), "train"))
    expected = np.zeros((4, 5), np.int32)
    expected[0, :] = -1
    expected[1, 1] = 15
    np.testing.assert_array_equal(mask.numpy(), expected)
    assert tf.is_tensor(mask)


def test_class_names_file_is_recorded_and_checked(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "gt").mkdir()
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(tmp_path / "img" / "a.png")
    Image.fromarray(np.ones((4, 5), np.uint8)).save(tmp_path / "gt" / "a.png")
    names = tmp_path / "classes.txt"
    names.write_text("background\nthing\n")
    args = ["to-tfrecord", "--images", str(tmp_path / "img"), "--masks", str(tmp_path / "gt"),
            "--output", str(tmp_path / "tfr"), "--class-names", str(names)]  # fmt: skip
    result = CliRunner().invoke(main, [*args, "-n", "2"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "tfr" / "train.labelfix.json").read_text())
    assert manifest["class_names"] == ["background", "thing"]
    result = CliRunner().invoke(main, [*args, "-n", "3"])
    assert result.exit_code == 2
    assert "--class-names lists 2 names for 3 classes" in result.output


def _manifest_palette(output: Path) -> list | None:
    return json.loads((output / "train.labelfix.json").read_text())["palette"]


def test_manifest_keeps_the_class_colours_of_palette_masks(tmp_path: Path):
    """The palette the masks share becomes the manifest's ``palette`` (predict --records draws
    with it); none when ids are remapped (the colours would name other classes), when two masks
    disagree, or when no mask has a palette. A colormap's colours are recorded per class id."""
    masks = {f"{i:04d}": voc_mask(cls=c) for i, c in enumerate((1, 2))}
    images, mask_dir = make_pairs(tmp_path / "a", masks)
    custom = bytes([10, 20, 30, 200, 0, 0, 0, 200, 0]) + bytes(768 - 9)
    for path in mask_dir.iterdir():  # a palette of the dataset's own, not VOC's
        with Image.open(path) as im:
            im.putpalette(custom)
            im.save(path)
    write(images, mask_dir, tmp_path / "own", num_classes=3)
    assert _manifest_palette(tmp_path / "own") == [[10, 20, 30], [200, 0, 0], [0, 200, 0]]
    remapped = LabelMap(rules=((1, 2), (2, 1)), ignore=(255,))
    write(images, mask_dir, tmp_path / "swapped", num_classes=3, label_map=remapped)
    assert _manifest_palette(tmp_path / "swapped") is None
    first = sorted(mask_dir.iterdir())[0]
    with Image.open(first) as im:
        im.putpalette(voc_palette())
        im.save(first)
    write(images, mask_dir, tmp_path / "mixed", num_classes=3)
    assert _manifest_palette(tmp_path / "mixed") is None
    images, grey = make_pairs(tmp_path / "b", masks, palette=False)
    write(images, grey, tmp_path / "grey", num_classes=3)
    assert _manifest_palette(tmp_path / "grey") is None


# ----------------------------------------------------------------------------- EXIF orientation


def test_images_with_an_exif_orientation_are_refused_kept_or_rotated(tmp_path: Path):
    """Regression (issue 21): tf.io.decode_jpeg ignores EXIF orientation, so a mask drawn on
    the displayed (turned) photo did not align with the pixels in the record, and to-tfrecord
    kept such images byte for byte without a word. Now they are refused (exit 1, named);
    --exif keep stores them as they are, --exif rotate stores the displayed picture (PNG),
    and the output and the manifest say so."""
    stored = np.random.default_rng(0).integers(0, 255, (4, 6, 3), dtype=np.uint8)
    save_oriented(tmp_path / "a" / "images" / "p.jpg", stored, 6)  # displayed 4 wide, 6 high
    save_mask(tmp_path / "a" / "masks" / "p.png", voc_mask(6, 4), palette=False)
    save_oriented(tmp_path / "b" / "images" / "q.jpg", stored, 8)
    save_mask(tmp_path / "b" / "masks" / "q.png", voc_mask(4, 6), palette=False)
    runner = CliRunner()

    def convert(which: str, *extra: str):
        return runner.invoke(
            main, ["to-tfrecord", "--images", str(tmp_path / which / "images"), "--masks",
                   str(tmp_path / which / "masks"), "-o", str(tmp_path / f"out-{which}"),
                   "-n", "21", "--ignore", "255", *extra],
        )  # fmt: skip

    refused = convert("a")
    assert refused.exit_code == 1
    assert (
        f"{tmp_path / 'a' / 'masks' / 'p.png'}: size 4x6 does not match its image "
        f"{tmp_path / 'a' / 'images' / 'p.jpg'}: the image is stored 6x4 but EXIF orientation 6 "
        "displays it as 4x6, the mask's size; TensorFlow reads the stored pixels (--exif rotate "
        "stores the image as displayed)"
    ) in refused.stderr
    refused = convert("b")
    assert refused.exit_code == 1
    assert (
        f"{tmp_path / 'b' / 'images' / 'q.jpg'}: refused: it has EXIF orientation 8 (viewers "
        "show it rotated 90 degrees counter-clockwise); TensorFlow reads the stored pixels, "
        "6x4 like the mask, which follows them and not the displayed 4x6 picture (--exif keep "
        "stores it as it is)"
    ) in refused.stderr
    wrong = convert("b", "--exif", "rotate")  # the mask follows the stored pixels
    assert wrong.exit_code == 1 and "the mask follows the stored pixels, give --exif keep" in (
        wrong.stderr
    )
    kept = convert("b", "--exif", "keep")
    assert kept.exit_code == 0, kept.output
    [record] = read_records(next((tmp_path / "out-b").glob("*.tfrecord")))
    assert parse_example(record)[feature_key("image")] == [
        (tmp_path / "b" / "images" / "q.jpg").read_bytes()
    ]
    rotated = convert("a", "--exif", "rotate")
    assert rotated.exit_code == 0, rotated.output
    assert (
        "Images: 1 rotated as their EXIF orientation says and stored as PNG (--exif rotate), "
        "not byte for byte"
    ) in rotated.stdout
    [record] = read_records(next((tmp_path / "out-a").glob("*.tfrecord")))
    parsed, label = deeplab_parse(record)
    image = tf.io.decode_image(parsed["image/encoded"], channels=3).numpy()
    photo = Image.open(tmp_path / "a" / "images" / "p.jpg")
    np.testing.assert_array_equal(image, np.asarray(ImageOps.exif_transpose(photo)))
    assert (int(parsed["image/height"]), int(parsed["image/width"])) == (6, 4) == label.shape
    assert parsed["image/format"].numpy() == b"png"
    manifest = json.loads((tmp_path / "out-a" / "train.labelfix.json").read_text())
    assert (manifest["exif"], manifest["images_rotated"]) == ("rotate", 1)
    verified = runner.invoke(main, ["verify", str(tmp_path / "out-a")])
    assert verified.exit_code == 0, verified.output


def test_file_names_that_are_not_utf8_are_stored_as_their_bytes(tmp_path: Path):
    """Regression (issue 21): a mask and image named ``b"\\xff.png"`` (valid on Linux, held by
    Python as a surrogate escape) made to-tfrecord fail with a UnicodeEncodeError traceback.
    The name's own bytes go into image/filename and image/source_id; the manifest stays JSON."""
    import os

    odd = os.fsdecode(b"\xff")
    images, masks = make_pairs(tmp_path, {odd: voc_mask(cls=1), "ok": voc_mask(cls=2)})
    out = tmp_path / "tfr"
    result = CliRunner().invoke(
        main,
        ["to-tfrecord", "--images", str(images), "--masks", str(masks), "--output", str(out),
         "-n", "21", "--ignore", "255"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    records = [parse_example(r) for r in read_records(out / shard_name("train", 0, 1))]
    names = sorted((r["image/filename"][0], r["image/source_id"][0]) for r in records)
    assert names == [(b"ok", b"ok"), (b"\xff", b"\xff")]
    manifest = json.loads((out / "train.labelfix.json").read_text(encoding="utf-8"))
    assert manifest["num_records"] == 2


def test_reading_records_that_are_not_there_names_the_directory(tmp_path, monkeypatch):
    """Found trying labelfix as a new user: load("records", "train") with no records/ here
    reported ./train.labelfix.json, not the missing directory."""
    from labelfix.errors import LabelfixError
    from labelfix.records.manifest import read_manifest

    monkeypatch.chdir(tmp_path)
    with pytest.raises(LabelfixError) as info:
        read_manifest("records", "train")
    assert str(info.value) == (
        f"records: no such directory of records ({tmp_path / 'records'}; relative paths start "
        f"from the working directory, {tmp_path}); write it with labelfix to-tfrecord"
    )


def test_the_summary_does_not_call_palette_masks_stored_as_grey_kept_byte_for_byte(
    voc_dir, tmp_path
):
    """Found trying labelfix as a new user: to-tfrecord said "kept byte for byte" for palette
    PNGs it stored as grey PNGs (their compressed rows kept, the palette dropped)."""
    images, masks, _ = voc_dir
    args = ["to-tfrecord", "--images", str(images), "--masks", str(masks), "-o"]
    result = CliRunner().invoke(main, [*args, str(tmp_path / "tfr"), "-n", "21", "--ignore", "255"])
    assert result.exit_code == 0, result.output
    assert "byte for byte" not in result.stdout
    assert (
        "; 4 mask(s) stored from their own compressed pixel data, not re-encoded (a palette PNG "
        "as a grey PNG of its indices)"
    ) in result.stdout


def test_records_are_8_bit_exactly_while_the_ids_and_void_fit_a_byte():
    """Issue 22 (mutation test): `<= 0xFF` changed to `< 0xFF` in the storage rule survived the
    suite, though it stores 255-class records as uint16, which DeepLab cannot read. The edge:
    255 classes and void fit 0..255 (8-bit, void stored as 255); 256 classes and void do not;
    256 classes without void do."""
    from labelfix.records.spec import WriteSpec

    def storage(num_classes: int, out: int | None) -> tuple[int | None, str]:
        label_map = LabelMap(ignore=(255,), out=out) if out is not None else LabelMap()
        spec = WriteSpec(
            images="i", masks="m", output="o", num_classes=num_classes, label_map=label_map
        )
        return spec.mask_storage()

    assert storage(255, -1) == (255, "uint8")  # ids 0..254, void 255
    assert storage(256, -1) == (65535, "uint16")  # ids 0..255: no byte left for void
    assert storage(256, None) == (None, "uint8")  # ids 0..255, no void
    assert storage(257, None) == (None, "uint16")
