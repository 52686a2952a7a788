"""Export a trained bundle for teams without spine_keras: a TensorFlow SavedModel with a `serve` signature,
the inference `.keras` model, and `spine_keras.json` beside it and inside it (in `saved_model/assets/`).

Layout of the export folder (default `RUN_DIR/export`; a k-fold run gets one such folder per `fold_<i>`):
`saved_model/` (serve: float32 batch -> {probabilities, labels}), `model.keras`, `spine_keras.json`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from spine_keras.bundle import (
    EXPORT_KERAS_NAME,
    METADATA_NAME,
    RUN_MODEL_FILES,
    SAVED_MODEL_DIR,
    load_keras_model,
    outputs_logits,
    read_metadata,
    write_metadata,
)
from spine_keras.errors import UserError

DEFAULT_DIR = "export"
SIGNATURE = "serve"


def side_multiple(model) -> int:
    """2 to the number of 2x poolings: spatial sides must be multiples of it."""
    import keras

    pooling = (keras.layers.MaxPooling2D, keras.layers.MaxPooling3D)
    return 2 ** sum(isinstance(layer, pooling) and max(layer.strides) == 2 for layer in model.layers)


def serving_function(model, spec, logits: bool):
    """A traced tf.function: float32 batch -> {'probabilities': softmax scores, 'labels': int32 argmax}."""
    import tensorflow as tf

    @tf.function(input_signature=[spec])
    def serve(image):
        scores = model(image, training=False)
        probabilities = tf.nn.softmax(scores, axis=-1) if logits else scores
        return {"probabilities": probabilities, "labels": tf.argmax(probabilities, axis=-1, output_type=tf.int32)}

    serve.get_concrete_function()
    return serve


def _serve_for(model, metadata: dict[str, Any]) -> tuple[Any, list[int | None]]:
    """The serving function with flexible batch (and, for 2D models whose layers allow it, flexible sides)."""
    import tensorflow as tf

    input_shape = [int(s) for s in metadata["input_shape"]]
    logits = outputs_logits(metadata)
    if metadata["mode"] == "2d":
        flexible = [None, None, None, input_shape[-1]]
        try:
            return serving_function(model, tf.TensorSpec(flexible, tf.float32, name="image"), logits), flexible
        except (TypeError, ValueError):  # a layer needs static sides (e.g. shape arithmetic on x.shape)
            pass
    fixed = [None, *input_shape]
    return serving_function(model, tf.TensorSpec(fixed, tf.float32, name="image"), logits), fixed


def export_saved_model(model, metadata: dict[str, Any], path: Path) -> dict[str, Any]:
    """Write `model` as a SavedModel with the `serve` endpoint; returns the 'export' metadata entry."""
    import keras

    serve, shape = _serve_for(model, metadata)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE, serve)
    archive.write_out(str(path), verbose=False)
    spatial = shape[1:-1]
    return {
        "saved_model": SAVED_MODEL_DIR,
        "keras": EXPORT_KERAS_NAME,
        "signature": SIGNATURE,
        "input": {"name": "image", "dtype": "float32", "shape": shape},
        "outputs": {
            "probabilities": "float32 (batch, *spatial, n_classes), softmax",
            "labels": "int32 (batch, *spatial), argmax class id",
        },
        "flexible_sides": all(s is None for s in spatial),
        "side_multiple": side_multiple(model),
        "deep_supervision_heads": "dropped; only the main 'seg' output is exported",
    }


def _replace_dir(tmp: Path, target: Path) -> None:
    """Move a finished temporary folder onto `target`, replacing an earlier export there."""
    if target.exists():
        if not ((target / METADATA_NAME).is_file() and (target / SAVED_MODEL_DIR).is_dir()):
            raise UserError(f"'{target}' exists and is not a spine_keras export; choose another -o folder")
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)  # the earlier export stays whole until the new one is in place
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
        return
    os.replace(tmp, target)


def export_model(keras_path: Path, metadata: dict[str, Any], out_dir: Path) -> Path:
    """Export one `.keras` model with its metadata into `out_dir`, atomically (built beside it, then renamed)."""
    model = load_keras_model(keras_path)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        info = export_saved_model(model, metadata, tmp / SAVED_MODEL_DIR)
        exported = {**metadata, "export": info}
        model.save(str(tmp / EXPORT_KERAS_NAME))
        write_metadata(exported, tmp)
        write_metadata(exported, tmp / SAVED_MODEL_DIR / "assets")
        _replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _model_file(run_dir: Path) -> Path | None:
    return next((run_dir / name for name in RUN_MODEL_FILES if (run_dir / name).is_file()), None)


def export_bundle(run_dir: Path | str, out_dir: Path | str | None = None) -> Path:
    """Export a run folder (`best.keras`, else `last.keras`) or every fold of a k-fold run; returns the folder."""
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / DEFAULT_DIR
    if not run_dir.is_dir():
        raise UserError(f"run folder '{run_dir}' not found")
    model_file = _model_file(run_dir)
    if model_file is not None:
        return export_model(model_file, read_metadata(run_dir), out)
    folds = sorted(p for p in run_dir.glob("fold_*") if p.is_dir() and _model_file(p) is not None)
    if not folds:
        raise UserError(f"no model in '{run_dir}': expected {' or '.join(RUN_MODEL_FILES)} (or fold_* folders)")
    for fold in folds:
        export_model(_model_file(fold), read_metadata(fold), out / fold.name)
    return out
