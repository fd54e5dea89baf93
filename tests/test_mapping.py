"""LabelMap, presets and map files: golden tables, every input dtype, every unmapped policy."""

from __future__ import annotations

import numpy as np
import pytest

from labelfix.errors import MappingError
from labelfix.labels.labelmap import LabelMap, read_map_file
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
