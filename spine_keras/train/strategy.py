"""Distribution strategies (auto, one, mirrored, multiworker) and the mixed-precision policy."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import keras
import tensorflow as tf

from spine_keras.choices import STRATEGIES
from spine_keras.errors import UserError
from spine_keras.train.preflight import is_chief

__all__ = ["dtype_policy", "is_chief", "make_strategy", "precision_policy"]


def _mirrored_devices() -> list[str]:
    """Every GPU, else every logical CPU device (tests split the CPU into several)."""
    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The strategy for `name`; create it before any other TensorFlow op (collectives require it)."""
    if name not in STRATEGIES:
        raise UserError(f"--strategy {name!r} is not one of {', '.join(STRATEGIES)}")
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise UserError(
                "--strategy multiworker needs TF_CONFIG describing the cluster and this worker's task, "
                'e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                '"task": {"type": "worker", "index": 0}}'
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_physical_devices("GPU")
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        return tf.distribute.MirroredStrategy(_mirrored_devices())
    if name == "one":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    return tf.distribute.get_strategy()


def precision_policy(mixed: bool) -> str:
    """'mixed_float16' on GPUs, 'mixed_bfloat16' on CPUs (no float16 kernels there), else 'float32'."""
    if not mixed:
        return "float32"
    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Set Keras' global dtype policy for the models built inside, then restore the previous one."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
