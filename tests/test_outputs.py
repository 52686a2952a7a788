"""Shared report helpers: one CSV writer for lists and dicts, fixed class colours and their legend."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from matplotlib.colors import to_rgb, to_rgba

from spine_keras import outputs


def test_write_csv_takes_sequences_or_mappings_in_header_order(tmp_path: Path) -> None:
    path = outputs.write_csv([{"b": 2, "a": 1}, [3, 4]], ["a", "b"], tmp_path / "sub" / "t.csv")
    with open(path, newline="") as handle:
        assert list(csv.reader(handle)) == [["a", "b"], ["1", "2"], ["3", "4"]]


def test_a_class_keeps_its_colour_whatever_the_class_count() -> None:
    few = outputs.label_overlay(np.array([[0, 1, 2]]), alpha=0.5)
    many = outputs.label_overlay(np.array([[0, 1, 2, 7, 17]]), alpha=0.5)
    np.testing.assert_array_equal(few[0], many[0, :3])
    np.testing.assert_allclose(few[0, 0], [0, 0, 0, 0])  # background transparent
    np.testing.assert_allclose(few[0, 1], [*to_rgb("#e6194b"), 0.5])
    np.testing.assert_allclose(many[0, 4], [*to_rgb("#e6194b"), 0.5])  # 17 wraps round the 16 colours to class 1
    assert outputs.class_colour(3) == "#4363d8" and len(set(outputs.CLASS_COLOURS)) == 16


def test_class_legend_names_the_foreground_classes_in_their_colours() -> None:
    figure = outputs.pyplot().figure()
    outputs.add_class_legend(figure, ["background", "vertebra", "disc"])
    (legend,) = figure.legends
    assert [t.get_text() for t in legend.get_texts()] == ["vertebra", "disc"]
    colours = [handle.get_facecolor() for handle in legend.legend_handles]
    np.testing.assert_allclose(colours, [to_rgba("#e6194b"), to_rgba("#3cb44b")])


def test_training_plots_are_titled_with_the_arch_and_the_run(tmp_path: Path, monkeypatch) -> None:
    from spine_keras.train.compare import write_comparison
    from spine_keras.train.reports import plot_history

    titles = {}
    monkeypatch.setattr(
        outputs, "save_figure", lambda figure, path, dpi=100: titles.setdefault(Path(path).name, figure.axes[0].title)
    )
    run = tmp_path / "runs" / "uamd-2d-x" / "fold_1"
    rows = [{"epoch": e, "loss": 1 / (e + 1), "val_loss": 1.0, "val_miou": 0.5, "val_iou_disc": 0.4} for e in range(3)]
    outputs.write_csv(rows, list(rows[0]), run / "history.csv")
    plot_history(run / "history.csv", ["background", "disc"], run, "uamd")
    assert titles["loss.png"].get_text() == "uamd: loss\nrun runs/uamd-2d-x/fold_1"
    assert titles["iou.png"].get_text() == "uamd: validation IoU\nrun runs/uamd-2d-x/fold_1"
    fold = {"metrics": {"val_iou_disc": 0.5, "val_miou_nobg": 0.5, "val_miou": 0.6}}
    write_comparison({"u1": [fold], "uad": [fold]}, ["disc"], tmp_path / "cmp", run="runs/compare")
    assert titles["comparison.png"].get_text() == "u1, uad: validation IoU, mean ± std over 1 fold(s)\nrun runs/compare"
