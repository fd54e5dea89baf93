"""The reference training code, one module per concern (import them directly):

* ``model``: the DeepLabV3+ (:func:`~labelfix.training.model.build_model`), stock Keras layers.
* ``sources``: a to-tfrecord split, its shards checked against the manifest, every record
  named by shard and index; read errors turned into one line naming them.
* ``augment``: scale, crop and flip identical for image and mask, in ``tf.data``.
* ``pipelines``: the training, evaluation and prediction ``tf.data`` pipelines, and the check
  that stops a label that is neither void nor a class.
* ``devices``: the distribution strategy, its devices, the precision.
* ``steps``: the masked loss and the distributed train and eval steps.
* ``inference``: the model on whole images of any size (one traced function per padded size).
* ``history``, ``checkpoints``, ``summaries``: what a run reports and keeps: per-epoch stats and
  history.json, a checkpoint per epoch (and resuming), TensorBoard scalars.
* ``config``: :class:`~labelfix.training.config.TrainConfig`, the options of a run, checked.
* ``loop``: :func:`~labelfix.training.loop.train`, the epochs, and what they return.
* ``evaluate``, ``predict``: ``labelfix evaluate`` (per-class IoU, confusion matrix) and
  ``labelfix predict`` (one mask per image).

This package imports neither TensorFlow nor Keras: ``PRECISIONS``, ``LOSSES``, ``NORMS`` and
``MODEL_MULTIPLE`` live here so the CLI can offer them at start-up, and ``config`` (the options
of a run) needs neither.
"""

#: The ``precision`` values of ``train`` and ``labelfix train --precision``.
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")

#: The model's normalisation layers (``labelfix train --norm``).
NORMS = ("group", "batch")

#: Spatial sizes fed to the model are multiples of this (the decoder's largest stride).
MODEL_MULTIPLE = 16

#: The ``loss`` values of ``train`` and ``labelfix train --loss``: cross-entropy, focal
#: cross-entropy, soft Dice, cross-entropy + Dice (see ``steps.TrainingLoss``).
LOSSES = ("ce", "focal", "dice", "ce+dice")
