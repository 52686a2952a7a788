"""The level figure: for the best, median and worst case of a scored `predict` or `baseline` output folder (by mean
per-vertebra Dice), the sagittal slice through the most vertebra voxels, truth beside prediction, each vertebra
coloured by its level.

A level keeps one colour in every figure: level id i gets `level_colour(i)`, one of nine strongly different
colours in turn, so any nine neighbouring levels (T10..S1, say: a lumbar field of view with the vertebra above and
the sacrum below its labels) are told apart at a glance; the legend names the levels shown. The sagittal slice is
axis 2 of the shared data (axis 0 runs superior -> inferior, drawn top to bottom).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from spine_keras import outputs
from spine_keras.errors import CaseError, UserError
from spine_keras.instances.cases import read_labelled
from spine_keras.io import ListEntry, read_volume
from spine_keras.levels import LEVELS, level_name

DPI = 80
ALPHA = 0.55  # opacity of the level colours over the image
SLICE_AXIS = 2  # sagittal slices of the shared data: volume[:, :, k]
# Indexed by level id modulo 9: T11 orange, T12 cyan, L1 magenta, L2 red, L3 green, L4 blue, L5 yellow, S1 purple,
# T10 lime; neighbours along the spine never share or nearly share a colour.
LEVEL_COLOURS = ("#f58231", "#42d4f4", "#f032e6", "#e6194b", "#3cb44b", "#4363d8", "#ffe119", "#911eb4", "#bfef45")


@dataclasses.dataclass
class FigureRow:
    """One row of the figure: which case, why it was chosen, and the slice drawn."""

    role: str  # "best", "median" or "worst"
    case: str
    mean_dice: float
    slice_index: int


@dataclasses.dataclass
class SliceView:
    """What one row draws: the slices of the image, the truth and the prediction, and the pixel aspect (mm)."""

    row: FigureRow
    image: np.ndarray
    truth: np.ndarray
    prediction: np.ndarray
    aspect: float  # pixel height / width


def case_dice(folder: Path) -> dict[str, float]:
    """Mean per-vertebra Dice of every scored case in an output folder's `summary.json` (UserError when absent)."""
    path = Path(folder) / "summary.json"
    try:
        cases = json.loads(path.read_text(encoding="utf-8"))["cases"]
        scores = {str(c["case"]): float(c["mean_dice"]) for c in cases if c.get("mean_dice") is not None}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(
            f"'{folder}' holds no readable summary.json ({exc}); give the folder of a spine-instances predict or "
            "baseline run on a list with labels"
        ) from exc
    if not scores:
        raise UserError(f"'{path}' scores no case; give the folder of a predict or baseline run on labelled cases")
    return scores


def summary_levels(folder: Path) -> list[str] | None:
    """The levels a predict or baseline output folder was scored with (None when it does not say)."""
    pooled = json.loads((Path(folder) / "summary.json").read_text(encoding="utf-8")).get("pooled", {})
    levels = pooled.get("levels")
    return list(levels) if isinstance(levels, list) else None


def pick_cases(scores: dict[str, float]) -> list[tuple[str, str]]:
    """(role, case) for the best, median and worst case by score, best first; a case fills one role only (the
    worst before the median when there are two cases; one case is just the best)."""
    ranked = sorted(scores, key=lambda case: (scores[case], case))
    chosen = {"best": len(ranked) - 1, "worst": 0, "median": (len(ranked) - 1) // 2}
    taken: set[int] = set()
    roles = {}
    for role, index in chosen.items():
        if index not in taken:
            roles[role] = ranked[index]
            taken.add(index)
    return [(role, roles[role]) for role in ("best", "median", "worst") if role in roles]


def level_figure(folder: Path, entries: list[ListEntry], levels: list[str], png: Path) -> list[FigureRow]:
    """Draw the figure of `folder` (a predict or baseline output) into `png`, with the truth and images of
    `entries` (`image,label` lines, truth named with `levels`); returns the rows drawn. Everything is read and
    checked before the PNG is written."""
    scores = case_dice(folder)
    by_case = {entry.case_id: entry for entry in entries}
    missing = sorted(set(scores) - set(by_case))
    if missing:
        raise UserError(f"case {missing[0]} of '{folder}' is not in the list; give the list it was predicted from")
    views = [_view(folder, by_case[case], levels, role, scores[case]) for role, case in pick_cases(scores)]
    _draw(views, png)
    return [view.row for view in views]


def _view(folder: Path, entry: ListEntry, levels: list[str], role: str, dice: float) -> SliceView:
    """One case read, checked against its prediction, and cut at the slice through the most vertebra voxels."""
    case = read_labelled(entry, levels)
    path = Path(folder) / f"{entry.case_id}_instances.nrrd"
    if not path.is_file():
        raise UserError(f"'{path}' not found; give the output folder of a spine-instances predict or baseline run")
    prediction = read_volume(path).array
    if prediction.shape != case.levels.shape:
        raise CaseError(
            f"'{path}' has shape {prediction.shape} but the image of case {entry.case_id} {case.levels.shape}; "
            "give the list the folder was predicted from",
            entry.case_id,
        )
    voxels = np.count_nonzero(case.levels, axis=(0, 1)) + np.count_nonzero(prediction, axis=(0, 1))
    index = int(np.argmax(voxels)) if voxels.any() else case.levels.shape[SLICE_AXIS] // 2
    return SliceView(
        FigureRow(role, entry.case_id, dice, index),
        np.asarray(case.image.array)[:, :, index],
        case.levels[:, :, index],
        np.asarray(prediction)[:, :, index],
        case.image.spacing[0] / case.image.spacing[1],
    )


def level_colour(level_id: int) -> str:
    """The fixed colour of level id `level_id` (C1 = 1 .. S1 = 25) as '#rrggbb'."""
    return LEVEL_COLOURS[level_id % len(LEVEL_COLOURS)]


def level_overlay(levels: np.ndarray) -> np.ndarray:
    """RGBA (float) colouring each level id with its fixed colour at `ALPHA`; background transparent."""
    from matplotlib.colors import to_rgb

    table = np.zeros((len(LEVELS) + 1, 4))
    for number in range(1, len(LEVELS) + 1):
        table[number] = (*to_rgb(level_colour(number)), ALPHA)
    return table[np.clip(np.asarray(levels, dtype=np.intp), 0, len(LEVELS))]


def _draw(views: list[SliceView], png: Path) -> Path:
    """Rows = cases; columns = truth, prediction; one legend of the levels shown."""
    from matplotlib.patches import Patch

    plt = outputs.pyplot()
    fig, axes = plt.subplots(len(views), 2, figsize=(5.0, 2.6 * len(views) + 0.6), squeeze=False)
    shown: set[int] = set()
    for view, pair in zip(views, axes):
        low, high = np.percentile(view.image, (1, 99))
        for ax, labels, name in zip(pair, (view.truth, view.prediction), ("truth", "prediction")):
            ax.imshow(view.image, cmap="gray", vmin=low, vmax=max(high, low + 1e-6), aspect=view.aspect)
            ax.imshow(level_overlay(labels), interpolation="nearest", aspect=view.aspect)
            ax.axis("off")
            ax.set_title(name, fontsize=7)
            shown.update(int(i) for i in np.unique(labels) if 0 < i <= len(LEVELS))
        row = view.row
        pair[0].set_title(f"{row.role}: {row.case}, mean Dice {row.mean_dice:.3f}\ntruth", fontsize=7)
    handles = [Patch(facecolor=level_colour(i), label=level_name(i)) for i in sorted(shown)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 7) or 1, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.35 / fig.get_figheight(), 1, 1))
    return outputs.save_figure(fig, png, dpi=DPI)
