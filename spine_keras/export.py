"""Export a trained bundle for teams without spine_keras: a TensorFlow SavedModel with a `serve` signature,
the inference `.keras` model, and `spine_keras.json` beside it and inside it (in `saved_model/assets/`).

Layout of the export folder (default `RUN_DIR/export`; a k-fold run gets one such folder per `fold_<i>`):
`saved_model/` (serve: float32 batch -> {probabilities, labels}), `model.keras`, `spine_keras.json` (with the SHA-256
of every exported file, which prediction verifies). Everything is checked before TensorFlow starts (`plan_export`),
then written in a hidden folder beside the target and moved into place (`write_export`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from spine_keras.bundle import (
    EXPORT_KERAS_NAME,
    METADATA_NAME,
    RUN_MODEL_FILES,
    SAVED_MODEL_DIR,
    ExportInfo,
    ModelBundle,
    file_sha256,
    load_keras_model,
    probability_function,
    read_bundle,
)
from spine_keras.destinations import check_folder, disk_errors, process_alive, writer_lock
from spine_keras.errors import UserError

DEFAULT_DIR = "export"
SIGNATURE = "serve"
# TensorFlow's file system layer reports a full disk as an OpError, not an OSError: its message says which.
TF_DISK_ERRORS = (
    ("No space left on device", "no space left on the device"),
    ("Disk quota exceeded", "disk quota exceeded"),
    ("Read-only file system", "read-only file system"),
    ("Permission denied", "permission denied"),
)


def side_multiple(model) -> int:
    """2 to the number of 2x poolings: spatial sides must be multiples of it."""
    import keras

    pooling = (keras.layers.MaxPooling2D, keras.layers.MaxPooling3D)
    return 2 ** sum(isinstance(layer, pooling) and max(layer.strides) == 2 for layer in model.layers)


def _serve_for(model, bundle: ModelBundle) -> tuple[Any, list[int | None]]:
    """The serving function with flexible batch (and, for 2D models whose layers allow it, flexible sides)."""
    import tensorflow as tf

    if bundle.mode == "2d":
        flexible = [None, None, None, bundle.channels]
        try:
            spec = tf.TensorSpec(flexible, tf.float32, name="image")
            return probability_function(model, spec, bundle.logits), flexible
        except (TypeError, ValueError):  # a layer needs static sides (e.g. shape arithmetic on x.shape)
            pass
    fixed = [None, *bundle.input_shape]
    return probability_function(model, tf.TensorSpec(fixed, tf.float32, name="image"), bundle.logits), fixed


def export_saved_model(model, bundle: ModelBundle, path: Path) -> ExportInfo:
    """Write `model` as a SavedModel with the `serve` endpoint; returns what the export holds."""
    import keras

    serve, shape = _serve_for(model, bundle)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE, serve)
    archive.write_out(str(path), verbose=False)
    return ExportInfo(
        saved_model=SAVED_MODEL_DIR,
        keras=EXPORT_KERAS_NAME,
        signature=SIGNATURE,
        input_shape=tuple(shape),
        flexible_sides=all(s is None for s in shape[1:-1]),
        side_multiple=side_multiple(model),
    )


def is_export(folder: Path) -> bool:
    """Whether `folder` holds an earlier export (one model, or fold_* exports), which a new export may replace."""
    if (folder / METADATA_NAME).is_file() and (folder / SAVED_MODEL_DIR).is_dir():
        return True
    children = [child for child in folder.iterdir() if not child.name.startswith(".")]
    return bool(children) and all(child.name.startswith("fold_") and is_export(child) for child in children)


def check_destination(out: Path) -> None:
    """UserError unless `out` can take the export: a new folder in a writable folder, an empty folder or an earlier
    export (replaced once the new one is complete); never a file or a folder holding anything else."""
    check_folder(out, "export folder", create_parents=False)
    if out.is_dir() and any(out.iterdir()) and not is_export(out):
        raise UserError(f"export folder '{out}' exists and is not a spine_keras export; choose another -o folder")


@dataclasses.dataclass(frozen=True)
class ExportPlan:
    """What an export will write, all checked before TensorFlow is imported: each model file with its bundle and
    its folder inside `out` ("" for a single model, `fold_<i>` for the folds of a k-fold run)."""

    out: Path
    models: tuple[tuple[Path, ModelBundle, str], ...]


def _model_file(run_dir: Path) -> Path | None:
    return next((run_dir / name for name in RUN_MODEL_FILES if (run_dir / name).is_file()), None)


def plan_export(run_dir: Path | str, out_dir: Path | str | None = None) -> ExportPlan:
    """Check the run folder, every bundle in it and the destination; no TensorFlow, nothing written."""
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / DEFAULT_DIR
    if not run_dir.is_dir():
        raise UserError(f"run folder '{run_dir}' not found")
    model_file = _model_file(run_dir)
    if model_file is not None:
        models = ((model_file, read_bundle(run_dir), ""),)
    else:
        folds = sorted(p for p in run_dir.glob("fold_*") if p.is_dir() and _model_file(p) is not None)
        if not folds:
            raise UserError(f"no model in '{run_dir}': expected {' or '.join(RUN_MODEL_FILES)} (or fold_* folders)")
        models = tuple((_model_file(fold), read_bundle(fold), fold.name) for fold in folds)
    check_destination(out)
    return ExportPlan(out, models)


def exported_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every file of an export folder but the metadata copies, by path relative to the folder."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != METADATA_NAME)
    return {p.relative_to(folder).as_posix(): file_sha256(p) for p in files}


def export_model(keras_path: Path, bundle: ModelBundle, folder: Path) -> None:
    """Export one `.keras` model with its metadata, and the SHA-256 of every file written, into `folder`."""
    model = load_keras_model(keras_path)
    folder.mkdir(parents=True)
    info = export_saved_model(model, bundle, folder / SAVED_MODEL_DIR)
    model.save(str(folder / EXPORT_KERAS_NAME))
    exported = bundle.replace(export=dataclasses.replace(info, files=exported_hashes(folder)))
    exported.write(folder)
    exported.write(folder / SAVED_MODEL_DIR / "assets")


def _replace_dir(tmp: Path, target: Path) -> None:
    """Move a finished temporary folder onto `target`, replacing an earlier export there."""
    if target.exists():
        check_destination(target)
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)  # the earlier export stays whole until the new one is in place
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
        return
    os.replace(tmp, target)


def remove_stale(out: Path) -> None:
    """Delete the temporary folders a killed export left beside `out` (their process is gone)."""
    for stale in [*out.parent.glob(f".{out.name}.tmp-*"), *out.parent.glob(f".{out.name}.old-*")]:
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def _write_errors(out: Path) -> Iterator[None]:
    """A full disk (or another environment error) met while writing, from Python or from TensorFlow's own file
    system layer, as a UserError naming the export folder."""
    import tensorflow as tf

    try:
        with disk_errors(out, "export folder"):
            yield
    except tf.errors.OpError as exc:
        reason = next((text for pattern, text in TF_DISK_ERRORS if pattern in exc.message), None)
        if reason is None:
            raise
        raise UserError(f"cannot write export folder '{out}': {reason}") from exc


def write_export(plan: ExportPlan) -> Path:
    """Build every model of `plan` in a temporary folder beside `plan.out`, then move it into place at once;
    on any failure the temporary folder is removed and an earlier export stays as it was."""
    out = plan.out
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    with _write_errors(out), writer_lock(out, "export folder"):
        remove_stale(out)
        try:
            for keras_path, bundle, sub in plan.models:
                export_model(keras_path, bundle, tmp / sub if sub else tmp)
            _replace_dir(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def export_bundle(run_dir: Path | str, out_dir: Path | str | None = None) -> Path:
    """Export a run folder (`best.keras`, else `last.keras`) or every fold of a k-fold run; returns the folder."""
    return write_export(plan_export(run_dir, out_dir))
