"""The reference training code, one module per concern (import them directly):

* ``model``: the DeepLabV3+ (:func:`~labelfix.training.model.build_model`), stock Keras layers.
* ``augment``: scale, crop and flip identical for image and mask, in ``tf.data``.
* ``pipelines``: the training and validation ``tf.data`` pipelines.
* ``devices``: the distribution strategy, its devices, the precision.
* ``steps``: the masked loss and the distributed train and eval steps.
* ``loop``: :func:`~labelfix.training.loop.train`, the epochs, and what they return.

This package imports neither TensorFlow nor Keras: ``PRECISIONS`` lives here so the CLI can
offer it at start-up.
"""

#: The ``precision`` values of ``train`` and ``labelfix train --precision``.
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
