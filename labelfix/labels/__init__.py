"""What label values mean: label maps and presets, colormaps, class weights.

``IGNORE_AS`` is the value labelfix presents void pixels as when it reads records for training
(``labelfix.data``), and the default ``ignore`` of the loss, the metric and the training loop:
-1 is no class id in any dataset, and Keras' ``ignore_class=-1`` agrees.
"""

#: The void value of training-time masks (``labelfix.data``, the losses, metrics and ``train``).
IGNORE_AS = -1
