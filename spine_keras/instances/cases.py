"""Training and evaluation cases for the instance path: volumes read, ids named with levels, and the network's
isotropic view (resampled and normalized exactly as the reference traversal does)."""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from spine_keras.errors import CaseError
from spine_keras.instances.reference import isotropic_input, resample
from spine_keras.io import ListEntry, Volume, read_volume
from spine_keras.levels import LEVEL_IDS, order_ids, relabel

# What a mask's file name adds to its case id: spine-predict writes `<case>_seg.nrrd`, and a truth map used as a mask
# is typically `<case>_label.nrrd`; stripped, the baseline's cases carry the image-side ids the network's have.
_MASK_SUFFIX = re.compile(r"[_\-.](seg|mask|label|labels|pred)$", re.IGNORECASE)


@dataclasses.dataclass
class LabelledCase:
    """One case on its input grid: the image, and the truth as level ids."""

    case_id: str
    image: Volume
    levels: np.ndarray  # uint8 level ids on the input grid


@dataclasses.dataclass
class TrainingCase:
    """One case in the network's isotropic view: image, vertebrae ranked 1..n from the top, and per rank whether
    the vertebra lies wholly inside the volume."""

    case_id: str
    image: np.ndarray  # float32, z-scored
    ranked: np.ndarray  # int16, 0 background, 1..n top to bottom
    inside: np.ndarray  # bool per rank (index 0 unused)
    centres: np.ndarray  # (n + 1, 3) voxel centres per rank (row 0 unused)


def read_labelled(entry: ListEntry, levels: list[str]) -> LabelledCase:
    """Read a list entry and name its label ids with `levels` (CaseError naming the case on a count mismatch or
    a label grid that differs from the image's)."""
    image = read_volume(entry.image, entry.source)
    label = read_volume(entry.label, entry.source)
    if label.shape != image.shape or image.channels != 1:
        raise CaseError(
            f"{entry.source}: label shape {label.shape} differs from image shape {image.shape} (or the image has "
            "several channels); give a single-channel image and its label on the same grid",
            entry.case_id,
        )
    names = order_ids(label.array, levels, case=entry.case_id)
    return LabelledCase(entry.case_id, image, relabel(label.array, names))


def training_view(case: LabelledCase, mm: float) -> TrainingCase:
    """The isotropic view of a labelled case (labels by nearest neighbour), vertebrae ranked top to bottom."""
    image = isotropic_input(case.image.array, case.image.spacing, mm)
    levels = resample(case.levels, case.image.spacing, (mm,) * 3, shape=image.shape, linear=False)
    present = [i for i in sorted(LEVEL_IDS.values()) if np.any(levels == i)]
    table = np.zeros(256, np.int16)
    table[present] = np.arange(1, len(present) + 1)
    ranked = table[levels]
    count = len(present)
    inside = np.zeros(count + 1, bool)
    centres = np.zeros((count + 1, 3))
    for rank in range(1, count + 1):
        where = np.nonzero(ranked == rank)
        centres[rank] = [float(c.mean()) for c in where]
        inside[rank] = all(c.min() > 0 and c.max() < n - 1 for c, n in zip(where, ranked.shape))
    return TrainingCase(case.case_id, image, ranked, inside, centres)


def check_labels(entries: list[ListEntry], levels: list[str]) -> None:
    """Before anything is written: every entry with a label has as many vertebra ids as `levels` names (a
    CaseError naming the case and both counts otherwise)."""
    for entry in entries:
        if entry.label is not None:
            order_ids(read_volume(entry.label, entry.source).array, levels, case=entry.case_id)


def mask_case_ids(entries: list[ListEntry]) -> list[ListEntry]:
    """Baseline entries renamed to their image-side case ids: `VB3_01_seg.nrrd` (spine-predict's output) is case
    `VB3_01`, as `VB3_01_image.nrrd` is for the network, so both methods' outputs compare case by case. An entry
    keeps its own id where stripping would give two entries the same one."""
    stripped = [_MASK_SUFFIX.sub("", entry.case_id) or entry.case_id for entry in entries]
    clashes = {case for case in stripped if stripped.count(case) > 1}
    return [
        entry if case in clashes else dataclasses.replace(entry, case_id=case) for entry, case in zip(entries, stripped)
    ]
