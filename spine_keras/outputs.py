"""Report files written atomically: CSV tables and matplotlib figures (headless), shared by every stage."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spine_keras.io import atomic_path


def write_csv(rows: Sequence[Sequence[Any]], header: Sequence[str], path: Path | str) -> Path:
    """Write a header and rows as CSV, atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(list(header))
        writer.writerows(rows)
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
