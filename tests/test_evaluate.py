"""``labelfix evaluate`` and :mod:`labelfix.training.evaluate`: full-resolution scores of a
model on a split, void never counted, the same mean IoU as Keras' own metric.

One model (untrained, fixed seed: its predictions are arbitrary but deterministic, which is
all a scoring test needs) and one split of mixed-size records, shared by the module.
"""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import keras  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from PIL import Image  # noqa: E402
from train_fixtures import (  # noqa: E402
    CLASS_NAMES,
    shrink_first_mask,
    write_split,
    write_void_split,
)

from labelfix.errors import LabelfixError  # noqa: E402
from labelfix.training.evaluate import (  # noqa: E402
    EvaluationReport,
    evaluate,
    write_outputs,
)
from labelfix.training.model import build_model  # noqa: E402
from labelfix.training.sources import read_split  # noqa: E402

#: Both orientations, sizes no multiple of 16: padded on their own, never resized.
SIZES = [(36, 52), (52, 36), (23, 41)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """``(records, model path, model, the report of evaluate(model, records))``."""
    root = tmp_path_factory.mktemp("evaluate")
    records = write_split(root, "val", SIZES, seed=4)
    keras.utils.set_random_seed(7)
    model = build_model(num_classes=4, width=4)
    path = root / "model.keras"
    model.save(path)
    return records, path, model, evaluate(model, records, split="val", batch_size=2)


def reference_predictions(model, records):
    """Each image run alone, eagerly: padded with 0 to multiples of 16, logits cropped back."""
    for image, mask, _ in read_split(records, "val").dataset:
        h, w = mask.shape
        padded = tf.pad(image, [[0, -h % 16], [0, -w % 16], [0, 0]])[tf.newaxis]
        logits = model(padded, training=False)[0, :h, :w]
        yield mask.numpy(), np.argmax(logits.numpy(), axis=-1)


def test_mean_iou_equals_keras_mean_iou_on_the_same_predictions(setup):
    """The report's mean IoU is Keras' ``MeanIoU(num_classes, ignore_class=-1)`` fed the same
    full-resolution predictions; every valid pixel counted once (padding and void never), in
    int64."""
    records, _, model, report = setup
    metric = keras.metrics.MeanIoU(num_classes=4, ignore_class=-1, sparse_y_pred=True)
    cm = np.zeros((4, 4), np.int64)
    for mask, prediction in reference_predictions(model, records):
        metric.update_state(mask, prediction)
        valid = mask != -1
        np.add.at(cm, (mask[valid], prediction[valid]), 1)
    assert report.mean_iou == pytest.approx(float(metric.result()), abs=1e-6)
    np.testing.assert_array_equal(report.confusion, cm)
    assert report.confusion.dtype == np.int64
    manifest = json.loads((records / "val.labelfix.json").read_text())
    assert report.valid_pixels == sum(manifest["class_pixel_counts"])
    assert report.void_pixels == manifest["ignore_pixels"] > 0
    assert report.images == len(SIZES)
    assert report.class_names == CLASS_NAMES


def test_scores_from_a_hand_checkable_matrix():
    """Per-class IoU, pixel accuracy and the mean over the classes present (class 2 is absent
    from labels and predictions: left out, as Keras does)."""
    cm = np.array([[3, 1, 0], [0, 2, 0], [0, 0, 0]], np.int64)
    report = EvaluationReport("m.keras", "records", "val", ("a", "b", "c"), cm, images=1)
    assert report.iou[:2].tolist() == [0.75, 2 / 3] and np.isnan(report.iou[2])
    assert report.mean_iou == pytest.approx((0.75 + 2 / 3) / 2)
    assert report.pixel_accuracy == pytest.approx(5 / 6)
    assert report.classes_present == 2
    row = report.to_dict()["per_class"][2]
    assert row == {"id": 2, "name": "c", "iou": None, "pixels": 0, "predicted_pixels": 0}


def test_cli_evaluate_json_and_files(setup, tmp_path):
    """--json: one document with the scores (those of the library), per-class rows with the
    manifest's class names and the matrix; --output holds confusion.csv (counts, rows truth),
    confusion.png and report.json."""
    records, path, _, report = setup
    from labelfix.cli import main

    out = tmp_path / "eval"
    result = CliRunner().invoke(
        main, ["evaluate", str(path), str(records), "--split", "val", "-o", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["ok"] is True
    assert document["mean_iou"] == pytest.approx(report.mean_iou)
    assert document["pixel_accuracy"] == pytest.approx(report.pixel_accuracy)
    assert [row["name"] for row in document["per_class"]] == list(CLASS_NAMES)
    assert document["confusion_matrix"] == report.confusion.tolist()
    assert document["files"]["csv"] == str(out / "confusion.csv")
    rows = list(csv.reader(io.StringIO((out / "confusion.csv").read_text())))
    assert rows[0] == ["truth\\prediction", *CLASS_NAMES]
    assert [int(v) for row in rows[1:] for v in row[1:]] == report.confusion.ravel().tolist()
    with Image.open(out / "confusion.png") as png:
        assert png.format == "PNG" and png.size[0] > 200
    assert json.loads((out / "report.json").read_text())["mean_iou"] == document["mean_iou"]


def test_text_report(setup):
    from labelfix.cli.evaluate import report_lines

    report = setup[3]
    lines = "\n".join(report_lines(report)).splitlines()
    assert lines[0].split() == ["id", "class", "IoU", "pixels", "predicted"]
    assert lines[1].split()[:2] == ["0", "background"]
    assert lines[-2].startswith(f"Pixel accuracy: {report.pixel_accuracy:.4f} (")
    assert "void px not counted" in lines[-2]
    assert lines[-1].startswith(f"Mean IoU: {report.mean_iou:.4f} over the ")


def test_without_matplotlib_the_heat_map_is_skipped_with_a_note(setup, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name)
    )
    written = write_outputs(setup[3], tmp_path)
    assert written["png"] is None and "pip install 'labelfix[viz]'" in written["note"]
    assert (tmp_path / "confusion.csv").is_file() and not (tmp_path / "confusion.png").exists()


def test_errors_name_the_file(setup, tmp_path):
    records = setup[0]
    with pytest.raises(LabelfixError, match="the model scores 3 classes"):
        evaluate(build_model(num_classes=3, width=4), records, split="val")
    from labelfix.cli import main

    bogus = tmp_path / "model.keras"
    bogus.write_bytes(b"not a zip")
    result = CliRunner().invoke(main, ["evaluate", str(bogus), str(records), "-o", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"labelfix: error: {bogus}: not a readable .keras model")
    assert "File not found" not in result.stderr  # Keras' words for a damaged file (regression)


def test_a_mask_of_another_size_than_its_image_names_its_record(setup, tmp_path):
    """Regression (issue 21): ``evaluate --no-verify`` on a record whose mask is smaller than
    its image stopped with TensorFlow's "Cannot batch tensors with different shapes", naming
    no record (training on it went on, on crops that do not line up). The record is named:
    shard, index and source id, with both sizes."""
    import shutil

    from labelfix.cli import main

    records, path = setup[0], setup[1]
    shutil.copytree(records, tmp_path / "records")
    shrink_first_mask(tmp_path / "records", "val")
    for extra in ([], ["--no-verify"]):
        result = CliRunner().invoke(
            main,
            ["evaluate", str(path), str(tmp_path / "records"), "-o", str(tmp_path / "e"), *extra],
        )
        assert result.exit_code == 1, result.output
        assert result.stderr == (
            "labelfix: error: val-00000-of-00001.tfrecord: record 0 (0000): mask is 31x49 px "
            "(HxW), its image 36x52 px: a mask must cover its image pixel for pixel\n"
        )


def test_an_all_void_split_is_refused_not_scored(setup, tmp_path):
    """Regression (issue 21): evaluating a split whose every pixel is void reported pixel
    accuracy 0 and mean IoU 0 as if they were scores; it is refused, saying why: from the
    manifest's pixel counts before the model runs, else (a manifest without them) after."""
    import json

    model = setup[2]
    void = write_void_split(tmp_path, "val")
    with pytest.raises(LabelfixError) as err:
        evaluate(model, void, split="val")
    assert str(err.value) == (
        f"{void}: split 'val' has no labelled pixels (all 512 px are void, ignore 255): "
        "nothing to score; is the ignore value right?"
    )
    manifest = json.loads((void / "val.labelfix.json").read_text())
    del manifest["class_pixel_counts"]
    (void / "val.labelfix.json").write_text(json.dumps(manifest))
    with pytest.raises(LabelfixError) as err:
        evaluate(model, void, split="val")
    assert str(err.value) == (
        f"{void}: split 'val' has no labelled pixels (every pixel of its 2 images is void): "
        "nothing to score; is the ignore value right?"
    )
