"""Issue 25: the fast paths on every family of masks the benchmarks time (polygons, irregular
boundaries, predictions upsampled 2x, VOC palette masks, 16-bit ids, blocky bands), at small
sizes: decoding and counting give exactly what Pillow and ``np.unique`` give, the integrity
checks still refuse damaged files, and remap's own PNGs (rows filtered None/Up, or Sub/Up for
16-bit) read the same in Pillow, OpenCV and TensorFlow, no larger than Pillow's own save."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labelfix.checks.stats import scan_dataset
from labelfix.errors import UnreadableMask
from labelfix.io.masks import read_mask, value_counts
from labelfix.io.png import PNG_SIGNATURE, encode_png, filter_rows, scan_png
from labelfix.io.unfilter import decode_scanlines
from labelfix.labels.labelmap import LabelMap
from labelfix.labels.presets import preset, voc_palette
from labelfix.rewrite.run import remap
from labelfix.synthetic import (
    cityscapes_like_mask,
    many_class_mask,
    polygon_mask,
    prediction_mask,
    shapes_sample,
    superpixel_mask,
)

SIZE = {"height": 96, "width": 160}


def _voc(rng):
    return shapes_sample(rng, height=375, width=500, num_classes=21, void=255)[1]


FAMILIES = {
    "polygons": lambda rng: polygon_mask(rng, **SIZE),
    "superpixels": lambda rng: superpixel_mask(rng, **SIZE),
    "predictions": lambda rng: prediction_mask(rng, **SIZE),
    "voc": _voc,
    "many-16bit": lambda rng: many_class_mask(rng, num_classes=1000, **SIZE),
    "blocky": lambda rng: cityscapes_like_mask(rng, **SIZE),
}


def pillow_save(array: np.ndarray, palette: bytes | None = None) -> bytes:
    im = Image.fromarray(array)
    if palette is not None:
        im.putpalette(palette)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def family_pngs(family: str, count: int = 3, seed: int = 0) -> list[tuple[np.ndarray, bytes]]:
    rng = np.random.default_rng(seed)
    palette = voc_palette() if family == "voc" else None
    arrays = [FAMILIES[family](rng) for _ in range(count)]
    return [(a, pillow_save(a, palette)) for a in arrays]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_decodes_and_counts_as_pillow_and_np_unique(family):
    for array, data in family_pngs(family):
        mask = read_mask("x.png", data=data)
        with Image.open(io.BytesIO(data)) as im:
            np.testing.assert_array_equal(mask.labels, np.asarray(im))
        values, counts = mask.value_counts()
        want = np.unique(array, return_counts=True)
        np.testing.assert_array_equal(values, want[0])
        np.testing.assert_array_equal(counts, want[1])
        if array.dtype == np.uint8:  # 8-bit rows: taken by the NumPy path, not Pillow's file
            scan = scan_png(data, keep_pixels=1 << 28)
            width, height = scan.header[:2]
            np.testing.assert_array_equal(decode_scanlines(scan.scanlines, width, height), array)


def _damaged(data: bytes) -> dict[str, bytes]:
    """A bad CRC, a zlib stream cut short, and an IHDR claiming more rows than the data holds."""
    bad_crc = bytearray(data)
    bad_crc[-20] ^= 1
    pos, idat = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        tag = data[pos + 4 : pos + 8]
        if tag == b"IHDR":
            ihdr = bytearray(data[pos + 8 : pos + 8 + length])
        if tag == b"IDAT":
            idat.append(data[pos + 8 : pos + 8 + length])
        pos += 12 + length
    stream = b"".join(idat)

    def png(ihdr_bytes: bytes, stream_bytes: bytes) -> bytes:
        def chunk(tag, body):
            crc = zlib.crc32(body, zlib.crc32(tag))
            return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", crc)

        return (
            PNG_SIGNATURE + chunk(b"IHDR", ihdr_bytes) + chunk(b"IDAT", stream_bytes)
            + chunk(b"IEND", b"")
        )  # fmt: skip

    taller = bytearray(ihdr)
    taller[4:8] = struct.pack(">I", struct.unpack(">I", ihdr[4:8])[0] + 3)
    return {
        "bad CRC-32 in chunk IDAT": bytes(bad_crc),
        "zlib stream ends early": png(bytes(ihdr), stream[: len(stream) // 2]),
        "rows": png(bytes(taller), stream),
    }


@pytest.mark.parametrize("family", ["polygons", "superpixels", "predictions", "many-16bit"])
def test_damaged_family_masks_are_still_refused(family):
    array, data = family_pngs(family, count=1)[0]
    for problem, bad in _damaged(data).items():
        with pytest.raises(UnreadableMask) as err:
            read_mask("x.png", data=bad)
        expected = f"IHDR says {array.shape[0] + 3} rows" if problem == "rows" else problem
        assert expected in err.value.reason


@pytest.mark.parametrize("family", list(FAMILIES))
def test_remap_encoder_round_trips_and_is_no_larger_than_pillow(family):
    palette = voc_palette() if family == "voc" else None
    ours = theirs = 0
    for array, data in family_pngs(family, count=2, seed=1):
        encoded = encode_png(array, palette=palette)
        with Image.open(io.BytesIO(encoded)) as im:
            assert im.mode == ("P" if palette else "L" if array.dtype == np.uint8 else "I;16")
            np.testing.assert_array_equal(np.asarray(im), array)
        np.testing.assert_array_equal(read_mask("y.png", data=encoded).labels, array)
        ours, theirs = ours + len(encoded), theirs + len(data)
    assert ours <= theirs, (family, ours, theirs)


def test_filter_rows_chooses_up_for_repeated_rows_and_keeps_the_others():
    a = np.zeros((6, 40), np.uint8)
    a[:, 10:20] = 7
    a[3, 12:30] = 9  # differs from the row above in many places, few runs: None
    rows = filter_rows(a)
    assert rows[:, 0].tolist() == [0, 2, 2, 0, 0, 2]
    assert not rows[1:3, 1:].any() and not rows[5, 1:].any()
    assert rows[0, 1:].tolist() == a[0].tolist() and rows[3, 1:].tolist() == a[3].tolist()


def test_16_bit_masks_round_trip_through_pillows_encoder():
    row = np.array([[0x01FF, 0x0200, 0x0100, 0xFFFF, 0x0000]], np.uint16)
    data = encode_png(np.repeat(row, 3, axis=0), bits=16)
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "I;16"
        np.testing.assert_array_equal(np.asarray(im), np.repeat(row, 3, axis=0))
    assert read_mask("x.png", data=data).kind == "16-bit"


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_label_map_changing_a_few_values_equals_the_lookup_table(dtype):
    rng = np.random.default_rng(2)
    top = 256 if dtype == np.uint8 else 1 << 16
    labels = rng.choice([0, 3, 4, 250, top - 1], size=(30, 40)).astype(dtype)
    present = np.unique(labels).tolist()
    for label_map in (
        LabelMap(rules=((3, 4),), ignore=(top - 1,), out=250),  # 2 values, both steps wrap
        LabelMap(rules=((250, 3), (3, 250), (0, top - 1))),  # a swap
        preset("cityscapes"),  # most values change: the full table
    ):
        lut, _ = label_map.table(dtype)
        expected = np.take(lut, labels)
        got = label_map.apply(labels, present=present)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(label_map.apply(labels), expected)


def test_remapped_family_masks_read_the_same_in_pillow_opencv_and_tensorflow(tmp_path: Path):
    cv2 = pytest.importorskip("cv2")
    tf = pytest.importorskip("tensorflow")
    expected = {}
    for family in ("polygons", "predictions", "many-16bit"):
        array = family_pngs(family, count=1, seed=4)[0][0]
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / f"{family}.png").write_bytes(pillow_save(array))
        expected[family] = np.where(
            array == 3, 4, np.where(np.isin(array, (255, 65535)), 250, array)
        )
    remap([tmp_path / "in"], LabelMap(rules=((3, 4),), ignore=(255, 65535), out=250),
          output=tmp_path / "out", jobs=1)  # fmt: skip
    for family, want in expected.items():
        path = tmp_path / "out" / f"{family}.png"
        data = path.read_bytes()
        dtype = tf.uint16 if want.max() > 255 else tf.uint8
        with Image.open(io.BytesIO(data)) as im:
            np.testing.assert_array_equal(np.asarray(im), want)
        np.testing.assert_array_equal(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), want)
        decoded = tf.io.decode_png(data, channels=1, dtype=dtype)[..., 0].numpy()
        np.testing.assert_array_equal(decoded, want)


def test_stats_of_every_family_equals_np_unique(tmp_path: Path):
    everything: dict[int, int] = {}
    for family in FAMILIES:
        for k, (array, data) in enumerate(family_pngs(family, count=2, seed=5)):
            (tmp_path / f"{family}-{k}.png").write_bytes(data)
            for v, c in zip(*value_counts(array), strict=True):
                everything[int(v)] = everything.get(int(v), 0) + int(c)
    result = scan_dataset([tmp_path], jobs=2)
    assert result.files == 2 * len(FAMILIES) and not result.unreadable
    assert {v: s.pixels for v, s in result.values.items()} == everything
