"""Run folder reports: per-class IoU/Dice tables (CSV + Markdown) and PNG plots of the training curves."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spine_keras import outputs
from spine_keras.io import atomic_path
from spine_keras.metrics import class_table, metric_key


def fmt(value: Any, digits: int = 4) -> str:
    """A table cell: floats rounded, NaN as 'n/a'."""
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def write_markdown(rows: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    """Rows of dicts as a Markdown table under a heading."""
    columns = list(rows[0])
    lines = [f"# {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row[c]) for c in columns) + " |" for row in rows]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_class_table(cm: np.ndarray, class_names: Sequence[str], folder: Path, title: str) -> None:
    """`iou_table.csv` and `iou_table.md`: per-class IoU and Dice of the best epoch, then the means."""
    rows = class_table(cm, class_names)
    outputs.write_csv(rows, list(rows[0]), folder / "iou_table.csv")
    write_markdown(rows, folder / "iou_table.md", title)


def read_history(path: Path) -> dict[str, np.ndarray]:
    """history.csv as columns of floats."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return {
        key: np.array([float(r[key]) if r[key] not in ("", None) else np.nan for r in rows])
        for key in (rows[0] if rows else {})
    }


def run_label(folder: Path | str) -> str:
    """How a plot title names a run: its folder, shortened to the last three path parts."""
    return "/".join(Path(folder).parts[-3:])


def _iou_series(class_names: Sequence[str]) -> list[tuple[str, str, str]]:
    """(history key, legend label, colour) of the IoU curves: the means in black and grey, each class in its fixed
    colour (`outputs.class_colour`, as in the montages; background in a light grey)."""
    means = [("val_miou", "mean IoU", "black"), ("val_miou_nobg", "mean IoU without background", "#707070")]
    colours = ["#b0b0b0"] + [outputs.class_colour(i) for i in range(1, len(class_names))]
    return means + [(f"val_iou_{metric_key(n)}", n, c) for n, c in zip(class_names, colours)]


def plot_history(
    history_csv: Path, class_names: Sequence[str], folder: Path, arch: str, run: Path | str | None = None
) -> None:
    """`loss.png` (training and validation loss) and `iou.png` (mean and per-class validation IoU) in `folder`.

    Each plot's title names the arch and the run (`run`, default `folder`: the folder a reader will find it in).
    """
    from matplotlib.ticker import MaxNLocator

    plt = outputs.pyplot()
    history = read_history(history_csv)
    if "epoch" not in history:
        return
    epochs = history["epoch"] + 1
    curves = {
        "loss.png": ("loss", [("loss", "training", "#1f77b4"), ("val_loss", "validation", "#ff7f0e")]),
        "iou.png": ("validation IoU", _iou_series(class_names)),
    }
    for name, (what, series) in curves.items():
        figure, axes = plt.subplots(figsize=(7, 4))
        for key, label, colour in series:
            if key in history:
                axes.plot(epochs, history[key], marker="o", markersize=3, label=label, color=colour)
        axes.set_title(f"{arch}: {what}\nrun {run_label(run or folder)}", fontsize=10)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel("loss" if name == "loss.png" else "IoU")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
        figure.tight_layout()
        outputs.save_figure(figure, folder / name)
