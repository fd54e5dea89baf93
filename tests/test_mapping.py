"""LabelMap, presets and map files: golden tables, every input dtype, every unmapped policy."""

from __future__ import annotations

import numpy as np
import pytest

from labelfix.errors import MappingError
from labelfix.labels.labelmap import LabelMap, parse_label_value, parse_map_rule, read_map_file
from labelfix.labels.presets import build_label_map, preset

#: cityscapesScripts helpers/labels.py: (name, id, trainId) of all 35 labels, written out here
#: so that the preset is checked against the published table, not against itself.
CITYSCAPES_LABELS = [
    ("unlabeled", 0, 255),
    ("ego vehicle", 1, 255),
    ("rectification border", 2, 255),
    ("out of roi", 3, 255),
    ("static", 4, 255),
    ("dynamic", 5, 255),
    ("ground", 6, 255),
    ("road", 7, 0),
    ("sidewalk", 8, 1),
    ("parking", 9, 255),
    ("rail track", 10, 255),
    ("building", 11, 2),
    ("wall", 12, 3),
    ("fence", 13, 4),
    ("guard rail", 14, 255),
    ("bridge", 15, 255),
    ("tunnel", 16, 255),
    ("pole", 17, 5),
    ("polegroup", 18, 255),
    ("traffic light", 19, 6),
    ("traffic sign", 20, 7),
    ("vegetation", 21, 8),
    ("terrain", 22, 9),
    ("sky", 23, 10),
    ("person", 24, 11),
    ("rider", 25, 12),
    ("car", 26, 13),
    ("truck", 27, 14),
    ("bus", 28, 15),
    ("caravan", 29, 255),
    ("trailer", 30, 255),
    ("train", 31, 16),
    ("motorcycle", 32, 17),
    ("bicycle", 33, 18),
    ("license plate", -1, -1),
]


def cityscapes_train_id(label_id: int) -> int:
    """The published trainId, with -1 (license plate) treated as ignore like 255."""
    train = {i: t for _, i, t in CITYSCAPES_LABELS}.get(label_id, 255)
    return 255 if train == -1 else train


def test_cityscapes_table_has_35_labels():
    assert len(CITYSCAPES_LABELS) == 35
    assert len({i for _, i, _ in CITYSCAPES_LABELS}) == 35


def test_cityscapes_preset_equals_published_table():
    cs = preset("cityscapes")
    for name, label_id, _ in CITYSCAPES_LABELS:
        assert cs.lookup(label_id) == cityscapes_train_id(label_id), name
    for label_id in range(34, 256):  # not a Cityscapes id: ignore
        assert cs.lookup(label_id) == 255
    assert cs.num_classes == 19
    names = [n for n, _, t in sorted(CITYSCAPES_LABELS, key=lambda r: r[2]) if 0 <= t < 255]
    assert list(cs.class_names) == names
    assert not cs.idempotent  # trainId 7 (traffic sign) would become road 0 on a second pass


def test_cityscapes_preset_on_whole_arrays():
    ids = np.arange(34, dtype=np.uint8).reshape(2, 17)
    expected = np.array([cityscapes_train_id(i) for i in range(34)]).reshape(2, 17)
    out = preset("cityscapes").apply(ids)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)
    out16 = preset("cityscapes").apply(ids.astype(np.uint16))
    np.testing.assert_array_equal(out16, expected)


def test_ade20k_preset_reduces_zero_label():
    ade = preset("ade20k")
    assert ade.lookup(0) == 255
    assert [ade.lookup(k) for k in (1, 2, 150)] == [0, 1, 149]
    assert ade.lookup(151) == 255
    assert ade.num_classes == 150 and len(ade.class_names) == 150
    assert (ade.class_names[0], ade.class_names[149]) == ("wall", "flag")
    np.testing.assert_array_equal(
        ade.apply(np.array([[0, 1, 151, 150]], np.uint8)), [[255, 0, 255, 149]]
    )
    assert not ade.idempotent


def test_voc_preset_keeps_classes_and_ignores_the_rest():
    voc = preset("voc")
    np.testing.assert_array_equal(
        voc.apply(np.array([[0, 20, 21, 255]], np.uint8)), [[0, 20, 255, 255]]
    )
    assert voc.num_classes == 21 and voc.class_names[15] == "person"
    assert voc.idempotent


def test_unknown_preset():
    with pytest.raises(MappingError, match="unknown preset 'coco'"):
        preset("coco")


def test_ignore_to_minus_one_on_every_dtype():
    lm = LabelMap(ignore=(255,), out=-1)
    golden = [[0, 5, -1]]
    for dtype in (np.uint8, np.uint16, np.int16, np.int32, np.int64):
        out = lm.apply(np.array([[0, 5, 255]], dtype))
        assert out.tolist() == golden, dtype
        assert np.issubdtype(out.dtype, np.signedinteger)
    assert lm.apply(np.array([[0, 255]], np.int32)).dtype == np.int8
    assert lm.apply(np.array([[0, 255]], np.uint8)).dtype == np.int16  # table covers 0..254


def test_signed_and_wide_inputs():
    lm = LabelMap(rules=((-1, 255), (70000, 3)))
    a = np.array([[-1, 70000, 4], [4, -1, 0]], np.int64)
    np.testing.assert_array_equal(lm.apply(a), [[255, 3, 4], [4, 255, 0]])
    far = np.array([[0, 10**9, -(10**9)]], np.int64)  # a range too wide for a table
    np.testing.assert_array_equal(LabelMap(rules=((10**9, 1),)).apply(far), [[0, 1, -(10**9)]])


def test_unmapped_policies():
    rules = ((1, 10), (2, 20))
    a = np.array([[1, 2, 3]], np.uint8)
    assert LabelMap(rules=rules).apply(a).tolist() == [[10, 20, 3]]
    assert LabelMap(rules=rules, out=255, unmapped="ignore").apply(a).tolist() == [[10, 20, 255]]
    with pytest.raises(MappingError) as err:
        LabelMap(rules=rules, unmapped="error").apply(a, path="m/0001.png")
    assert str(err.value) == (
        "m/0001.png: value 3 has no mapping rule (--unmapped error): 1 px, first at y=0 x=2"
    )
    with pytest.raises(MappingError, match="no ignore value is known"):
        LabelMap(rules=rules, unmapped="ignore")


def test_unmapped_error_on_npy_dtypes():
    lm = LabelMap(rules=((1, 10),), unmapped="error")
    with pytest.raises(MappingError, match="value 7 has no mapping rule"):
        lm.apply(np.array([[1, 7]], np.int16))


def test_idempotent():
    assert LabelMap(ignore=(255,), out=-1).idempotent
    assert LabelMap(ignore=(0, 255), out=255).idempotent
    assert not LabelMap(rules=((1, 2), (2, 1))).idempotent
    assert not LabelMap(ignore=(0,), out=255, rules=((255, 0),), unmapped="keep").idempotent


def test_outputs():
    assert LabelMap(rules=((7, 0),), ignore=(255,), out=-1).outputs == (-1, 0)
    assert LabelMap(out=-1).outputs == ()  # no ignore value: nothing becomes -1
    assert -1 in build_label_map(preset_name="cityscapes", out=-1).outputs


def test_build_label_map_combines_preset_and_explicit_rules():
    lm = build_label_map(preset_name="cityscapes", maps=((29, 13),), out=-1)
    assert lm.lookup(29) == 13  # caravan -> car, explicit wins
    assert lm.lookup(0) == -1  # unmapped -> the new canonical ignore
    assert lm.num_classes == 19
    assert build_label_map(preset_name="voc", ignore=(0,)).lookup(0) == 255


def test_explicit_rule_for_an_ignore_value_is_an_error_not_dropped():
    # Regression: build_label_map used to drop "--map 255:0" silently when "--ignore 255" was
    # also given, so 255 became the ignore value the user had asked to turn into 0.
    with pytest.raises(MappingError, match="value 255 is both an ignore value and mapped to 0"):
        build_label_map(ignore=(255,), maps=((255, 0),))


def test_num_classes_option_replaces_preset_names():
    lm = build_label_map(preset_name="voc", num_classes=22)
    assert lm.num_classes == 22 and lm.class_names is None


def test_to_dict_round_trip():
    lm = build_label_map(preset_name="ade20k", out=-1)
    again = LabelMap.from_dict(lm.to_dict())
    a = np.arange(256, dtype=np.uint8).reshape(16, 16)
    np.testing.assert_array_equal(again.apply(a), lm.apply(a))
    assert again.to_dict() == lm.to_dict()


def test_map_files(tmp_path):
    (tmp_path / "m.json").write_text('{"7": 0, "8": "1"}')
    assert read_map_file(tmp_path / "m.json") == ((7, 0), (8, 1))
    (tmp_path / "m.csv").write_text("from,to\n# comment\n7,0\n0x08,1\n")
    assert read_map_file(tmp_path / "m.csv") == ((7, 0), (8, 1))
    (tmp_path / "bad.json").write_text('{"7": 0,')
    with pytest.raises(MappingError, match=r"bad\.json: invalid JSON"):
        read_map_file(tmp_path / "bad.json")
    (tmp_path / "bad.csv").write_text("7\n")
    with pytest.raises(MappingError, match="row 1: expected from,to"):
        read_map_file(tmp_path / "bad.csv")


def test_a_map_file_without_rules_is_refused(tmp_path):
    empty = tmp_path / "rules.csv"
    empty.write_text("from,to\n")
    with pytest.raises(MappingError, match="no mapping rules in it"):
        read_map_file(empty)


# ----------------------------------------------------------------------------- hostile map files
# Issue 21: a map file or --map value that made remap print a traceback, hang or write a wrong
# output must be one line naming the file and the value, exit 2, before anything is written.


@pytest.mark.parametrize(
    "encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32"]
)
def test_map_files_in_utf8_with_or_without_bom_and_utf16_with_bom(tmp_path, encoding):
    """Regression: a UTF-16 map file (what Windows editors save) was a UnicodeDecodeError
    traceback, and a UTF-8 BOM made JSON invalid. UTF-16 without a byte-order mark cannot be
    told from binary: refused, saying so (the BOM is written by the plain codecs only)."""
    bom = encoding in ("utf-8", "utf-8-sig", "utf-16", "utf-32")
    for name, text in (("m.json", '{"7": 0, "26": 13}'), ("m.csv", "from,to\n7,0\n26,13\n")):
        path = tmp_path / name
        path.write_bytes(text.encode(encoding))
        if bom:
            assert read_map_file(path) == ((7, 0), (26, 13))
        else:
            with pytest.raises(MappingError, match=rf"{name}: the map file is not text"):
                read_map_file(path)


def test_map_file_in_another_encoding_is_one_line_naming_the_byte(tmp_path):
    """Regression: a Latin-1 map file (a comment with an accent) was a traceback."""
    path = tmp_path / "m.csv"
    path.write_bytes("from,to\n# café\n7,0\n".encode("latin-1"))
    with pytest.raises(MappingError) as err:
        read_map_file(path)
    assert str(err.value) == (
        f"{path}: the map file is not UTF-8 text (byte 0xe9 at offset 13): save it as UTF-8"
    )


def test_map_file_deep_nesting_and_huge_integers_are_errors_not_tracebacks(tmp_path):
    """Regression: JSON nested 100,000 deep was a RecursionError traceback, an integer of 5,000
    digits a ValueError one (Python's int-string limit); a value beyond int32 was accepted and
    failed every file later. Messages stay one short line, the value cut."""
    deep = tmp_path / "deep.json"
    deep.write_text('{"7": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(MappingError, match=r"deep\.json: invalid map file \(JSON nested too"):
        read_map_file(deep)
    huge = tmp_path / "huge.json"
    huge.write_text('{"7": ' + "9" * 5000 + "}")
    with pytest.raises(MappingError) as err:
        read_map_file(huge)
    assert str(err.value) == (
        f"{huge}: value 999999999999... (5,000 digits) is out of range (label values are "
        "-2147483648..2147483647)"
    )
    for value, ok in ((2**31 - 1, True), (2**31, False), (-(2**31), True), (-(2**31) - 1, False)):
        path = tmp_path / "edge.csv"
        path.write_text(f"7,{value}\n")
        if ok:
            assert read_map_file(path) == ((7, value),)
        else:
            with pytest.raises(MappingError, match=rf"value {value} is out of range"):
                read_map_file(path)
    nested = tmp_path / "nested.json"
    nested.write_text('{"7": [0], "8": 1.5, "9": null}')
    with pytest.raises(MappingError, match=r"the value of '7' is an array or object, expected"):
        read_map_file(nested)


def test_leading_zeros_are_decimal_never_octal(tmp_path):
    """Regression: ``07`` in a map file was refused as an invalid integer (Python's base-0
    parsing): a spreadsheet writes ids with leading zeros, and they mean decimal (``010`` is
    10, never octal 8). Prefixed hex/octal/binary still work."""
    path = tmp_path / "m.csv"
    path.write_text("07,00\n010,1\n0o17,2\n0x1F,3\n0b11,4\n")
    assert read_map_file(path) == ((7, 0), (10, 1), (15, 2), (31, 3), (3, 4))
    assert parse_map_rule("010:-07") == (10, -7)
    for bad in ("1e3", "7.0", "seven", "0x", "--7", "0x1g"):
        with pytest.raises(ValueError, match="expected an integer"):
            parse_label_value(bad)


def test_label_map_refuses_values_beyond_int32():
    """Regression: a rule to 10**30 was accepted and every file failed later (numpy overflow)."""
    with pytest.raises(MappingError, match=r"value 1000000000000000000000000000000 is out of"):
        LabelMap(rules=((7, 10**30),))
    with pytest.raises(MappingError, match=r"value 4294967296 is out of range"):
        LabelMap(ignore=(255,), out=2**32)
