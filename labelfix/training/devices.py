"""Where and in what precision training runs: the strategy, its devices, the precision.

* **Devices**: every visible GPU through ``tf.distribute.MirroredStrategy``
  (``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` is set); the CPU otherwise.
* **Precision**: float32 on CPU; on GPU ``mixed_bfloat16`` (compute capability 8.0+) or
  ``mixed_float16`` with dynamic loss scaling.

>>> resolve_precision("mixed_bfloat16")
'mixed_bfloat16'
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import tensorflow as tf

from labelfix.errors import UsageError
from labelfix.training import PRECISIONS

__all__ = ["PRECISIONS", "describe_devices", "make_strategy", "resolve_precision"]


def resolve_precision(precision: str = "auto") -> str:
    """``"auto"``: float32 without a GPU; ``mixed_bfloat16`` when every GPU has compute
    capability 8.0+ (Ampere and later, no loss scaling needed); ``mixed_float16`` otherwise."""
    if precision not in PRECISIONS:
        raise UsageError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "float32"
    capabilities = [
        tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
        for gpu in gpus
    ]
    return "mixed_bfloat16" if min(capabilities) >= (8, 0) else "mixed_float16"


def make_strategy(devices: Sequence[str] | None = None) -> tf.distribute.Strategy:
    """``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` is set, else ``MirroredStrategy`` over
    ``devices`` (default: every visible GPU, or the CPU)."""
    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.MirroredStrategy(devices=list(devices) if devices else None)


def describe_devices(strategy: tf.distribute.Strategy) -> tuple[str, ...]:
    """``("GPU:0 (NVIDIA H200)", ...)`` or ``("CPU:0",)``: the devices holding replicas."""
    names = []
    gpus = {f"GPU:{i}": gpu for i, gpu in enumerate(tf.config.list_physical_devices("GPU"))}
    for device in strategy.extended.worker_devices:
        spec = tf.DeviceSpec.from_string(device)
        name = f"{spec.device_type}:{spec.device_index}"
        if name in gpus:
            details = tf.config.experimental.get_device_details(gpus[name])
            name += f" ({details.get('device_name', 'GPU')})"
        names.append(name)
    return tuple(names)
