"""Records labelfix did not write (issue 24): stats, validate and verify read them without a
manifest, name the traps TensorFlow's decoders hit, ``to-tfrecord --from-records`` rewrites them
and ``labelfix.data.load`` reads them.

The records are written the way the scripts that make them do, with labelfix's own codec (no
TensorFlow): DeepLab's ``build_voc2012_data.py`` / ``build_data.image_seg_to_tfexample`` (keys
image/encoded, image/filename = the list's stem, image/format "jpeg", image/height, image/width,
image/channels 3, image/segmentation/class/encoded = the mask FILE's bytes, a VOC palette PNG
unless ``remove_gt_colormap.py`` ran, image/segmentation/class/format "png"; shards
``{split}-%05d-of-00004.tfrecord``, ceil(n/4) records each) and Model Garden's
``TfExampleBuilder`` (add_encoded_image_feature: image/format "JPEG", image/channels,
image/source_id = blake2s of the image mod 2**24 + 1, no image/filename;
add_semantic_mask_matrix_feature: an "L" PNG, image/segmentation/class/format "PNG").
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from labelfix.cli import main
from labelfix.labels.luminance import detect_luminance, pillow_luminance, tf_luminance
from labelfix.labels.presets import build_label_map, voc_palette
from labelfix.records.example import parse_example, serialize_example
from labelfix.records.framing import read_records, write_record

VOC = np.frombuffer(voc_palette(), np.uint8).reshape(256, 3)
DEEPLAB_SHARDS = 4


def voc_mask(shift: int = 0) -> np.ndarray:
    """8x10: background 0, a person (15) inside a void (255) border, a bottle (5)."""
    m = np.zeros((8, 10), np.uint8)
    m[1:6, 1 + shift : 5 + shift] = 255
    m[2:5, 2 + shift : 4 + shift] = 15
    m[6:8, 7:10] = 5
    return m


def palette_png(ids: np.ndarray) -> bytes:
    """A VOC SegmentationClass file: the indices under the VOC palette."""
    im = Image.fromarray(ids)
    im.putpalette(voc_palette())
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def grey_png(values: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(values).save(buf, format="PNG")
    return buf.getvalue()


def jpeg(height: int, width: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def deeplab_example(image: bytes, stem: str, height: int, width: int, seg: bytes) -> bytes:
    """``build_data.image_seg_to_tfexample`` with ``--image_format=jpg``, ``label_format png``."""
    return serialize_example(
        {
            "image/encoded": image,
            "image/filename": stem,
            "image/format": "jpeg",
            "image/height": height,
            "image/width": width,
            "image/channels": 3,
            "image/segmentation/class/encoded": seg,
            "image/segmentation/class/format": "png",
        }
    )


def write_shards(directory: Path, split: str, records: list[bytes], *, shards: int) -> Path:
    """``_convert_dataset``'s sharding: ceil(n / shards) records a shard, every shard written."""
    directory.mkdir(parents=True, exist_ok=True)
    per_shard = math.ceil(len(records) / shards)
    for shard in range(shards):
        name = f"{split}-{shard:05d}-of-{shards:05d}.tfrecord"
        with open(directory / name, "wb") as fh:
            for record in records[shard * per_shard : (shard + 1) * per_shard]:
                write_record(fh, record)
    return directory


def deeplab_records(root: Path, masks: dict[str, bytes], split: str = "val") -> Path:
    """DeepLab's records of (stem -> mask file bytes), 8x10 JPEG images."""
    records = [
        deeplab_example(jpeg(8, 10, i), stem, 8, 10, seg)
        for i, (stem, seg) in enumerate(masks.items())
    ]
    return write_shards(root / "tfrecord", split, records, shards=DEEPLAB_SHARDS)


def palette_set(root: Path) -> Path:
    """Three VOC palette masks, stored as DeepLab stores them without remove_gt_colormap.py."""
    masks = {f"2007_00000{i}": palette_png(voc_mask(i)) for i in range(3)}
    return deeplab_records(root, masks)


def model_garden_example(image: bytes, mask: np.ndarray) -> bytes:
    """``TfExampleBuilder().add_encoded_image_feature(image)`` then
    ``add_semantic_mask_matrix_feature(mask)``."""
    height, width = mask.shape
    source_id = str(int(hashlib.blake2s(image).hexdigest(), 16) % ((1 << 24) + 1))
    return serialize_example(
        {
            "image/encoded": image,
            "image/format": "JPEG",
            "image/height": height,
            "image/width": width,
            "image/channels": 3,
            "image/source_id": source_id,
            "image/segmentation/class/encoded": grey_png(mask),
            "image/segmentation/class/format": "PNG",
        }
    )


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def read_back(path: Path) -> list[dict]:
    """Every record of a shard, parsed, with its mask decoded (Pillow: grey PNGs as stored)."""
    out = []
    with open(path, "rb") as fh:
        for data in read_records(fh):
            record = parse_example(data)
            mask = record["image/segmentation/class/encoded"][0]
            record["mask"] = np.asarray(Image.open(io.BytesIO(mask)))
            record["mode"] = Image.open(io.BytesIO(mask)).mode
            out.append(record)
    return out


# ----------------------------------------------------------------------------- the traps


def test_deeplab_palette_records_are_an_error_naming_the_luminance(tmp_path: Path):
    """DeepLab's writer run on VOC palette masks stores palette PNGs, which its decoder reads
    as luminance: {0, 52, 147, 220} for {0, 5, 15, 255}. 26 px of voc_mask are wrong: 6 bottle,
    6 person, 14 void border."""
    shards = palette_set(tmp_path)
    first = f"{shards}/val-00000-of-00004.tfrecord: record 0 (2007_000000)"
    expected = (
        f"{first}: palette PNG in the record: DeepLab's and Model Garden's decoders "
        "(decode_png/decode_image, channels=1) read the luminance of its colours: 0, 52, 147, "
        "220 where the ids are 0, 5, 15, 255 (26 px wrong)"
    )
    validated = run("validate", shards, "-n", 21, "--ignore", 255)
    assert validated.exit_code == 1
    assert expected in validated.output.splitlines()
    assert (
        f"{shards}: 3 of 3 record(s) store palette PNG masks, which DeepLab's and Model Garden's"
        f" decoders read as luminance: rewrite them with labelfix to-tfrecord --from-records "
        f"{shards} -o OUT (masks are read as ids)"
    ) in validated.output
    assert "FAILED: 3 records, 3 with problems" in validated.output

    verified = run("verify", shards)
    assert verified.exit_code == 1
    assert expected in verified.output.splitlines()
    assert "FAILED: 4 shard(s), 3 record(s), 4 problem(s) (no manifest)" in verified.output
    # regression: one shard given, that shard is read (it used to ask for train.labelfix.json)
    one = run("verify", f"{shards}/val-00000-of-00004.tfrecord")
    assert one.exit_code == 1 and "labelfix.json" not in one.output
    assert expected in one.output.splitlines()
    assert "FAILED: 1 shard(s), 1 record(s), 2 problem(s) (no manifest)" in one.output
    other = run("verify", shards, "--split", "train")  # no train shards: said, not guessed
    assert other.exit_code == 1
    assert f"{shards}: no train shards in this directory (shards there: val)" in other.stderr

    stats = run("stats", shards, "--json")
    assert stats.exit_code == 1
    document = json.loads(stats.stdout)
    # labelfix reads the indices: the true ids, 160 px of voc_mask minus the 26 of each kind
    assert {v["value"]: v["pixels"] for v in document["values"]} == {
        0: 3 * 54,
        5: 3 * 6,
        15: 3 * 6,
        255: 3 * 14,
    }
    assert document["records"] == 3 and document["ok"] is False
    assert f"labelfix: error: {expected}" in stats.stderr


def test_tensorflow_decodes_a_stored_palette_mask_as_luminance():
    """The trap pinned where it matters: tf.io.decode_png (DeepLab) and decode_image (Model
    Garden) of a VOC palette mask give {0, 52, 147, 220}; tf_luminance is TensorFlow's grey for
    all 256 VOC colours, and Pillow's convert("L") differs (53 for the bottle)."""
    tf = pytest.importorskip("tensorflow")
    stored = palette_png(voc_mask())
    read = tf.io.decode_png(stored, channels=1).numpy()[:, :, 0]
    assert sorted(np.unique(read).tolist()) == [0, 52, 147, 220]
    assert (tf.io.decode_image(stored, channels=1).numpy()[:, :, 0] == read).all()
    every = palette_png(np.arange(256, dtype=np.uint8).reshape(16, 16))
    grey = tf.io.decode_png(every, channels=1).numpy().ravel()
    assert (grey == tf_luminance(VOC)).all()
    assert (
        np.asarray(Image.open(io.BytesIO(every)).convert("L")).ravel() == pillow_luminance(VOC)
    ).all()
    assert int(pillow_luminance(VOC[5])) == 53 != int(tf_luminance(VOC[5]))


def test_grey_luminance_set_is_named_and_mapped_back(tmp_path: Path):
    """A VOC set already converted to grey luminance (decoded with decode_png and written
    again): its values are exactly palette colours' greys. Named as such, and --luminance voc
    maps them back, with --map for the grey two VOC classes share (52: bottle and tvmonitor)."""
    masks = {
        f"2007_00000{i}": grey_png(tf_luminance(VOC[voc_mask(i)]).astype(np.uint8))
        for i in range(3)
    }
    shards = deeplab_records(tmp_path, masks)
    validated = run("validate", shards, "-n", 21, "--ignore", 255)
    assert validated.exit_code == 1
    assert (
        f"{shards}: these look like VOC palette colours read as grey, not class ids "
        "(tf.io.decode_png(channels=1), as DeepLab's and Model Garden's decoders read it): 52 = "
        "5 (bottle) or 20 (tvmonitor), 147 = 15 (person), 220 = 255 (void); map them back with "
        "labelfix to-tfrecord --from-records ... --luminance voc --map 52:5 (or 52:20)"
    ) in validated.output
    stats = run("stats", shards)  # no -n: still recognised
    assert stats.exit_code == 1 and "these look like VOC palette colours" in stats.stderr
    verified = run("verify", shards)
    assert verified.exit_code == 1 and "these look like VOC palette colours" in verified.output

    out = tmp_path / "fixed"
    shared = run(
        "to-tfrecord", "--from-records", shards, "-o", out, "--preset", "voc", "--luminance", "voc"
    )
    assert shared.exit_code == 1
    assert "52 is 5 and 20 (--map 52:5 says which)" in shared.stderr
    assert "record 0 (2007_000000): value 52 has no mapping rule" in shared.stderr
    assert not out.exists()

    fixed = run(
        "to-tfrecord", "--from-records", shards, "-o", out, "--preset", "voc",
        "--luminance", "voc", "--map", "52:5",
    )  # fmt: skip
    assert fixed.exit_code == 0, fixed.output
    records = [r for s in sorted(out.glob("val-*.tfrecord")) for r in read_back(s)]
    assert [r["mask"].tolist() for r in records] == [voc_mask(i).tolist() for i in range(3)]
    assert run("verify", out).exit_code == 0


def test_detect_luminance_tells_tensorflow_from_pillow_and_ids_from_greys():
    tf_set = {0: 900, 52: 40, 147: 60, 220: 30}
    match = detect_luminance(tf_set, num_classes=21)
    assert (match.colormap, match.method, match.option) == ("voc", "tensorflow", "voc")
    assert match.ambiguous == ((52, (5, 20)),)
    pil_set = {0: 900, 53: 40, 147: 60, 220: 30}  # Pillow's convert("L")
    assert detect_luminance(pil_set, num_classes=21).option == "pillow:voc"
    assert detect_luminance({0: 9, 5: 1, 15: 1, 255: 1}, num_classes=21) is None  # true ids
    assert detect_luminance({0: 9, 14: 1, 19: 1}, num_classes=21) is None  # greys that are ids
    assert detect_luminance({0: 9, 1: 3}, num_classes=2) is None  # 1 is no VOC grey
    label_map = build_label_map(preset_name="voc", luminance="voc", out=-1)
    assert label_map.apply(np.array([[0, 147, 220, 38]], np.uint8)).tolist() == [[0, 15, -1, 1]]
    assert label_map.unmapped == "error" and 52 not in label_map.rules_dict


def test_sixteen_bit_png_in_records_is_an_error(tmp_path: Path):
    """Model Garden and DeepLab decode masks as uint8: a 16-bit PNG keeps each value's high
    byte, so every id below 256 reads as 0 (300 as 1)."""
    mask = np.zeros((8, 10), np.uint16)
    mask[0, :4] = 5
    mask[4:, :] = 300
    buf = io.BytesIO()
    Image.fromarray(mask).save(buf, format="PNG")
    shards = deeplab_records(tmp_path, {"a": buf.getvalue()})
    result = run("validate", shards, "-n", 400)
    assert result.exit_code == 1
    assert (
        f"{shards}/val-00000-of-00004.tfrecord: record 0 (a): 16-bit PNG in the record: "
        "DeepLab's and Model Garden's decoders read it as uint8, keeping each value's high byte:"
        " 0, 0, 1 where the ids are 0, 5, 300 (44 px wrong)"
    ) in result.output


def test_eight_bit_masks_for_more_than_256_classes_were_wrapped(tmp_path: Path):
    shards = deeplab_records(tmp_path, {"a": grey_png(np.full((8, 10), 44, np.uint8))})
    result = run("validate", shards, "-n", 300)
    assert result.exit_code == 1
    assert (
        "every mask is 8-bit, but the ids of 300 classes go up to 299: ids above 255 were "
        "wrapped (id % 256) or clipped (to 255)"
    ) in result.output


# ----------------------------------------------------------------------------- reading


def test_model_garden_records_values_named_by_source_id(tmp_path: Path):
    """Model Garden's builder stores no image/filename: records are named by source_id. A
    255 void the loss would meet is a bad value until --ignore says it is void."""
    images = [jpeg(8, 10, i) for i in range(2)]
    masks = [voc_mask(), np.full((8, 10), 3, np.uint8)]
    shards = write_shards(
        tmp_path / "mg",
        "train",
        [model_garden_example(i, m) for i, m in zip(images, masks, strict=True)],
        shards=2,
    )
    sid = str(int(hashlib.blake2s(images[0]).hexdigest(), 16) % ((1 << 24) + 1))
    bad = run("validate", shards, "-n", 21)
    assert bad.exit_code == 1
    assert (
        f"{shards}/train-00000-of-00002.tfrecord: record 0 ({sid}): value 255 is not a class id "
        "(expected 0..20): 14 px, first at y=1 x=1"
    ) in bad.output
    assert "FAILED: 2 records, 1 with problems" in bad.output
    good = run("validate", f"{shards}/train-*", "-n", 21, "--ignore", 255)
    assert good.exit_code == 0, good.output
    assert "OK: 2 records, 0 with problems, 0 warning(s)" in good.output
    stats = run("stats", shards, "--ignore", 255, "-n", 21)
    assert stats.exit_code == 0
    assert "Scanned 2 records: 2 label masks" in stats.output
    assert "  kind   records  trap\n  8-bit        2" in stats.output
    document = json.loads(run("stats", shards, "--ignore", 255, "--json").stdout)
    assert {v["value"]: v["pixels"] for v in document["values"]} == {
        0: 54,
        3: 80,
        5: 6,
        15: 6,
        255: 14,
    }
    assert document["void"]["pixels"] == 14 and document["problems"] == []


def test_other_keys_framing_gzip_and_images(tmp_path: Path):
    """Keys given by option; a gzip shard told by its bytes; a record whose data checksum is
    wrong is named and the next one still read; an image that does not decode; a mask whose
    image is another size; height/width features that lie."""
    good = serialize_example(
        {"img": jpeg(8, 10), "label/encoded": grey_png(voc_mask()), "label/format": "png"}
    )
    directory = tmp_path / "own"
    directory.mkdir()
    with gzip.open(directory / "a.tfrecord.gz", "wb") as fh:
        write_record(fh, good)
    missing = run("validate", directory, "-n", 21, "--ignore", 255)
    assert missing.exit_code == 1
    assert (
        f"{directory}/a.tfrecord.gz: record 0: no mask under image/segmentation/class/encoded "
        "(its bytes features: img, label/encoded, label/format); --mask-key names another key"
    ) in missing.output
    keys = ["--mask-key", "label/encoded", "--image-key", "img", "--format-key", "label/format"]
    assert run("validate", directory, "-n", 21, "--ignore", 255, *keys).exit_code == 0

    wide = jpeg(8, 12)
    records = [
        deeplab_example(jpeg(8, 10), "broken-crc", 8, 10, grey_png(voc_mask())),
        deeplab_example(jpeg(8, 10)[:200], "truncated", 8, 10, grey_png(voc_mask())),
        deeplab_example(wide, "wide", 8, 12, grey_png(voc_mask())),
        deeplab_example(jpeg(8, 10), "lies", 9, 10, grey_png(voc_mask())),
    ]
    shards = write_shards(tmp_path / "dl", "train", records, shards=1)
    shard = shards / "train-00000-of-00001.tfrecord"
    data = bytearray(shard.read_bytes())
    data[40] ^= 0xFF  # inside record 0's data
    shard.write_bytes(bytes(data))
    result = run("verify", shards, "-n", 21, "--ignore", 255)
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert f"{shard}: record 0: bad data checksum (corrupt record)" in lines
    assert any(
        line.startswith(f"{shard}: record 1 (truncated): image does not decode completely")
        for line in lines
    )
    assert f"{shard}: record 2 (wide): mask is 10x8 but its image is 12x8" in lines
    assert f"{shard}: record 3 (lies): image is 10x8 but the record says 10x9" in lines
    assert "FAILED: 1 shard(s), 3 record(s), 4 problem(s) (no manifest)" in result.output


def test_raw_masks_are_read_by_their_size(tmp_path: Path):
    raw = np.array(voc_mask(), np.uint8)
    example = serialize_example(
        {
            "image/encoded": jpeg(8, 10),
            "image/height": 8,
            "image/width": 10,
            "image/segmentation/class/encoded": raw.tobytes(),
            "image/segmentation/class/format": "RAW",
        }
    )
    short = serialize_example(
        {
            "image/encoded": jpeg(8, 10),
            "image/height": 8,
            "image/width": 10,
            "image/segmentation/class/encoded": raw.tobytes()[:-3],
            "image/segmentation/class/format": "raw",
        }
    )
    shards = write_shards(tmp_path / "raw", "train", [example, short], shards=1)
    result = run("stats", shards, "--ignore", 255, "--json")
    assert result.exit_code == 1
    assert {v["value"]: v["pixels"] for v in json.loads(result.stdout)["values"]} == {
        0: 54,
        5: 6,
        15: 6,
        255: 14,
    }
    assert (
        f"{shards}/train-00000-of-00001.tfrecord: record 1: raw mask of 77 bytes for 10x8 "
        "pixels (expected 1, 2 or 4 bytes a pixel)"
    ) in result.stderr


# ----------------------------------------------------------------------------- rewriting


def test_from_records_gives_the_true_ids_and_verify_accepts_them(tmp_path: Path):
    """The palette set rewritten: masks equal the true ids, as 8-bit grey PNGs (read as
    indices), images byte for byte, DeepLab's stem kept as image/filename and given as
    source_id (Model Garden's TfExampleDecoder requires one); the split is the shards'."""
    shards = palette_set(tmp_path)
    out = tmp_path / "fixed"
    result = run("to-tfrecord", "--from-records", shards, "-o", out, "--preset", "voc")
    assert result.exit_code == 0, result.output
    assert "Wrote 3 records" in result.output
    assert "3 mask(s) stored from their own compressed pixel data" in result.output
    written = sorted(out.glob("*.tfrecord"))
    assert [p.name for p in written] == ["val-00000-of-00001.tfrecord"]
    records = read_back(written[0])
    assert [r["mask"].tolist() for r in records] == [voc_mask(i).tolist() for i in range(3)]
    assert {r["mode"] for r in records} == {"L"}
    originals = []
    for path in sorted(shards.glob("*.tfrecord")):
        with open(path, "rb") as fh:
            originals.extend(parse_example(r) for r in read_records(fh))
    for new, old in zip(records, originals, strict=True):
        assert new["image/encoded"] == old["image/encoded"]
        assert new["image/filename"] == old["image/filename"]
        assert new["image/source_id"] == old["image/filename"]
    manifest = json.loads((out / "val.labelfix.json").read_text())
    assert manifest["from_records"] == [str(shards)] and manifest["filename"] == "stem"
    assert manifest["class_pixel_counts"][15] == 18
    verified = run("verify", out)
    assert verified.exit_code == 0, verified.output
    assert run("validate", out, "-n", 21, "--ignore", 255).exit_code == 0


def test_from_records_checks_every_record_before_anything_is_written(tmp_path: Path):
    bad = voc_mask()
    bad[0, 0] = 37
    records = [
        deeplab_example(jpeg(8, 10), "a", 8, 10, palette_png(voc_mask())),
        deeplab_example(jpeg(8, 10), "b", 8, 10, palette_png(bad)),
        deeplab_example(jpeg(8, 12), "wide", 8, 12, palette_png(voc_mask())),
    ]
    shards = write_shards(tmp_path / "tfrecord", "val", records, shards=DEEPLAB_SHARDS)
    out = tmp_path / "fixed"
    result = run("to-tfrecord", "--from-records", shards, "-o", out, "-n", 21, "--ignore", 255)
    assert result.exit_code == 1
    assert (
        f"{shards}/val-00001-of-00004.tfrecord: record 0 (b): value 37 is not a class id "
        "(expected 0..20 or ignore 255): 1 px, first at y=0 x=0"
    ) in result.stderr
    assert (
        f"{shards}/val-00002-of-00004.tfrecord: record 0 (wide): size 10x8 does not match its "
        "image image/encoded (12x8)"
    ) in result.stderr
    assert "2 of 3 record(s) cannot be written" in result.stderr
    assert not list(out.glob("*.tfrecord")) and not (out / "val.labelfix.json").exists()
    over = run("to-tfrecord", "--from-records", shards, "-o", shards, "-n", 21, "--ignore", 255)
    assert over.exit_code == 2
    assert "which this `labelfix to-tfrecord` reads" in over.stderr


def test_filename_name_keeps_the_extension(tmp_path: Path):
    from test_tfrecord import make_pairs

    images, masks = make_pairs(tmp_path, {"2007_000033": voc_mask()})
    for style, expected in (("stem", b"2007_000033"), ("name", b"2007_000033.jpg")):
        out = tmp_path / style
        result = run(
            "to-tfrecord", "--images", images, "--masks", masks, "-o", out, "-n", 21,
            "--ignore", 255, "--filename", style,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        (record,) = read_back(out / "train-00000-of-00001.tfrecord")
        assert record["image/filename"] == [expected]
        assert record["image/source_id"] == [b"2007_000033"]


def test_verify_a_shard_of_a_labelfix_output_checks_that_shard(tmp_path: Path):
    """Regression: `labelfix verify dir/val-00000-of-00002.tfrecord` complained about
    train.labelfix.json, not the shard it was given."""
    shards = palette_set(tmp_path)
    out = tmp_path / "fixed"
    args = ["to-tfrecord", "--from-records", shards, "-o", out, "--preset", "voc"]
    assert run(*args, "--num-shards", 2).exit_code == 0
    first, second = sorted(out.glob("val-*.tfrecord"))
    one = run("verify", first)
    assert one.exit_code == 0, one.output
    assert "OK: 1 shard(s), 2 record(s), 0 problem(s)" in one.output
    data = bytearray(second.read_bytes())
    data[-1] ^= 0xFF
    second.write_bytes(bytes(data))
    assert run("verify", first).exit_code == 0
    broken = run("verify", second)
    assert broken.exit_code == 1
    assert f"{second}: sha256" in broken.output


# ----------------------------------------------------------------------------- tf.data


def test_load_reads_other_tools_records_like_its_own(tmp_path: Path):
    """labelfix.data.load on DeepLab's keys (grey masks, void 255 read as -1) and Model
    Garden's (no image/filename), with the element spec of labelfix's own records; palette
    masks are refused, the first at once, a later one when it is decoded."""
    tf = pytest.importorskip("tensorflow")
    from labelfix.data import load
    from labelfix.errors import LabelfixError

    grey = deeplab_records(tmp_path / "dl", {f"s{i}": grey_png(voc_mask(i)) for i in range(3)})
    deeplab_records(tmp_path / "dl", {"t": grey_png(np.full((8, 10), 7, np.uint8))}, "train")
    ds = load(grey, "val", ignore=255)  # DeepLab's directory holds every split's shards
    masks = [m.numpy() for _, m in ds]
    expected = [np.where(voc_mask(i) == 255, -1, voc_mask(i).astype(int)) for i in range(3)]
    assert [m.tolist() for m in masks] == [e.tolist() for e in expected]
    mg = write_shards(
        tmp_path / "mg", "train", [model_garden_example(jpeg(8, 10), voc_mask())], shards=1
    )
    (pair,) = list(load(mg / "train-00000-of-00001.tfrecord", ignore=255, batch_size=1))
    assert pair[1].shape == (1, 8, 10) and int(tf.reduce_min(pair[1])) == -1

    fixed = tmp_path / "fixed"
    assert (
        run(
            "to-tfrecord", "--from-records", palette_set(tmp_path), "-o", fixed, "--preset", "voc"
        ).exit_code
        == 0
    )
    assert load(fixed, "val").element_spec == ds.element_spec

    assert [m.numpy().max() for _, m in load(grey, "train")] == [7]
    with pytest.raises(LabelfixError, match=r"palette PNG masks: tf\.io\.decode_png reads"):
        load(tmp_path / "tfrecord", "val")
    with pytest.raises(LabelfixError, match=r"no test shards in this directory \(shards there"):
        load(grey, "test")
    mixed = deeplab_records(
        tmp_path / "mixed", {"a": grey_png(voc_mask()), "b": palette_png(voc_mask())}
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="a palette PNG decodes to luminance"):
        list(load(mixed, "val", ignore=255))


def test_from_records_keeps_names_that_are_not_utf8(tmp_path: Path):
    """A record's image/filename is its writer's bytes: rewritten as they are (the stem), and
    shown with a replacement character in messages."""
    record = serialize_example(
        {
            "image/encoded": jpeg(8, 10),
            "image/filename": b"\xff.jpg",
            "image/segmentation/class/encoded": palette_png(voc_mask()),
        }
    )
    shards = write_shards(tmp_path / "odd", "train", [record], shards=1)
    checked = run("validate", shards, "-n", 21, "--ignore", 255)
    assert "record 0 (\ufffd.jpg): palette PNG in the record" in checked.output
    out = tmp_path / "fixed"
    assert run("to-tfrecord", "--from-records", shards, "-o", out, "--preset", "voc").exit_code == 0
    (rewritten,) = read_back(out / "train-00000-of-00001.tfrecord")
    assert rewritten["image/filename"] == [b"\xff"] and rewritten["image/source_id"] == [b"\xff"]
    assert rewritten["mask"].tolist() == voc_mask().tolist()
