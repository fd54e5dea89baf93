"""The bad-value rule on label tensors, for the losses, the metric and the training pipelines.

``keras.ops`` and NumPy only, Keras imported when first used (importing Keras registers the
losses, which import this module), TensorFlow only when Keras already runs on it: labels
must be integers and ``ignore`` must fit their dtype (``docs/losses.md``, rule 1); a label that
is neither ``ignore`` nor a class id is refused where its value can be known (eager code) with
the message :mod:`labelfix.checks.rules` words every bad value with.

>>> raise_on_invalid_labels(np.array([[0, 1], [255, 7]]), num_classes=3, ignore=255)
Traceback (most recent call last):
...
ValueError: labels: value 7 is not a class id (expected 0..2 or ignore 255): 1 px, first at \
y=1 x=1. Check the masks (labelfix validate) or pass the void value they use as `ignore`
"""

from __future__ import annotations

from typing import Any

import numpy as np

from labelfix.checks.rules import bad_values_message, find_bad_values

_INT_DTYPES = ("uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64")


def check_labels(labels: Any, ignore: int) -> Any:
    """Return ``labels`` as a tensor after the dtype checks (``docs/losses.md``, rule 1).

    Float labels are a ``TypeError``, with one exception: while Keras builds a model
    symbolically (shape inference, no data), e.g. the first ``fit`` under a ``tf.distribute``
    strategy, whose build passes the replicas' label batches averaged (float64). Those
    placeholders are cast to int32; real float data never takes that path.
    """
    import keras
    from keras import ops

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


def invalid_mask(labels: Any, num_classes: int, ignore: int) -> Any:
    """Elementwise: True where a label is neither ``ignore`` nor ``0..num_classes-1``."""
    import keras
    from keras import ops

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


def is_symbolic(x: Any) -> bool:
    """Whether ``x`` is a traced placeholder (tf.function / XLA graph, jax.jit tracer, Keras'
    symbolic build) rather than values known now (NumPy, eager tensors)."""
    import keras

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
    ``ignore`` (the message of :func:`labelfix.checks.rules.bad_values_message`); nothing for
    symbolic labels (compiled losses get NaN instead, see :mod:`labelfix.losses`).

    Eager tensors are checked on their device; only a one-bool answer (and, on failure, the
    labels for the message) comes back to the host.
    """
    from keras import ops

    if is_symbolic(labels):
        return
    if not isinstance(labels, np.ndarray):
        flag = ops.any(invalid_mask(labels, num_classes, ignore))
        if not is_symbolic(flag) and not bool(ops.convert_to_numpy(flag)):
            return
        # A constant captured by a trace (its check is symbolic), or a bad value to name.
        labels = ops.convert_to_numpy(labels)
    message = bad_labels_message("labels", labels, num_classes=num_classes, ignore=ignore)
    if message is not None:
        raise ValueError(
            f"{message}. Check the masks (labelfix validate) or pass the void value they use "
            "as `ignore`"
        )


def bad_labels_message(where: str, labels: np.ndarray, *, num_classes: int, ignore: int):
    """The rule's message for a label array that holds a value neither ``ignore`` nor a class
    id (None when it holds none).

    >>> bad_labels_message("labels", np.array([[[0, 7], [255, 7]]]), num_classes=3, ignore=255)
    'labels: value 7 is not a class id (expected 0..2 or ignore 255): 2 px, first at image 0, \
y=0 x=1'
    """
    values, counts = np.unique(labels, return_counts=True)
    bad = find_bad_values(values, counts, labels, num_classes=num_classes, void=(ignore,))
    if not bad:
        return None
    return bad_values_message(where, bad, num_classes=num_classes, ignore=(ignore,))


def _in_keras_build() -> bool:
    """True inside Keras' symbolic build (``backend.compute_output_spec``): only shapes flow."""
    try:
        from keras.src.backend.common.symbolic_scope import in_symbolic_scope
    except ImportError:  # a Keras without it: float labels stay a TypeError
        return False
    return in_symbolic_scope()
