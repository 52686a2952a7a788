"""What a trained model is on disk: a `.keras` file plus `spine_keras.json`, the metadata needed to use it.

Training writes bundles, export copies them into SavedModels, prediction reads them; none imports the others.
The metadata is plain JSON so teams without spine_keras can read it.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from spine_keras import __version__
from spine_keras.errors import UserError
from spine_keras.io import atomic_path

METADATA_NAME = "spine_keras.json"
BUNDLE_FORMAT = "spine_keras.bundle/1"
RUN_MODEL_FILES = ("best.keras", "last.keras")  # a run folder's models, preferred first
SAVED_MODEL_DIR = "saved_model"  # inside an export folder
EXPORT_KERAS_NAME = "model.keras"  # the inference model beside it
# Keys every bundle carries; see README "Model bundle".
REQUIRED_KEYS = ("format", "arch", "mode", "input_shape", "n_classes", "class_names", "preprocess")


def versions() -> dict[str, str]:
    """Versions of the stack that produced a result, for traceability."""
    found = {"spine_keras": __version__, "python": platform.python_version()}
    for name in ("tensorflow", "keras", "numpy", "h5py"):
        try:
            module = __import__(name)
            found[name] = str(getattr(module, "__version__", "?"))
        except ImportError:
            continue
    return found


def write_json(data: dict[str, Any], path: Path | str) -> None:
    """Write JSON atomically (temporary file then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n", encoding="utf-8")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, os.PathLike):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def make_metadata(
    *,
    arch: str,
    mode: str,
    input_shape: list[int],
    class_names: list[str],
    preprocess: dict[str, Any],
    axis: int | None,
    label_map: str | None,
    model_config: dict[str, Any],
    preset: dict[str, Any],
    cube: dict[str, Any],
    metrics: dict[str, Any] | None = None,
    sampling: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble bundle metadata. `input_shape` excludes the batch axis, e.g. [256, 256, 1]."""
    return {
        "format": BUNDLE_FORMAT,
        "arch": arch,
        "mode": mode,
        "axis": axis,
        "axis_convention": "array axes in ITK index order (i, j, k), LPS space; 2D models see volume slices "
        "taken along `axis` (shared data: axis 2 = sagittal)",
        "input_shape": list(input_shape),
        "n_classes": len(class_names),
        "class_names": list(class_names),
        "label_map": label_map,
        "preprocess": preprocess,
        "sampling": sampling or {},
        "model": model_config,
        "preset": preset,
        "cube": cube,
        "metrics": metrics or {},
        "versions": versions(),
    }


def write_metadata(metadata: dict[str, Any], folder: Path | str) -> Path:
    """Write `spine_keras.json` into `folder`."""
    path = Path(folder) / METADATA_NAME
    write_json(metadata, path)
    return path


def find_metadata(model_path: Path | str) -> Path:
    """The metadata file for a run folder, a SavedModel folder or a `.keras` file (looked up beside it)."""
    model_path = Path(model_path)
    candidates = (
        [model_path / METADATA_NAME, model_path / "assets" / METADATA_NAME]
        if model_path.is_dir()
        else [model_path.with_suffix(".json"), model_path.parent / METADATA_NAME]
    )
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise UserError(
        f"no {METADATA_NAME} found for model '{model_path}'; give a run folder, an exported "
        f"SavedModel folder or a .keras file with {METADATA_NAME} beside it"
    )


def read_metadata(model_path: Path | str) -> dict[str, Any]:
    """Read and check the metadata of a bundle."""
    path = find_metadata(model_path)
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read model metadata '{path}' ({exc})") from exc
    missing = [key for key in REQUIRED_KEYS if key not in metadata]
    if missing or metadata.get("format") != BUNDLE_FORMAT:
        raise UserError(f"'{path}' is not spine_keras model metadata (missing {', '.join(missing) or 'format'})")
    return metadata


def outputs_logits(metadata: dict[str, Any]) -> bool:
    """Whether the bundle's model ends without softmax (built with final_activation 'none')."""
    config = metadata.get("model") or {}
    if "final_activation" not in config:
        return False
    value = config["final_activation"]
    return value is None or str(value).strip().lower() == "none"


def load_keras_model(path: Path):
    """The inference view (main `seg` output only) of a `.keras` file; spine_keras layers are registered first."""
    import keras

    from spine_keras.models import inference_model

    try:
        model = keras.saving.load_model(str(path), compile=False)
    except Exception as exc:
        raise UserError(f"cannot load model '{path}' ({type(exc).__name__}: {exc})") from exc
    return inference_model(model)
