"""The reference training loop: it learns, replicas agree with one device, outputs, and the CLI.

Every ``train`` call spends seconds tracing its steps, and several more compiling them with XLA
(``jit_compile=True``, the default). So runs are shared through module-scoped fixtures, and the
tests train without XLA except where XLA is the subject (the replica test: two XLA replicas
give the plain step's loss and gradients) or the path under test (the end-to-end CLI run).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import keras  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from train_fixtures import install_fake_data, shapes  # noqa: E402

from labelfix.errors import LabelfixError  # noqa: E402
from labelfix.labels.weights import median_frequency_weights  # noqa: E402
from labelfix.training import steps  # noqa: E402
from labelfix.training.devices import resolve_precision  # noqa: E402
from labelfix.training.loop import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def dataset(images, masks):
    return tf.data.Dataset.from_tensor_slices((images, masks))


def tiny_train(**kwargs):
    """A few steps of the smallest model on 16x16 crops."""
    images, masks = shapes(8, seed=0, size=16)
    defaults = dict(
        num_classes=4,
        epochs=1,
        batch_size=4,
        steps_per_epoch=2,
        dataset=dataset(images, masks),
        crop_size=(16, 16),
        scale_range=None,
        width=4,
    )
    return train(**{**defaults, **kwargs})


# --------------------------------------------------------------------------- small pieces


def test_median_frequency_weights():
    assert median_frequency_weights([600, 300, 100, 0]) == (0.5, 1.0, 3.0, 1.0)
    # Eigen & Fergus: frequency within the images where the class occurs.
    assert median_frequency_weights([600, 300, 100], [1000, 1000, 200]) == (0.833333, 1.666667, 1.0)
    assert median_frequency_weights([5, 5]) == (1.0, 1.0)
    with pytest.raises(LabelfixError, match="no labelled pixels"):
        median_frequency_weights([0, 0])


@pytest.mark.parametrize("module", ["devices", "steps", "pipelines", "loop"])
def test_docstring_examples_run(module):
    import doctest

    result = doctest.testmod(importlib.import_module(f"labelfix.training.{module}"))
    assert result.attempted > 0 and result.failed == 0


def test_precision_is_float32_on_cpu():
    assert not tf.config.list_physical_devices("GPU")
    assert resolve_precision("auto") == "float32"
    assert resolve_precision("mixed_bfloat16") == "mixed_bfloat16"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("float16")


def test_argument_errors():
    with pytest.raises(ValueError, match="multiples of 16"):
        tiny_train(crop_size=(20, 20))
    with pytest.raises(LabelfixError, match="fewer examples than one batch"):
        tiny_train(batch_size=16, steps_per_epoch=None)
    with pytest.raises(ValueError, match="data_dir or dataset"):
        tiny_train(dataset=None)


# --------------------------------------------------------------------------- the learning check


@pytest.mark.slow
def test_learns_coloured_shapes_and_void_content_does_not_matter():
    """160 steps of 4 crops of 32x32 shapes with void borders reach validation mIoU >= 0.75
    (void excluded; about 0.83 in practice), and the loss falls below half (to about a quarter).
    Filling the void pixels with different random content (they carry no label) gives the same
    outcome to within 0.05 mIoU. Without XLA: its compile would cost more than the steps."""
    val = dataset(*shapes(16, seed=99, size=32))
    results = []
    for void_seed in (1, 2):
        images, masks = shapes(64, seed=0, size=32, void_seed=void_seed)
        result = train(
            num_classes=4,
            epochs=4,
            batch_size=4,
            steps_per_epoch=40,
            dataset=dataset(images, masks),
            val_dataset=val,
            crop_size=(32, 32),
            scale_range=(0.75, 1.25),
            width=8,
            learning_rate=5e-3,
            jit_compile=False,
        )
        history = result.history
        assert len(history) == 4
        assert history[-1].loss < 0.5 * history[0].loss
        assert history[-1].val_mean_iou >= 0.75, history
        assert history[-1].val_pixel_accuracy >= 0.9
        results.append(history[-1].val_mean_iou)
    assert abs(results[0] - results[1]) <= 0.05


# --------------------------------------------------------------------------- replicas

REPLICA_SCRIPT = """
import json
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras
import numpy as np

from labelfix.losses import MaskedSparseCategoricalCrossentropy
from labelfix.losses import masked_sparse_categorical_crossentropy as loss_fn
from labelfix.training.devices import make_strategy
from labelfix.training.model import build_model
from labelfix.training.steps import make_train_step, masked_loss

rng = np.random.default_rng(0)
images = rng.normal(size=(4, 16, 16, 3)).astype("float32")
labels = rng.integers(0, 3, size=(4, 16, 16)).astype("int32")
labels[:2] = 1  # replica 0 gets images 0-1: all class 1 (weight 5) ...
labels[:2, :14] = -1  # ... and far fewer valid pixels than replica 1
weights = [1.0, 5.0, 0.5]
keras.utils.set_random_seed(0)
initial = build_model(num_classes=3, width=4).get_weights()

# Reference: one device, no strategy, plain GradientTape on the whole batch.
model = build_model(num_classes=3, width=4)
model.set_weights(initial)
with tf.GradientTape() as tape:
    ref_loss = loss_fn(labels, model(images, training=True), class_weights=weights)
ref_grads = [g.numpy() for g in tape.gradient(ref_loss, model.trainable_variables)]
naive = np.mean([float(loss_fn(labels[i:i + 2], model(images[i:i + 2], training=True),
                               class_weights=weights)) for i in (0, 2)])

def one_step(devices, jit_compile):
    strategy = make_strategy(devices)
    with strategy.scope():
        model = build_model(num_classes=3, width=4)
        model.set_weights(initial)
        optimizer = keras.optimizers.SGD(learning_rate=1.0)  # w_after = w_before - sum(grads)
        optimizer.build(model.trainable_variables)
    step = make_train_step(model=model, optimizer=optimizer, strategy=strategy, num_classes=3,
                           loss_fn=masked_loss(ignore=-1, class_weights=weights),
                           jit_compile=jit_compile)
    before = [v.numpy() for v in model.trainable_variables]
    batches = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
    loss, cm = step(next(iter(strategy.experimental_distribute_dataset(batches))))
    grads = [b - v.numpy() for b, v in zip(before, model.trainable_variables)]
    # The Loss class finds the global count itself inside a replica context.
    with strategy.scope():
        class_loss = MaskedSparseCategoricalCrossentropy(class_weights=weights)
    dist = strategy.experimental_distribute_dataset(batches)
    per_replica = strategy.run(lambda x, y: class_loss(y, model(x, training=True)),
                               args=next(iter(dist)))
    # (weights have moved by now; compare this one with a fresh single-device value below)
    class_sum = float(strategy.reduce("SUM", per_replica, axis=None))
    class_ref = float(loss_fn(labels, model(images, training=True), class_weights=weights))
    return dict(replicas=strategy.num_replicas_in_sync, loss=float(loss), grads=grads,
                cm=cm.numpy().tolist(), class_sum=class_sum, class_ref=class_ref)

# One device without XLA, two with it: the XLA replicas are checked against the plain step.
one, two = one_step(["/cpu:0"], False), one_step(["/cpu:0", "/cpu:1"], True)
scale = max(float(np.abs(g).max()) for g in ref_grads)
diff = lambda a, b: max(float(np.abs(x - y).max()) for x, y in zip(a, b))
print(json.dumps(dict(
    replicas=[one["replicas"], two["replicas"]],
    loss=[float(ref_loss), one["loss"], two["loss"]], naive=float(naive),
    grad_scale=scale, one_vs_ref=diff(one["grads"], ref_grads),
    two_vs_one=diff(two["grads"], one["grads"]), cm_equal=one["cm"] == two["cm"],
    class_loss=[two["class_sum"], two["class_ref"]],
)))
"""


@pytest.mark.slow
def test_two_replicas_give_single_device_loss_and_gradients():
    """Two logical CPU devices (set up in a fresh process, before TensorFlow initialises) under
    MirroredStrategy, the XLA step, and replicas holding very different numbers of valid pixels:
    loss and summed gradients equal one device's on the same batch (the plain step, itself
    checked against a GradientTape). XLA compiles at LLVM optimisation level 0 there: the same
    arithmetic (no fast math), a third less compile time."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    xla_flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()
    env = {**os.environ, "PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "3", "XLA_FLAGS": xla_flags}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(REPLICA_SCRIPT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["replicas"] == [1, 2]
    ref, one, two = out["loss"]
    assert one == pytest.approx(ref, rel=1e-5)
    assert two == pytest.approx(one, rel=1e-5)
    assert abs(out["naive"] - ref) > 0.1 * ref  # the mean of replica means would be wrong
    assert out["grad_scale"] > 1e-3
    assert out["one_vs_ref"] <= 1e-4 * out["grad_scale"]
    assert out["two_vs_one"] <= 1e-4 * out["grad_scale"]
    assert out["cm_equal"]
    assert out["class_loss"][0] == pytest.approx(out["class_loss"][1], rel=1e-5)


# --------------------------------------------------------------------------- one shared run


@pytest.fixture(scope="module")
def fake_splits():
    """What the stand-in ``labelfix.data`` serves: 8 training examples of 16x16 and 3 validation
    images of 20x20 (not a multiple of 16: padded)."""
    return {"train": shapes(8, seed=0, size=16), "val": shapes(3, seed=5, size=20)}


@pytest.fixture
def fake_data(fake_splits, monkeypatch):
    """The stand-in ``labelfix.data`` in place for one test."""
    install_fake_data(monkeypatch, fake_splits, num_classes=4)
    return fake_splits


@pytest.fixture(scope="module")
def api_run(fake_splits, tmp_path_factory):
    """One short run through the Python API, shared by the tests of its outputs: ``data_dir``
    (the stand-in), a validation split, ``class_weights="auto"``, ``output`` and ``progress``.

    Returns ``(result, progress events)``.
    """
    root = tmp_path_factory.mktemp("api_run")
    events = []
    with pytest.MonkeyPatch.context() as monkeypatch:
        install_fake_data(monkeypatch, fake_splits, num_classes=4)
        result = train(
            data_dir=root,
            val_split="val",
            num_classes=4,
            epochs=2,
            batch_size=4,
            crop_size=(16, 16),
            scale_range=None,
            width=4,
            class_weights="auto",
            output=root / "run",
            progress=events.append,
            jit_compile=False,
        )
    return result, events


def test_saves_model_and_history_and_reports_progress(api_run):
    result, events = api_run
    assert result.devices == ("CPU:0",) and result.precision == "float32"
    assert result.num_replicas == 1 and result.steps_per_epoch == 2
    kinds = [e.kind for e in events]
    assert kinds == ["start", "step", "step", "validate", "epoch"] * 1 + [
        "step",
        "step",
        "validate",
        "epoch",
    ]
    assert events[0].devices == ("CPU:0",)
    record = json.loads(result.history_path.read_text())
    assert record["devices"] == ["CPU:0"] and record["ignore"] == -1
    assert [e["epoch"] for e in record["epochs"]] == [1, 2]
    first = record["epochs"][0]
    for key in ("loss", "pixel_accuracy", "mean_iou", "val_loss", "val_mean_iou"):
        assert 0.0 <= first[key] < 10.0
    model = keras.models.load_model(result.model_path)
    x = np.random.default_rng(0).uniform(size=(1, 16, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x, verbose=0), result.model(x), atol=1e-5)


def test_class_weights_auto_from_manifest(api_run, fake_splits):
    result, _ = api_run
    masks = fake_splits["train"][1]
    expected = median_frequency_weights([(masks == k).sum() for k in range(4)])
    assert result.class_weights == expected
    assert result.steps_per_epoch == 2  # 8 examples // 4


# --------------------------------------------------------------------------- precision


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_runs_on_cpu(precision):
    """The GPU precisions, on the CPU without XLA (XLA's CPU backend cannot compile bf16/f16
    convolution gradients, so train refuses that combination with a clear message)."""
    with pytest.raises(ValueError, match="XLA's CPU backend"):
        tiny_train(precision=precision)
    result = tiny_train(precision=precision, jit_compile=False)
    assert result.precision == precision
    assert np.isfinite(result.history[0].loss)
    assert result.model.layers[-1].compute_dtype == precision.removeprefix("mixed_")


# --------------------------------------------------------------------------- through labelfix.data


def test_manifest_num_classes_mismatch(fake_data, tmp_path):
    with pytest.raises(LabelfixError, match="manifest says num_classes=4"):
        train(data_dir=tmp_path, num_classes=5, epochs=1, batch_size=4, crop_size=(16, 16))


def test_class_weights_auto_needs_a_manifest():
    with pytest.raises(LabelfixError, match="class_pixel_counts"):
        tiny_train(class_weights="auto")


# --------------------------------------------------------------------------- the CLI


def run_cli(*args):
    from labelfix.cli import main

    return CliRunner().invoke(main, list(args))


@pytest.fixture
def without_xla(monkeypatch):
    """``train`` builds its train step without XLA: where the CLI, not the step, is under test
    (the end-to-end test runs the CLI's XLA step)."""

    def make_train_step(**kwargs):
        return steps.make_train_step(**{**kwargs, "jit_compile": False})

    monkeypatch.setattr("labelfix.training.loop.make_train_step", make_train_step)


def test_cli_trains_and_prints_epochs(fake_data, without_xla, tmp_path):
    out = tmp_path / "run"
    result = run_cli(
        "train",
        str(tmp_path),
        "-n",
        "4",
        "-e",
        "2",
        "-b",
        "4",
        "--steps-per-epoch",
        "2",
        "--val-split",
        "val",
        "--crop-size",
        "16",
        "--width",
        "4",
        "--output",
        str(out),
        "--class-weights",
        "auto",
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("epoch 1/2  loss ") and "mIoU" in lines[0]
    assert "val_mIoU" in lines[1]
    assert lines[-2] == "devices: CPU:0 (float32)"
    assert (out / "model.keras").is_file() and (out / "history.json").is_file()
    assert "training on CPU:0 (float32, 1 replica, 2 steps/epoch)" in result.stderr
    assert "[" not in result.stderr  # no progress bar when stderr is not a terminal


def test_cli_usage_errors_exit_2(tmp_path):
    result = run_cli("train", str(tmp_path), "-n", "4", "-e", "1", "-b", "2", "--crop-size", "30")
    assert result.exit_code == 2
    assert "multiples of 16" in result.output
    weights = tmp_path / "w.txt"
    weights.write_text("1.0, x")
    result = run_cli(
        "train", str(tmp_path), "-n", "2", "-e", "1", "-b", "2", "--class-weights", str(weights)
    )
    assert result.exit_code == 2
    assert "expected numbers" in result.output


def test_cli_data_problem_is_one_line_exit_1(fake_data, tmp_path):
    result = run_cli("train", str(tmp_path), "-n", "7", "-e", "1", "-b", "4", "--crop-size", "16")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1].startswith("labelfix: error: ")
    assert "manifest says num_classes=4" in result.stderr
    assert "Traceback" not in result.output


def test_cli_without_tensorflow_names_the_extra(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tensorflow" else real(name)
    )
    result = run_cli("train", str(tmp_path), "-n", "4", "-e", "1", "-b", "2")
    assert result.exit_code == 1
    assert "pip install 'labelfix[tf]'" in result.stderr


def test_cli_class_weights_file(fake_data, tmp_path):
    weights = tmp_path / "weights.json"
    weights.write_text(json.dumps({"1": 2.5}))
    from labelfix.cli.train import _check_class_weights

    assert _check_class_weights(None, None, str(weights)) == (1.0, 2.5)
    weights.write_text("0.5 1\n2 3")
    assert _check_class_weights(None, None, str(weights)) == (0.5, 1.0, 2.0, 3.0)


# --------------------------------------------------------------------------- real TFRecords


def write_records(root: Path, split: str, count: int, seed: int) -> None:
    """PNG images and VOC-style masks (void 255) -> ``labelfix.records.write.write_dataset``."""
    from PIL import Image

    from labelfix.labels.labelmap import LabelMap
    from labelfix.records.write import write_dataset

    images, masks = shapes(count, seed=seed, size=32, ignore=255, dtype=np.uint8)
    for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
        for folder, array in (
            ("images", (image.clip(0, 1) * 255).astype(np.uint8)),
            ("masks", mask),
        ):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(root / split / folder / f"{i:04d}.png")
    write_dataset(
        images=root / split / "images",
        masks=root / split / "masks",
        output=root / "records",
        split=split,
        num_classes=4,
        label_map=LabelMap(ignore=(255,)),
    )


@pytest.mark.slow
def test_end_to_end_through_labelfix_data(tmp_path):
    """Masks on disk -> to-tfrecord -> labelfix.data (void presented as -1) -> the CLI, with its
    default XLA step."""
    pytest.importorskip("labelfix.data")
    write_records(tmp_path, "train", 8, seed=0)
    write_records(tmp_path, "val", 2, seed=1)
    out = tmp_path / "run"
    result = run_cli(
        "train",
        str(tmp_path / "records"),
        "-n",
        "4",
        "-e",
        "2",
        "-b",
        "4",
        "--val-split",
        "val",
        "--crop-size",
        "16",
        "--width",
        "4",
        "--output",
        str(out),
        "--class-weights",
        "auto",
    )
    assert result.exit_code == 0, result.output
    record = json.loads((out / "history.json").read_text())
    assert record["steps_per_epoch"] == 2  # 8 records // 4, from the manifest
    assert record["ignore"] == -1 and len(record["class_weights"]) == 4
    assert record["epochs"][-1]["val_mean_iou"] is not None
    assert record["epochs"][-1]["loss"] < record["epochs"][0]["loss"] * 1.5
