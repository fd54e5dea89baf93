"""Predict one mask per image with a trained model (``labelfix predict``).

Images of any size are predicted whole: each is padded on its own (with 0) to a multiple of
the model stride, or of its static input size, which it then runs on as tiles; the logits are
cropped back, so the mask has the image's size (see :mod:`labelfix.training.inference`). Images
are decoded as training decodes them (``tf.io.decode_image``, RGB, 0..255 float).

Masks hold class ids ``0..C-1`` (no void: every pixel gets a class), written at the same path
relative to the input directory: palette PNGs (8-bit indices plus colours, which ``labelfix
stats``/``validate`` and Pillow read as the ids), 16-bit grey PNGs beyond 256 classes, or
``.npy`` (uint8, or uint16 beyond 256 classes).

>>> mask_path(Path("out"), "val/0009.jpg", "png")
PosixPath('out/val/0009.png')
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labelfix.errors import LabelfixError, UsageError
from labelfix.io.door import Door, Outlet, Rules

__all__ = [
    "FORMATS",
    "IMAGE_SUFFIXES",
    "PredictResult",
    "find_images",
    "mask_path",
    "plan_masks",
    "predict",
]

#: Output formats of ``labelfix predict --format``.
FORMATS = ("png", "npy")
#: Files taken as images (what ``tf.io.decode_image`` decodes).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


@dataclass(frozen=True)
class PredictResult:
    """What :func:`predict` wrote: one mask per image, and how."""

    output: Path
    masks: tuple[Path, ...]
    format: str
    num_classes: int
    palette: str  # "manifest", "voc" or "none" (16-bit PNG, npy)


def find_images(images: str | os.PathLike) -> list[tuple[str, str]]:
    """``(relative path, path)`` of each image under a directory (sorted), or of one file,
    listed by :func:`labelfix.io.pairing.list_images`; a folder of masks is refused
    (:class:`~labelfix.io.pairing.MasksAsImages`)."""
    from labelfix.io.pairing import check_images_folder, list_images

    root = os.fspath(images)
    if os.path.isfile(root):
        return [(os.path.basename(root), root)]
    if not os.path.isdir(root):
        raise LabelfixError(f"{root}: no such file or directory")
    check_images_folder(root, [])
    found = [(rel, path) for path, rel in list_images(root, extensions=IMAGE_SUFFIXES)]
    if not found:
        raise LabelfixError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return found


def mask_path(output: Path, relpath: str, fmt: str) -> Path:
    """Where the mask of the image at ``relpath`` goes: same relative path, new suffix."""
    return output / Path(relpath).with_suffix(f".{fmt}")


def plan_masks(outlet: Outlet, files: Sequence[tuple[str, str]], fmt: str) -> list[Path]:
    """The mask path of each image, checked before anything is predicted.

    Raises:
        LabelfixError: two images would write one mask (``a.jpg`` and ``a.png``).
        Refused: a mask would replace one of the images, land among them, or replace a file
            labelfix did not write (ground truth, say) unless the door's rules allow
            overwriting (see :mod:`labelfix.io.door`).
    """
    output = Path(outlet.root)
    targets = [mask_path(output, rel, fmt) for rel, _ in files]
    seen: dict[Path, str] = {}
    for target, (_, path) in zip(targets, files, strict=True):
        if target in seen:
            raise LabelfixError(
                f"{seen[target]} and {path} would both be predicted into {target}: rename one, "
                "or predict them into separate directories"
            )
        seen[target] = path
        outlet.check(str(target))
    return targets


def encode_mask(prediction: np.ndarray, fmt: str, palette: bytes | None) -> bytes:
    """The file bytes of one predicted mask (class ids ``0..C-1``)."""
    from labelfix.io.masks import encode_npy
    from labelfix.io.png import encode_png

    top = int(prediction.max()) if prediction.size else 0
    if fmt == "npy":
        dtype = np.uint8 if top <= 0xFF else np.uint16
        return encode_npy(prediction.astype(dtype))  # range checked just above
    if palette is not None and top <= 0xFF:
        return encode_png(prediction.astype(np.uint8), bits=8, palette=palette)
    return encode_png(prediction.astype(np.uint16 if top > 0xFF else np.uint8))


def palette_for(manifest: dict | None, num_classes: int) -> tuple[bytes | None, str]:
    """``(768 palette bytes, "manifest"|"voc")``: the manifest's ``palette`` (one ``[r, g, b]``
    per class) when it has one, else the Pascal VOC colour map; ``(None, "none")`` beyond 256
    classes."""
    from labelfix.labels.presets import voc_palette

    if num_classes > 256:
        return None, "none"
    colours = (manifest or {}).get("palette")
    if colours and len(colours) >= num_classes:
        data = bytes(int(c) & 0xFF for rgb in colours[:256] for c in rgb[:3])
        return data + voc_palette()[len(data) :], "manifest"
    return voc_palette(), "voc"


def predict(
    model: Any,
    images: str | os.PathLike,
    output: str | os.PathLike,
    *,
    fmt: str = "png",
    manifest: dict | None = None,
    batch_size: int = 1,
    on_image: Callable[[int], None] | None = None,
    overwrite: bool = False,
) -> PredictResult:
    """Write the predicted mask of every image under ``images`` into ``output``.

    ``model``: a ``keras.Model`` or a ``.keras`` path. ``manifest`` (a split's, from
    ``labelfix.records.manifest.read_manifest``): its ``num_classes`` must match the model's,
    and its ``palette``, if any, colours the PNGs. Masks replace only files labelfix wrote
    into ``output`` (its ledger says so, :mod:`labelfix.io.door`) unless ``overwrite``, and
    never the images (see :func:`plan_masks`).
    """
    from labelfix.training.evaluate import load_model
    from labelfix.training.inference import scored_classes

    if fmt not in FORMATS:
        raise UsageError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    inputs = [images]
    if isinstance(model, (str, os.PathLike)):
        inputs.append(model)
        model = load_model(model)
    num_classes = scored_classes(model)  # 2 for one sigmoid channel (a --binary model)
    if manifest is not None and int(manifest["num_classes"]) != num_classes:
        raise LabelfixError(
            f"{manifest.get('manifest_path', 'manifest')}: num_classes={manifest['num_classes']}, "
            f"the model scores {num_classes} classes"
        )
    palette, palette_kind = palette_for(manifest, num_classes) if fmt == "png" else (None, "none")
    files = find_images(images)
    out = Path(output)
    with Door(Rules.of("predict", inputs=inputs, overwrite=overwrite)) as door:
        outlet = door.outlet(out)
        targets = plan_masks(outlet, files, fmt)
        written = _predict_into(outlet, model, files, targets, fmt, palette, batch_size, on_image)
    return PredictResult(out, tuple(written), fmt, num_classes, palette_kind)


def _predict_into(outlet, model, files, targets, fmt, palette, batch_size, on_image) -> list:
    """Predict every image and write its mask through ``outlet``; the masks, in input order."""
    import tensorflow as tf

    from labelfix.training.inference import input_multiple, predict_batches
    from labelfix.training.pipelines import prediction_pipeline

    paths = tf.constant([path for _, path in files])
    dataset = tf.data.Dataset.from_tensor_slices((paths, tf.range(len(files), dtype=tf.int64)))
    dataset = dataset.map(_decode, num_parallel_calls=tf.data.AUTOTUNE)
    batches = prediction_pipeline(dataset, batch_size=batch_size, multiple=input_multiple(model))
    written = []
    try:
        for key, prediction in predict_batches(model, batches):
            target = targets[int(key)]
            outlet.write(str(target), encode_mask(prediction, fmt, palette))
            written.append(target)
            if on_image is not None:
                on_image(1)
    except tf.errors.InvalidArgumentError:
        raise LabelfixError(_undecodable([path for _, path in files])) from None
    order = {target: i for i, target in enumerate(targets)}
    written.sort(key=order.__getitem__)
    return written


def _decode(path: Any, key: Any) -> tuple[Any, Any]:
    import tensorflow as tf

    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    return tf.cast(image, tf.float32), key


def _undecodable(paths: Sequence[str]) -> str:
    """The first image that does not decode, and why (found again with Pillow)."""
    from labelfix.io.images import decode_problem

    for path in paths:
        with open(path, "rb") as fh:
            problem = decode_problem(fh.read())
        if problem is not None:
            return f"{path}: {problem}"
    return f"an image under {os.path.dirname(paths[0])} does not decode"
