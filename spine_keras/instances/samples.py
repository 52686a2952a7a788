"""Training patches for the iterative network, drawn on the fly and reproducibly from a seed.

A sample is a patch around a random vertebra k (its centre shifted by up to `jitter` of the patch): the memory
channel holds every vertebra before k in traversal order (top to bottom), as the traversal's memory does when it
reaches k, and the target is vertebra k. The target is never a later vertebra, however much of it shows. A share
`empty_fraction` of the patches has an empty target, so that the network learns to stop; in three equal shares,
every vertebra in memory and the patch around a random vertebra, shifted further; every vertebra in memory and the
patch where the traversal looks after the last one (`reference.next_centre`, jittered as targets are), so that the
unlabelled vertebra beyond the list's levels (the sacrum below L5) is not taken for one more; or no labelled
vertebra in view at all.
The completeness target says whether vertebra k lies wholly inside the patch and the volume. Voxel weights rise
near the target's surface, `1 + gamma * exp(-d^2 / sigma^2)` with d the distance in mm to it (Lessmann et al.).
numpy and scipy only.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from spine_keras.instances.cases import TrainingCase
from spine_keras.instances.config import InstanceConfig
from spine_keras.instances.reference import crop, next_centre

BACKGROUND_TRIES = 20


@dataclasses.dataclass
class Sample:
    """One training patch: inputs (P, P, P, 2) = image and memory, target and weight (P, P, P), complete (0 or 1)."""

    inputs: np.ndarray
    target: np.ndarray
    weight: np.ndarray
    complete: float
    rank: int  # the target vertebra's rank, 0 for an empty target


def draw_sample(case: TrainingCase, config: InstanceConfig, rng: np.random.Generator) -> Sample:
    """One patch of `case` (see the module's description)."""
    count = len(case.centres) - 1
    patch = np.asarray(config.patch)
    rank = int(rng.integers(1, count + 1))
    if rng.random() >= config.empty_fraction:
        centre = case.centres[rank] + rng.uniform(-config.jitter, config.jitter, 3) * patch
        return _sample(case, config, np.round(centre).astype(int), rank, rank)
    kind = rng.random()
    if kind < 1 / 3:
        centre = case.centres[rank] + rng.uniform(-0.5, 0.5, 3) * patch
    elif kind < 2 / 3:
        centre = next_centre(case.ranked == count) + rng.uniform(-config.jitter, config.jitter, 3) * patch
    else:
        return _sample(case, config, _background_centre(case, patch, rng), 1, 0)
    return _sample(case, config, np.round(centre).astype(int), count + 1, 0)


def _background_centre(case: TrainingCase, patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A patch centre whose patch shows no labelled vertebra (the last try if none of them does)."""
    for _ in range(BACKGROUND_TRIES):
        centre = np.array([rng.integers(0, n) for n in case.ranked.shape])
        if not crop(case.ranked, centre, patch).any():
            break
    return centre


def _sample(case: TrainingCase, config: InstanceConfig, centre: np.ndarray, first_new: int, target_rank: int):
    """The patch at `centre` with every vertebra before `first_new` in memory and `target_rank` as target."""
    ranked = crop(case.ranked, centre, config.patch)
    memory = (ranked > 0) & (ranked < first_new)
    target = ranked == target_rank if target_rank else np.zeros(ranked.shape, bool)
    complete = 0.0
    if target_rank:
        inside_patch = np.count_nonzero(target) == np.count_nonzero(case.ranked == target_rank)
        complete = float(inside_patch and case.inside[target_rank])
    inputs = np.stack([crop(case.image, centre, config.patch), memory.astype(np.float32)], axis=-1)
    return Sample(inputs, target.astype(np.float32), boundary_weights(target, config), complete, target_rank)


def boundary_weights(target: np.ndarray, config: InstanceConfig) -> np.ndarray:
    """Per-voxel loss weights, highest on the target's surface (1 everywhere when the target is empty)."""
    if not target.any():
        return np.ones(target.shape, np.float32)
    sampling = (config.spacing_mm,) * 3
    distance = np.where(
        target,
        ndimage.distance_transform_edt(target, sampling=sampling),
        ndimage.distance_transform_edt(~target, sampling=sampling),
    )
    return (1.0 + config.weight_gamma * np.exp(-(distance**2) / config.weight_sigma_mm**2)).astype(np.float32)


def sample_for_step(cases: list[TrainingCase], config: InstanceConfig, index: int) -> Sample:
    """The `index`-th sample of a training run: its case and patch drawn from a generator seeded by
    (seed, index), so any sample can be redrawn alone and in any order."""
    rng = np.random.default_rng([config.seed, index])
    return draw_sample(cases[int(rng.integers(len(cases)))], config, rng)


def step_arrays(cases: list[TrainingCase], config: InstanceConfig, index: int) -> tuple[np.ndarray, ...]:
    """Sample `index` as the network's training arrays: inputs (P, P, P, 2), the mask target with the voxel
    weights as its second channel (P, P, P, 2), and completeness (1,); all float32."""
    sample = sample_for_step(cases, config, index)
    mask = np.stack([sample.target, sample.weight], axis=-1).astype(np.float32)
    return sample.inputs.astype(np.float32), mask, np.float32([sample.complete])
