"""Load a trained model for prediction: run folder, k-fold run, `.keras` file, exported SavedModel or export folder.

Every form becomes a `Segmenter`: the bundle metadata plus a function from a float32 batch to class
probabilities, with optional flip test-time augmentation and fold ensembling.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from spine_keras.bundle import (
    EXPORT_KERAS_NAME,
    RUN_MODEL_FILES,
    SAVED_MODEL_DIR,
    load_keras_model,
    outputs_logits,
    read_metadata,
)
from spine_keras.errors import UserError

# Metadata that must agree between the folds of an ensemble.
SHARED_KEYS = ("mode", "axis", "input_shape", "n_classes", "preprocess", "sampling", "label_map")

BatchFn = Callable[[np.ndarray], np.ndarray]


def keras_batch_fn(model, metadata: dict[str, Any]) -> BatchFn:
    """A Keras model as a traced batch function (one trace for every batch size), batch norms folded into the
    convolutions, softmax applied to logits."""
    import tensorflow as tf

    from spine_keras.predict.fold import fold_batchnorm

    model = fold_batchnorm(model)
    logits = outputs_logits(metadata)
    spec = tf.TensorSpec([None, *metadata["input_shape"]], tf.float32)

    @tf.function(input_signature=[spec])
    def call(batch):
        out = model(batch, training=False)
        return tf.nn.softmax(out, axis=-1) if logits else out

    return lambda batch: call(tf.constant(batch, tf.float32)).numpy()


def _saved_model_fn(path: Path) -> BatchFn:
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:
        raise UserError(f"cannot load SavedModel '{path}' ({type(exc).__name__}: {exc})") from exc
    if not hasattr(loaded, "serve"):
        raise UserError(f"SavedModel '{path}' has no 'serve' endpoint; export it with scripts/export.py")
    return lambda batch: loaded.serve(tf.constant(batch, tf.float32))["probabilities"].numpy()


def _resolve(path: Path) -> list[tuple[str, Path, Path]]:
    """(kind, model path, metadata path) for each model a path names; folds of a k-fold run give several."""
    if path.is_file() and path.suffix == ".keras":
        return [("keras", path, path)]
    if not path.is_dir():
        raise UserError(f"model '{path}' not found; give a run folder, a .keras file or an exported SavedModel")
    if (path / "saved_model.pb").is_file():
        return [("saved_model", path, path)]
    if (path / SAVED_MODEL_DIR / "saved_model.pb").is_file():
        return [("saved_model", path / SAVED_MODEL_DIR, path)]
    for name in RUN_MODEL_FILES + (EXPORT_KERAS_NAME,):
        if (path / name).is_file():
            return [("keras", path / name, path)]
    folds = sorted((p for p in path.glob("fold_*") if p.is_dir()), key=lambda p: p.name)
    if folds:
        return [found for fold in folds for found in _resolve(fold)]
    raise UserError(f"no model in '{path}': expected {', '.join(RUN_MODEL_FILES)}, saved_model.pb or fold_* folders")


@dataclasses.dataclass
class Segmenter:
    """A loaded model (or fold ensemble) with its metadata; `predict(batch)` gives class probabilities."""

    metadata: dict[str, Any]
    fns: list[BatchFn]
    tta: bool = False

    @property
    def rank(self) -> int:
        """Spatial axes of the model input: 2 or 3."""
        return len(self.metadata["input_shape"]) - 1

    def _once(self, batch: np.ndarray) -> np.ndarray:
        return sum(fn(batch) for fn in self.fns) / len(self.fns)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Mean class probabilities over the folds, and over all spatial flips when `tta` is on."""
        batch = np.asarray(batch, np.float32)
        if not self.tta:
            return self._once(batch)
        axes = range(1, self.rank + 1)
        flips = [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]
        total = np.zeros(batch.shape[:-1] + (self.metadata["n_classes"],), np.float32)
        for flip in flips:
            out = self._once(np.flip(batch, flip) if flip else batch)
            total += np.flip(out, flip) if flip else out
        return total / len(flips)


def check_metadata(metadata: dict[str, Any], where: Path) -> None:
    """UserError when the metadata cannot drive prediction (unknown mode, shape of the wrong rank, no 2D axis)."""
    mode, shape = metadata.get("mode"), metadata.get("input_shape") or []
    if mode not in ("2d", "3d") or len(shape) != (3 if mode == "2d" else 4):
        raise UserError(
            f"model metadata of '{where}' has mode {mode!r} with input_shape {shape}; expected '2d' "
            "with (H, W, C) or '3d' with (D, H, W, C)"
        )
    if not isinstance(metadata.get("preprocess"), dict):
        raise UserError(
            f"model metadata of '{where}' records no preprocessing; re-export it from a run trained "
            "on a cube built by spine-make-cube"
        )
    if mode == "2d" and metadata.get("axis") not in (0, 1, 2):
        raise UserError(f"model metadata of '{where}' has no slice axis (0, 1 or 2) for its 2D model")


def load_segmenter(model_path: Path | str, tta: bool = False) -> Segmenter:
    """Load MODEL as given on the command line, checking that ensemble folds share their preprocessing."""
    path = Path(model_path)
    found = _resolve(path)
    metadatas = [read_metadata(meta_path) for _, _, meta_path in found]
    check_metadata(metadatas[0], path)
    for other, (_, model_file, _) in zip(metadatas[1:], found[1:]):
        differing = [key for key in SHARED_KEYS if other.get(key) != metadatas[0].get(key)]
        if differing:
            raise UserError(
                f"folds of '{path}' disagree on {', '.join(differing)} ({model_file}); predict with one fold folder"
            )
    fns = [
        keras_batch_fn(load_keras_model(file), meta) if kind == "keras" else _saved_model_fn(file)
        for (kind, file, _), meta in zip(found, metadatas)
    ]
    return Segmenter(metadatas[0], fns, tta)
