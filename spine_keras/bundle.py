"""What a trained model is on disk: a `.keras` file plus `spine_keras.json`, read and written as one typed object.

Training writes a `ModelBundle` beside every model it saves, export copies it into the SavedModel, prediction
reads it to repeat the training preprocessing; none of them imports the others, and nothing outside this module
reads the JSON by key. The file stays plain JSON so teams without spine_keras can read it; `read_bundle` checks
every field and names the first bad one with its file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spine_keras import __version__
from spine_keras.errors import UserError
from spine_keras.io import atomic_path, one_line
from spine_keras.prepare import SamplingConfig
from spine_keras.preprocess import LabelMap, PreprocessConfig

METADATA_NAME = "spine_keras.json"
BUNDLE_FORMAT = "spine_keras.bundle/2"
RUN_MODEL_FILES = ("best.keras", "last.keras")  # a run folder's models, preferred first
SAVED_MODEL_DIR = "saved_model"  # inside an export folder
EXPORT_KERAS_NAME = "model.keras"  # the inference model beside it
AXIS_CONVENTION = (
    "array axes in ITK index order (i, j, k), LPS space; 2D models see volume slices taken along `sampling.axis` "
    "(shared data: axis 2 = sagittal)"
)


def versions() -> dict[str, str]:
    """Versions of the stack that produced a result, for traceability (only modules already imported)."""
    import sys

    found = {"spine_keras": __version__, "python": platform.python_version()}
    for name in ("tensorflow", "keras", "numpy", "h5py"):
        module = sys.modules.get(name)
        if module is not None:
            found[name] = str(getattr(module, "__version__", "?"))
    return found


def file_sha256(path: Path | str, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks (cubes can be larger than memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(data: dict[str, Any], path: Path | str) -> None:
    """Write JSON atomically (temporary file then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n", encoding="utf-8")


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


@dataclasses.dataclass(frozen=True)
class Provenance:
    """Where a model came from: the cube it was trained on (path, format, content hash, source list) and the split."""

    cube: str = ""
    cube_format: str = ""
    cube_sha256: str = ""
    source_list: str = ""
    split: str = ""
    train_cases: tuple[str, ...] = ()
    val_cases: tuple[str, ...] = ()
    created: str = ""


@dataclasses.dataclass(frozen=True)
class ExportInfo:
    """The SavedModel an export folder holds: file names, the `serve` signature's input and side constraints."""

    saved_model: str = SAVED_MODEL_DIR
    keras: str = EXPORT_KERAS_NAME
    signature: str = "serve"
    input_shape: tuple[int | None, ...] = ()  # batch axis first, None where flexible
    flexible_sides: bool = False
    side_multiple: int = 1  # spatial sides must be multiples of this
    outputs: str = "probabilities: float32 (batch, *spatial, n_classes) softmax; labels: int32 (batch, *spatial)"
    files: dict[str, str] = dataclasses.field(default_factory=dict)  # SHA-256 of every exported file, by its path


@dataclasses.dataclass(frozen=True)
class ModelBundle:
    """Everything needed to use a trained model: its classes, its input, the preprocessing that made that input,
    how it was built, where it came from and how well it did."""

    arch: str
    input_shape: tuple[int, ...]  # without the batch axis: spatial sides, then channels
    class_names: tuple[str, ...]
    preprocess: PreprocessConfig
    sampling: SamplingConfig
    label_map: str | None = None
    build: dict[str, Any] = dataclasses.field(default_factory=dict)  # build_model keyword arguments
    preset: dict[str, Any] = dataclasses.field(default_factory=dict)
    provenance: Provenance = Provenance()
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    versions: dict[str, str] = dataclasses.field(default_factory=versions)
    export: ExportInfo | None = None
    train_flips: tuple[int, ...] | None = None  # sample axes flipped in training (TTA's flips); None = not recorded

    def __post_init__(self) -> None:
        _check_consistent(self)

    @property
    def mode(self) -> str:
        """'2d' or '3d'."""
        return self.sampling.mode

    @property
    def axis(self) -> int:
        """The slice axis of a 2D model, in ITK index order."""
        return self.sampling.axis

    @property
    def n_classes(self) -> int:
        """Number of classes, background included."""
        return len(self.class_names)

    @property
    def rank(self) -> int:
        """Spatial axes of the model input: 2 or 3."""
        return len(self.input_shape) - 1

    @property
    def window(self) -> tuple[int, ...]:
        """The spatial sides of the model input."""
        return self.input_shape[:-1]

    @property
    def channels(self) -> int:
        """Channels of the model input."""
        return self.input_shape[-1]

    @property
    def logits(self) -> bool:
        """Whether the model ends without softmax (built with final_activation 'none')."""
        value = self.build.get("final_activation", "softmax")
        return value is None or str(value).strip().lower() == "none"

    def inference_contract(self) -> dict[str, Any]:
        """What must agree between the folds of an ensemble: the input, its preprocessing and the classes."""
        return {
            "input_shape": self.input_shape,
            "class_names": self.class_names,
            "label_map": self.label_map,
            "preprocess": self.preprocess,
            "sampling": self.sampling,
        }

    def truth_map(self) -> LabelMap:
        """The label map that turns ground-truth ids into this model's class ids."""
        return LabelMap.parse(self.label_map)

    def replace(self, **changes: Any) -> ModelBundle:
        """A copy with some fields changed (and checked again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values; `mode`, `axis` and `n_classes` are written too, for readers without spine_keras."""
        data = {"format": BUNDLE_FORMAT, "axis_convention": AXIS_CONVENTION}
        data.update(_plain(dataclasses.asdict(self)))
        data.update(mode=self.mode, axis=self.axis, n_classes=self.n_classes)
        return data

    def write(self, folder: Path | str) -> Path:
        """Write `spine_keras.json` into `folder`, atomically."""
        path = Path(folder) / METADATA_NAME
        write_json(self.to_dict(), path)
        return path


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _check_consistent(bundle: ModelBundle) -> None:
    """ValueError (naming the field) when the fields contradict each other."""
    rank = 2 if bundle.mode == "2d" else 3
    if len(bundle.input_shape) != rank + 1 or min(bundle.input_shape) < 1:
        raise ValueError(f"field 'input_shape' {list(bundle.input_shape)} needs {rank} positive sides and channels")
    if tuple(bundle.window) != tuple(bundle.sampling.shape):
        raise ValueError(f"field 'input_shape' {list(bundle.input_shape)} disagrees with 'sampling.shape'")
    if bundle.n_classes < 2:
        raise ValueError("field 'class_names' needs at least two names, background first")
    if bundle.channels % bundle.sampling.channels:
        raise ValueError(
            f"field 'input_shape' has {bundle.channels} channel(s), not a multiple of the "
            f"{bundle.sampling.channels} slices of 'sampling.context' {bundle.sampling.context}"
        )
    flips = bundle.train_flips
    if flips is not None and (list(flips) != sorted(set(flips)) or not all(0 <= a < rank for a in flips)):
        raise ValueError(f"field 'train_flips' {list(flips)} needs distinct sample axes in [0, {rank}), ascending")


# Reading: one parser per field, each raising ValueError with what it expected.


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"a non-empty string, got {value!r}")
    return value


def _ints(value: Any) -> tuple[int, ...]:
    whole = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    if not whole or not value:
        raise ValueError(f"a list of integers, got {value!r}")
    return tuple(value)


def _names(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"a list of names, got {value!r}")
    return tuple(value)


def _axes(value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ValueError(f"a list of axis numbers (possibly empty) or null, got {value!r}")
    return tuple(value)


def _mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"a mapping, got {value!r}")
    return value


def _label_map(value: Any) -> str | None:
    if value is not None:
        try:
            LabelMap.parse(_text(value))
        except UserError as exc:
            raise ValueError(f"a label map such as '1-7:1' ({exc})") from exc
    return value


def _config(cls: type) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        try:
            return cls.from_dict(_mapping(value))
        except (UserError, TypeError, ValueError) as exc:
            raise ValueError(f"valid {cls.__name__} settings ({exc})") from exc

    return parse


def _record(cls: type) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        data = _mapping(value)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"known keys {sorted(names)}, got unknown {unknown}")
        return cls(**{key: tuple(item) if isinstance(item, list) else item for key, item in data.items()})

    return parse


def _export_info(value: Any) -> ExportInfo:
    """The `export` entry: a known record whose `files` maps relative paths inside the export to SHA-256 digests."""
    info = _record(ExportInfo)(value)
    if not isinstance(info.files, dict):
        raise ValueError(f"a mapping in 'files', got {info.files!r}")
    for name, digest in info.files.items():
        parts = Path(name).parts
        if not parts or Path(name).is_absolute() or ".." in parts:
            raise ValueError(f"relative paths inside the export in 'files', got {name!r}")
        if not isinstance(digest, str) or len(digest) != 64 or set(digest) - set("0123456789abcdef"):
            raise ValueError(f"a SHA-256 hex digest for 'files' entry {name!r}, got {digest!r}")
    return info


FIELDS: dict[str, Callable[[Any], Any]] = {
    "arch": _text,
    "input_shape": _ints,
    "class_names": _names,
    "preprocess": _config(PreprocessConfig),
    "sampling": _config(SamplingConfig),
    "label_map": _label_map,
    "build": _mapping,
    "preset": _mapping,
    "provenance": _record(Provenance),
    "metrics": _mapping,
    "versions": _mapping,
    "export": lambda value: None if value is None else _export_info(value),
    "train_flips": _axes,
}
REQUIRED = ("arch", "input_shape", "class_names", "preprocess", "sampling")
DERIVED = {"mode": lambda b: b.mode, "axis": lambda b: b.axis, "n_classes": lambda b: b.n_classes}


def bundle_from_dict(data: Any, where: Path | str) -> ModelBundle:
    """Parse `spine_keras.json` content; UserError naming the file and the first bad field."""
    if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise UserError(f"'{where}' is not spine_keras model metadata (format {found!r}, expected {BUNDLE_FORMAT!r})")
    fields: dict[str, Any] = {}
    for name, parse in FIELDS.items():
        if name not in data:
            if name in REQUIRED:
                raise UserError(f"model metadata '{where}': field '{name}' is missing")
            continue
        try:
            fields[name] = parse(data[name])
        except ValueError as exc:
            raise UserError(f"model metadata '{where}': field '{name}' must be {exc}") from exc
    try:
        bundle = ModelBundle(**fields)
    except ValueError as exc:
        raise UserError(f"model metadata '{where}': {exc}") from exc
    for name, derive in DERIVED.items():
        if name in data and data[name] != derive(bundle):
            raise UserError(
                f"model metadata '{where}': field '{name}' is {data[name]!r} but the bundle implies {derive(bundle)!r}"
            )
    return bundle


def find_metadata(model_path: Path | str) -> Path:
    """The metadata file for a run folder, a SavedModel folder or a `.keras` file (looked up beside it)."""
    model_path = Path(model_path)
    if model_path.is_dir():
        candidates = [model_path / METADATA_NAME, model_path / "assets" / METADATA_NAME]
    else:
        candidates = [model_path.with_suffix(".json"), model_path.parent / METADATA_NAME]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise UserError(
        f"no {METADATA_NAME} found for model '{model_path}'; give a run folder, an exported "
        f"SavedModel folder or a .keras file with {METADATA_NAME} beside it"
    )


def read_bundle(model_path: Path | str) -> ModelBundle:
    """Read and check the bundle of a run folder, an export or SavedModel folder, or a `.keras` file."""
    path = find_metadata(model_path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read model metadata '{path}' ({exc})") from exc
    return bundle_from_dict(data, path)


def load_keras_model(path: Path):
    """The inference view (main `seg` output only) of a `.keras` file; spine_keras layers are registered first."""
    import keras

    from spine_keras.models import inference_model

    try:  # safe mode: a Lambda layer's Python code (or any other pickled code) is refused, never run
        model = keras.saving.load_model(str(path), compile=False, safe_mode=True)
    except (ValueError, TypeError, KeyError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(f"cannot load model '{path}' ({type(exc).__name__}: {one_line(str(exc))[:300]})") from exc
    return inference_model(model)


def verify_file(path: Path, digest: str | None) -> None:
    """UserError naming `path` when it is missing or its bytes differ from the SHA-256 recorded at export."""
    if digest is None:
        raise UserError(f"'{path}' has no SHA-256 in the export's metadata (export.files); re-export the model")
    if not path.is_file():
        raise UserError(f"'{path}' is missing from the export (truncated or incomplete copy); re-export the model")
    if file_sha256(path) != digest:
        raise UserError(
            f"'{path}' differs from the file exported (SHA-256 mismatch with export.files): it was changed, "
            "truncated or corrupted; re-export the model"
        )


def verify_folder(folder: Path, recorded: dict[str, str], prefix: str) -> None:
    """Every file under `folder` (the metadata copy aside) is one the export recorded under `prefix` with the same
    SHA-256, and none is missing; else a UserError naming the first file that is not."""
    mine = {name[len(prefix) :]: digest for name, digest in recorded.items() if name.startswith(prefix)}
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    unlisted = sorted(present - set(mine) - {f"assets/{METADATA_NAME}"})
    if unlisted:
        raise UserError(f"'{folder / unlisted[0]}' is not part of the export (not in export.files); remove it")
    for name, digest in sorted(mine.items()):
        verify_file(folder / name, digest)


def probability_function(model, spec, logits: bool):
    """The one serving wrapper: a traced tf.function from a float32 batch to {'probabilities', 'labels'}.

    Export writes it as the SavedModel's `serve` signature and prediction calls it directly, so both apply the
    same softmax (only when the model ends in logits) and argmax.
    """
    import tensorflow as tf

    @tf.function(input_signature=[spec])
    def serve(image):
        scores = model(image, training=False)
        probabilities = tf.nn.softmax(scores, axis=-1) if logits else scores
        return {"probabilities": probabilities, "labels": tf.argmax(probabilities, axis=-1, output_type=tf.int32)}

    serve.get_concrete_function()
    return serve
