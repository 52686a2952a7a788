"""Time to accuracy: spine_keras's recipe against the plain Keras U-Net (bench/plain_unet.py), same folds, same CPU.

For each patient-grouped fold, spine_keras builds its cube once (its time is added to every fold) and `spine-train`
trains on the other folds' cases; a watcher copies `last.keras` after every epoch with the wall time since the
command started. The plain U-Net then trains for the same wall time on the same cases. Every `--eval-every`-th
snapshot (and the last) of both segments the fold's held-out exams in their original geometry, scored by one numpy
Dice on the vertebra mask. Evaluation time is not counted. Writes `curves.csv` (side, fold, epoch, seconds, case,
dice) and `time_to_accuracy.png` (mean held-out Dice against minutes, one line per side) under OUT.

`--defaults` trains spine_keras's side as a user who gives no flags would: `make_cube.py LIST` with only the binary
label map, `train.py --cube` with only the fold (the recipe preset: native in-plane size, 10 epochs, cosine).
`--plain-minutes` caps the plain side's wall time (it otherwise gets spine_keras's); 0 skips it. `--spine-flags`
adds train.py flags to spine_keras's side and `--side` names that side in curves.csv, so that a variant's curve
can join an earlier run's (same list, folds and seed).

    python bench/time_to_accuracy.py --out /tmp/tta --folds 3 --epochs 12
    python bench/time_to_accuracy.py --out /tmp/tta-defaults --defaults --plain-minutes 15
    python bench/time_to_accuracy.py --out /tmp/tta-defaults --defaults --plain-minutes 0 \
        --spine-flags=--mixed-precision --side "spine_keras bf16"
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import common  # noqa: F401  (sets the thread and OpenMP environment first)
import numpy as np

REPO = Path(__file__).resolve().parents[1]
RECIPE_CUBE = [
    "--preset", "paper", "--shape", "128,128", "--label-map", "1-5:1", "--classes", "background,vertebra",
    "--augment", "0",
    "--rotation", "10", "--zoom", "0.9,1.1", "--shift", "0.05", "--flip-prob", "0", "--noise-prob", "0",
    "--blur-prob", "0",
]  # fmt: skip
RECIPE_TRAIN = [
    "--arch", "u1", "--lr-schedule", "constant", "--filters", "16", "--optimizer", "adam", "--lr", "0.001",
    "--online-augment",
]  # fmt: skip
DEFAULT_CUBE = ["--label-map", "1-5:1", "--classes", "background,vertebra"]


def dice(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Dice of two boolean masks (1.0 when both are empty)."""
    total = truth.sum() + predicted.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(truth, predicted).sum() / total)


class Snapshots(threading.Thread):
    """Copies a run's last.keras to snap_<epoch>.keras each time its state.json reports a new epoch."""

    def __init__(self, run: Path, out: Path, start: float):
        super().__init__(daemon=True)
        self.folder, self.out, self.t0, self.taken, self.done = run, out, start, {}, threading.Event()

    def run(self) -> None:  # noqa: D102 (threading API)
        while not self.done.is_set():
            for state_file in self.folder.glob("**/state.json"):
                try:
                    epoch = int(json.loads(state_file.read_text())["epoch"])
                except (OSError, ValueError, KeyError, TypeError):
                    continue
                if epoch not in self.taken and (state_file.parent / "last.keras").is_file():
                    self.taken[epoch] = time.perf_counter() - self.t0
                    shutil.copy(state_file.parent / "last.keras", self.out / f"snap_{epoch}.keras")
            time.sleep(0.2)


def spine_side(args, cube: Path, cube_s: float, fold: int, out: Path) -> tuple[list[tuple[int, float, Path]], Path]:
    """Train fold `fold` with spine-train; (epoch, seconds incl. the cube's, snapshot) per epoch and the run folder."""
    tag = "" if args.side == "spine_keras" else "_" + "".join(c if c.isalnum() else "_" for c in args.side)
    run = out / f"spine_run{tag}_{fold}"
    snaps = out / f"spine_snaps{tag}_{fold}"
    snaps.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(REPO / "scripts" / "train.py"), "--cube", str(cube), "--out", str(run)]
    command += ["--folds", str(args.folds), "--fold", str(fold), "--quiet"]
    if not args.defaults:
        command += RECIPE_TRAIN + ["--patience", "0", "--lr-patience", "0"]
    if args.epochs is not None:
        command += ["--epochs", str(args.epochs)]
    command += args.spine_flags.split()
    start = time.perf_counter()
    watcher = Snapshots(run, snaps, start)
    watcher.start()
    subprocess.run(command, check=True)
    time.sleep(0.5)
    watcher.done.set()
    watcher.join()
    taken = sorted(watcher.taken.items())
    return [(e, s + cube_s, snaps / f"snap_{e}.keras") for e, s in taken], run


def evaluate_spine(snapshots, run: Path, cases, eval_every: int) -> list[tuple[int, float, str, float]]:
    """Held-out Dice of chosen snapshots, through spine_keras's own prediction path in the original geometry."""
    from spine_keras.bundle import read_bundle
    from spine_keras.predict.model import Segmenter, keras_batch_fn, load_keras_model
    from spine_keras.predict.volume import predict_volume

    bundle = read_bundle(next(run.glob("**/spine_keras.json")))
    rows = []
    for index, (epoch, seconds, path) in enumerate(snapshots):
        if (index + 1) % eval_every and index + 1 != len(snapshots):
            continue
        segmenter = Segmenter(bundle, [keras_batch_fn(load_keras_model(path), bundle)])
        for case_id, image, truth in cases:
            labels = predict_volume(image, segmenter).labels.array
            rows.append((epoch, seconds, case_id, dice(truth > 0, labels > 0)))
    return rows


def plain_side(args, train_cases, test_cases, budget: float) -> list[tuple[int, float, str, float]]:
    """Train the plain U-Net for `budget` seconds; held-out Dice every `eval_every` epochs (not timed)."""
    import plain_unet

    rows: list[tuple[int, float, str, float]] = []

    def on_epoch(epoch: int, seconds: float, model) -> None:
        if epoch % args.eval_every == 0 or seconds >= budget:
            for case_id, image, truth in test_cases:
                rows.append((epoch, seconds, case_id, dice(truth > 0, plain_unet.segment(model, image.array) > 0)))

    plain_unet.train([(v.array, t) for _, v, t in train_cases], budget, on_epoch, seed=args.seed)
    return rows


def summarize(curves: Path) -> dict[str, list[tuple[int, float, float, float]]]:
    """Per side and epoch evaluated in every fold: (epoch, mean minutes over folds, CV Dice mean, worst case)."""
    table: dict[tuple[str, int], list[tuple[int, float, float]]] = {}
    with open(curves, newline="") as handle:
        for side, fold, epoch, seconds, _case, value in csv.reader(handle):
            table.setdefault((side, int(epoch)), []).append((int(fold), float(seconds), float(value)))
    n_folds = len({fold for rows in table.values() for fold, _, _ in rows})
    out: dict[str, list[tuple[int, float, float, float]]] = {}
    for (side, epoch), rows in sorted(table.items()):
        if len({fold for fold, _, _ in rows}) == n_folds:
            minutes = float(np.mean([s for _, s, _ in rows])) / 60
            values = [v for _, _, v in rows]
            out.setdefault(side, []).append((epoch, minutes, float(np.mean(values)), float(np.min(values))))
    return out


def final_scores(curves: Path) -> dict[str, tuple[float, float, float]]:
    """Per side, each fold's last evaluated epoch: (mean minutes over folds, CV Dice mean over cases, worst case)."""
    last: dict[tuple[str, str], tuple[int, list[tuple[float, float]]]] = {}
    with open(curves, newline="") as handle:
        for side, fold, epoch, seconds, _case, value in csv.reader(handle):
            epoch_i = int(epoch)
            known = last.get((side, fold))
            if known is None or epoch_i > known[0]:
                last[(side, fold)] = (epoch_i, [])
            if last[(side, fold)][0] == epoch_i:
                last[(side, fold)][1].append((float(seconds), float(value)))
    out = {}
    for side in sorted({side for side, _ in last}):
        rows = [row for (s, _), (_, rows) in last.items() if s == side for row in rows]
        out[side] = (
            float(np.mean([sec for sec, _ in rows])) / 60,
            float(np.mean([v for _, v in rows])),
            float(np.min([v for _, v in rows])),
        )
    return out


def plot(
    summary: dict[str, list[tuple[int, float, float, float]]],
    target: Path,
    title: str,
    names: dict[str, str],
    ymin: float = 0.25,
) -> None:
    """CV Dice against wall minutes, one line per side (named by `names` where given), 0.89 as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    for side, rows in summary.items():
        label = ({"plain": "plain Keras U-Net", "spine_keras": "spine_keras recipe"} | names).get(side, side)
        ax.plot([r[1] for r in rows], [r[2] for r in rows], marker="o", label=label)
    ax.axhline(0.89, color="grey", linestyle="--", linewidth=1, label="0.89")
    ax.set(
        xlabel="wall time, minutes (2-core CPU)", ylabel="mean held-out vertebra Dice", title=title, ylim=(ymin, 0.95)
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(target)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", default=str(REPO / "data_lists" / "vb3.txt"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--only-fold", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None, help="spine-train epochs (default: its preset's)")
    parser.add_argument("--defaults", action="store_true", help="spine_keras's side with its default cube and training")
    parser.add_argument("--plain-minutes", type=float, default=None, help="cap on the plain side's wall time")
    parser.add_argument("--spine-flags", default="", help="more train.py flags for spine_keras's side")
    parser.add_argument("--side", default="spine_keras", help="spine_keras's side's name in curves.csv and the plot")
    parser.add_argument("--eval-every", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path, default=None, help="only summarize OUT/curves.csv into this PNG")
    parser.add_argument("--title", default="VB3, patient-grouped CV: time to accuracy", help="the plot's title")
    parser.add_argument("--ymin", type=float, default=0.25, help="the plot's lowest Dice")
    parser.add_argument("--name", action="append", default=[], metavar="SIDE=TEXT", help="a side's name in the plot")
    args = parser.parse_args()
    if args.plot:
        summary = summarize(args.out / "curves.csv")
        for side, rows in summary.items():
            for epoch, minutes, mean, worst in rows:
                print(f"| {side} | {epoch} | {minutes:.1f} | {mean:.3f} | {worst:.3f} |")
        for side, (minutes, mean, worst) in final_scores(args.out / "curves.csv").items():
            print(f"| {side} | last | {minutes:.1f} | {mean:.3f} | {worst:.3f} |")
        plot(summary, args.plot, args.title, dict(item.split("=", 1) for item in args.name), args.ymin)
        return
    from spine_keras.data import make_splits, open_cube
    from spine_keras.io import parse_list, read_volume

    args.out.mkdir(parents=True, exist_ok=True)
    cube = args.out / "cube.h5"
    start = time.perf_counter()
    if not cube.exists():
        subprocess.run(
            [sys.executable, str(REPO / "scripts" / "make_cube.py"), args.list, "-o", str(cube), "--quiet"]
            + (DEFAULT_CUBE if args.defaults else RECIPE_CUBE),
            check=True,
        )
    cube_s = time.perf_counter() - start
    entries = {e.case_id: e for e in parse_list(args.list)}
    volumes = {k: (read_volume(e.image), read_volume(e.label).array) for k, e in entries.items()}
    splits = make_splits(open_cube(cube), args.folds, "all", 0.2, args.seed)
    folds = range(args.folds) if args.only_fold is None else [args.only_fold]
    with open(args.out / "curves.csv", "a", newline="") as handle:
        writer = csv.writer(handle)
        for fold in folds:
            test_ids = set(splits[fold].val_cases)
            test = [(k, *volumes[k]) for k in sorted(test_ids)]
            train = [(k, *volumes[k]) for k in sorted(set(volumes) - test_ids)]
            print(f"fold {fold}: load average {os.getloadavg()[0]:.2f} at the start", flush=True)
            snapshots, run = spine_side(args, cube, cube_s, fold, args.out)
            for row in evaluate_spine(snapshots, run, test, args.eval_every):
                writer.writerow((args.side, fold, *row))
            handle.flush()
            if args.plain_minutes == 0:
                continue
            print(f"fold {fold}: load average {os.getloadavg()[0]:.2f} before the plain side", flush=True)
            budget = snapshots[-1][1] if args.plain_minutes is None else min(snapshots[-1][1], 60 * args.plain_minutes)
            for row in plain_side(args, train, test, budget):
                writer.writerow(("plain", fold, *row))
            handle.flush()
    print(f"cube {cube_s:.0f} s; curves in {args.out / 'curves.csv'}")


if __name__ == "__main__":
    main()
