#!/usr/bin/env python
"""Reference traversal of the iterative vertebra network: numpy, SimpleITK and TensorFlow only, one file.

spine_keras uses these functions itself, and `spine-instances export` copies this file beside the SavedModel as
`reference_traversal.py`, so a team without spine_keras runs exactly the same steps:

    python reference_traversal.py EXPORT_DIR IMAGE OUT_LABEL [--table OUT.csv]

Steps: read the image (SimpleITK), resample it to isotropic voxels (linear), z-score it; find the most superior
vertebra by scanning patches from the top with an empty memory; then, one vertebra per iteration, centre the patch
on what the network segments (re-running until the centre stops moving), add it to the instance memory, and move
the patch one vertebra height down the spine; stop when nothing new is found (toward the end the levels are not
counted from, only after a second look half a height on). The vertebrae found get levels in traversal order,
anchored at the bottom or top of the stated levels, and the label map is resampled (nearest neighbour) back onto
the input's grid. Array axes are ITK index order (i, j, k); axis 0 runs superior -> inferior.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk

Predict = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # (B, P, P, P, 2) -> (B, P, P, P), (B,)
FOLLOW_STEPS = 5  # re-centring iterations per vertebra


def _image(array: np.ndarray, spacing) -> sitk.Image:
    """A SimpleITK image whose index (i, j, k) is `array[i, j, k]`, at the origin, axis-aligned."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array)))
    image.SetSpacing([float(s) for s in spacing])
    return image


def _array(image: sitk.Image) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(sitk.GetArrayFromImage(image)))


def resample(array: np.ndarray, spacing, new_spacing, shape=None, linear: bool = True) -> np.ndarray:
    """Resample onto a grid of `new_spacing` sharing the first voxel centre (linear for images, nearest neighbour
    for labels); the shape defaults to the one covering the same extent."""
    if shape is None:
        extent = np.asarray(array.shape) * np.asarray(spacing, float) / np.asarray(new_spacing, float)
        shape = np.maximum(1, np.round(extent)).astype(int)
    source = _image(array.astype(np.float32) if linear else array, spacing)
    reference = sitk.Image([int(s) for s in shape], source.GetPixelID())
    reference.SetSpacing([float(s) for s in new_spacing])
    interpolator = sitk.sitkLinear if linear else sitk.sitkNearestNeighbor
    return _array(sitk.Resample(source, reference, sitk.Transform(), interpolator, 0.0))


def zscore(image: np.ndarray) -> np.ndarray:
    """Per-volume z-score in float32 (a constant image becomes 0)."""
    image = np.asarray(image, dtype=np.float32)
    std = float(image.std())
    return ((image - float(image.mean())) / (std if std > 1e-8 else 1.0)).astype(np.float32)


def isotropic_input(image: np.ndarray, spacing, mm: float) -> np.ndarray:
    """The network's view of a volume: isotropic `mm` voxels, z-scored."""
    return zscore(resample(image, spacing, (mm,) * 3))


def crop(array: np.ndarray, centre, size) -> np.ndarray:
    """The patch of `size` voxels centred on `centre` (zeros outside the volume)."""
    out = np.zeros(tuple(size), array.dtype)
    source, target = _windows(array.shape, centre, size)
    out[target] = array[source]
    return out


def _windows(shape, centre, size) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """The volume slices and patch slices where a patch of `size` at `centre` overlaps the volume."""
    source, target = [], []
    for n, c, p in zip(shape, centre, size):
        start = int(c) - p // 2
        lo, hi = max(start, 0), min(start + p, n)
        source.append(slice(lo, max(lo, hi)))
        target.append(slice(lo - start, max(lo, hi) - start))
    return tuple(source), tuple(target)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest face-connected component of a boolean mask."""
    if not mask.any():
        return mask
    parts = sitk.RelabelComponent(sitk.ConnectedComponent(_image(mask.astype(np.uint8), (1, 1, 1)), False))
    return _array(parts) == 1


def _segment(image, memory, predict: Predict, centre, patch, threshold: float):
    """The network's new vertebra (largest component, not in memory) in the patch at `centre`, as a volume mask,
    and its completeness probability."""
    x = np.stack([crop(image, centre, patch), crop(memory, centre, patch).astype(np.float32)], axis=-1)
    probabilities, complete = predict(x[None])
    new = largest_component((probabilities[0] > threshold) & ~crop(memory, centre, patch))
    mask = np.zeros(image.shape, bool)
    source, target = _windows(image.shape, centre, patch)
    mask[source] = new[target]
    return mask, float(complete[0])


def _centre(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(round(float(c.mean()))) for c in np.nonzero(mask))


def follow(image, memory, predict: Predict, centre, settings: dict):
    """Segment the next vertebra near `centre`, re-centring the patch on it until it stops moving; (mask,
    completeness) or None when fewer than `min_voxels` new voxels are found. A re-centred patch that loses the
    vertebra keeps the last mask found: near the volume's edge, where the patch is padded with zeros, the network
    may see a vertebra from one centre and not from the next."""
    found = _segment(image, memory, predict, centre, settings["patch"], settings["threshold"])
    if found[0].sum() < settings["min_voxels"]:
        return None
    for _ in range(FOLLOW_STEPS):
        moved = _centre(found[0])
        if moved == tuple(centre):
            break
        again = _segment(image, memory, predict, moved, settings["patch"], settings["threshold"])
        if again[0].sum() < settings["min_voxels"]:
            break
        centre, found = moved, again
    return found


def find_start(image, predict: Predict, settings: dict):
    """The first patch centre, scanning from the top, where the network with an empty memory finds a vertebra."""
    patch = settings["patch"]
    memory = np.zeros(image.shape, bool)
    axes = [range(p // 2, max(n - p // 2, p // 2) + 1, max(p // 2, 1)) for n, p in zip(image.shape, patch)]
    for i in axes[0]:
        for j in axes[1]:
            for k in axes[2]:
                found = follow(image, memory, predict, (i, j, k), settings)
                if found is not None:
                    return found
    return None


def traverse(image: np.ndarray, predict: Predict, settings: dict) -> tuple[np.ndarray, list[float]]:
    """Vertebrae found top to bottom in an isotropic, normalized volume: (map with ids 1..n, completeness of each).

    From the start, the traversal walks down the spine one vertebra at a time, then up from the first one it found,
    every vertebra found in memory: a start scan can take the second vertebra for the first, and the walk up adds
    the one it skipped, then stops as the walk down does, with every labelled vertebra in view in memory.
    `settings`: patch (voxels per axis), threshold (mask probability), min_voxels (smallest vertebra), max_vertebrae,
    and anchor ('bottom' or 'top', the end the levels are counted from; see `_look`).
    """
    memory = np.zeros(image.shape, bool)
    found_masks: list[np.ndarray] = []
    completeness: list[float] = []
    found = find_start(image, predict, settings)
    for direction in (1, -1):
        while found is not None and len(found_masks) < settings["max_vertebrae"]:
            mask, complete = found
            position = len(found_masks) if direction == 1 else 0
            found_masks.insert(position, mask)
            completeness.insert(position, complete)
            memory |= mask
            found = _look(image, memory, predict, mask, direction, settings)
        if direction == 1 and found_masks:
            found = _look(image, memory, predict, found_masks[0], -1, settings)
    ranked = np.zeros(image.shape, np.int16)
    for rank, mask in enumerate(found_masks, start=1):
        ranked[mask] = rank
    return ranked, completeness


def _look(image, memory, predict: Predict, mask: np.ndarray, direction: int, settings: dict):
    """The vertebra after `mask` in `direction` (as `follow` gives it), looked for one vertebra height on; toward
    the end the levels are not counted from, a second look half a height on before the traversal stops there.

    The second look is one-sided on purpose: a vertebra added at the counted-from end renames every other one (on
    the lumbar sets, a sacrum taken for a vertebra below L5 shifts all levels by one), while one added at the other
    end renames none of them and one missed there is simply lost (a top vertebra at the edge of the field of view).
    """
    found = follow(image, memory, predict, next_centre(mask, direction), settings)
    away = -1 if settings.get("anchor", "bottom") == "bottom" else 1
    if found is None and direction == away:
        found = follow(image, memory, predict, next_centre(mask, direction, 0.5), settings)
    return found


def next_centre(mask: np.ndarray, direction: int = 1, heights: float = 1.0) -> tuple[int, ...]:
    """Where the traversal looks for the vertebra after `mask`: its centre moved down the spine (axis 0; up for
    `direction` -1) by `heights` times its height, kept inside the volume."""
    rows = np.flatnonzero(mask.any(axis=(1, 2)))
    moved = list(_centre(mask))
    step = direction * heights * (rows[-1] - rows[0] + 1)
    moved[0] = min(max(int(moved[0] + step), 0), mask.shape[0] - 1)
    return tuple(moved)


def level_names(count: int, metadata: dict) -> list[str | None]:
    """Level names for `count` vertebrae found top to bottom, anchored as the metadata says."""
    scheme = metadata["level_scheme"]
    names = {number: name for name, number in scheme.items()}
    levels, anchor = metadata["levels"], metadata["anchor"]
    first = scheme[levels[-1]] - count + 1 if anchor == "bottom" else scheme[levels[0]]
    return [names.get(i) for i in range(first, first + count)]


def to_level_ids(ranked: np.ndarray, metadata: dict) -> np.ndarray:
    """A map with ids 1..n (top to bottom) renamed to the level scheme's ids (uint8; 0 beyond C1 or S1)."""
    count = int(ranked.max(initial=0))
    table = np.zeros(count + 1, np.uint8)
    for rank, name in enumerate(level_names(count, metadata), start=1):
        table[rank] = metadata["level_scheme"][name] if name else 0
    return table[ranked]


def segment_volume(image: np.ndarray, spacing, predict: Predict, metadata: dict):
    """An input-grid volume -> (level-id map on the input grid, {level id: completeness})."""
    mm = float(metadata["spacing_mm"])
    prepared = isotropic_input(image, spacing, mm)
    settings = metadata["traversal"] | {"patch": metadata["patch"], "anchor": metadata["anchor"]}
    ranked, completeness = traverse(prepared, predict, settings)
    levels = to_level_ids(ranked, metadata)
    back = resample(levels, (mm,) * 3, spacing, shape=image.shape[:3], linear=False)
    by_level = {int(levels[ranked == r].max()): c for r, c in enumerate(completeness, start=1)}
    return back, {k: v for k, v in by_level.items() if k}


def saved_model_predict(export_dir: Path) -> Predict:
    """The exported SavedModel's `serve` signature as a Predict function."""
    import tensorflow as tf

    serve = tf.saved_model.load(str(export_dir / "saved_model")).signatures["serve"]
    name = next(iter(serve.structured_input_signature[1]))

    def predict(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = serve(**{name: tf.constant(batch, tf.float32)})
        return out["mask"].numpy()[..., 0], out["complete"].numpy()[:, 0]

    return predict


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export_dir", type=Path, help="folder with saved_model/ and instances.json")
    parser.add_argument("image", help="input volume (NRRD, NIfTI, MHA)")
    parser.add_argument("out_label", help="instance label map to write (ids = levels)")
    parser.add_argument("--table", help="CSV with one row per vertebra: level, voxels, volume_ml, complete")
    args = parser.parse_args(argv)
    metadata = json.loads((args.export_dir / "instances.json").read_text(encoding="utf-8"))
    image = sitk.ReadImage(args.image)
    levels, completeness = segment_volume(
        _array(image), image.GetSpacing(), saved_model_predict(args.export_dir), metadata
    )
    out = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(levels)))
    out.CopyInformation(image)
    sitk.WriteImage(out, args.out_label, useCompression=True)
    if args.table:
        _write_table(levels, image.GetSpacing(), completeness, metadata, args.table)
    print(f"{len(completeness)} vertebrae -> {args.out_label}")
    return 0


def _write_table(levels: np.ndarray, spacing, completeness: dict, metadata: dict, path: str) -> None:
    names = {number: name for name, number in metadata["level_scheme"].items()}
    voxel_ml = float(np.prod(spacing)) / 1000.0
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["level", "level_id", "voxels", "volume_ml", "complete", "confidence"])
        for level in (int(i) for i in np.unique(levels) if i):
            voxels = int(np.count_nonzero(levels == level))
            confidence = completeness.get(level, 0.0)
            writer.writerow([names[level], level, voxels, round(voxels * voxel_ml, 3), confidence >= 0.5, confidence])


if __name__ == "__main__":
    sys.exit(main())
