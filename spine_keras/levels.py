"""Anatomical vertebra levels: one documented numbering, `--levels` ranges, and naming a label map's ids by position.

The level scheme gives every vertebra from C1 to S1 one id, top to bottom:
C1..C7 = 1..7, T1..T12 = 8..19, L1..L5 = 20..24, S1 = 25 (so T11 = 18 and L5 = 24). Instance label maps written by
spine_keras carry these ids, so a map means the same thing whichever data set it came from.

The published label maps number their vertebrae per structure, in an order that need not follow the spine (VB2's
ids change order from case to case). `order_ids` sorts a map's ids by the centre of each id along the
superior->inferior axis (axis 0 in the shared data) and gives them the levels the user stated for the list,
top to bottom. numpy only: the cube builder, the instance path and prediction can all use it.
"""

from __future__ import annotations

import re

import numpy as np

from spine_keras.errors import CaseError, UserError

LEVELS: tuple[str, ...] = (
    tuple(f"C{i}" for i in range(1, 8))
    + tuple(f"T{i}" for i in range(1, 13))
    + tuple(f"L{i}" for i in range(1, 6))
    + ("S1",)
)
LEVEL_IDS: dict[str, int] = {name: number for number, name in enumerate(LEVELS, start=1)}
_NAME = re.compile(r"^\s*([CTLS])\s*(\d+)\s*$", re.IGNORECASE)


def level_id(name: str) -> int:
    """The scheme's id of a level name (`'L1'` -> 20); UserError for a name outside C1..S1."""
    match = _NAME.match(name)
    key = f"{match.group(1).upper()}{int(match.group(2))}" if match else name.strip()
    if key not in LEVEL_IDS:
        raise UserError(f"--levels: unknown vertebra level '{name.strip()}'; use C1-C7, T1-T12, L1-L5 or S1")
    return LEVEL_IDS[key]


def level_name(number: int) -> str:
    """The level name of a scheme id (`20` -> `'L1'`); ValueError outside 1..25."""
    if not 1 <= number <= len(LEVELS):
        raise ValueError(f"level id {number} is outside 1..{len(LEVELS)}")
    return LEVELS[number - 1]


def parse_levels(spec: str) -> list[str]:
    """The levels a `--levels` value names, top to bottom: a range `'T11-L5'`, one level `'L3'`, or a
    comma-separated list of either (`'L1-L3,L5'`, for a spine with a missing label). UserError for unknown names, a
    range running upwards, a level named twice or levels out of anatomical order."""
    ids: list[int] = []
    for part in spec.split(","):
        bounds = part.split("-")
        if not part.strip() or len(bounds) > 2:
            raise UserError(f"--levels: cannot read '{part.strip()}'; write a range like 'T11-L5' or a list 'L1,L2'")
        low, high = level_id(bounds[0]), level_id(bounds[-1])
        if high < low:
            raise UserError(f"--levels: range '{part.strip()}' runs upwards; write it top to bottom, e.g. 'T11-L5'")
        ids.extend(range(low, high + 1))
    if any(later <= earlier for earlier, later in zip(ids, ids[1:])):
        raise UserError(f"--levels '{spec}': every level once, top to bottom (e.g. 'T11-L5')")
    return [level_name(i) for i in ids]


def id_centres(label: np.ndarray, axis: int = 0) -> dict[int, float]:
    """The mean index along `axis` of each non-zero id of an integer label map (its centre of mass there)."""
    label = np.asarray(label)
    if not np.issubdtype(label.dtype, np.integer) or (label.size and label.min() < 0):
        raise CaseError("label map must hold non-negative integer ids to name vertebra levels")
    flat = label.reshape(-1).astype(np.intp, copy=False)
    counts = np.bincount(flat)
    position = np.broadcast_to(
        np.arange(label.shape[axis]).reshape([-1 if a == axis else 1 for a in range(label.ndim)]), label.shape
    )
    sums = np.bincount(flat, weights=position.reshape(-1), minlength=counts.size)
    return {int(i): float(sums[i] / counts[i]) for i in np.flatnonzero(counts) if i != 0}


def order_ids(label: np.ndarray, levels: list[str], axis: int = 0, case: str | None = None) -> dict[int, str]:
    """Name each id of `label` with a level: ids sorted by their centre along `axis` (superior -> inferior), the
    first getting `levels[0]`. CaseError naming the case and both counts when the map's id count differs from the
    number of levels."""
    centres = id_centres(label, axis)
    if len(centres) != len(levels):
        where = f"case {case}: " if case else ""
        raise CaseError(
            f"{where}label map has {len(centres)} vertebra id(s) but --levels names {len(levels)} "
            f"({levels[0]}-{levels[-1]}); give the levels this list's labels span",
            case,
        )
    ordered = sorted(centres, key=lambda i: (centres[i], i))
    return {int(i): name for i, name in zip(ordered, levels)}


def relabel(label: np.ndarray, names: dict[int, str]) -> np.ndarray:
    """`label` with each id replaced by its level's scheme id (uint8); ids not in `names` become 0."""
    table = np.zeros(max(max(names, default=0), int(np.max(label, initial=0))) + 1, np.uint8)
    for source, name in names.items():
        table[source] = LEVEL_IDS[name]
    return table[np.asarray(label, dtype=np.intp)]


def levels_ending_at(last: str, count: int) -> list[str]:
    """The `count` consecutive levels whose lowest is `last` (`('L5', 3)` -> L3, L4, L5); UserError when they would
    run above C1."""
    end = level_id(last)
    if count > end:
        raise UserError(f"{count} vertebrae cannot end at {last}: only {end} levels lie at or above it")
    return [level_name(i) for i in range(end - count + 1, end + 1)]


def name_found(count: int, levels: list[str], anchor: str = "bottom") -> list[str | None]:
    """Levels for `count` vertebrae found top to bottom in a scan whose labels span `levels`: with anchor 'bottom'
    the lowest one found is `levels[-1]` (in lumbar MRI the lowest lumbar body sits on the sacrum), with 'top' the
    highest is `levels[0]`; the others follow consecutively, past the stated span where more were found, and get
    None beyond C1 or S1."""
    if anchor not in ("bottom", "top"):
        raise UserError(f"--anchor must be 'bottom' or 'top', not '{anchor}'")
    first = level_id(levels[-1]) - count + 1 if anchor == "bottom" else level_id(levels[0])
    return [level_name(i) if 1 <= i <= len(LEVELS) else None for i in range(first, first + count)]
