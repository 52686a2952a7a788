"""Training: strategy, data, model, losses, metrics and callbacks -> a run folder of bundles and reports.

The names below load on first use, so `spine_keras.train.settings` (what `spine-train` parses flags into) can be
imported without importing Keras and TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spine_keras.train.run import RunResult, train
    from spine_keras.train.settings import TrainSettings, merge_settings

_HOMES = {
    "RunResult": "spine_keras.train.run",
    "train": "spine_keras.train.run",
    "TrainSettings": "spine_keras.train.settings",
    "merge_settings": "spine_keras.train.settings",
}
__all__ = ["RunResult", "TrainSettings", "merge_settings", "train"]


def __getattr__(name: str) -> Any:
    """Import `name` from its module the first time it is asked for (PEP 562)."""
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
