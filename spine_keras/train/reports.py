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


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Rows of dicts (same keys) as CSV, atomically."""
    columns = list(rows[0])
    outputs.write_csv([[row[c] for c in columns] for row in rows], columns, path)


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
    write_csv(rows, folder / "iou_table.csv")
    write_markdown(rows, folder / "iou_table.md", title)


def read_history(path: Path) -> dict[str, np.ndarray]:
    """history.csv as columns of floats."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return {
        key: np.array([float(r[key]) if r[key] not in ("", None) else np.nan for r in rows])
        for key in (rows[0] if rows else {})
    }


def plot_history(history_csv: Path, class_names: Sequence[str], folder: Path) -> None:
    """`loss.png` (training and validation loss) and `iou.png` (mean and per-class validation IoU)."""
    from matplotlib.ticker import MaxNLocator

    plt = outputs.pyplot()

    history = read_history(history_csv)
    if "epoch" not in history:
        return
    epochs = history["epoch"] + 1
    curves = {
        "loss.png": [("loss", "training"), ("val_loss", "validation")],
        "iou.png": [("val_miou", "mean IoU"), ("val_miou_nobg", "mean IoU without background")]
        + [(f"val_iou_{metric_key(n)}", n) for n in class_names],
    }
    for name, series in curves.items():
        figure, axes = plt.subplots(figsize=(7, 4))
        for key, label in series:
            if key in history:
                axes.plot(epochs, history[key], marker="o", markersize=3, label=label)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel("loss" if name == "loss.png" else "IoU")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
        figure.tight_layout()
        outputs.save_figure(figure, folder / name)
