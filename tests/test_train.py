"""The reference training loop: it learns, replicas agree with one device, outputs, resuming,
the checks before and during training, and the CLI.

Every ``train`` call spends seconds tracing its steps, and more compiling them with XLA
(``jit_compile=True``, the default). So runs are shared through module-scoped fixtures (real
TFRecords of mixed sizes and orientations, written once through ``labelfix to-tfrecord``; one
run through the Python API and its resumption), and the tests train without XLA except where
XLA is the subject (the replica test) or the path under test (the CLI's regression run).
"""

from __future__ import annotations

import importlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import click
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import keras  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from train_fixtures import (  # noqa: E402
    CLASS_NAMES,
    REPLICA_SCRIPT,
    run_replica_script,
    shapes,
    shrink_first_mask,
    write_split,
    write_void_split,
)

from labelfix.errors import LabelfixError, UsageError  # noqa: E402
from labelfix.labels.weights import median_frequency_weights  # noqa: E402
from labelfix.training.checkpoints import load_weights  # noqa: E402
from labelfix.training.devices import resolve_precision  # noqa: E402
from labelfix.training.loop import train  # noqa: E402
from labelfix.training.model import build_model  # noqa: E402
from labelfix.training.pipelines import bad_label_message, training_pipeline  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: Training images: landscape, portrait and square, none a multiple of 16 in both sides.
TRAIN_SIZES = [(32, 48), (48, 32), (40, 40), (36, 20)] * 2
#: Validation images as VOC has them, in miniature: both orientations, odd sizes (two padded
#: sizes, 48x64 and 64x48: each is traced once).
VAL_SIZES = [(36, 52), (52, 36), (40, 60)]
TINY = dict(crop_size=(16, 16), scale_range=None, width=4, batch_size=4)
#: Steps per epoch and learning rate of the shared run (crops of 32x32): enough to learn.
STEPS = 40
LR = 1e-2


def dataset(images, masks):
    return tf.data.Dataset.from_tensor_slices((images, masks))


def tiny_train(**kwargs):
    """A few steps of the smallest model on 16x16 crops."""
    images, masks = shapes(8, seed=0, size=16)
    defaults = dict(num_classes=4, epochs=1, steps_per_epoch=2, dataset=dataset(images, masks))
    return train(**{**TINY, **defaults, **kwargs})


def run_cli(*args):
    from labelfix.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """``labelfix to-tfrecord`` output: 8 training and 3 validation images of mixed sizes and
    orientations, 4 classes with names, void stored as 255 and read as -1."""
    root = tmp_path_factory.mktemp("records")
    write_split(root, "train", TRAIN_SIZES, seed=0)
    return write_split(root, "val", VAL_SIZES, seed=1)


def _without_xla(monkeypatch) -> None:
    """``train`` builds its train step without XLA: where the CLI or the loop, not the step, is
    under test (the replica test compiles the step with XLA)."""
    from labelfix.training import steps

    def make_train_step(**kwargs):
        return steps.make_train_step(**{**kwargs, "jit_compile": False})

    monkeypatch.setattr("labelfix.training.loop.make_train_step", make_train_step)


@pytest.fixture(scope="module")
def run(records, tmp_path_factory):
    """The shared run, interrupted: epoch 1 through the Python API (from ``weights=``, with a
    validation split, ``output`` and ``progress``); then epoch 2 by ``labelfix train ...
    --val-split val --resume --json`` on the same output. Returns its pieces: ``first`` (the
    API's TrainResult), ``events``, ``cli`` (the CLI's result), ``document`` (its JSON),
    ``out``, ``iterations`` (the optimizer's, in the checkpoints of epochs 1 and 2)."""
    root = tmp_path_factory.mktemp("run")
    keras.utils.set_random_seed(11)
    build_model(num_classes=4, width=4).save_weights(root / "init.weights.h5")
    out, events = root / "run", []
    first = train(
        data_dir=records,
        val_split="val",
        num_classes=4,
        epochs=1,
        output=out,
        weights=root / "init.weights.h5",
        steps_per_epoch=STEPS,
        learning_rate=LR,
        progress=events.append,
        jit_compile=False,
        crop_size=(32, 32),
        width=4,
        batch_size=4,
    )
    saved = keras.models.load_model(first.model_path)  # before the CLI run replaces it
    x = np.random.default_rng(0).uniform(size=(1, 16, 16, 3)).astype(np.float32)
    saved_matches = np.allclose(saved.predict(x, verbose=0), first.model(x), atol=1e-5)
    iterations = [_iterations(out / "checkpoints" / "epoch-1")]
    with pytest.MonkeyPatch.context() as monkeypatch:
        _without_xla(monkeypatch)
        cli = run_cli(
            "train",
            records,
            "-n",
            4,
            "-e",
            2,
            "-b",
            4,
            "--steps-per-epoch",
            STEPS,
            "--val-split",
            "val",
            "--crop-size",
            32,
            "--width",
            4,
            "--lr",
            LR,
            "--output",
            out,
            "--resume",
            "--json",
        )
    assert cli.exit_code == 0, cli.output
    iterations.append(_iterations(out / "checkpoints" / "epoch-2"))
    return SimpleNamespace(
        saved_matches=saved_matches,
        first=first,
        events=events,
        cli=cli,
        document=json.loads(cli.stdout),
        out=out,
        iterations=iterations,
    )


def _iterations(prefix: Path) -> int:
    reader = tf.train.load_checkpoint(str(prefix))
    return int(reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"))


# --------------------------------------------------------------------------- small pieces


def test_median_frequency_weights():
    assert median_frequency_weights([600, 300, 100, 0]) == (0.5, 1.0, 3.0, 1.0)
    # Eigen & Fergus: frequency within the images where the class occurs.
    assert median_frequency_weights([600, 300, 100], [1000, 1000, 200]) == (0.833333, 1.666667, 1.0)
    assert median_frequency_weights([5, 5]) == (1.0, 1.0)
    with pytest.raises(LabelfixError, match="no labelled pixels"):
        median_frequency_weights([0, 0])


@pytest.mark.parametrize(
    "module",
    [
        "labelfix.training.devices",
        "labelfix.training.steps",
        "labelfix.training.pipelines",
        "labelfix.training.loop",
        "labelfix.training.history",
        "labelfix.training.checkpoints",
        "labelfix.training.summaries",
        "labelfix.training.sources",
        "labelfix.training.inference",
        "labelfix.training.evaluate",
        "labelfix.training.predict",
        "labelfix.cli.train",
    ],
)
def test_docstring_examples_run(module):
    import doctest

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0


def test_precision_is_float32_on_cpu():
    assert not tf.config.list_physical_devices("GPU")
    assert resolve_precision("auto") == "float32"
    assert resolve_precision("mixed_bfloat16") == "mixed_bfloat16"
    with pytest.raises(UsageError, match="precision"):
        resolve_precision("float16")


def test_argument_errors(tmp_path):
    with pytest.raises(UsageError, match="multiples of 16"):
        tiny_train(crop_size=(20, 20))
    with pytest.raises(LabelfixError, match="fewer examples than one batch"):
        tiny_train(batch_size=16, steps_per_epoch=None)
    with pytest.raises(UsageError, match="give a data_dir or a dataset"):
        tiny_train(dataset=None)
    with pytest.raises(UsageError, match="resume=True needs the output"):
        tiny_train(resume=True)
    with pytest.raises(LabelfixError, match="no checkpoint to resume from"):
        tiny_train(resume=True, output=tmp_path / "never-trained")


def test_load_weights_from_keras_and_h5_files(tmp_path):
    keras.utils.set_random_seed(1)
    source = build_model(num_classes=3, width=4)
    source.save(tmp_path / "m.keras")
    source.save_weights(tmp_path / "m.weights.h5")
    for name in ("m.keras", "m.weights.h5"):
        target = build_model(num_classes=3, width=4)
        load_weights(target, tmp_path / name)
        for a, b in zip(source.get_weights(), target.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(LabelfixError, match=r"m\.keras: does not fit this model"):
        load_weights(build_model(num_classes=5, width=4), tmp_path / "m.keras")
    (tmp_path / "m.bin").write_bytes(b"")
    with pytest.raises(LabelfixError, match=r"expected a \.keras or \.weights\.h5 file"):
        load_weights(source, tmp_path / "m.bin")


def test_weights_that_are_no_keras_file_are_one_line(records, tmp_path):
    """Regression (issue 21): ``train --weights`` on a file that is no Keras file (text named
    .keras, a PNG, a cut-short archive) was a BadZipFile traceback; a .weights.h5 that is no
    HDF5 file was reported as "does not fit this model". Each is one line naming the file."""
    model = build_model(num_classes=4, width=4)
    model.save(tmp_path / "whole.keras")
    whole = (tmp_path / "whole.keras").read_bytes()
    cases = {
        "text.keras": (b"not a model", "not a readable .keras file (a .keras file is a zip"),
        "cut.keras": (whole[: len(whole) // 2], "not a readable .keras file (a .keras file"),
        "text.weights.h5": (b"not a model", "not a readable weights file (Unable to"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(LabelfixError) as err:
            load_weights(model, tmp_path / name)
        assert str(err.value).startswith(f"{tmp_path / name}: {message}"), err.value
    args = ["train", records, "-n", 4, "-e", 1, "-b", 4, "--crop-size", 16, "--width", 4]
    result = run_cli(*args, "-o", tmp_path / "out", "--weights", tmp_path / "text.keras")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"labelfix: error: {tmp_path / 'text.keras'}: not a readable")
    assert len(result.stderr.splitlines()) == 1


def test_resume_from_a_damaged_checkpoint_names_it(run, records, tmp_path):
    """Regression (issue 21): ``train --resume`` after a checkpoint was cut short (a full disk,
    an interrupted copy) was an IndexError traceback ("Read less bytes than requested") or
    TensorFlow's "not an sstable" naming nothing; a damaged checkpoint list said there was no
    checkpoint. Each is one line naming the file, and the earlier checkpoints there."""

    def damaged(name: str, cut: str) -> Path:
        copy = tmp_path / name
        shutil.copytree(run.out, copy)
        path = copy / "checkpoints" / cut
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return copy

    data = damaged("data", "epoch-2.data-00000-of-00001")
    args = ["train", records, "-n", 4, "-e", 3, "-b", 4, "--crop-size", 16, "--width", 4]
    result = run_cli(*args, "-o", data, "--resume")
    assert result.exit_code == 1
    assert result.stderr == (
        f"labelfix: error: {data / 'checkpoints' / 'epoch-2'}: damaged checkpoint, cannot "
        "resume from it (Read less bytes than requested: cut short by a full disk or an "
        "interrupted copy?); the earlier checkpoints here (epoch-1) are named in "
        f"{data / 'checkpoints' / 'checkpoint'}\n"
    )
    index = damaged("index", "epoch-2.index")
    with pytest.raises(LabelfixError, match=r"epoch-2: damaged checkpoint, cannot resume from"
                       r" it \(not an sstable"):  # fmt: skip
        tiny_train(resume=True, output=index, epochs=3, jit_compile=False)
    state = damaged("state", "checkpoint")
    with pytest.raises(LabelfixError) as err:
        tiny_train(resume=True, output=state, epochs=3, jit_compile=False)
    assert str(err.value) == (
        f"{state / 'checkpoints' / 'checkpoint'}: damaged or missing checkpoint list, so the "
        'newest of epoch-1, epoch-2 is unknown; write the line model_checkpoint_path: "epoch-2" '
        "into it to resume from that one"
    )


def test_a_mask_of_another_size_than_its_image_stops_training_naming_it(records, tmp_path):
    """Regression (issue 21): a record whose mask is smaller than its image (manifest and
    digests consistent) was trained on silently, image and mask cropped out of line. The
    first batch holding it stops the run, naming shard, record and both sizes."""
    shutil.copytree(records, tmp_path / "records")
    shrink_first_mask(tmp_path / "records", "train")
    with pytest.raises(LabelfixError) as err:
        tiny_train(dataset=None, data_dir=tmp_path / "records", jit_compile=False)
    assert str(err.value) == (
        "train-00000-of-00001.tfrecord: record 0 (0000): mask is 27x45 px (HxW), its image "
        "32x48 px: a mask must cover its image pixel for pixel"
    )


def test_an_all_void_split_is_refused_not_trained_on(records, tmp_path):
    """Regression (issue 21): training on a split whose every pixel is void printed ``loss
    0.0000 ... mIoU 0.0000`` epoch after epoch as if it were a result; as --val-split it gave
    val_loss 0 and val_mIoU 0. Both are refused before training, saying why."""
    void = write_void_split(tmp_path, "void")
    args = ["train", void, "-n", 4, "-e", 1, "-b", 2, "--crop-size", 16, "--width", 4]
    result = run_cli(*args, "--split", "void", "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert result.stderr == (
        f"labelfix: error: {void}: split 'void' has no labelled pixels (all 512 px are void, "
        "ignore 255): nothing to train on; is the ignore value right?\n"
    )
    shutil.copytree(records, tmp_path / "both")
    for name in ("void.labelfix.json", "void-00000-of-00001.tfrecord"):
        shutil.copy(void / name, tmp_path / "both" / name)
    with pytest.raises(LabelfixError, match=r"split 'void' has no labelled pixels .*: validation"):
        tiny_train(dataset=None, data_dir=tmp_path / "both", val_split="void", jit_compile=False)


# --------------------------------------------------------------------------- labels: the guard


def test_training_pipeline_rejects_a_label_that_is_no_class_before_the_step():
    """A mask value that is neither ``ignore`` nor ``0..C-1`` (here 255 with ignore -1, as when
    void was not remapped) stops the pipeline when its batch is read, naming the example; it
    is never clamped to a class."""
    images, masks = shapes(4, seed=0, size=16)
    masks[2, 3, 5:9] = 255
    batches = training_pipeline(
        dataset(images, masks),
        batch_size=4,
        crop_size=(16, 16),
        scale_range=None,
        ignore=-1,
        num_classes=4,
        seed=0,
    )
    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
        next(iter(batches))
    message = bad_label_message(raised.value)
    assert message == (
        "example 2: value 255 is not a class id (expected 0..3 or ignore -1): 4 px, "
        "first at y=3 x=5"
    )
    uint8 = np.where(masks < 0, 255, masks).astype(np.uint8)
    with pytest.raises(ValueError, match="ignore=-1 does not fit the mask dtype uint8"):
        training_pipeline(dataset(images, uint8), batch_size=4, crop_size=(16, 16), num_classes=4)
    clean = training_pipeline(
        dataset(images, np.minimum(masks, 3)),
        batch_size=4,
        crop_size=(16, 16),
        scale_range=None,
        num_classes=4,
    )
    assert next(iter(clean))[1].shape == (4, 16, 16)


def test_cli_rejects_a_bad_label_naming_record_and_shard(records, tmp_path):
    """Records whose manifest claims 3 classes while masks hold class 3: one line naming the
    shard, the record and its source id; exit 1; no traceback."""
    copy = tmp_path / "records"
    shutil.copytree(records, copy)
    manifest_file = copy / "train.labelfix.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["num_classes"] = 3
    manifest_file.write_text(json.dumps(manifest))
    result = run_cli(
        "train",
        copy,
        "-n",
        3,
        "-e",
        1,
        "-b",
        4,
        "--crop-size",
        16,
        "--width",
        4,
        "-o",
        tmp_path / "out",
    )
    assert result.exit_code == 1, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("labelfix: error: train-00000-of-00001.tfrecord: record ")
    assert ": value 3 is not a class id (expected 0..2 or ignore -1): " in last
    assert " px, first at y=" in last
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------- shards


def test_cli_checks_shards_against_the_manifest(records, tmp_path):
    """A shard of another size or digest stops the run before training, naming it; with
    --no-verify a damaged record is still named (shard and record) when TensorFlow reads it."""
    copy = tmp_path / "records"
    shutil.copytree(records, copy)
    shard = copy / "train-00000-of-00001.tfrecord"
    data = shard.read_bytes()
    args = ["train", copy, "-n", 4, "-e", 1, "-b", 4, "--crop-size", 16, "--width", 4]
    args += ["-o", tmp_path / "out"]

    shard.write_bytes(data + b"\0")
    result = run_cli(*args)
    assert result.exit_code == 1
    assert f"{shard}: {len(data) + 1} bytes, the manifest says {len(data)}" in result.stderr

    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0xFF  # inside some record's data: its CRC fails
    shard.write_bytes(bytes(damaged))
    result = run_cli(*args)
    assert result.exit_code == 1
    assert f"{shard}: sha256 " in result.stderr and "does not match the manifest" in result.stderr

    result = run_cli(*args, "--no-verify")
    assert result.exit_code == 1, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert f"{shard}: record " in last and "bad data checksum" in last
    assert "TensorFlow: corrupted record at" in last
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------- replicas


@pytest.mark.slow
def test_two_replicas_give_single_device_loss_and_gradients():
    """Two logical CPU devices (set up in a fresh process, before TensorFlow initialises) under
    MirroredStrategy, the XLA step, and replicas holding very different numbers of valid pixels:
    loss, summed gradients and confusion matrix equal one device's on the same batch (a plain
    GradientTape), and so does validation's confusion matrix (with a batch the replicas cannot
    split evenly). The step is the subject, so the model is a small GroupNorm net; XLA compiles
    at LLVM optimisation level 0: the same arithmetic (no fast math), less compile time."""
    out = run_replica_script(REPLICA_SCRIPT)
    assert out["replicas"] == 2
    ref, two = out["loss"]
    assert two == pytest.approx(ref, rel=1e-5)
    assert abs(out["naive"] - ref) > 0.1 * ref  # the mean of replica means would be wrong
    assert out["grad_scale"] > 1e-3
    assert out["two_vs_ref"] <= 1e-4 * out["grad_scale"]
    assert out["cm_equal"]
    assert out["class_loss"][0] == pytest.approx(out["class_loss"][1], rel=1e-5)
    assert out["val_equal"]  # validation split over replicas: one device's confusion matrix


# --------------------------------------------------------------------------- the shared run


def test_saves_model_history_and_reports_progress(run):
    first = run.first
    assert first.devices == ("CPU:0",) and first.precision == "float32"
    assert first.num_replicas == 1 and first.steps_per_epoch == STEPS
    assert [e.kind for e in run.events] == ["start"] + ["step"] * STEPS + ["validate", "epoch"]
    assert run.events[0].devices == ("CPU:0",) and run.events[0].epoch == 0
    record = json.loads((run.out / "history.json").read_text())
    assert record["devices"] == ["CPU:0"] and record["ignore"] == -1
    assert record["class_names"] == list(CLASS_NAMES)
    assert [e["epoch"] for e in record["epochs"]] == [1, 2]
    for epoch in record["epochs"]:
        for key in ("loss", "pixel_accuracy", "mean_iou", "val_loss", "val_mean_iou"):
            assert 0.0 <= epoch[key] < 10.0
        assert list(epoch["iou_per_class"]) == list(CLASS_NAMES)
        assert epoch["learning_rate"] > 0
    assert run.saved_matches  # model.keras reloads as the trained model
    assert keras.models.load_model(run.out / "model.keras").output_shape == (None, None, None, 4)


def test_cli_validates_mixed_size_records_regression_issue_12(run):
    """Regression (issue 12): `labelfix train RECORDS --val-split val` on images of several
    sizes and both orientations (here 36x52, 52x36, 40x60) crashed in the validation pass with
    OperatorNotAllowedInGraphError (Keras' bilinear UpSampling2D traced with an unknown
    height). Validation now scores each image whole. The run also shows --json: one document
    on stdout (history, devices, paths), the epoch lines on stderr."""
    result, document = run.cli, run.document
    assert "OperatorNotAllowedInGraphError" not in result.output
    assert document["ok"] is True and document["devices"] == ["CPU:0"]
    assert document["precision"] == "float32" and document["steps_per_epoch"] == STEPS
    assert all(e["val_mean_iou"] is not None for e in document["history"])
    assert document["model"] == str(run.out / "model.keras")
    assert document["checkpoints"] == str(run.out / "checkpoints")
    assert document["logs"] == str(run.out / "logs")
    assert (run.out / "model.keras").is_file() and (run.out / "history.json").is_file()
    assert "epoch 2/2  loss " in result.stderr
    assert "[" not in result.stderr  # no progress bar when stderr is not a terminal


def test_resume_continues_epochs_and_optimizer_state(run):
    """Interrupted after epoch 1, resumed to 2 epochs: the history continues 1, 2 (epoch 1 as
    first recorded), the optimizer's iteration count continues (STEPS, then 2 * STEPS), and
    only epoch 2 is trained."""
    document = run.document
    assert document["resumed_from"] == 1
    assert [e["epoch"] for e in document["history"]] == [1, 2]
    assert document["history"][0] == json.loads(json.dumps(asdict(run.first.history[0])))
    assert run.iterations == [STEPS, 2 * STEPS]
    assert "resuming after epoch 1" in run.cli.stderr
    assert "epoch 1/2" not in run.cli.stderr
    assert sorted(p.name for p in (run.out / "checkpoints").glob("*.index")) == [
        "epoch-1.index",
        "epoch-2.index",
    ]


def test_learns_across_the_resumed_run(run):
    """Coloured shapes with void borders, 2 x 40 steps of scaled 32x32 crops, a width-4 model,
    interrupted and resumed: the loss falls (by about a fifth), and whole-image validation
    (void excluded) reaches a mean IoU of about 0.44, where predicting the majority class
    (background, 75% of the valid pixels) gives 0.19."""
    history = run.document["history"]
    assert history[-1]["loss"] < 0.9 * history[0]["loss"], history
    assert history[-1]["val_mean_iou"] >= 0.35, history


def test_tensorboard_scalars(run):
    """Event files under logs/train and logs/validation hold loss, mIoU, pixel accuracy,
    learning rate and per-class IoU (by class name) at epochs 1 and 2 (two runs, one log)."""
    found = {}
    for log in ("train", "validation"):
        files = sorted((run.out / "logs" / log).glob("events.out.tfevents.*"))
        assert len(files) == 2, log  # the first run's and the resumed run's
        tags = found[log] = {}
        for file in files:
            for event in tf.compat.v1.train.summary_iterator(str(file)):
                for value in event.summary.value:
                    tags.setdefault(value.tag, []).append(event.step)
    assert {"loss", "pixel_accuracy", "mean_iou", "learning_rate"} <= set(found["train"])
    per_class = {f"iou/{name}" for name in CLASS_NAMES}
    assert {"loss", "pixel_accuracy", "mean_iou"} | per_class <= set(found["validation"])
    assert sorted(found["train"]["loss"]) == [1, 2]
    assert sorted(found["validation"]["mean_iou"]) == [1, 2]


def test_class_weights_auto_from_manifest(records):
    from labelfix.records.manifest import read_manifest
    from labelfix.training.loop import _class_weights

    manifest = read_manifest(records, "train")
    expected = median_frequency_weights(
        manifest["class_pixel_counts"], manifest["class_image_pixels"]
    )
    assert _class_weights("auto", manifest, 4, records) == expected
    assert _class_weights(None, manifest, 4, records) is None
    with pytest.raises(LabelfixError, match="expected 4 class weights, got 2"):
        _class_weights([1.0, 2.0], manifest, 4, records)


# --------------------------------------------------------------------------- precision


def test_mixed_precision_runs_on_cpu():
    """The GPU precisions, on the CPU without XLA (XLA's CPU backend cannot compile bf16/f16
    convolution gradients, so train refuses that combination with a clear message). One run,
    float16: its loss-scale optimizer is the longer path (bfloat16 differs only in the dtype)."""
    for precision in ("mixed_bfloat16", "mixed_float16"):
        with pytest.raises(UsageError, match="XLA's CPU backend"):
            tiny_train(precision=precision)
    precision = "mixed_float16"
    result = tiny_train(precision=precision, jit_compile=False, steps_per_epoch=1)
    assert result.precision == precision
    assert np.isfinite(result.history[0].loss)
    assert result.model.layers[-1].compute_dtype == precision.removeprefix("mixed_")


# --------------------------------------------------------------------------- the CLI


def test_cli_usage_errors_exit_2(tmp_path):
    result = run_cli("train", tmp_path, "-n", 4, "-e", 1, "-b", 2, "--crop-size", 30)
    assert result.exit_code == 2
    assert "multiples of 16" in result.output
    weights = tmp_path / "w.txt"
    weights.write_text("1.0, x")
    result = run_cli("train", tmp_path, "-n", 2, "-e", 1, "-b", 2, "--class-weights", weights)
    assert result.exit_code == 2
    assert "expected numbers" in result.output
    result = run_cli("train", tmp_path, "-n", 2, "-e", 1, "-b", 2, "--resume", "--weights", weights)
    assert result.exit_code == 2
    assert "continues from the checkpoint: it takes no weights" in result.stderr


def test_cli_data_problems_are_one_line_exit_1(records, tmp_path):
    result = run_cli("train", records, "-n", 7, "-e", 1, "-b", 4, "--crop-size", 16)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1].startswith("labelfix: error: ")
    assert "manifest says num_classes=4" in result.stderr
    assert "Traceback" not in result.output
    result = run_cli(
        "train",
        records,
        "-n",
        4,
        "-e",
        1,
        "-b",
        4,
        "--crop-size",
        16,
        "--width",
        4,
        "-o",
        tmp_path / "new",
        "--resume",
        "--json",
    )
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["ok"] is False and "no checkpoint to resume from" in document["error"]
    (tmp_path / "weights.bin").write_bytes(b"")
    result = run_cli(
        "train",
        records,
        "-n",
        4,
        "-e",
        1,
        "-b",
        4,
        "--crop-size",
        16,
        "--width",
        4,
        "-o",
        tmp_path / "new",
        "--weights",
        tmp_path / "weights.bin",
    )
    assert result.exit_code == 1
    assert "weights.bin: expected a .keras or .weights.h5 file" in result.stderr


def test_cli_without_tensorflow_names_the_extra(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tensorflow" else real(name)
    )
    result = run_cli("train", tmp_path, "-n", 4, "-e", 1, "-b", 2)
    assert result.exit_code == 1
    assert "pip install 'labelfix[tf]'" in result.stderr


def test_cli_class_weights_file(tmp_path):
    weights = tmp_path / "weights.json"
    weights.write_text(json.dumps({"1": 2.5}))
    from labelfix.cli.train import _check_class_weights

    assert _check_class_weights(None, None, str(weights)) == (1.0, 2.5)
    weights.write_text("0.5 1\n2 3")
    assert _check_class_weights(None, None, str(weights)) == (0.5, 1.0, 2.0, 3.0)
    # Regression (a hostile-user pass): all-zero weights trained nothing at loss 0.0, NaN and
    # inf failed only after a whole epoch; a wrong count did not name the file.
    for text, message in (("0 0", "every weight is 0"), ("1 nan", "finite"), ("inf 1", "finite")):
        weights.write_text(text)
        with pytest.raises(click.BadParameter, match=message):
            _check_class_weights(None, None, str(weights))
    weights.write_text("1 2 3")
    result = run_cli("train", tmp_path, "-n", 2, "-e", 1, "-b", 2, "--class-weights", weights)
    assert result.exit_code == 2
    assert f"{weights}: 3 class weights, expected 2" in result.stderr


def test_progress_bar_on_a_terminal_shows_rate_and_eta(capsys):
    from labelfix.cli.train import TrainProgress
    from labelfix.training.history import EpochStats, Progress

    bar = TrainProgress(enabled=True)
    bar(Progress("start", 0, 2, steps=4, devices=("CPU:0",), precision="float32"))
    for step in range(1, 5):
        bar(Progress("step", 1, 2, step=step, steps=4, loss=0.5))
    bar(Progress("epoch", 1, 2, 4, 4, stats=EpochStats(1, 0.5, 0.8, 0.6)))
    captured = capsys.readouterr()
    assert "\repoch 1/2: 4/4 steps [" in captured.err
    assert "/s ETA 0:00 loss 0.5000" in captured.err
    assert captured.out.startswith("epoch 1/2  loss 0.5000")


def test_saved_model_loads_compiled_and_evaluates(run):
    """Found trying labelfix as a new user: `labelfix train` saved model.keras uncompiled
    (`model.compiled` False after load_model, `evaluate` raised "You must call compile()"),
    although the README says it loads compiled with labelfix's loss and MeanIoU."""
    import labelfix

    model = keras.saving.load_model(run.out / "model.keras")
    assert model.compiled
    assert isinstance(model.loss, labelfix.MaskedSparseCategoricalCrossentropy)
    assert model.loss.ignore == -1
    x = np.random.default_rng(1).uniform(0, 255, size=(2, 16, 16, 3)).astype(np.float32)
    y = np.random.default_rng(2).integers(-1, 4, size=(2, 16, 16)).astype(np.int32)
    scores = model.evaluate(x, y, verbose=0, return_dict=True)
    assert np.isfinite(scores["loss"])
    assert 0.0 <= scores["mean_iou"] <= 1.0
