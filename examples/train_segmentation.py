"""Train a segmentation model on label masks, with void pixels handled right at every step.

From masks on disk to a trained model with labelfix:

1. validate the masks (every value a class id or the void value),
2. write them as TFRecords with a manifest (`labelfix to-tfrecord`),
3. read them back with `labelfix.data` (void presented as -1),
4. train the reference DeepLabV3+ with the masked loss (`labelfix.training`),
5. reload the saved model and measure mean IoU with void excluded.

It makes its own small dataset of coloured shapes with VOC-style void borders (255) unless you
point it at yours:

    python examples/train_segmentation.py                        # synthetic, about a minute
    python examples/train_segmentation.py --images JPEGImages --masks SegmentationClass \
        --num-classes 21 --ignore 255 --epochs 30 --crop-size 512
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from labelfix.checks.validate import validate
from labelfix.labels.labelmap import LabelMap
from labelfix.records.write import write_dataset
from labelfix.synthetic import shapes_sample

parser = argparse.ArgumentParser(description="Train a segmentation model with labelfix.")
parser.add_argument("--images", type=Path, help="image directory (default: synthetic data)")
parser.add_argument("--masks", type=Path, help="mask directory, same stems as the images")
parser.add_argument("--num-classes", type=int, default=4)
parser.add_argument("--ignore", type=int, default=255, help="the void value in your masks")
parser.add_argument("--epochs", type=int, default=12)
parser.add_argument("--batch-size", type=int, default=8)
parser.add_argument("--crop-size", type=int, default=64)
parser.add_argument("--work", type=Path, default=Path(tempfile.mkdtemp(prefix="labelfix-")))
args = parser.parse_args()

"""
## 1. Masks on disk

Synthetic stand-in: class-coloured shapes on class-0 background, each outlined by a 2-pixel
void border (255) whose image content is random, as VOC's object borders are unlabelled.
"""


def make_split(root: Path, count: int, seed: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image, mask = shapes_sample(
            rng, height=80, width=96, num_classes=args.num_classes, void=args.ignore
        )
        Image.fromarray(image).save(root / "images" / f"{i:04d}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i:04d}.png")
    return root / "images", root / "masks"


if args.masks is None:
    splits = {
        "train": make_split(args.work / "train", 96, seed=0),
        "val": make_split(args.work / "val", 16, seed=1),
    }
else:
    splits = {"train": (args.images, args.masks)}

"""
## 2. Validate: every value must be a class id or the void value

A stray value (a 37 in a 21-class dataset, 255 saved as 254 by a resize) would otherwise train
as a class or crash a loss. (`jobs=1` keeps this top-to-bottom script in one process; in a
program with an `if __name__ == "__main__":` guard leave it out to use every core.)
"""

for split, (_, masks) in splits.items():
    result = validate([masks], num_classes=args.num_classes, ignore=[args.ignore], jobs=1)
    print(f"{split}: {result.stats.files} masks, {len(result.errors)} problems")
    if not result.ok:
        raise SystemExit("\n".join(p.message for p in result.errors[:10]))

"""
## 3. Write TFRecords

`write_dataset` stores the masks with their void value and a manifest that says which value it
is and how many pixels each class has (used for class weights below).
"""

records = args.work / "records"
for split, (images, masks) in splits.items():
    written = write_dataset(
        images=images,
        masks=masks,
        output=records,
        split=split,
        num_classes=args.num_classes,
        label_map=LabelMap(ignore=(args.ignore,)),
        jobs=1,
    )
    print(f"{split}: {written.num_records} records in {records}")

"""
## 4. Read them back

`labelfix.data.load` decodes exactly the stored values and presents void as -1, the value
the masked loss and metrics expect by default.
"""

import tensorflow as tf  # noqa: E402  (TensorFlow from here on)

from labelfix import data  # noqa: E402

image, mask = next(iter(data.load(records, "train")))
print(
    f"image {image.shape} {image.dtype.name}, mask {mask.shape} {mask.dtype.name}, "
    f"values {sorted(np.unique(mask.numpy()).tolist())}"
)

"""
## 5. Train

The reference loop: random scale/crop/flip applied identically to image and mask (nearest
neighbour for masks, padding with void), the masked cross-entropy normalised by the valid pixels
of the global batch, every visible GPU (mixed precision) or the CPU, mean IoU with void left
out. `class_weights="auto"` gives rare classes median-frequency weights from the manifest.
"""

from labelfix.training.loop import train  # noqa: E402


def show(event) -> None:
    if event.kind == "start":
        print(f"training on {', '.join(event.devices)} ({event.precision})")
    elif event.kind == "epoch":
        s = event.stats
        val = f"  val mIoU {s.val_mean_iou:.3f}" if s.val_mean_iou is not None else ""
        print(
            f"epoch {s.epoch}: loss {s.loss:.4f}  pixel acc {s.pixel_accuracy:.3f}  "
            f"mIoU {s.mean_iou:.3f}{val}"
        )


result = train(
    data_dir=records,
    num_classes=args.num_classes,
    epochs=args.epochs,
    batch_size=args.batch_size,
    val_split="val" if "val" in splits else None,
    crop_size=(args.crop_size, args.crop_size),
    class_weights="auto",
    width=16,
    output=args.work / "run",
    progress=show,
)
print(f"class weights {result.class_weights}")
print(f"saved {result.model_path} and {result.history_path}")

"""
## 6. Reload and evaluate

The saved model is plain Keras layers: `keras.models.load_model` needs no custom objects.
Predictions are compared with the masks on full images (padded to a multiple of 16 with void,
never resized), and the confusion matrix leaves void pixels out.
"""

import keras  # noqa: E402

from labelfix.metrics import confusion_matrix, iou_per_class, mean_iou  # noqa: E402
from labelfix.training.augment import pad_to_multiple  # noqa: E402

model = keras.models.load_model(result.model_path)
split = "val" if "val" in splits else "train"
cm = np.zeros((args.num_classes, args.num_classes), np.int64)
for image, mask in data.load(records, split):
    image, mask = pad_to_multiple(image, mask, multiple=16, ignore=-1)
    logits = model(image[tf.newaxis], training=False)
    prediction = tf.argmax(logits, axis=-1, output_type=tf.int32)
    cm += np.asarray(confusion_matrix(mask[tf.newaxis], prediction, num_classes=args.num_classes))
print(
    f"{split} mIoU (void excluded) {mean_iou(cm):.3f}; per class "
    f"{np.round(iou_per_class(cm), 3).tolist()}"
)
