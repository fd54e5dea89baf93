"""A small but real segmentation model: DeepLabV3+ (ASPP head and a stride-4 decoder).

Built from stock Keras layers only, so a saved ``.keras`` file loads with plain
``keras.models.load_model`` (no custom objects) and the model runs on any Keras 3 backend. No
weights are downloaded: the built-in encoder is trained from scratch, and a ``keras.applications``
backbone is built with ``weights=None``.

>>> model = build_model(num_classes=3, input_shape=(32, 32, 3), width=8)
>>> model.output_shape
(None, 32, 32, 3)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import keras
from keras import layers

from labelfix.errors import UsageError
from labelfix.training import NORMS

__all__ = ["NORMS", "build_model"]


def build_model(
    *,
    num_classes: int,
    input_shape: tuple[int | None, int | None, int] = (None, None, 3),
    width: int = 32,
    backbone: str | None = None,
    norm: str = "group",
    aspp_rates: Sequence[int] = (2, 4, 6),
    dtype: Any = None,
    name: str = "labelfix_deeplabv3plus",
) -> keras.Model:
    """DeepLabV3+ returning logits ``[B, H, W, num_classes]`` (no softmax) at input resolution.

    Args:
        num_classes: classes the logits score.
        input_shape: ``(H, W, 3)``; H and W may be None with the built-in encoder and must be
            multiples of 8 at run time (16 with ``backbone``). Keras 3.15's bilinear
            ``UpSampling2D`` cannot be traced with unknown H and W, so feed ``fit``/``predict``
            batches of a fixed size (``labelfix.training.pipelines.training_pipeline`` crops;
            pad validation images to one size), or call the model eagerly per image.
        width: channels of the first stage of the built-in encoder (doubling twice); the ASPP
            head and decoder scale with it.
        backbone: a ``keras.applications`` model name ("MobileNetV2", "ResNet50", ...), built
            with ``weights=None`` and a static ``input_shape``; the head reads its last stride-16
            feature map and the decoder its last stride-4 one (as keras.io's DeepLabV3+ example
            does with ResNet50). None: the built-in output-stride-8 encoder.
        norm: ``"group"`` (default): GroupNormalization, independent of the batch, so any number
            of replicas computes exactly the single-device loss and gradients and tiny per-GPU
            segmentation batches do not make the statistics noisy. ``"batch"``:
            BatchNormalization with per-replica statistics (applications backbones always use
            their own BatchNormalization).
        aspp_rates: dilation rates of the three 3x3 ASPP branches (the paper's (6, 12, 18) suit
            crops of 512 px and more at output stride 16).
        dtype: a Keras dtype policy for every layer, e.g. ``"mixed_bfloat16"``; None keeps the
            global policy. Logits come out in the compute dtype; the labelfix loss computes in
            float32 whatever they are.
    """
    if norm not in NORMS:
        raise UsageError(f"norm must be one of {NORMS}, got {norm!r}")
    if num_classes < 1:
        raise UsageError(f"num_classes must be at least 1, got {num_classes}")
    with _dtype_policy(dtype):
        inputs = keras.Input(shape=input_shape, name="image")
        if backbone is None:
            high, low, stride = _encoder(inputs, width=width, norm=norm)
        else:
            high, low, stride = _application_features(inputs, backbone)
        x = _aspp(high, channels=4 * width, rates=aspp_rates, norm=norm)
        x = layers.UpSampling2D(stride // 4, interpolation="bilinear", name="head_up")(x)
        skip = _conv(low, width, 1, norm=norm, name="decoder_skip")
        x = layers.Concatenate(name="decoder_concat")([x, skip])
        x = _conv(x, 2 * width, 3, norm=norm, name="decoder_conv1")
        x = _conv(x, 2 * width, 3, norm=norm, name="decoder_conv2")
        x = layers.Conv2D(num_classes, 1, name="classifier")(x)
        logits = layers.UpSampling2D(4, interpolation="bilinear", name="logits")(x)
        return keras.Model(inputs, logits, name=name)


@contextlib.contextmanager
def _dtype_policy(dtype: Any) -> Iterator[None]:
    """Build layers under ``dtype`` (applications models take no per-layer dtype)."""
    if dtype is None:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(dtype)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _norm(x: Any, norm: str, name: str) -> Any:
    if norm == "batch":
        return layers.BatchNormalization(name=f"{name}_bn")(x)
    channels = x.shape[-1]
    groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
    return layers.GroupNormalization(groups=groups, name=f"{name}_gn")(x)


def _conv(
    x: Any, channels: int, size: int, *, norm: str, name: str, strides: int = 1, rate: int = 1
) -> Any:
    x = layers.Conv2D(
        channels,
        size,
        strides=strides,
        dilation_rate=rate,
        padding="same",
        use_bias=False,
        name=f"{name}_conv",
    )(x)
    return layers.ReLU(name=f"{name}_relu")(_norm(x, norm, name))


def _encoder(inputs: Any, *, width: int, norm: str) -> tuple[Any, Any, int]:
    """Plain conv encoder, output stride 8, with residual dilated blocks at the bottom."""
    x = _conv(inputs, width, 3, strides=2, norm=norm, name="stem1")
    x = _conv(x, width, 3, norm=norm, name="stem2")
    x = _conv(x, 2 * width, 3, strides=2, norm=norm, name="stage2_down")
    low = _conv(x, 2 * width, 3, norm=norm, name="stage2")  # stride 4
    x = _conv(low, 4 * width, 3, strides=2, norm=norm, name="stage3_down")
    for i, rate in enumerate((1, 2)):
        y = _conv(x, 4 * width, 3, rate=rate, norm=norm, name=f"stage3_block{i}")
        x = layers.Add(name=f"stage3_add{i}")([x, y])
    return x, low, 8


def _application_features(inputs: Any, backbone: str) -> tuple[Any, Any, int]:
    """The last stride-16 and stride-4 feature maps of a ``keras.applications`` model."""
    factory = getattr(keras.applications, backbone, None)
    if not callable(factory):
        raise UsageError(f"backbone {backbone!r} is not a keras.applications model")
    height, width = inputs.shape[1], inputs.shape[2]
    if height is None or width is None or height % 16 or width % 16:
        raise UsageError(
            f"a backbone needs a static input_shape with H and W multiples of 16, "
            f"got {inputs.shape[1:]}"
        )
    model = factory(include_top=False, weights=None, input_tensor=inputs)
    found: dict[int, Any] = {}
    for layer in model.layers:
        shape = getattr(layer, "output", None)
        shape = getattr(shape, "shape", None)
        if shape is None or len(shape) != 4 or shape[1] is None:
            continue
        stride = height // shape[1] if shape[1] and height % shape[1] == 0 else None
        if stride in (4, 16):
            found[stride] = layer.output  # keep the deepest layer at each stride
    if 4 not in found or 16 not in found:
        raise UsageError(f"backbone {backbone!r} has no stride-4 and stride-16 feature maps")
    return found[16], found[4], 16


def _aspp(x: Any, *, channels: int, rates: Sequence[int], norm: str) -> Any:
    """Atrous spatial pyramid pooling: 1x1, three dilated 3x3 and an image-pooling branch."""
    branches = [_conv(x, channels, 1, norm=norm, name="aspp_1x1")]
    for rate in rates:
        branches.append(_conv(x, channels, 3, rate=rate, norm=norm, name=f"aspp_rate{rate}"))
    y = layers.Concatenate(name="aspp_concat")(branches)
    y = _conv(y, channels, 1, norm=norm, name="aspp_project")
    # Image pooling, broadcast back over the map by the Add (no resize to a static size).
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name="aspp_pool")(x)
    pooled = layers.Conv2D(channels, 1, name="aspp_pool_conv")(pooled)
    pooled = layers.ReLU(name="aspp_pool_relu")(pooled)
    return layers.Add(name="aspp_out")([y, pooled])
