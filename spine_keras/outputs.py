"""Report files written atomically: CSV tables and matplotlib figures (headless), shared by every stage."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spine_keras.io import atomic_path
from spine_keras.preprocess import IGNORE

# Class colours: class i >= 1 always gets CLASS_COLOURS[(i - 1) % 16], whatever the number of classes, so a class
# keeps its colour across cubes, runs and figures; background (class 0) is transparent. Sixteen colours that stay
# distinct from each other and from the grey of MRI intensities (after Trubetskoy's list of distinct colours).
CLASS_COLOURS = (
    "#e6194b",
    "#3cb44b",
    "#4363d8",
    "#ffe119",
    "#f58231",
    "#911eb4",
    "#42d4f4",
    "#f032e6",
    "#bfef45",
    "#fabed4",
    "#469990",
    "#dcbeff",
    "#9a6324",
    "#800000",
    "#aaffc3",
    "#000075",
)
IGNORE_COLOUR = "#9e9e9e"  # voxels of the ignore id: grey, outside the class palette


def write_csv(rows: Sequence[Sequence[Any] | Mapping[str, Any]], header: Sequence[str], path: Path | str) -> Path:
    """Write a header and rows as CSV, atomically (temporary file, then rename).

    A row is a sequence of cells in `header` order, or a mapping from column name to cell.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(list(header))
        writer.writerows([row[c] for c in header] if isinstance(row, Mapping) else row for row in rows)
    return path


def pyplot():
    """matplotlib.pyplot on the headless Agg backend (no display on servers and CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: Path | str, dpi: int = 100) -> Path:
    """Save a figure as PNG atomically and free it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=dpi, format="png")
    pyplot().close(figure)
    return path


def class_colour(index: int) -> str:
    """The fixed colour of class `index` (>= 1) as '#rrggbb'."""
    return CLASS_COLOURS[(index - 1) % len(CLASS_COLOURS)]


def label_overlay(label: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGBA image (float, shape label.shape + (4,)) colouring each class by `class_colour` and the ignore id in
    grey (`IGNORE_COLOUR`); background transparent."""
    from matplotlib.colors import to_rgb

    label = np.asarray(label)
    top = int(label.max(initial=0))
    table = np.zeros((top + 1, 4))
    for index in range(1, top + 1):
        table[index] = (*to_rgb(IGNORE_COLOUR if index == IGNORE else class_colour(index)), alpha)
    return table[np.clip(label, 0, None)]


def add_class_legend(figure, class_names: Sequence[str], ignored: bool = False, **kwargs: Any) -> None:
    """A figure legend naming every foreground class beside its fixed colour (background is left uncoloured), and
    with `ignored` the grey of the ignore id."""
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=class_colour(i), label=name) for i, name in enumerate(class_names) if i > 0]
    if ignored:
        handles.append(Patch(facecolor=IGNORE_COLOUR, label="ignored"))
    options = {"loc": "lower center", "ncol": min(len(handles), 6), "fontsize": 8, "frameon": False, **kwargs}
    figure.legend(handles=handles, **options)
