"""Helpers for the training tests: a learnable synthetic dataset, written to disk and to
TFRecords through ``labelfix to-tfrecord`` when a test needs real records.

Imported by test_train.py, test_evaluate.py and test_predict.py (pytest puts tests/ on
sys.path); not a test module itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

#: Fixed, well separated colours: class k is drawn in CLASS_RGB[k] (float image in [0, 1]).
CLASS_RGB = np.array(
    [[0.1, 0.1, 0.1], [0.9, 0.2, 0.2], [0.2, 0.8, 0.3], [0.2, 0.3, 0.9], [0.9, 0.85, 0.2]],
    np.float32,
)

#: The class names the records of :func:`write_split` carry.
CLASS_NAMES = ("background", "red", "green", "blue")


def shape_example(
    rng: np.random.Generator,
    void_rng: np.random.Generator,
    size: tuple[int, int],
    *,
    num_classes: int = 4,
    ignore: int = -1,
) -> tuple[np.ndarray, np.ndarray]:
    """One ``(image float32 [H, W, 3], mask int64 [H, W])`` of coloured rectangles."""
    height, width = size
    mask = np.zeros((height, width), np.int64)
    for k in rng.permutation(np.arange(1, num_classes)):
        h, w = rng.integers(height // 5, height // 2), rng.integers(width // 5, width // 2)
        y, x = rng.integers(1, height - h - 1), rng.integers(1, width - w - 1)
        mask[y - 1 : y + h + 1, x - 1 : x + w + 1] = -1
        mask[y : y + h, x : x + w] = k
    void = mask < 0
    image = CLASS_RGB[np.where(void, 0, mask)] + rng.normal(0, 0.04, (height, width, 3))
    image[void] = void_rng.uniform(0, 1, (void.sum(), 3))  # arbitrary content under void
    return image.astype(np.float32), np.where(void, ignore, mask)


def shapes(
    count: int,
    *,
    seed: int,
    size: int = 32,
    num_classes: int = 4,
    ignore: int = -1,
    void_seed: int | None = None,
    dtype=np.int32,
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` images with coloured rectangles on class-0 background, each outlined by a
    one-pixel void border whose image content is random noise (drawn from ``void_seed``, so two
    datasets can differ only there). Returns ``(images float32 [N,S,S,3], masks [N,S,S])``."""
    rng = np.random.default_rng(seed)
    void_rng = np.random.default_rng(seed + 1000 if void_seed is None else void_seed)
    images = np.empty((count, size, size, 3), np.float32)
    masks = np.empty((count, size, size), dtype)
    for i in range(count):
        images[i], masks[i] = shape_example(
            rng, void_rng, (size, size), num_classes=num_classes, ignore=ignore
        )
    return images, masks


def write_split(
    root: Path,
    split: str,
    sizes: Sequence[tuple[int, int]],
    *,
    seed: int,
    num_classes: int = 4,
) -> Path:
    """PNG images and 8-bit masks (void 255) of the given ``(height, width)`` sizes under
    ``root/split/``, then ``labelfix to-tfrecord ... --ignore 255 --out -1`` into
    ``root/records`` with :data:`CLASS_NAMES`. Returns ``root/records``."""
    from click.testing import CliRunner
    from PIL import Image

    from labelfix.cli import main

    rng, void_rng = np.random.default_rng(seed), np.random.default_rng(seed + 1000)
    for i, size in enumerate(sizes):
        image, mask = shape_example(rng, void_rng, size, num_classes=num_classes, ignore=255)
        for folder, array in (
            ("images", (image.clip(0, 1) * 255).astype(np.uint8)),
            ("masks", mask.astype(np.uint8)),  # 0..3 and 255: fits
        ):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(root / split / folder / f"{i:04d}.png")
    names = root / "classes.txt"
    names.write_text("\n".join(CLASS_NAMES[:num_classes]) + "\n")
    args = ["to-tfrecord", "--images", str(root / split / "images"), "--masks"]
    args += [str(root / split / "masks"), "--output", str(root / "records"), "--split", split]
    args += ["-n", str(num_classes), "--ignore", "255", "--out", "-1"]
    args += ["--class-names", str(names)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return root / "records"


#: test_train's replica check, run in a fresh process (logical devices must be set up before
#: TensorFlow initialises): prints one JSON line of the values to compare.
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
from labelfix.training.inference import Evaluator
from labelfix.training.pipelines import evaluation_pipeline
from labelfix.training.steps import make_train_step, masked_loss

rng = np.random.default_rng(0)
images = rng.normal(size=(4, 16, 16, 3)).astype("float32")
labels = rng.integers(0, 3, size=(4, 16, 16)).astype("int32")
labels[:2] = 1  # replica 0 gets images 0-1: all class 1 (weight 5) ...
labels[:2, :14] = -1  # ... and far fewer valid pixels than replica 1
weights = [1.0, 5.0, 0.5]


# The step, not the model, is under test: a small convolutional net with GroupNormalization
# like labelfix's model (statistics per example, so replicas agree with one device) compiles
# with XLA in a fraction of the time.
def build_model(num_classes, width):
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(2 * width, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.ReLU()(keras.layers.GroupNormalization(groups=4)(x))
    x = keras.layers.Conv2D(2 * width, 3, padding="same", dilation_rate=2)(x)
    return keras.Model(inputs, keras.layers.Conv2D(num_classes, 1)(keras.layers.ReLU()(x)))


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
    # Validation over the replicas: 3 images of 12x12 (padded to 16x16) in batches of 2, the
    # last completed with an empty example; against one device's eager predictions.
    val = tf.data.Dataset.from_tensor_slices((images[:3, :12, :12], labels[:3, :12, :12]))
    evaluator = Evaluator(model, num_classes=3, ignore=-1, strategy=strategy)
    result = evaluator(evaluation_pipeline(val, batch_size=2, replicas=2))
    padded = np.pad(images[:3, :12, :12], [(0, 0), (0, 4), (0, 4), (0, 0)])
    val_pred = np.argmax(model(padded, training=False).numpy()[:, :12, :12], axis=-1)
    val_ref = np.zeros((3, 3), np.int64)
    keep = labels[:3, :12, :12] >= 0
    np.add.at(val_ref, (labels[:3, :12, :12][keep], val_pred[keep]), 1)
    return dict(replicas=strategy.num_replicas_in_sync, loss=float(loss), grads=grads,
                cm=cm.numpy().tolist(), class_sum=class_sum, class_ref=class_ref,
                val_equal=result.confusion.tolist() == val_ref.tolist() and result.images == 3)

# Two replicas with XLA, checked against the single-device GradientTape reference.
two = one_step(["/cpu:0", "/cpu:1"], True)
scale = max(float(np.abs(g).max()) for g in ref_grads)
diff = lambda a, b: max(float(np.abs(x - y).max()) for x, y in zip(a, b))
predictions = np.argmax(model(images, training=True).numpy(), axis=-1)  # model: the reference
valid = labels >= 0
ref_cm = np.zeros((3, 3), np.int64)
np.add.at(ref_cm, (labels[valid], predictions[valid]), 1)
print(json.dumps(dict(
    replicas=two["replicas"], loss=[float(ref_loss), two["loss"]], naive=float(naive),
    grad_scale=scale, two_vs_ref=diff(two["grads"], ref_grads),
    cm_equal=ref_cm.tolist() == two["cm"], class_loss=[two["class_sum"], two["class_ref"]],
    val_equal=two["val_equal"],
)))
"""

#: Two logical CPU devices, the XLA train step, every pooled loss (Dice on its own, CE + Dice,
#: and a one-channel binary CE + Dice): the replicas' summed loss and gradients against one
#: device's plain GradientTape, replicas holding very different numbers of valid pixels.
LOSS_REPLICA_SCRIPT = """
import json
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras
import numpy as np

from labelfix.losses import masked_dice_loss
from labelfix.training.devices import make_strategy
from labelfix.training.steps import TrainingLoss, make_train_step

rng = np.random.default_rng(0)
images = rng.normal(size=(4, 16, 16, 3)).astype("float32")
# One strategy for every case: collective keys restart with each new strategy in a process.
strategy = make_strategy(["/cpu:0", "/cpu:1"])


def build_model(channels):
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.ReLU()(keras.layers.GroupNormalization(groups=4)(x))
    return keras.Model(inputs, keras.layers.Conv2D(channels, 1)(x))


def case(kind, binary):
    classes = 2 if binary else 3
    labels = rng.integers(0, classes, size=(4, 16, 16)).astype("int32")
    labels[:2] = 1  # replica 0: one class only, and few valid pixels
    labels[:2, :13] = -1
    loss_fn = TrainingLoss(kind=kind, ignore=-1, binary=binary)
    keras.utils.set_random_seed(0)
    reference = build_model(1 if binary else classes)
    initial = reference.get_weights()
    with tf.GradientTape() as tape:
        count = tf.reduce_sum(tf.cast(labels >= 0, tf.float32))
        ref_loss = loss_fn(labels, reference(images, training=True), count)
    ref_grads = [g.numpy() for g in tape.gradient(ref_loss, reference.trainable_variables)]
    # The mean of per-replica Dice losses: what a replica-local Dice would train on.
    halves = [masked_dice_loss(labels[i:i + 2], reference(images[i:i + 2]), ignore=-1)
              for i in (0, 2)] if not binary else [0.0, 0.0]
    with strategy.scope():
        model = build_model(1 if binary else classes)
        model.set_weights(initial)
        optimizer = keras.optimizers.SGD(learning_rate=1.0)  # w_after = w_before - sum(grads)
        optimizer.build(model.trainable_variables)
    step = make_train_step(model=model, optimizer=optimizer, strategy=strategy,
                           num_classes=2 if binary else classes, ignore=-1, loss_fn=loss_fn,
                           jit_compile=True)
    before = [v.numpy() for v in model.trainable_variables]
    batches = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
    loss, cm = step(next(iter(strategy.experimental_distribute_dataset(batches))))
    grads = [b - v.numpy() for b, v in zip(before, model.trainable_variables)]
    scale = max(float(np.abs(g).max()) for g in ref_grads)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(grads, ref_grads))
    return dict(loss=[float(ref_loss), float(loss)], naive=float(np.mean(halves)),
                grad_scale=scale, grad_diff=diff, cm_total=int(np.sum(cm.numpy())),
                valid=int((labels >= 0).sum()))


print(json.dumps({f"{kind}{'-binary' if binary else ''}": case(kind, binary)
                  for kind, binary in (("dice", False), ("ce+dice", False), ("ce+dice", True))}))
"""


def run_replica_script(script: str) -> dict:
    """Run one of the replica scripts above in a fresh process (logical devices must be set up
    before TensorFlow initialises) and return the JSON of its last line. XLA compiles at LLVM
    optimisation level 0: the same arithmetic (no fast math), less compile time."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    xla_flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()
    env = {**os.environ, "PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "3", "XLA_FLAGS": xla_flags}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def shrink_first_mask(records: Path, split: str, *, rows: int = 5, cols: int = 3) -> None:
    """Make the first record of ``split`` hold a mask ``rows`` x ``cols`` px smaller than its
    image, keeping the manifest consistent (sizes, sha256): what a tool writing records of
    its own, or a hand edit, can leave. ``labelfix verify`` finds it; training must too."""
    import hashlib
    import io

    from PIL import Image

    from labelfix.records.example import parse_example, serialize_example
    from labelfix.records.framing import read_records, write_record

    manifest_path = records / f"{split}.labelfix.json"
    manifest = json.loads(manifest_path.read_text())
    shard = records / manifest["shards"][0]["file"]
    with open(shard, "rb") as fh:
        examples = [parse_example(r) for r in read_records(fh)]
    key = "image/segmentation/class/encoded"
    mask = np.asarray(Image.open(io.BytesIO(examples[0][key][0])))
    buffer = io.BytesIO()
    Image.fromarray(mask[:-rows, :-cols]).save(buffer, format="PNG")
    examples[0][key] = [buffer.getvalue()]
    with open(shard, "wb") as fh:
        for example in examples:
            write_record(fh, serialize_example({k: v[0] for k, v in example.items()}))
    data = shard.read_bytes()
    manifest["shards"][0].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    manifest_path.write_text(json.dumps(manifest))


def write_void_split(root: Path, split: str, *, count: int = 2, size: int = 16) -> Path:
    """``count`` images whose masks are void everywhere (255, read as -1), written by
    ``labelfix to-tfrecord`` into ``root/records`` as ``split`` (4 classes). Returns the
    records directory."""
    from click.testing import CliRunner
    from PIL import Image

    from labelfix.cli import main

    for i in range(count):
        for folder, array in (
            ("images", np.full((size, size, 3), 40 * i, np.uint8)),
            ("masks", np.full((size, size), 255, np.uint8)),
        ):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(root / split / folder / f"{i}.png")
    args = ["to-tfrecord", "--images", str(root / split / "images"), "--masks"]
    args += [str(root / split / "masks"), "--output", str(root / "records"), "--split", split]
    args += ["-n", "4", "--ignore", "255", "--out", "-1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return root / "records"
