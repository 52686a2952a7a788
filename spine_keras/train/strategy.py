"""Distribution strategies (auto, one, mirrored, multiworker) and the mixed-precision policy."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import keras
import tensorflow as tf

from spine_keras.choices import STRATEGIES
from spine_keras.errors import UserError
from spine_keras.train.preflight import is_chief

__all__ = ["cpu_computes_bfloat16", "dtype_policy", "is_chief", "make_strategy", "precision_policy"]

CPU_BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of native bfloat16 arithmetic


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


def cpu_computes_bfloat16(cpuinfo: Path | str = "/proc/cpuinfo") -> bool:
    """Whether the CPU advertises native bfloat16 arithmetic (AVX512-BF16 or AMX), from Linux's /proc/cpuinfo;
    False where that file is missing or unreadable (other systems), so `auto` keeps float32 there."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    flags = {word for line in text.splitlines() if line.startswith("flags") for word in line.partition(":")[2].split()}
    return any(flag in flags for flag in CPU_BFLOAT16_FLAGS)


def _gpus_compute_float16(gpus: list) -> bool:
    """Whether every GPU has tensor cores for float16 (compute capability 7.0 or above)."""
    details = [tf.config.experimental.get_device_details(gpu) for gpu in gpus]
    return all(tuple(d.get("compute_capability") or (0, 0)) >= (7, 0) for d in details)


def precision_policy(mixed: bool | str) -> str:
    """The Keras dtype policy for `--mixed-precision`: 'mixed_float16' on GPUs, 'mixed_bfloat16' on CPUs (no
    float16 kernels there), 'float32' when off. 'auto' turns it on only where the hardware computes the half type
    natively (float16 on tensor-core GPUs, bfloat16 on CPUs with AVX512-BF16 or AMX): emulated, it is slower."""
    gpus = tf.config.list_physical_devices("GPU")
    if mixed == "auto":
        mixed = _gpus_compute_float16(gpus) if gpus else cpu_computes_bfloat16()
    if not mixed:
        return "float32"
    return "mixed_float16" if gpus else "mixed_bfloat16"


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Set Keras' global dtype policy for the models built inside, then restore the previous one."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
