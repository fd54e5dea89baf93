"""Default records decode to the same pixels in DeepLab's, Model Garden's and labelfix's readers
(issue 12): 16-bit inputs are stored as 8-bit masks whenever the values fit, and the manifest
says which readers work when they do not (more than 255 classes, raw masks, gzip)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from test_tfrecord import make_pairs, read_records, voc_mask  # noqa: E402

from labelfix.data import load  # noqa: E402
from labelfix.labels.labelmap import LabelMap  # noqa: E402
from labelfix.records.write import write_dataset  # noqa: E402


def deeplab_parse(example_proto):
    """DeepLab's ``Dataset._parse_function`` (tensorflow/models,
    research/deeplab/datasets/data_generator.py), with ``tf.io`` names for TF 2: the same
    feature dict, dtypes and ``_decode_image`` (``decode_jpeg`` if ``is_jpeg`` else
    ``decode_png``, ``channels=1`` for the label)."""

    def _decode_image(content, channels):
        return tf.cond(
            tf.image.is_jpeg(content),
            lambda: tf.image.decode_jpeg(content, channels),
            lambda: tf.image.decode_png(content, channels),
        )

    features = {
        "image/encoded": tf.io.FixedLenFeature((), tf.string, default_value=""),
        "image/filename": tf.io.FixedLenFeature((), tf.string, default_value=""),
        "image/format": tf.io.FixedLenFeature((), tf.string, default_value="jpeg"),
        "image/height": tf.io.FixedLenFeature((), tf.int64, default_value=0),
        "image/width": tf.io.FixedLenFeature((), tf.int64, default_value=0),
        "image/segmentation/class/encoded": tf.io.FixedLenFeature((), tf.string, default_value=""),
        "image/segmentation/class/format": tf.io.FixedLenFeature(
            (), tf.string, default_value="png"
        ),
    }
    parsed_features = tf.io.parse_single_example(example_proto, features)
    image = _decode_image(parsed_features["image/encoded"], channels=3)
    label = _decode_image(parsed_features["image/segmentation/class/encoded"], channels=1)
    return image, label[:, :, 0]


def model_garden_parse(serialized_example):
    """TF Model Garden's segmentation ``Decoder.decode`` and ``Parser._prepare_image_and_label``
    (tensorflow/models, official/vision/dataloaders/segmentation_input.py): the same feature dict
    and ``decode_image(..., channels=1)`` of the label, reshaped to ``(1, height, width)`` and
    cast to float32 (normalisation and resizing of the image left out)."""
    keys_to_features = {
        "image/encoded": tf.io.FixedLenFeature((), tf.string, default_value=""),
        "image/height": tf.io.FixedLenFeature((), tf.int64, default_value=0),
        "image/width": tf.io.FixedLenFeature((), tf.int64, default_value=0),
        "image/segmentation/class/encoded": tf.io.FixedLenFeature((), tf.string, default_value=""),
    }
    data = tf.io.parse_single_example(serialized_example, keys_to_features)
    height, width = data["image/height"], data["image/width"]
    label = tf.io.decode_image(data["image/segmentation/class/encoded"], channels=1)
    label = tf.reshape(label, (1, height, width))
    label = tf.cast(label, tf.float32)
    image = tf.io.decode_image(data["image/encoded"], channels=3, dtype=tf.uint8)
    image = tf.reshape(image, (height, width, 3))
    return image, label[0]


def sixteen_bit(void: int) -> np.ndarray:
    m = voc_mask().astype(np.uint16)
    m[m == 255] = void
    return m


#: input kind -> (masks written, label map, what the masks mean with void as -1)
CASES = {
    "palette": (lambda: voc_mask(), {"palette": True}, LabelMap(ignore=(255,))),
    "8-bit": (lambda: voc_mask(), {"palette": False}, LabelMap(ignore=(255,))),
    "16-bit, void 65535": (lambda: sixteen_bit(65535), {}, LabelMap(ignore=(65535,))),
    "16-bit, void 1000, out -1": (lambda: sixteen_bit(1000), {}, LabelMap(ignore=(1000,), out=-1)),
    "npy int16, void -1": (
        lambda: voc_mask().astype(np.int16) - 256 * (voc_mask() == 255),
        {"mask_ext": ".npy"},
        LabelMap(ignore=(-1,)),
    ),
}


@pytest.mark.parametrize("kind", list(CASES))
def test_default_records_decode_alike_in_deeplab_model_garden_and_labelfix(tmp_path, kind):
    make, save_options, label_map = CASES[kind]
    masks = {f"{i:03d}": make() for i in range(2)}
    truth = np.where(voc_mask() == 255, -1, voc_mask().astype(np.int32))
    images, mask_dir = make_pairs(tmp_path, masks, image_ext=".png", **save_options)
    result = write_dataset(
        images=images, masks=mask_dir, output=tmp_path / "tfr", num_classes=21, label_map=label_map
    )
    assert (result.mask_encoding, result.mask_dtype, result.ignore) == ("png", "uint8", 255)
    manifest = json.loads(Path(result.manifest).read_text())
    assert manifest["readers"] == {"labelfix.data": "yes", "deeplab": "yes", "model_garden": "yes"}
    records = read_records(tmp_path / "tfr" / result.shards[0].file)
    ours = [m.numpy() for _, m in load(str(tmp_path / "tfr"), "train")]
    assert len(records) == len(ours) == 2
    for record, mask in zip(records, ours, strict=True):
        np.testing.assert_array_equal(mask, truth)
        deeplab_image, deeplab = deeplab_parse(record)
        garden_image, garden = model_garden_parse(record)
        np.testing.assert_array_equal(deeplab.numpy(), np.where(truth == -1, 255, truth))
        np.testing.assert_array_equal(garden.numpy(), np.where(truth == -1, 255, truth))
        np.testing.assert_array_equal(deeplab_image.numpy(), garden_image.numpy())


def test_what_the_default_readers_cannot_read_is_said_and_true(tmp_path):
    wide = voc_mask().astype(np.uint16)
    wide[0, 0] = 294
    images, mask_dir = make_pairs(tmp_path, {"a": wide}, image_ext=".png")
    result = write_dataset(
        images=images, masks=mask_dir, output=tmp_path / "wide", num_classes=300,
        label_map=LabelMap(ignore=(255,), out=-1),
    )  # fmt: skip
    readers = json.loads(Path(result.manifest).read_text())["readers"]
    assert readers["deeplab"] == (
        "no: 16-bit PNG masks (300 classes); decoded as uint8, TensorFlow keeps each id's high "
        "byte (id 300 reads as 1)"
    )
    [record] = read_records(tmp_path / "wide" / result.shards[0].file)
    # the wrong value DeepLab would train on: the high byte, as the Readers line says (it used
    # to say the ids "wrap", as a uint8 cast would: 294 would be 38)
    assert deeplab_parse(record)[1].numpy()[0, 0] == 294 >> 8 == 1
    [(_, mask)] = list(load(str(tmp_path / "wide"), "train"))
    assert mask.numpy()[0, 0] == 294

    images, mask_dir = make_pairs(tmp_path / "small", {"a": voc_mask()}, image_ext=".png")
    common = dict(images=images, masks=mask_dir, num_classes=21, label_map=LabelMap(ignore=(255,)))
    raw = write_dataset(output=tmp_path / "raw", mask_encoding="raw", **common)
    gzip = write_dataset(output=tmp_path / "gz", compression="gzip", **common)
    assert json.loads(Path(raw.manifest).read_text())["readers"]["model_garden"] == (
        "no: raw masks (only labelfix.data decodes them)"
    )
    assert json.loads(Path(gzip.manifest).read_text())["readers"] == {
        "labelfix.data": "yes",
        "deeplab": "no: gzip-compressed shards",
        "model_garden": "yes, with file_type: tfrecord_compressed",
    }
