"""One case -> its training samples: read, check, remap labels, resample, normalize, crop, slice or tile, augment.

Runs inside a worker process; everything a case needs is in its arguments, so results do not depend on
which worker ran it or how many there were.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from spine_keras import augment
from spine_keras.errors import CaseError, UserError
from spine_keras.io import ListEntry, Volume, read_volume
from spine_keras.preprocess import (
    INTERPOLATIONS,
    LabelMap,
    PreprocessConfig,
    fit_shape,
    normalize,
    resample,
    roi_slices,
)

MIN_SIDE = 16
MODES = ("2d", "3d")


@dataclasses.dataclass
class SamplingConfig:
    """How samples are cut from a preprocessed case."""

    mode: str = "2d"
    axis: int = 2  # 2D: slice axis (2 = sagittal in the shared data)
    shape: tuple[int, ...] = (256, 256)  # 2D (H, W) or 3D (D, H, W)
    min_foreground: float = 0.0  # drop 2D slices / 3D patches whose labelled fraction is below this
    stride: tuple[int, ...] | None = None  # 3D: tile patches with this stride; None resizes the whole volume
    background_keep: float = 0.1  # 3D patches: keep a patch without any label with this probability

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)
        self.stride = None if self.stride is None else tuple(int(s) for s in self.stride)
        if self.mode not in MODES:
            raise UserError(f"--mode must be 2d or 3d, not '{self.mode}'")
        rank = 2 if self.mode == "2d" else 3
        if len(self.shape) != rank:
            raise UserError(f"--shape needs {rank} sides for --mode {self.mode}, got {','.join(map(str, self.shape))}")
        if min(self.shape) < MIN_SIDE:
            raise UserError(
                f"target shape {','.join(map(str, self.shape))} is too small: every side must be at "
                f"least {MIN_SIDE} so the networks can downsample it"
            )
        if self.mode == "2d" and self.axis not in (0, 1, 2):
            raise UserError(f"--axis must be 0, 1 or 2, not {self.axis}")
        if self.stride is not None:
            if self.mode != "3d" or len(self.stride) != 3 or min(self.stride) < 1:
                raise UserError("--stride takes three positive sides and only applies to --mode 3d")
        if not 0.0 <= self.min_foreground < 1.0:
            raise UserError("--min-foreground must lie in [0, 1)")
        if not 0.0 <= self.background_keep <= 1.0:
            raise UserError("--background-keep must lie in [0, 1]")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class CaseSamples:
    """The samples of one case, ready to append to the cube."""

    case_id: str
    images: np.ndarray  # (n, *shape) float32
    labels: np.ndarray  # (n, *shape) uint8
    augmented: np.ndarray  # (n,) int16
    positions: np.ndarray  # (n,) int32
    max_label: int


@dataclasses.dataclass
class CaseJob:
    """Everything a worker needs to turn one list entry into samples."""

    entry: ListEntry
    index: int
    preprocess: PreprocessConfig
    sampling: SamplingConfig
    label_map: LabelMap
    n_classes: int | None
    augment: augment.AugmentConfig | None
    copies: int
    seed: int


def load_case(entry: ListEntry) -> tuple[Volume, Volume]:
    """Read an image/label pair and check they share one grid."""
    image = read_volume(entry.image, entry.source)
    assert entry.label is not None
    label = read_volume(entry.label, entry.source)
    for volume, path in ((image, entry.image), (label, entry.label)):
        if volume.spatial_ndim != 3:
            raise CaseError(f"{entry.source}: '{path}' has {volume.spatial_ndim} spatial dimensions; give 3D volumes")
        if volume.channels != 1:
            raise CaseError(f"{entry.source}: '{path}' has {volume.channels} channels; give single-channel volumes")
    if image.shape != label.shape:
        raise CaseError(
            f"{entry.source}: image '{entry.image}' has shape {image.shape} but label '{entry.label}' "
            f"has shape {label.shape}; they must match voxel for voxel (resample the label onto the "
            "image grid, or drop the case with --skip-bad)"
        )
    if not np.allclose(image.spacing, label.spacing, rtol=1e-3, atol=1e-4):
        raise CaseError(
            f"{entry.source}: image spacing {image.spacing} differs from label spacing {label.spacing} "
            f"('{entry.image}', '{entry.label}'); they must share one grid"
        )
    return image, label


def _slices(
    image: np.ndarray, label: np.ndarray, sampling: SamplingConfig
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    image = np.ascontiguousarray(np.moveaxis(image, sampling.axis, 0))  # one copy, then cheap slices
    label = np.ascontiguousarray(np.moveaxis(label, sampling.axis, 0))
    for k in range(image.shape[0]):
        yield k, image[k], label[k]


def _patch_starts(size: int, patch: int, stride: int) -> list[int]:
    if size <= patch:
        return [0]
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def _patches(
    image: np.ndarray, label: np.ndarray, sampling: SamplingConfig, rng: np.random.Generator
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    shape, stride = sampling.shape, sampling.stride
    assert stride is not None
    grown = tuple(max(n, p) for n, p in zip(image.shape, shape))
    image = fit_shape(image, grown, "pad", 0, fill=float(image.min()))
    label = fit_shape(label, grown, "pad", 0, fill=0)
    number = 0
    for z in _patch_starts(grown[0], shape[0], stride[0]):
        for y in _patch_starts(grown[1], shape[1], stride[1]):
            for x in _patch_starts(grown[2], shape[2], stride[2]):
                window = (slice(z, z + shape[0]), slice(y, y + shape[1]), slice(x, x + shape[2]))
                patch_label = label[window]
                if patch_label.any() or rng.random() < sampling.background_keep:
                    yield number, image[window], patch_label
                number += 1


def process_case(job: CaseJob) -> CaseSamples:
    """Turn one list entry into its samples (originals first, then their augmented copies)."""
    entry, pre, sampling = job.entry, job.preprocess, job.sampling
    image_volume, label_volume = load_case(job.entry)
    try:
        label = job.label_map.apply(label_volume.array, job.n_classes)
    except CaseError as exc:
        raise CaseError(f"{entry.source}: label '{entry.label}': {exc}") from exc
    image, spacing = image_volume.array, image_volume.spacing
    if pre.spacing is not None:
        if len(pre.spacing) != len(spacing):
            raise UserError(f"--spacing needs {len(spacing)} values for these volumes")
        image = resample(image, spacing, pre.spacing, INTERPOLATIONS[pre.interpolation])
        label = resample(label, spacing, pre.spacing, 0)
        spacing = pre.spacing
    image = normalize(image, pre)
    fill = float(image.min())  # the whole volume's minimum, as prediction pads with
    if pre.crop_roi_mm is not None:
        box = roi_slices(label, spacing, pre.crop_roi_mm)
        image, label = image[box], label[box]
    rng = np.random.default_rng([job.seed, job.index])
    order = INTERPOLATIONS[pre.interpolation]
    if sampling.mode == "2d":
        raw = _slices(image, label, sampling)
    elif sampling.stride is None:
        raw = iter([(0, image, label)])
    else:
        raw = _patches(image, label, sampling, rng)
    images, labels, positions = [], [], []
    for position, sample_image, sample_label in raw:
        if sampling.min_foreground > 0 and np.count_nonzero(sample_label) / sample_label.size < sampling.min_foreground:
            continue
        images.append(fit_shape(sample_image, sampling.shape, pre.fit, order, fill))
        labels.append(fit_shape(sample_label, sampling.shape, pre.fit, 0, 0))
        positions.append(position)
    copies: list[tuple[int, int]] = [(i, 0) for i in range(len(images))]
    if job.augment is not None and job.copies > 0:
        originals = len(images)
        for copy in range(1, job.copies + 1):
            for i in range(originals):
                params = augment.sample_params(job.augment, sampling.shape, rng)
                aug_image, aug_label = augment.apply(images[i], labels[i], params)
                images.append(aug_image)
                labels.append(aug_label)
                copies.append((i, copy))
    if not images:
        return CaseSamples(
            entry.case_id,
            np.zeros((0, *sampling.shape), np.float32),
            np.zeros((0, *sampling.shape), np.uint8),
            np.zeros(0, np.int16),
            np.zeros(0, np.int32),
            int(label.max(initial=0)),
        )
    return CaseSamples(
        case_id=entry.case_id,
        images=np.stack(images).astype(np.float32, copy=False),
        labels=np.stack(labels).astype(np.uint8, copy=False),
        augmented=np.array([c for _, c in copies], np.int16),
        positions=np.array([positions[i] for i, _ in copies], np.int32),
        max_label=int(label.max(initial=0)),
    )
