"""Ignore-aware losses for segmentation: one void semantics for every loss (``docs/losses.md``).

Each loss is a pure ``keras.ops`` function first and a thin ``keras.losses.Loss`` (registered
for serialisation under the package ``"labelfix"``) second, so it runs on the TensorFlow, JAX
and PyTorch backends of Keras 3 and under XLA; this package never imports TensorFlow at import
time.

* :func:`masked_sparse_categorical_crossentropy`, :class:`MaskedSparseCategoricalCrossentropy`
* :func:`masked_sparse_categorical_focal_crossentropy`,
  :class:`MaskedSparseCategoricalFocalCrossentropy`
* :func:`masked_binary_crossentropy`, :class:`MaskedBinaryCrossentropy`
* :func:`masked_dice_loss`, :class:`MaskedDiceLoss`
* :class:`CombinedLoss`: a weighted sum of the above, each part keeping its own rules.

Semantics shared by all: ``valid = labels != ignore`` (``ignore`` defaults to -1,
``labelfix.labels.IGNORE_AS``). Labels are integers; float labels are a ``TypeError`` and an
``ignore`` the label dtype cannot hold (-1 with uint8) a ``ValueError``. Labels have the
logits' shape without the class axis (a trailing axis of size 1 is fine); another static shape
(transposed H and W, another batch size) is a ``ValueError`` naming both shapes. Void pixels add
exactly zero loss and zero gradient even when their logits are inf or NaN; a batch without a
valid pixel has loss 0.0 and zero gradients, never NaN; computation is float32 whatever the
logits dtype; no boolean gathers, no data-dependent shapes. Distributed training: each
replica's loss is its share of the global batch's loss (a global valid-pixel count, or for Dice
all-reduced per-class sums), so the summed replica gradients are the single-device gradient.

Labels that are neither a class nor void
----------------------------------------
A label that is neither ``ignore`` nor a class id ``0..C-1`` (255 with ``ignore=-1``, 7 with 3
classes, -2; for the binary loss anything but 0, 1 and ``ignore``) never trains silently:

==============================  ================================================================
where the loss runs             what happens
==============================  ================================================================
eager: NumPy labels, eager TF   ``ValueError`` naming each value, its pixel count and its first
tensors, JAX arrays outside     position: ``labels: value 255 is not a class id (expected 0..2
``jax.jit``, Keras              or ignore -1): 12 px, first at image 0, y=3 x=118. ...``
``run_eagerly=True``
compiled: ``tf.function``,      values are unknown while tracing (and an assert is not portable
XLA ``jit_compile``,            to XLA), so the loss is NaN: such a pixel's loss *and* gradient
``jax.jit``, ``model.fit``      are NaN, as if its logits were NaN (``reduction="none"``: NaN at
                                that pixel). Void pixels keep exactly 0; nothing is computed
                                from a clamped class. Dice: the per-class sums, hence the loss
                                and the gradient of every non-void pixel, are NaN.
==============================  ================================================================

So the batch fails visibly: an optimizer step on it turns the weights NaN (Keras'
``LossScaleOptimizer`` skips it instead), and ``keras.callbacks.TerminateOnNaN`` or
``labelfix train`` (which stops on a non-finite epoch loss) end the run. The metrics follow the
same rule in eager code: :class:`labelfix.metrics.MeanIoU` raises the same ``ValueError``; compiled,
it leaves such pixels out of the confusion matrix, as :func:`labelfix.metrics.confusion_matrix`
always does (the loss of the same batch is what turns NaN). Check masks before training with
``labelfix validate``.
"""

from labelfix.losses._common import REDUCTIONS, valid_count
from labelfix.losses.binary import MaskedBinaryCrossentropy, masked_binary_crossentropy
from labelfix.losses.combined import CombinedLoss
from labelfix.losses.crossentropy import (
    MaskedSparseCategoricalCrossentropy,
    masked_sparse_categorical_crossentropy,
)
from labelfix.losses.dice import MaskedDiceLoss, masked_dice_loss
from labelfix.losses.focal import (
    MaskedSparseCategoricalFocalCrossentropy,
    masked_sparse_categorical_focal_crossentropy,
)

__all__ = [
    "REDUCTIONS",
    "CombinedLoss",
    "MaskedBinaryCrossentropy",
    "MaskedDiceLoss",
    "MaskedSparseCategoricalCrossentropy",
    "MaskedSparseCategoricalFocalCrossentropy",
    "masked_binary_crossentropy",
    "masked_dice_loss",
    "masked_sparse_categorical_crossentropy",
    "masked_sparse_categorical_focal_crossentropy",
    "valid_count",
]

# The metric registers itself with Keras too: whichever of the two is imported first (the
# registration hook in labelfix/__init__.py imports them as soon as Keras is), both end up known
# to keras.saving.load_model.
import labelfix.metrics  # noqa: F401
