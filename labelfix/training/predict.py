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

from labelfix.errors import LabelfixError

__all__ = [
    "FORMATS",
    "IMAGE_SUFFIXES",
    "RECORD_NAME",
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
#: The list of masks ``predict`` wrote into an output directory: those (and only those) a later
#: run may replace.
RECORD_NAME = ".labelfix-predict.json"


@dataclass(frozen=True)
class PredictResult:
    """What :func:`predict` wrote: one mask per image, and how."""

    output: Path
    masks: tuple[Path, ...]
    format: str
    num_classes: int
    palette: str  # "manifest", "voc" or "none" (16-bit PNG, npy)


def find_images(images: str | os.PathLike) -> list[tuple[str, str]]:
    """``(relative path, path)`` of each image under a directory (sorted), or of one file."""
    root = os.fspath(images)
    if os.path.isfile(root):
        return [(os.path.basename(root), root)]
    if not os.path.isdir(root):
        raise LabelfixError(f"{root}: no such file or directory")
    found = []
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            if name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith("."):
                path = os.path.join(directory, name)
                found.append((os.path.relpath(path, root), path))
    if not found:
        raise LabelfixError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return found


def mask_path(output: Path, relpath: str, fmt: str) -> Path:
    """Where the mask of the image at ``relpath`` goes: same relative path, new suffix."""
    return output / Path(relpath).with_suffix(f".{fmt}")


def plan_masks(
    output: Path, files: Sequence[tuple[str, str]], fmt: str, *, overwrite: bool = False
) -> list[Path]:
    """The mask path of each image, checked before anything is predicted.

    Raises:
        LabelfixError: two images would write one mask (``a.jpg`` and ``a.png``); a mask would
            replace one of the images; or a mask would replace a file that no earlier
            ``predict`` wrote into ``output`` (ground truth, say) unless ``overwrite``.

    A hostile-user pass found all three losing data silently.
    """
    targets = [mask_path(output, rel, fmt) for rel, _ in files]
    seen: dict[Path, str] = {}
    for target, (_, path) in zip(targets, files, strict=True):
        if target in seen:
            raise LabelfixError(
                f"{seen[target]} and {path} would both be predicted into {target}: rename one, "
                "or predict them into separate directories"
            )
        seen[target] = path
    images = {os.path.realpath(path): path for _, path in files}
    written = set() if overwrite else _written_before(output)
    for target in targets:
        if not os.path.lexists(target):
            continue
        if os.path.realpath(target) in images:
            raise LabelfixError(
                f"{target} is one of the images: its mask would replace it; choose another "
                "--output directory"
            )
        if not overwrite and target.relative_to(output).as_posix() not in written:
            raise LabelfixError(
                f"{target} already exists and no earlier labelfix predict wrote it: choose a new "
                "--output directory, move the file away, or pass --overwrite"
            )
    return targets


def _written_before(output: Path) -> set[str]:
    import json

    try:
        data = json.loads((output / RECORD_NAME).read_text(encoding="utf-8"))
        return {str(name) for name in data.get("masks", [])}
    except (OSError, ValueError, AttributeError, TypeError):
        return set()


def _record_written(output: Path, targets: Sequence[Path]) -> None:
    """Add ``targets`` to the output's record (atomically), so a rerun may replace them."""
    import json

    from labelfix.io.atomic import write_atomic

    names = _written_before(output) | {t.relative_to(output).as_posix() for t in targets}
    text = json.dumps({"labelfix_predict": 1, "masks": sorted(names)}, indent=1) + "\n"
    output.mkdir(parents=True, exist_ok=True)
    write_atomic(output / RECORD_NAME, text.encode("utf-8"))


def encode_mask(prediction: np.ndarray, fmt: str, palette: bytes | None) -> bytes:
    """The file bytes of one predicted mask (class ids ``0..C-1``)."""
    import io

    from labelfix.io.png import encode_png

    top = int(prediction.max()) if prediction.size else 0
    if fmt == "npy":
        dtype = np.uint8 if top <= 0xFF else np.uint16
        buffer = io.BytesIO()
        np.save(buffer, prediction.astype(dtype))  # range checked just above
        return buffer.getvalue()
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
    and its ``palette``, if any, colours the PNGs. Masks replace only files an earlier
    ``predict`` wrote into ``output`` (listed in its ``.labelfix-predict.json``) unless
    ``overwrite`` (see :func:`plan_masks`).
    """
    import tensorflow as tf

    from labelfix.io.atomic import write_atomic
    from labelfix.training.evaluate import load_model
    from labelfix.training.inference import input_multiple, predict_batches, scored_classes
    from labelfix.training.pipelines import prediction_pipeline

    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    if isinstance(model, (str, os.PathLike)):
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
    targets = plan_masks(out, files, fmt, overwrite=overwrite)
    paths = tf.constant([path for _, path in files])
    dataset = tf.data.Dataset.from_tensor_slices((paths, tf.range(len(files), dtype=tf.int64)))
    dataset = dataset.map(_decode, num_parallel_calls=tf.data.AUTOTUNE)
    batches = prediction_pipeline(dataset, batch_size=batch_size, multiple=input_multiple(model))
    _record_written(out, targets)  # before the first mask: an interrupted run's are its own
    written = []
    try:
        for key, prediction in predict_batches(model, batches):
            target = targets[int(key)]
            target.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(target, encode_mask(prediction, fmt, palette))
            written.append(target)
            if on_image is not None:
                on_image(1)
    except tf.errors.InvalidArgumentError:
        raise LabelfixError(_undecodable([path for _, path in files])) from None
    order = {target: i for i, target in enumerate(targets)}
    written.sort(key=order.__getitem__)
    return PredictResult(out, tuple(written), fmt, num_classes, palette_kind)


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
