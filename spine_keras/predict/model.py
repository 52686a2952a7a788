"""Load a trained model for prediction: run folder, k-fold run, `.keras` file, exported SavedModel or export folder.

Every form becomes a `Segmenter`: the typed `ModelBundle` plus a function from a float32 batch to class
probabilities, with optional flip test-time augmentation (over the flips seen in training, or all) and fold
ensembling. Everything that needs no TensorFlow is checked first (the metadata of every fold, the SHA-256 of every
exported file, the TTA mode); the models themselves load on first use, a SavedModel only once its ops passed the
allow-list of `spine_keras.predict.graph_check`, a `.keras` file in Keras' safe mode.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np

from spine_keras.bundle import (
    EXPORT_KERAS_NAME,
    METADATA_NAME,
    RUN_MODEL_FILES,
    SAVED_MODEL_DIR,
    ModelBundle,
    load_keras_model,
    probability_function,
    read_bundle,
    verify_file,
    verify_folder,
)
from spine_keras.choices import TTA_MODES
from spine_keras.errors import UserError

BatchFn = Callable[[np.ndarray], np.ndarray]


def keras_batch_fn(model, bundle: ModelBundle) -> BatchFn:
    """A Keras model as a traced batch function (one trace for every batch size), batch norms folded into the
    convolutions, through the same serving wrapper as the export (softmax applied to logits)."""
    import tensorflow as tf

    from spine_keras.predict.batchnorm_folding import fold_batchnorm

    spec = tf.TensorSpec([None, *bundle.input_shape], tf.float32)
    serve = probability_function(fold_batchnorm(model), spec, bundle.logits)
    return lambda batch: serve(tf.constant(batch, tf.float32))["probabilities"].numpy()


def _saved_model_fn(path: Path, trust: bool) -> BatchFn:
    """The `serve` endpoint of a SavedModel, once its graph passed the op allow-list (unless `trust`)."""
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    from spine_keras.predict.graph_check import check_saved_model

    if not trust:
        check_saved_model(path)
    try:
        loaded = tf.saved_model.load(str(path))
    except (tf.errors.OpError, DecodeError, ValueError, TypeError, KeyError, OSError) as exc:
        raise UserError(f"cannot load SavedModel '{path}' ({type(exc).__name__}: {str(exc)[:300]})") from exc
    if not hasattr(loaded, "serve"):
        raise UserError(f"SavedModel '{path}' has no 'serve' endpoint; export it with scripts/export.py")
    return lambda batch: loaded.serve(tf.constant(batch, tf.float32))["probabilities"].numpy()


def verify_export(kind: str, path: Path, bundle: ModelBundle, trust: bool) -> None:
    """Check the exported files against the SHA-256 recorded at export (no TensorFlow): a SavedModel needs them,
    unless `trust`; an exported `model.keras` is checked when they are there. A mismatch is always refused."""
    info = bundle.export
    if not (info and info.files):
        if kind == "saved_model" and not trust:
            raise UserError(
                f"SavedModel '{path}' has no file hashes in its {METADATA_NAME} (export.files): re-export it with "
                "spine-export, or pass --trust-model if you trust whoever made it"
            )
        return
    if kind == "saved_model":
        verify_folder(path, info.files, f"{info.saved_model}/")
    elif path.name == info.keras:
        verify_file(path, info.files.get(info.keras))


class LazyModel:
    """A batch function whose model loads on its first call (or on `load()`), so that bad inputs and flags are
    refused before TensorFlow starts."""

    def __init__(self, load: Callable[[], BatchFn]):
        self._load = load
        self._fn: BatchFn | None = None

    def load(self) -> BatchFn:
        """Load the model now if it is not loaded yet; returns its batch function."""
        if self._fn is None:
            self._fn = self._load()
        return self._fn

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.load()(batch)


def _load_fn(kind: str, path: Path, bundle: ModelBundle, trust: bool) -> BatchFn:
    if kind == "keras":
        return keras_batch_fn(load_keras_model(path), bundle)
    return _saved_model_fn(path, trust)


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


def tta_axes(bundle: ModelBundle, tta: str | None) -> tuple[int, ...]:
    """The sample axes whose flips test-time augmentation averages over: none without `tta`, every spatial axis for
    'all', for 'train' the axes the model saw flipped in training (the bundle's `train_flips`); UserError when
    'train' has no flips to average over."""
    if tta is None:
        return ()
    if tta not in TTA_MODES:
        raise UserError(f"--tta takes {' or '.join(TTA_MODES)}, not '{tta}'")
    if tta == "all":
        return tuple(range(bundle.rank))
    if bundle.train_flips is None:
        raise UserError(
            "--tta: the model's metadata does not record which flips it was trained with (trained before they were "
            "recorded); pass --tta all to average over every flip anyway"
        )
    if not bundle.train_flips:
        raise UserError(
            "--tta: the model saw no flipped samples in training, so flipping at prediction shows it images it "
            "never learned; pass --tta all to average over every flip anyway"
        )
    return bundle.train_flips


@dataclasses.dataclass
class Segmenter:
    """A loaded model (or fold ensemble) with its bundle; `predict(batch)` gives class probabilities.

    `tta`: None (no test-time augmentation), 'train' (average over the flips seen in training) or 'all' (over
    every flip of every spatial axis); checked on construction, before any model loads.
    """

    bundle: ModelBundle
    fns: list[BatchFn]
    tta: str | None = None
    flips: list[tuple[int, ...]] = dataclasses.field(init=False, repr=False)  # sample axes of each TTA pass

    def __post_init__(self) -> None:
        axes = tta_axes(self.bundle, self.tta)
        self.flips = [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]

    def load(self) -> None:
        """Load every model now (they otherwise load on first use)."""
        for fn in self.fns:
            if isinstance(fn, LazyModel):
                fn.load()

    def _once(self, batch: np.ndarray) -> np.ndarray:
        return sum(fn(batch) for fn in self.fns) / len(self.fns)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Mean class probabilities over the folds, and over every combination of the `tta` flips (each flip undone
        on the output before averaging)."""
        batch = np.asarray(batch, np.float32)
        if len(self.flips) == 1:
            return self._once(batch)
        total = np.zeros(batch.shape[:-1] + (self.bundle.n_classes,), np.float32)
        for flip in self.flips:
            batch_axes = tuple(a + 1 for a in flip)  # sample axis a is batch axis a + 1
            out = self._once(np.flip(batch, batch_axes) if flip else batch)
            total += np.flip(out, batch_axes) if flip else out
        return total / len(self.flips)


def check_folds(bundles: list[ModelBundle], files: list[Path], where: Path) -> None:
    """UserError when the folds of an ensemble disagree on their input, preprocessing or classes."""
    first = bundles[0].inference_contract()
    for bundle, model_file in zip(bundles[1:], files[1:]):
        other = bundle.inference_contract()
        differing = [key for key in first if other[key] != first[key]]
        if differing:
            raise UserError(
                f"folds of '{where}' disagree on {', '.join(differing)} ({model_file}); predict with one fold folder"
            )


def load_segmenter(model_path: Path | str, tta: str | None = None, trust: bool = False) -> Segmenter:
    """MODEL as given on the command line: its metadata read and the folds compared, the exported files checked
    against their recorded hashes; the models load on first use (see the module docstring; `tta` as `Segmenter`
    takes it; `trust` skips the SavedModel op allow-list and lets a SavedModel without recorded hashes through)."""
    path = Path(model_path)
    found = _resolve(path)
    bundles = [read_bundle(meta_path) for _, _, meta_path in found]
    check_folds(bundles, [file for _, file, _ in found], path)
    if tta == "train" and len({bundle.train_flips for bundle in bundles}) > 1:
        raise UserError(f"--tta: the folds of '{path}' were trained with different flips; pass --tta all")
    for (kind, file, _), bundle in zip(found, bundles):
        verify_export(kind, file, bundle, trust)
    fns = [
        LazyModel(functools.partial(_load_fn, kind, file, bundle, trust))
        for (kind, file, _), bundle in zip(found, bundles)
    ]
    return Segmenter(bundles[0], fns, tta)
