"""Cube -> tf.data: patient-grouped splits and folds, parallel HDF5 reads, online augmentation, distribution.

Training reads an index stream (a fresh permutation per epoch from the seed and the epoch number, so a
resumed run sees the same order), shards it per worker, reads samples in parallel (each reader thread owns
its h5py handle), optionally augments them with the cube builder's transforms, batches per replica and
prefetches. Validation reads the original samples (augmented == 0) of the validation cases once per pass,
padded with weight-0 samples to a whole number of global batches so every replica runs the same steps.

TensorFlow (and the augmentation's SciPy) is imported only by the functions that build datasets and augment:
opening a cube and making the splits (what `spine-train` checks before it starts) need neither.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from spine_keras.cube import read_attrs
from spine_keras.errors import UserError

if TYPE_CHECKING:
    import tensorflow as tf

    from spine_keras.augment import AugmentConfig


@dataclass(frozen=True)
class CubeInfo:
    """What training needs to know about a cube without loading its samples."""

    path: Path
    attrs: dict[str, Any]
    sample_shape: tuple[int, ...]
    case_ids: np.ndarray
    augmented: np.ndarray
    channels: int = 1  # input channels per sample: 1, or 2 x context + 1 for 2.5D cubes

    @property
    def mode(self) -> str:
        """'2d' or '3d'."""
        return f"{len(self.sample_shape)}d"

    @property
    def n_classes(self) -> int:
        """Number of classes, background included."""
        return int(self.attrs["n_classes"])

    @property
    def class_names(self) -> list[str]:
        """Class names, class 0 first."""
        return list(self.attrs.get("class_names") or [f"class_{i}" for i in range(self.n_classes)])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Model input shape without the batch axis: spatial sides then the channels."""
        return (*self.sample_shape, self.channels)


def open_cube(path: Path | str) -> CubeInfo:
    """Read a cube's attributes, case ids and copy indices; UserError when it cannot be trained on."""
    attrs = read_attrs(path)
    with h5py.File(path, "r") as handle:
        if "case_ids" not in handle:
            raise UserError(
                f"cube '{path}' has no case_ids dataset, so it cannot be split by patient; "
                "rebuild it with spine-make-cube"
            )
        labels_shape = handle["labels"].shape
        images_shape = handle["images"].shape
        case_ids = np.asarray(handle["case_ids"].asstr()[()], dtype=object)
        augmented = handle["augmented"][()] if "augmented" in handle else np.zeros(len(case_ids), np.int16)
    n = labels_shape[0]
    if n == 0 or images_shape[:-1] != labels_shape or len(case_ids) != n or len(augmented) != n:
        raise UserError(
            f"cube '{path}' is empty or inconsistent (images {images_shape}, labels {labels_shape}, "
            f"{len(case_ids)} case ids); check it with spine-check-cube"
        )
    sides = tuple(int(s) for s in labels_shape[1:])
    info = CubeInfo(Path(path), attrs, sides, case_ids, np.asarray(augmented), int(images_shape[-1]))
    if len(info.class_names) != info.n_classes:
        raise UserError(f"cube '{path}' names {len(info.class_names)} classes but has n_classes={info.n_classes}")
    return info


@dataclass(frozen=True)
class Split:
    """Training samples (originals and copies) and validation originals of disjoint case sets."""

    name: str
    train: np.ndarray
    val: np.ndarray
    train_cases: tuple[str, ...]
    val_cases: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """The split as JSON (case lists and sample counts), recorded in config.json."""
        return {
            "name": self.name,
            "train_cases": list(self.train_cases),
            "val_cases": list(self.val_cases),
            "train_samples": len(self.train),
            "val_samples": len(self.val),
        }


def case_folds(case_ids: np.ndarray, k: int, seed: int) -> list[list[str]]:
    """Assign whole cases to k folds, balancing sample counts (largest cases first, ties in seeded order)."""
    cases, counts = np.unique(case_ids, return_counts=True)
    if k < 2:
        raise UserError(f"--folds must be at least 2, got {k}")
    if k > len(cases):
        raise UserError(f"--folds {k} would leave a fold with no validation case: the cube has {len(cases)} cases")
    order = np.random.default_rng(seed).permutation(len(cases))
    order = order[np.argsort(-counts[order], kind="stable")]
    folds: list[list[str]] = [[] for _ in range(k)]
    sizes = np.zeros(k, np.int64)
    for i in order:
        target = int(np.argmin(sizes))
        folds[target].append(str(cases[i]))
        sizes[target] += counts[i]
    return [sorted(f) for f in folds]


def check_no_leak(cube: CubeInfo, split: Split) -> None:
    """Prove that no case has samples on both sides of a split (raises, never just warns)."""
    train, val = set(cube.case_ids[split.train]), set(cube.case_ids[split.val])
    leaked = train & val
    if leaked:
        raise AssertionError(f"{split.name}: cases in both training and validation: {sorted(leaked)}")


def case_split(cube: CubeInfo, name: str, val_cases: list[str]) -> Split:
    """The split that validates on `val_cases` and trains on every other case."""
    in_val = np.isin(cube.case_ids, val_cases)
    train = np.flatnonzero(~in_val)
    val = np.flatnonzero(in_val & (cube.augmented == 0))
    if len(val) == 0:
        raise UserError(f"{name}: validation cases {', '.join(val_cases)} have no original (non-augmented) samples")
    split = Split(name, train, val, tuple(sorted(set(cube.case_ids[train]))), tuple(sorted(val_cases)))
    check_no_leak(cube, split)
    return split


def make_splits(cube: CubeInfo, folds: int | None, fold: int | str, val_fraction: float, seed: int) -> list[Split]:
    """K-fold splits (`fold` an index or 'all') or one split holding out `val_fraction` of the cases."""
    cases = sorted(set(cube.case_ids))
    if folds:
        groups = case_folds(cube.case_ids, folds, seed)
        chosen = range(folds) if fold == "all" else [int(fold)]
        if any(not 0 <= i < folds for i in chosen):
            raise UserError(f"--fold {fold} is out of range for --folds {folds} (0..{folds - 1} or all)")
        return [case_split(cube, f"fold_{i}", groups[i]) for i in chosen]
    if not 0 < val_fraction < 1:
        raise UserError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    if len(cases) < 2:
        raise UserError(f"the cube holds {len(cases)} case; a validation split needs at least 2 cases")
    n_val = min(len(cases) - 1, max(1, round(val_fraction * len(cases))))
    order = np.random.default_rng(seed).permutation(len(cases))
    return [case_split(cube, "split", [cases[i] for i in order[:n_val]])]


class CubeReader:
    """Reads samples by index; every reader thread (and process) opens its own h5py handle."""

    def __init__(self, path: Path | str, augment_config: AugmentConfig | None = None, seed: int = 0):
        self.path, self.augment_config, self.seed = str(path), augment_config, seed
        self.failure: str | None = None  # the first sample that could not be read (a corrupt chunk)
        self._local = threading.local()
        with h5py.File(self.path, "r") as handle:
            self.sample_shape = tuple(handle["labels"].shape[1:])
            self.image_shape = tuple(handle["images"].shape[1:])  # sides, then channels

    def _datasets(self) -> tuple[h5py.Dataset, h5py.Dataset]:
        """This thread's `images` and `labels`, from a handle opened on first use (again in a forked child)."""
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            handle = h5py.File(self.path, "r")
            local.images, local.labels, local.pid = handle["images"], handle["labels"], os.getpid()
        return local.images, local.labels

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image (*shape, channels) float32 and label (*shape) uint8 of sample `index`."""
        images, labels = self._datasets()
        try:
            return images[index], labels[index]
        except OSError as exc:  # h5py: a corrupt or truncated chunk; TensorFlow would bury it in a traceback
            self.failure = self.failure or (
                f"sample {index} of cube '{self.path}' cannot be read ({str(exc).strip()}); the cube is corrupt: "
                "check it with spine-check-cube and rebuild it"
            )
            raise

    def read_train(self, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        """A training sample, augmented with a generator seeded by (seed, epoch, index) when enabled."""
        image, label = self.read(int(index))
        if self.augment_config is not None:
            from spine_keras.augment import augment_channels

            rng = np.random.default_rng([self.seed, int(epoch), int(index)])
            image, label = augment_channels(image, label, self.augment_config, rng)
        return image.astype(np.float32, copy=False), label.astype(np.uint8, copy=False)

    def read_val(self, index: int) -> tuple[np.ndarray, np.ndarray, np.float32]:
        """A validation sample and its weight; index -1 is padding (zeros, weight 0)."""
        if index < 0:
            return (np.zeros(self.image_shape, np.float32), np.zeros(self.sample_shape, np.uint8), np.float32(0))
        image, label = self.read(int(index))
        return image, label, np.float32(1)


@contextlib.contextmanager
def read_failures(reader: CubeReader) -> Iterator[None]:
    """Turn the TensorFlow error raised through a dataset when `reader` met an unreadable sample into a UserError."""
    import tensorflow as tf

    try:
        yield
    except tf.errors.OpError as exc:
        if reader.failure is None:
            raise
        raise UserError(reader.failure) from exc


def _shard(ds: tf.data.Dataset, ctx: tf.distribute.InputContext | None) -> tf.data.Dataset:
    """This worker's share of the index stream."""
    if ctx is None or ctx.num_input_pipelines == 1:
        return ds
    return ds.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)


def train_dataset(
    reader: CubeReader,
    indices: np.ndarray,
    batch: int,
    global_batch: int,
    steps: int,
    seed: int,
    epochs: tuple[int, int],
    ctx: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """Per-replica batches of `steps` global batches per epoch, for epochs [start, stop)."""
    import tensorflow as tf

    ids = tf.constant(np.asarray(indices, np.int64))
    count = steps * global_batch

    def epoch_indices(epoch: tf.Tensor) -> tf.data.Dataset:
        noise = tf.random.stateless_uniform([len(indices)], seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
        order = tf.gather(ids, tf.argsort(noise))[:count]
        return tf.data.Dataset.from_tensor_slices((tf.fill([count], epoch), order))

    def load(epoch: tf.Tensor, index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image, label = tf.numpy_function(reader.read_train, [epoch, index], (tf.float32, tf.uint8), stateful=False)
        image.set_shape(reader.image_shape)
        label.set_shape(reader.sample_shape)
        return image, label

    ds = _shard(tf.data.Dataset.range(*epochs).flat_map(epoch_indices), ctx)
    return (
        ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    )


def val_dataset(
    reader: CubeReader,
    indices: np.ndarray,
    batch: int,
    global_batch: int,
    ctx: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """Endless passes over the validation samples, padded to whole global batches: (image, label, weight)."""
    import tensorflow as tf

    padded = np.full(val_steps(len(indices), global_batch) * global_batch, -1, np.int64)
    padded[: len(indices)] = indices

    def load(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        image, label, weight = tf.numpy_function(
            reader.read_val, [index], (tf.float32, tf.uint8, tf.float32), stateful=False
        )
        image.set_shape(reader.image_shape)
        label.set_shape(reader.sample_shape)
        weight.set_shape(())
        return image, label, weight

    ds = _shard(tf.data.Dataset.from_tensor_slices(padded), ctx).repeat()
    return (
        ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    )


def val_steps(n_samples: int, global_batch: int) -> int:
    """Global batches in one validation pass."""
    return -(-n_samples // global_batch)
