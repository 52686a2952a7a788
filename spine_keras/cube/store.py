"""The cube's HDF5 layout: writing samples one chunk each, atomically, and reading the attributes back.

Datasets: `images` float32 (N,H,W,C) or (N,D,H,W,C), C = 1 except 2D samples with neighbouring slices (2.5D);
`labels` uint8 (N,H,W) or (N,D,H,W); `case_ids` (N,) UTF-8 strings; `augmented` (N,) int16 copy index
(0 = original); `positions` (N,) int32 slice index or patch number within the case. Scalar attributes are
native HDF5; structured ones (lists, dicts) are JSON strings.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from spine_keras import __version__
from spine_keras.destinations import process_alive
from spine_keras.errors import UserError
from spine_keras.io import one_line
from spine_keras.preprocess import IGNORE, PreprocessConfig

CUBE_FORMAT = "spine_keras.cube/1"
DATASETS = ("images", "labels", "case_ids", "augmented", "positions")
JSON_ATTRS = (
    "class_names",
    "spacing",
    "label_map",
    "normalization",
    "augment",
    "preprocess",
    "sampling",
    "skipped",
    "config",
)
COMPRESSION = {"compression": "gzip", "compression_opts": 1, "shuffle": True}


class CubeWriter:
    """Appends samples to an open HDF5 file, one compressed chunk per sample, growing as it goes."""

    def __init__(self, handle: h5py.File, sample_shape: tuple[int, ...], channels: int = 1):
        self.handle = handle
        self.sample_shape = tuple(sample_shape)
        self.channels = channels
        self.count = 0
        handle.create_dataset(
            "images",
            shape=(0, *sample_shape, channels),
            maxshape=(None, *sample_shape, channels),
            dtype=np.float32,
            chunks=(1, *sample_shape, channels),
            **COMPRESSION,
        )
        handle.create_dataset(
            "labels",
            shape=(0, *sample_shape),
            maxshape=(None, *sample_shape),
            dtype=np.uint8,
            chunks=(1, *sample_shape),
            **COMPRESSION,
        )
        handle.create_dataset(
            "case_ids", shape=(0,), maxshape=(None,), dtype=h5py.string_dtype("utf-8"), chunks=(1024,)
        )
        handle.create_dataset("augmented", shape=(0,), maxshape=(None,), dtype=np.int16, chunks=(1024,))
        handle.create_dataset("positions", shape=(0,), maxshape=(None,), dtype=np.int32, chunks=(1024,))

    def append(
        self, images: np.ndarray, labels: np.ndarray, case_id: str, augmented: np.ndarray, positions: np.ndarray
    ) -> None:
        """Append a batch of samples of one case: images (n, *shape[, channels]) float32, labels (n, *shape) uint8."""
        n = int(images.shape[0])
        if n == 0:
            return
        start, stop = self.count, self.count + n
        for name in DATASETS:
            self.handle[name].resize((stop,) + self.handle[name].shape[1:])
        shaped = images.reshape((n, *self.sample_shape, self.channels))
        self.handle["images"][start:stop] = shaped.astype(np.float32, copy=False)
        self.handle["labels"][start:stop] = labels.astype(np.uint8, copy=False)
        self.handle["case_ids"][start:stop] = [case_id] * n
        self.handle["augmented"][start:stop] = augmented
        self.handle["positions"][start:stop] = positions
        self.count = stop


def write_attrs(handle: h5py.File, attrs: dict[str, Any]) -> None:
    """Write root attributes: structured values as JSON strings, scalars natively."""
    for key, value in attrs.items():
        if key in JSON_ATTRS:
            handle.attrs[key] = json.dumps(value)
        elif value is None:
            handle.attrs[key] = "null"
        else:
            handle.attrs[key] = value


def read_attrs(path: Path | str) -> dict[str, Any]:
    """The cube's root attributes as Python values (JSON ones decoded); UserError for a non-cube file."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"cube '{path}' is a folder; give the cube's .h5 file")
    if not path.is_file():
        raise UserError(f"cube '{path}' not found; build one with `spine-make-cube LIST -o {path}`")
    try:
        with h5py.File(path, "r") as handle:
            raw = dict(handle.attrs)
            missing = [name for name in ("images", "labels") if name not in handle]
    except OSError as exc:
        raise UserError(
            f"'{path}' is not a readable HDF5 file ({one_line(str(exc))}); rebuild it with spine-make-cube"
        ) from exc
    if raw.get("format") != CUBE_FORMAT or missing:
        raise UserError(
            f"'{path}' is not a spine_keras cube (format attribute {raw.get('format')!r}"
            f"{', missing ' + ', '.join(missing) if missing else ''})"
        )
    attrs: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        if isinstance(value, np.generic):
            value = value.item()
        if key in JSON_ATTRS and isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise UserError(
                    f"cube '{path}': attribute '{key}' is not valid JSON ({exc}); rebuild it with spine-make-cube"
                ) from exc
        attrs[key] = value
    return attrs


def temp_path_for(target: Path) -> Path:
    """A hidden temporary file beside `target`, tagged with this process id (stale ones can be found)."""
    return target.parent / f".{target.name}.{os.getpid()}.tmp"


def remove_stale_temps(target: Path) -> None:
    """Delete temporaries left beside `target` by builds that were killed (their process no longer runs)."""
    for tmp in target.parent.glob(f".{target.name}.*.tmp"):
        pid = tmp.name[len(target.name) + 2 : -len(".tmp")]
        if pid.isdigit() and not process_alive(int(pid)):
            tmp.unlink(missing_ok=True)


def write_cube_arrays(
    path: Path | str,
    images: np.ndarray,
    labels: np.ndarray,
    case_ids: list[str],
    augmented: np.ndarray | None = None,
    **attrs: Any,
) -> Path:
    """Write a small cube from in-memory arrays (tests, notebooks); the builder streams instead.

    `images` may omit the trailing channel axis (one channel). Attributes default from the arrays: mode from the rank,
    n_classes from the largest label, generic class names.
    """
    path = Path(path)
    labels = np.asarray(labels, dtype=np.uint8)
    images = np.asarray(images, dtype=np.float32)
    images = images if images.ndim == labels.ndim + 1 else images.reshape(labels.shape + (1,))
    n = labels.shape[0]
    top = int(labels.max(initial=0, where=labels != IGNORE)) if labels.size else 1  # IGNORE is not a class
    n_classes = int(attrs.pop("n_classes", top + 1))
    cube_attrs = {**_default_attrs(labels, n_classes), **attrs}
    with h5py.File(path, "w") as handle:
        writer = CubeWriter(handle, labels.shape[1:], images.shape[-1])
        aug = np.zeros(n, np.int16) if augmented is None else np.asarray(augmented, np.int16)
        for case in dict.fromkeys(case_ids):
            index = np.array([i for i, c in enumerate(case_ids) if c == case])
            writer.append(images[index], labels[index], case, aug[index], index.astype(np.int32))
        write_attrs(handle, cube_attrs)
    return path


def _default_attrs(labels: np.ndarray, n_classes: int) -> dict[str, Any]:
    """Attributes of an in-memory cube when the caller gives none: mode from the labels' rank, generic classes."""
    return {
        "format": CUBE_FORMAT,
        "mode": f"{labels.ndim - 1}d",
        "n_classes": n_classes,
        "class_names": ["background"] + [f"class_{i}" for i in range(1, n_classes)],
        "spacing": None,
        "label_map": None,
        "normalization": {"method": "zscore", "percentiles": [0.5, 99.5]},
        "augment": None,
        "seed": 0,
        "source_list": "",
        "spine_keras_version": __version__,
        "skipped": [],
        "preprocess": PreprocessConfig().to_dict(),
        "sampling": {
            "mode": f"{labels.ndim - 1}d",
            "axis": 2,
            "shape": list(labels.shape[1:]),
            "min_foreground": 0.0,
            "stride": None,
            "background_keep": 0.1,
        },
    }
