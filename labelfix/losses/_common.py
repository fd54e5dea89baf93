"""What every labelfix loss shares: the label checks, the invalid-label rule, the reductions, the
Loss base class and the tf.distribute replica context.

``keras.ops`` and NumPy only; TensorFlow is imported only when Keras already runs on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import ops

from labelfix.checks.rules import expected_text
from labelfix.labels import IGNORE_AS

REDUCTIONS = ("valid_mean", "per_image_mean", "sum", "none")

_INT_DTYPES = ("uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64")
_MAX_LISTED = 5  # invalid values named in the error message


def check_labels(labels: Any, ignore: int) -> Any:
    """Return ``labels`` as a tensor after the dtype checks of spec point 1.

    Float labels are a ``TypeError``, with one exception: while Keras builds a model
    symbolically (shape inference, no data), e.g. the first ``fit`` under a ``tf.distribute``
    strategy, whose build passes the replicas' label batches averaged (float64). Those
    placeholders are cast to int32; real float data never takes that path.
    """
    if not hasattr(labels, "dtype"):
        labels = np.asarray(labels)
    if isinstance(ignore, bool) or not isinstance(ignore, (int, np.integer)):
        raise TypeError(f"ignore must be an int, got {ignore!r}")
    dtype = keras.backend.standardize_dtype(labels.dtype)
    if dtype not in _INT_DTYPES:
        if _in_keras_build() and is_symbolic(labels):
            return ops.cast(labels, "int32")
        raise TypeError(
            f"labels must be integers (class ids), got dtype {dtype}; cast masks with "
            "ops.cast(mask, 'int32') after checking they hold whole numbers"
        )
    info = np.iinfo(dtype)
    if not info.min <= int(ignore) <= info.max:
        raise ValueError(
            f"ignore={ignore} cannot occur in {dtype} labels (range {info.min}..{info.max}), so "
            f"no pixel would be ignored and e.g. 255 would train as a class; pass the value the "
            f"masks actually use (ignore={info.max}?) or signed labels"
        )
    return labels


def valid_count(labels: Any, *, ignore: int = IGNORE_AS) -> Any:
    """Number of pixels whose label is not ``ignore``, as a float32 scalar.

    In distributed training, sum this over replicas and pass it as ``global_valid_count``.

    >>> import numpy as np
    >>> float(valid_count(np.array([[0, 1, -1, -1]], "int32")))
    2.0
    """
    labels = check_labels(labels, ignore)
    return ops.sum(ones_where(ops.not_equal(labels, ignore)))


def align_labels(labels: Any, pixel_shape: tuple, logits_shape: tuple) -> Any:
    """``labels`` shaped like ``pixel_shape`` (the logits' shape without the class axis).

    A trailing axis of size 1 is squeezed. A static mismatch (transposed H and W, another batch
    size) is a ``ValueError`` naming both shapes; unknown dimensions are not compared.
    """
    shape = tuple(labels.shape)
    if len(shape) == len(pixel_shape) + 1 and shape[-1] in (1, None):
        labels = ops.squeeze(labels, axis=-1)
        shape = shape[:-1]
    if len(shape) != len(pixel_shape) or any(
        a is not None and b is not None and a != b for a, b in zip(shape, pixel_shape, strict=True)
    ):
        raise ValueError(
            f"labels of shape {tuple(labels.shape)} do not match logits of shape "
            f"{tuple(logits_shape)}: expected {tuple(pixel_shape)} (the logits' shape without "
            f"the class axis), optionally with a trailing axis of size 1"
        )
    return labels


@dataclass(frozen=True)
class Labels:
    """Labels prepared for a loss (``[N...]``, the pixel shape).

    ``valid``: not ``ignore``. ``safe``: int32, void pixels 0, clipped to ``0..num_classes-1``
    (safe to gather with on every backend). ``scale``: float32, NaN where a label is neither
    ``ignore`` nor a class id, else exactly 1. A loss multiplies each pixel's loss by it, so
    such a pixel's loss *and* gradient are NaN (``d(l * s) = s dl``) while every other value is
    unchanged: compiled code, which cannot raise on values, gives NaN instead of training on a
    clamped class, with no extra pass over the labels.
    """

    valid: Any
    safe: Any
    scale: Any


def class_last(labels: Any, logits: Any, *, ignore: int, axis: int) -> tuple[Any, Any, int]:
    """``(labels, logits, num_classes)`` checked and aligned: labels' dtype and ``ignore``
    (:func:`check_labels`), logits with the class axis last (static size), labels shaped like
    the logits without it, and invalid labels refused in eager code."""
    labels = check_labels(labels, ignore)
    logits = ops.convert_to_tensor(logits)
    rank = len(logits.shape)
    if axis % rank != rank - 1:  # channels_first: move classes last (one transpose, fused by XLA)
        logits = ops.moveaxis(logits, axis % rank, -1)
    num_classes = logits.shape[-1]
    if num_classes is None:
        raise ValueError("the class axis of logits must have a static size")
    labels = align_labels(labels, tuple(logits.shape[:-1]), tuple(logits.shape))
    raise_on_invalid_labels(labels, num_classes=num_classes, ignore=ignore)
    return labels, logits, num_classes


def prepare_labels(labels: Any, num_classes: int, ignore: int) -> Labels:
    """:class:`Labels` from checked, aligned labels (see :func:`check_labels`)."""
    valid = ops.not_equal(labels, ignore)
    safe = ops.clip(ops.where(valid, ops.cast(labels, "int32"), 0), 0, num_classes - 1)
    bad = invalid_mask(labels, num_classes, ignore)
    scale = ops.where(bad, np.float32(np.nan), np.float32(1.0))
    return Labels(valid, safe, scale)


def invalid_mask(labels: Any, num_classes: int, ignore: int) -> Any:
    """Elementwise: True where a label is neither ``ignore`` nor ``0..num_classes-1``."""
    dtype = keras.backend.standardize_dtype(labels.dtype)
    info = np.iinfo(dtype)
    bad = None
    if info.min < 0:
        bad = ops.less(labels, 0)
    if num_classes <= info.max:
        above = ops.greater_equal(labels, num_classes)
        bad = above if bad is None else ops.logical_or(bad, above)
    if bad is None:  # e.g. uint8 labels and 300 classes: every value is a class id
        return ops.zeros_like(labels, dtype="bool")
    if info.min <= ignore <= info.max:
        bad = ops.logical_and(bad, ops.not_equal(labels, ignore))
    return bad


def reduce_pixels(
    per_pixel: Any, valid: Any, reduction: str, global_valid_count: Any | None = None
) -> Any:
    """The reductions of spec point 3 over a per-pixel map that is 0 at void pixels."""
    if reduction == "none":
        return per_pixel
    if reduction == "sum":
        return ops.sum(per_pixel)
    if reduction == "valid_mean":
        if global_valid_count is None:
            count = ops.sum(ones_where(valid))
        else:
            count = ops.cast(global_valid_count, "float32")
        # max(count, 1): an all-void batch gives 0 / 1 = 0 (and zero gradients), never 0 / 0.
        return ops.sum(per_pixel) / ops.maximum(count, 1.0)
    # per_image_mean
    batch = ops.shape(per_pixel)[0]
    image_sum = ops.sum(ops.reshape(per_pixel, (batch, -1)), axis=1)
    image_count = ops.sum(ops.reshape(ones_where(valid), (batch, -1)), axis=1)
    image_mean = image_sum / ops.maximum(image_count, 1.0)
    images_with_valid = ops.sum(ops.cast(image_count > 0, "float32"))
    return ops.sum(image_mean) / ops.maximum(images_with_valid, 1.0)


def ones_where(mask: Any) -> Any:
    """float32 1 where ``mask``, else 0. A select, not a cast: XLA:CPU reduces a cast bool
    through a slow generic loop (binary cross-entropy ~25% slower, benchmarks/bench_loss.py)."""
    return ops.where(mask, np.float32(1.0), np.float32(0.0))


def check_reduction(reduction: str, global_valid_count: Any | None = None) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if global_valid_count is not None and reduction != "valid_mean":
        raise ValueError(f"global_valid_count needs reduction='valid_mean', got {reduction!r}")


def per_class(values: Any, num_classes: int, what: str) -> Any:
    """A float32 ``[num_classes]`` tensor from one number or one number per class."""
    if isinstance(values, (int, float, np.number)):
        return ops.full((num_classes,), float(values), dtype="float32")
    tensor = ops.convert_to_tensor(values, dtype="float32")
    if tuple(tensor.shape) != (num_classes,):
        raise ValueError(
            f"{what} must have one weight per class ({num_classes}), got shape "
            f"{tuple(tensor.shape)}"
        )
    return tensor


# --------------------------------------------------------------------------- invalid labels


def is_symbolic(x: Any) -> bool:
    """Whether ``x`` is a traced placeholder (tf.function / XLA graph, jax.jit tracer, Keras'
    symbolic build) rather than values known now (NumPy, eager tensors)."""
    if isinstance(x, (np.ndarray, np.generic, int, float)):
        return False
    if isinstance(x, keras.KerasTensor):
        return True
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.is_symbolic_tensor(x)
    if backend == "jax":
        import jax

        return isinstance(x, jax.core.Tracer)  # concrete arrays captured by jit are not
    if backend == "torch":
        import torch

        return torch.compiler.is_compiling()
    return False


def raise_on_invalid_labels(labels: Any, *, num_classes: int, ignore: int) -> None:
    """``ValueError`` if labels known now hold a value that is neither a class id nor
    ``ignore``; nothing for symbolic labels (compiled code gets NaN through :attr:`Labels.scale`).

    Eager tensors are checked on their device; only a one-bool answer (and, on failure, the
    labels for the message) comes back to the host.
    """
    if is_symbolic(labels):
        return
    if not isinstance(labels, np.ndarray):
        flag = ops.any(invalid_mask(labels, num_classes, ignore))
        if not is_symbolic(flag) and not bool(ops.convert_to_numpy(flag)):
            return
        # A constant captured by a trace (its check is symbolic), or a bad value to name.
        labels = ops.convert_to_numpy(labels)
    bad = (labels != ignore) & ((labels < 0) | (labels >= num_classes))
    if not bad.any():
        return
    values, counts = np.unique(labels[bad], return_counts=True)
    first = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), labels.shape))
    shown = zip(values[:_MAX_LISTED], counts[:_MAX_LISTED], strict=True)
    listed = [f"{v} ({c} px)" for v, c in shown]
    if len(values) > _MAX_LISTED:
        listed.append(f"{len(values) - _MAX_LISTED} more values")
    which = "which is not a class id" if len(values) == 1 else "which are not class ids"
    raise ValueError(
        f"labels hold {', '.join(listed)}, {which} "
        f"({expected_text(num_classes, (ignore,))}); first at index {list(first)}. Check the "
        "masks (labelfix validate) or pass the void value they use as `ignore`"
    )


def _in_keras_build() -> bool:
    """True inside Keras' symbolic build (``backend.compute_output_spec``): only shapes flow."""
    try:
        from keras.src.backend.common.symbolic_scope import in_symbolic_scope
    except ImportError:  # a Keras without it: float labels stay a TypeError
        return False
    return in_symbolic_scope()


# --------------------------------------------------------------------------- distribution


def replica_context() -> tuple[int, Any]:
    """``(num_replicas, all_reduce_sum)`` of the current tf.distribute replica context.

    ``(1, None)`` on other backends, outside a strategy and in cross-replica context. Imports
    TensorFlow only when Keras already runs on it (as Keras' own losses do).
    """
    if keras.backend.backend() != "tensorflow":
        return 1, None
    import tensorflow as tf

    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return 1, None
    return ctx.num_replicas_in_sync, lambda x: ctx.all_reduce(tf.distribute.ReduceOp.SUM, x)


# --------------------------------------------------------------------------- the Loss classes


class MaskedLoss(keras.losses.Loss):
    """What the labelfix ``Loss`` classes share: ``ignore``, the labelfix reduction names,
    labels passed to the function untouched (the Keras base class would cast them to float),
    no ``sample_weight``, and a ``get_config`` that round-trips ``dtype``.

    ``dtype`` is kept for Keras' API and serialisation; the losses compute in float32 and return
    float32 whatever it says (mixed precision needs exactly that).
    """

    #: The pure loss function (a staticmethod) and the names of the options an instance holds:
    #: ``call`` passes them to the function and ``get_config`` records them.
    function: Any = None
    options: tuple[str, ...] = ()

    def __init__(self, *, ignore: int, reduction: str | None, name: str, dtype: Any = None):
        if reduction is not None:
            check_reduction(reduction)
        # The base class reduces nothing: the function already returns the final value.
        super().__init__(name=name, reduction="none", dtype=dtype)
        self.ignore = int(ignore)
        self.labelfix_reduction = reduction

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        if sample_weight is not None:
            raise ValueError(
                f"{type(self).__name__} does not take sample_weight; use per-class weights, "
                "or ignore pixels through the labels"
            )
        with keras.name_scope(self.name):
            return self.call(y_true, y_pred)

    def option_values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.options}

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return self.call_pixelwise(
            type(self).function, y_true, y_pred, ignore=self.ignore, **self.option_values()
        )

    def call_pixelwise(self, function: Any, y_true: Any, y_pred: Any, **kwargs: Any) -> Any:
        """``function(y_true, y_pred, ...)``; under a tf.distribute strategy with more than one
        replica, ``valid_mean`` all-reduces the valid-pixel count, so each replica returns
        ``local_sum / global_count``: the value Keras' trainer expects from a loss (already
        scaled for distribution, gradients summed over replicas)."""
        num_replicas, all_reduce_sum = replica_context()
        if num_replicas > 1 and self.labelfix_reduction == "valid_mean":
            count = all_reduce_sum(valid_count(y_true, ignore=self.ignore))
            return function(y_true, y_pred, global_valid_count=count, **kwargs)
        return function(y_true, y_pred, reduction=self.labelfix_reduction, **kwargs)

    def get_config(self) -> dict[str, Any]:
        config = {
            "name": self.name,
            "dtype": keras.dtype_policies.serialize(self._dtype_policy),
            "ignore": self.ignore,
        }
        if self.labelfix_reduction is not None:
            config["reduction"] = self.labelfix_reduction
        return {**config, **self.option_values()}
