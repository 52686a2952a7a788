"""Fold summaries and the variant comparison laid out like the paper's results table (mean ± std over folds)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spine_keras import outputs
from spine_keras.metrics import metric_key
from spine_keras.train.reports import fmt, run_label, write_markdown

GLOBAL_ROWS = (("IoU without background", "val_miou_nobg"), ("IoU with background", "val_miou"))


def table_rows(class_names: Sequence[str]) -> list[tuple[str, str]]:
    """(row label, log key) of the comparison: each class's IoU, then the two global IoUs."""
    return [(name, f"val_iou_{metric_key(name)}") for name in class_names] + list(GLOBAL_ROWS)


def mean_std(results: Sequence[dict[str, Any]], key: str) -> tuple[float, float]:
    """Mean and (population) standard deviation of a metric over folds, ignoring NaN."""
    values = np.array([float(r["metrics"].get(key, np.nan)) for r in results], dtype=np.float64)
    values = values[~np.isnan(values)]
    return (float(values.mean()), float(values.std())) if values.size else (float("nan"), float("nan"))


def cell(mean: float, std: float, n: int) -> str:
    """'0.8123 ± 0.0101' over several folds, the bare value for one."""
    return fmt(mean) if n < 2 or np.isnan(std) else f"{fmt(mean)} ± {fmt(std)}"


def write_fold_summary(results: Sequence[dict[str, Any]], class_names: Sequence[str], folder: Path) -> None:
    """`folds.csv` / `folds.md`: one row per fold (best-epoch IoUs), then mean and std."""
    keys = table_rows(class_names)
    rows: list[dict[str, Any]] = [
        {
            "fold": r["split"],
            "best_epoch": r["best_epoch"] + 1,
            **{label: float(r["metrics"].get(key, np.nan)) for label, key in keys},
        }
        for r in results
    ]
    stats = {label: mean_std(results, key) for label, key in keys}
    rows.append({"fold": "mean", "best_epoch": "", **{label: s[0] for label, s in stats.items()}})
    rows.append({"fold": "std", "best_epoch": "", **{label: s[1] for label, s in stats.items()}})
    outputs.write_csv(rows, list(rows[0]), folder / "folds.csv")
    write_markdown(rows, folder / "folds.md", f"Validation IoU per fold ({results[0]['arch']})")


def write_comparison(
    results: dict[str, list[dict[str, Any]]], class_names: Sequence[str], folder: Path, run: Path | str | None = None
) -> None:
    """`comparison.md`, `comparison.csv` and `comparison.png`: rows = classes then global IoUs, columns = archs.

    The plot's title names the archs and the run (`run`, default `folder`).
    """
    archs = list(results)
    keys = table_rows(class_names)
    stats = {arch: [mean_std(results[arch], key) for _, key in keys] for arch in archs}
    csv_rows = [
        {
            "row": label,
            **{k: v for arch in archs for k, v in ((arch, stats[arch][i][0]), (f"{arch}_std", stats[arch][i][1]))},
        }
        for i, (label, _) in enumerate(keys)
    ]
    outputs.write_csv(csv_rows, list(csv_rows[0]), folder / "comparison.csv")
    n_folds = max(len(r) for r in results.values())
    md_rows = [
        {"": label, **{arch: cell(*stats[arch][i], len(results[arch])) for arch in archs}}
        for i, (label, _) in enumerate(keys)
    ]
    write_markdown(
        md_rows, folder / "comparison.md", f"Validation IoU per class and global, mean ± std over {n_folds} fold(s)"
    )
    title = f"{', '.join(archs)}: validation IoU, mean ± std over {n_folds} fold(s)\nrun {run_label(run or folder)}"
    _bar_chart([label for label, _ in keys], stats, folder / "comparison.png", title)


def _bar_chart(labels: list[str], stats: dict[str, list[tuple[float, float]]], path: Path, title: str) -> None:
    """Grouped bars under `title`: one group per table row, one bar per arch, error bars = std over folds."""
    plt = outputs.pyplot()
    archs = list(stats)
    width = 0.8 / len(archs)
    x = np.arange(len(labels))
    figure, axes = plt.subplots(figsize=(max(6, 1.2 * len(labels) * max(1, len(archs) / 3)), 4))
    for i, arch in enumerate(archs):
        means = np.nan_to_num([m for m, _ in stats[arch]])
        stds = np.nan_to_num([s for _, s in stats[arch]])
        axes.bar(x + (i - (len(archs) - 1) / 2) * width, means, width, yerr=stds, capsize=2, label=arch)
    axes.set_xticks(x, labels, rotation=20, ha="right")
    axes.set_title(title, fontsize=10)
    axes.set_ylabel("IoU")
    axes.set_ylim(0, 1)
    axes.grid(axis="y", alpha=0.3)
    axes.legend(ncol=min(len(archs), 4), fontsize=8)
    figure.tight_layout()
    outputs.save_figure(figure, path)
