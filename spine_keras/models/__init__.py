"""Model factory: the ICPR 2020 U-Net variants and FCN8, in 2D and 3D, from one call.

The arch registry and build settings load without Keras (so `--help` and diagrams stay fast); the names that need
Keras are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from spine_keras.models.config import OVERRIDES
from spine_keras.models.registry import ARCHS, PRESETS, arch_code, preset

_LAZY = {
    "attention_layers": "factory",
    "attention_maps": "factory",
    "attention_model": "factory",
    "build_model": "factory",
    "inference_model": "factory",
    "describe": "introspect",
    "receptive_field": "introspect",
    "LinearUpsample": "upsample",
}

__all__ = [
    "ARCHS",
    "OVERRIDES",
    "PRESETS",
    "LinearUpsample",
    "arch_code",
    "attention_layers",
    "attention_maps",
    "attention_model",
    "build_model",
    "describe",
    "inference_model",
    "preset",
    "receptive_field",
]


def __getattr__(name: str) -> Any:
    """Import the Keras-backed names (`build_model`, `describe`, ...) when first asked for."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"spine_keras.models.{_LAZY[name]}"), name)
