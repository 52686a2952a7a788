"""The planner behind `spine-make-cube --shape auto`: a sample shape derived from the list's median geometry.

Only the volumes' headers are read (SimpleITK `ReadImageInformation`), so planning a list costs milliseconds. The
median size is taken per axis over the list's images, on the grid the cube will use (after `--spacing`).

- 2D: the in-plane median size at native resolution, each side rounded UP to a multiple of 32 (so every arch's
  poolings divide it), and centre pad/crop instead of resizing: the anatomy keeps its millimetres. The shared
  VB3 slices (224 x 224) give 224 x 224.
- 3D: a patch following the median volume's aspect, shrunk evenly until its activations fit the memory budget,
  each side a multiple of 16 and no larger than the median volume needs; a tiling stride of half a patch along
  the axes the patch does not cover (one window along the others).

The activation estimate: `BYTES_PER_VOXEL` bytes per input voxel and sample, the sum of every layer output (float32)
of the paper preset's default arch (`uamd`) at its preset width of 16 filters, which training keeps for
back-propagation; the budget covers a batch of `BATCH` samples. Wider archs need proportionally more (e.g. 32
filters: about twice).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spine_keras.errors import UserError
from spine_keras.io import ListEntry, parse_list

MULTIPLE_2D = 32  # 2**5: every arch's poolings divide the side
MULTIPLE_3D = 16  # 2**4: the 3D archs' poolings divide the side
BYTES_PER_VOXEL = 1600  # uamd, 16 filters: the sum of its layer outputs per input voxel, float32 (measured: 1568)
BATCH = 2  # samples per batch the memory budget is planned for
DEFAULT_BUDGET_GB = 2.0


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the planner chose and from what: recorded in the cube's config JSON."""

    mode: str
    cases: int  # volumes whose headers were read
    median_size: tuple[int, ...]  # voxels per axis, on the cube's grid (after --spacing)
    median_spacing: tuple[float, ...]  # mm per axis, on the cube's grid
    shape: tuple[int, ...]  # the sample shape: 2D (H, W), 3D (D, H, W)
    stride: tuple[int, ...] | None  # 3D tiling stride; None in 2D
    fit: str  # how samples are brought to `shape`: always 'pad' (never resize anatomy)
    memory_budget_gb: float
    batch: int = BATCH
    bytes_per_voxel: int = BYTES_PER_VOXEL
    rule: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (lists for tuples)."""
        data = dataclasses.asdict(self)
        for key in ("median_size", "median_spacing", "shape", "stride"):
            data[key] = None if data[key] is None else list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        """From `to_dict` output; unknown keys are ignored."""
        known = {f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data}
        for key in ("median_size", "shape", "stride"):
            if known.get(key) is not None:
                known[key] = tuple(int(v) for v in known[key])
        known["median_spacing"] = tuple(float(v) for v in known["median_spacing"])
        return cls(**known)

    def summary(self) -> str:
        """The plan in one line, for the terminal."""
        size = "x".join(map(str, self.median_size))
        spacing = ",".join(f"{s:g}" for s in self.median_spacing)
        stride = f", stride {','.join(map(str, self.stride))}" if self.stride else ""
        return (
            f"plan ({self.mode}, {self.cases} volumes): median {size} voxels at {spacing} mm -> shape "
            f"{','.join(map(str, self.shape))}{stride}, fit {self.fit} ({self.rule})"
        )


def read_geometry(path: Path) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """(size, spacing) of a volume from its header alone, in the project's axis order (ITK index order)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot read the header of '{path}' to plan the shape ({message})") from exc
    return tuple(int(s) for s in reader.GetSize()), tuple(float(s) for s in reader.GetSpacing())


def median_geometry(
    geometries: Sequence[tuple[Sequence[int], Sequence[float]]], spacing: Sequence[float] | None = None
) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """Per-axis median size and spacing of volumes; with a target `spacing`, sizes are those after resampling."""
    sizes, spacings = [], []
    for size, native in geometries:
        if len(size) != 3:
            raise UserError(f"the planner needs 3D volumes; one has {len(size)} dimensions")
        target = native if spacing is None else spacing
        sizes.append([max(1, round(n * s / t)) for n, s, t in zip(size, native, target)])
        spacings.append(list(target))
    median_size = tuple(int(math.ceil(v)) for v in np.median(np.asarray(sizes, float), axis=0))
    return median_size, tuple(float(v) for v in np.median(np.asarray(spacings, float), axis=0))


def round_up(value: int, multiple: int) -> int:
    """The smallest multiple of `multiple` that is >= `value` (and >= `multiple`)."""
    return max(multiple, -(-int(value) // multiple) * multiple)


def plan_2d(size: tuple[int, ...], spacing: tuple[float, ...], axis: int, cases: int, budget_gb: float) -> Plan:
    """In-plane median size at native resolution, rounded up to a multiple of 32; centre pad/crop, no resizing."""
    in_plane = tuple(n for i, n in enumerate(size) if i != axis)
    shape = tuple(round_up(n, MULTIPLE_2D) for n in in_plane)
    rule = f"2d: median in-plane size rounded up to a multiple of {MULTIPLE_2D}, native resolution"
    return Plan("2d", cases, size, spacing, shape, None, "pad", budget_gb, rule=rule)


def plan_3d(size: tuple[int, ...], spacing: tuple[float, ...], cases: int, budget_gb: float) -> Plan:
    """A patch with the median volume's aspect within the memory budget, sides multiples of 16, and its stride."""
    cap = tuple(round_up(n, MULTIPLE_3D) for n in size)
    limit = budget_voxels(budget_gb)
    if limit < MULTIPLE_3D**3:
        raise UserError(
            f"--memory-budget {budget_gb:g} GB cannot hold even a {MULTIPLE_3D}^3 patch for batch {BATCH} "
            f"(about {BYTES_PER_VOXEL} bytes per voxel); raise it"
        )
    if np.prod(cap, dtype=np.float64) <= limit:
        shape = cap
    else:
        scale = (limit / np.prod(size, dtype=np.float64)) ** (1 / 3)
        shape = tuple(max(MULTIPLE_3D, int(n * scale) // MULTIPLE_3D * MULTIPLE_3D) for n in size)
        shape = _grow(shape, size, cap, limit)
    stride = tuple(p if p >= n else p // 2 for p, n in zip(shape, size))
    rule = (
        f"3d: median aspect within {budget_gb:g} GB of activations for batch {BATCH} at {BYTES_PER_VOXEL} bytes "
        f"per voxel, sides multiples of {MULTIPLE_3D}, stride half a patch where the patch is smaller"
    )
    return Plan("3d", cases, size, spacing, shape, stride, "pad", budget_gb, rule=rule)


def budget_voxels(budget_gb: float) -> float:
    """Voxels per sample whose activations fit `budget_gb` GiB for a batch of `BATCH`."""
    if not budget_gb > 0 or not math.isfinite(budget_gb):
        raise UserError(f"--memory-budget must be a positive number of GB, not {budget_gb}")
    return budget_gb * 2**30 / (BATCH * BYTES_PER_VOXEL)


def _grow(shape: tuple[int, ...], size: tuple[int, ...], cap: tuple[int, ...], limit: float) -> tuple[int, ...]:
    """Add 16 to the side furthest below its share of the median volume while the patch fits `limit` voxels."""
    sides = list(shape)
    while True:
        growable = [
            i
            for i in range(len(sides))
            if sides[i] + MULTIPLE_3D <= cap[i]
            and np.prod(sides, dtype=np.float64) / sides[i] * (sides[i] + MULTIPLE_3D) <= limit
        ]
        if not growable:
            return tuple(sides)
        sides[min(growable, key=lambda i: sides[i] / size[i])] += MULTIPLE_3D


def plan_entries(
    entries: Sequence[ListEntry],
    mode: str,
    axis: int = 2,
    spacing: Sequence[float] | None = None,
    budget_gb: float = DEFAULT_BUDGET_GB,
    skip_bad: bool = False,
) -> Plan:
    """The plan for a list's images; with `skip_bad`, images whose header cannot be read are left out."""
    budget_voxels(budget_gb)  # a bad budget is refused in 2D too, where the plan only records it
    geometries = []
    for entry in entries:
        if skip_bad and not entry.image.is_file():
            continue
        if not entry.image.is_file():
            raise UserError(f"{entry.source}: image file '{entry.image}' not found; fix the list or add --skip-bad")
        try:
            geometries.append(read_geometry(entry.image))
        except UserError:
            if not skip_bad:
                raise
    if not geometries:
        raise UserError("no volume of the list has a readable header to plan the shape from")
    size, median_spacing = median_geometry(geometries, spacing)
    if mode == "2d":
        return plan_2d(size, median_spacing, axis, len(geometries), budget_gb)
    return plan_3d(size, median_spacing, len(geometries), budget_gb)


def plan_list(
    list_path: Path | str,
    mode: str,
    axis: int = 2,
    spacing: Sequence[float] | None = None,
    budget_gb: float = DEFAULT_BUDGET_GB,
    skip_bad: bool = False,
) -> Plan:
    """The plan for the images of the list at `list_path` (headers only)."""
    return plan_entries(parse_list(list_path), mode, axis, spacing, budget_gb, skip_bad)
