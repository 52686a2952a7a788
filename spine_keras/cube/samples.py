"""One case -> its training samples: read, check, remap labels, prepare, crop, slice or tile, fit, augment.

Runs inside a worker process; everything a case needs is in its arguments, so results do not depend on
which worker ran it or how many there were.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from spine_keras import augment, grid
from spine_keras.errors import CaseError
from spine_keras.io import ListEntry, Volume, read_volume
from spine_keras.prepare import Prepared, SamplingConfig, fit_label, fit_sample, prepare, stack_inputs, stack_samples
from spine_keras.preprocess import IGNORE, LabelMap, PreprocessConfig, fit_shape, ignore_above_labels, roi_slices

__all__ = ["CaseJob", "CaseSamples", "SamplingConfig", "load_case", "process_case"]


@dataclasses.dataclass
class CaseSamples:
    """The samples of one case, ready to append to the cube."""

    case_id: str
    images: np.ndarray  # (n, *shape, channels) float32
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


def remap_label(job: CaseJob, label: Volume) -> np.ndarray:
    """The label volume as class ids through the job's label map, errors naming the list line and file; with
    `ignore_above_labels`, IGNORE above the top labelled row (before resampling, which carries it along)."""
    try:
        classes = job.label_map.apply(label.array, job.n_classes)
    except CaseError as exc:
        raise CaseError(f"{job.entry.source}: label '{job.entry.label}': {exc}") from exc
    return ignore_above_labels(classes) if job.preprocess.ignore_above_labels else classes


def labelled(label: np.ndarray) -> np.ndarray:
    """Where `label` holds a class other than background (IGNORE is not a class)."""
    return (label > 0) & (label != IGNORE)


def crop_to_roi(case: Prepared, margin_mm: float | None) -> Prepared:
    """Crop image and label to the labelled box grown by `margin_mm` (training only; the fill value is kept)."""
    if margin_mm is None or case.label is None:
        return case
    box = roi_slices(case.label, case.spacing, margin_mm)
    return Prepared(case.image[box], case.label[box], case.spacing, case.fill)


def cut_samples(
    case: Prepared, sampling: SamplingConfig, rng: np.random.Generator
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(position, image, label) of every candidate sample at its native size: slices, the volume, or 3D patches;
    images carry a trailing channel axis (2.5D neighbours, or one channel), labels are the centre slice's."""
    assert case.label is not None
    if sampling.windowed:
        yield from _patches(case, sampling, rng)
        return
    images, labels = stack_inputs(case.image, sampling), stack_samples(case.label, sampling)
    for position in range(images.shape[0]):
        yield position, images[position], labels[position]


def _patches(case: Prepared, sampling: SamplingConfig, rng: np.random.Generator):
    """Patches of `shape` on the shared window grid (every `stride`), foreground-biased: a patch without label is
    kept with probability `background_keep`. Volumes smaller than a patch are centre-padded first."""
    assert case.label is not None and sampling.stride is not None
    grown = tuple(max(n, p) for n, p in zip(case.image.shape, sampling.shape))
    image = fit_shape(case.image, grown, "pad", 0, fill=case.fill)
    label = fit_shape(case.label, grown, "pad", 0, fill=0)
    for number, corner in enumerate(grid.corners(grown, sampling.shape, sampling.stride)):
        window = grid.box(corner, sampling.shape)
        patch_label = label[window]
        if labelled(patch_label).any() or rng.random() < sampling.background_keep:
            yield number, image[window][..., None], patch_label


def fitted_samples(job: CaseJob, case: Prepared, rng: np.random.Generator) -> tuple[list, list, list]:
    """The original samples kept by `min_foreground`, fitted to the sample shape: (images, labels, positions)."""
    sampling, shape = job.sampling, job.sampling.shape
    images, labels, positions = [], [], []
    for position, image, label in cut_samples(case, sampling, rng):
        if sampling.min_foreground > 0 and np.count_nonzero(labelled(label)) / label.size < sampling.min_foreground:
            continue
        images.append(fit_sample(image, shape, job.preprocess, case.fill))
        labels.append(fit_label(label, shape, job.preprocess))
        positions.append(position)
    return images, labels, positions


def augmented_copies(job: CaseJob, images: list, labels: list, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Append `copies` augmented copies of every original in place; returns (original index, copy) per sample."""
    originals = len(images)
    copies = [(i, 0) for i in range(originals)]
    if job.augment is None or job.copies <= 0:
        return copies
    for copy in range(1, job.copies + 1):
        for i in range(originals):
            params = augment.sample_params(job.augment, job.sampling.shape, rng)
            image, label = augment.apply_channels(images[i], labels[i], params)
            images.append(image)
            labels.append(label)
            copies.append((i, copy))
    return copies


def process_case(job: CaseJob) -> CaseSamples:
    """Turn one list entry into its samples (originals first, then their augmented copies)."""
    image, label = load_case(job.entry)
    classes = remap_label(job, label)
    try:
        case = prepare(image, job.preprocess, classes)
    except CaseError as exc:
        raise CaseError(f"{job.entry.source}: image '{job.entry.image}': {exc}") from exc
    max_label = int(case.label.max(initial=0, where=case.label != IGNORE))
    case = crop_to_roi(case, job.preprocess.crop_roi_mm)
    rng = np.random.default_rng([job.seed, job.index])
    images, labels, positions = fitted_samples(job, case, rng)
    copies = augmented_copies(job, images, labels, rng)
    shape, channels = job.sampling.shape, job.sampling.channels
    return CaseSamples(
        case_id=job.entry.case_id,
        images=np.stack(images).astype(np.float32, copy=False)
        if images
        else np.zeros((0, *shape, channels), np.float32),
        labels=np.stack(labels).astype(np.uint8, copy=False) if labels else np.zeros((0, *shape), np.uint8),
        augmented=np.array([c for _, c in copies], np.int16),
        positions=np.array([positions[i] for i, _ in copies], np.int32),
        max_label=max_label,
    )
