"""Fold ensembling on exams no fold saw: nested cross-validation of one variant of a finished study.

In a study every exam is held out by one fold, so there is no test set for the fold models to vote on. Here each
outer fold's held-out exams become a test set: a study of the same recipe (the variant's settings, the same seed)
runs on the other exams with `--inner-folds` folds, and its fold ensemble (the mean of the inner models'
probabilities, as `spine-study` tests a test list) segments the held-out exams. Every exam then has three
predictions, scored as the study scores (vertebra Dice in the original geometry, rows above the top label left out
when the recipe ignores them) and compared paired over the exams (Wilcoxon signed-rank):
- one model trained on all the outer training exams: the parent study's own held-out prediction;
- each inner model alone, trained on (F-1)/F of those exams;
- the inner fold ensemble.

Writes OUT/outer_<k>/ (lists, study file, the inner study's results, the single inner models' predictions) and
OUT/cases.csv; prints a markdown table. Rerunning reuses every finished step.

    python bench/fold_ensemble.py studies/vb3-to-vb2.yaml study-vb3-to-vb2 2d-u1 --out fold-ensemble
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import common  # noqa: F401  (sets the thread and OpenMP environment first)
import numpy as np
from scipy.stats import wilcoxon

from spine_keras.io import ListEntry, parse_list
from spine_keras.outputs import write_csv
from spine_keras.study.config import StudyConfig
from spine_keras.study.report import case_scores, read_metrics_csv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", type=Path, help="the parent study file (one training list)")
    parser.add_argument("results", type=Path, help="its finished results folder")
    parser.add_argument("variant", help="the variant to nest, e.g. 2d-u1")
    parser.add_argument("--out", type=Path, required=True, help="folder for the inner studies and the tables")
    parser.add_argument(
        "--inner-folds", type=int, default=None, help="folds of each inner study (default: the parent's)"
    )
    args = parser.parse_args()
    parent = StudyConfig.from_yaml(args.study, check_data=False)
    if len(parent.train_lists) != 1:
        sys.exit(f"{args.study}: give a study with one training list (the test list takes one label map)")
    variant = next((v for v in parent.variants if v.name == args.variant), None)
    if variant is None:
        sys.exit(f"{args.study}: no variant {args.variant}; it has {', '.join(v.name for v in parent.variants)}")
    source = parent.train_lists[0]
    entries = {entry.case_id: entry for entry in parse_list(source.list)}
    outer = _dice(args.results / "predictions" / args.variant / "val" / "metrics.csv", parent.classes)
    rows = []
    for fold in range(parent.folds):
        split = _split(args.results / "runs" / args.variant / f"fold_{fold}")
        folder = args.out / f"outer_{fold}"
        study = _write_study(parent, variant, source.label_map, entries, split, folder, args.inner_folds)
        subprocess.run(["spine-study", str(study), "-o", str(folder / "results")], check=True)
        rows += _score_fold(parent, args, fold, folder, split["val_cases"], entries, source.label_map, outer)
    write_csv(rows, list(rows[0]), args.out / "cases.csv")
    _print_table(rows)


def _split(run: Path) -> dict:
    """The train and held-out case ids of a study run folder (its bundle's provenance)."""
    return json.loads((run / "config.json").read_text(encoding="utf-8"))["split"]


def _write_study(parent, variant, label_map, entries: dict[str, ListEntry], split: dict, folder: Path, folds):
    """The inner study of one outer fold: the parent's settings on its training exams, its held-out exams as the
    test list; lists with absolute paths beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, cases in (("train.txt", split["train_cases"]), ("test.txt", split["val_cases"])):
        lines = [f"{entries[case].image.resolve()},{entries[case].label.resolve()}" for case in cases]
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    nested = {key: value for key, value in variant.to_dict().items() if key != "name"}
    study = {
        "name": f"{parent.name}-outer",
        "preset": parent.preset,
        "data": {
            "train": [{"list": "train.txt", "label_map": label_map}],
            "test": {"list": "test.txt", "label_map": label_map},
        },
        "classes": list(parent.classes),
        "cube": dict(parent.cube),
        "variants": [nested],
        "folds": folds or parent.folds,
        "seed": parent.seed,
        "train": dict(parent.train),
    }
    path = folder / "study.yaml"  # JSON is YAML
    path.write_text(json.dumps(study, indent=1) + "\n", encoding="utf-8")
    return path


def _score_fold(parent, args, fold: int, folder: Path, cases: list[str], entries, label_map, outer) -> list[dict]:
    """Per held-out exam: the outer model's Dice (`outer`), the inner ensemble's, and each inner model's alone."""
    ensemble = _dice(folder / "results" / "predictions" / args.variant / "test" / "metrics.csv", parent.classes)
    runs = folder / "results" / "runs" / args.variant
    singles = [
        _single(runs / f"fold_{inner}", folder / f"single_{inner}", cases, entries, label_map, parent)
        for inner in range(args.inner_folds or parent.folds)
    ]
    return [
        {"case": case, "outer_fold": fold, "outer_model": outer[case], "ensemble": ensemble[case]}
        | {f"inner_{i}": single[case] for i, single in enumerate(singles)}
        for case in cases
    ]


def _single(run: Path, folder: Path, cases: list[str], entries, label_map, parent) -> dict[str, float]:
    """One inner model alone on the held-out exams (predicted once, then read back)."""
    scores = folder / "metrics.json"
    if not scores.exists():
        from spine_keras.predict import load_segmenter
        from spine_keras.study.steps import predict_case

        segmenter = load_segmenter(run)
        segmenter.load()
        rows = [
            row
            for case in cases
            for row in predict_case(parent.classes, segmenter, entries[case], label_map, folder)[0]
        ]
        scores.write_text(json.dumps(case_scores(rows, parent.classes[0])), encoding="utf-8")
    return json.loads(scores.read_text(encoding="utf-8"))


def _dice(metrics: Path, classes: list[str]) -> dict[str, float]:
    """Per case, the foreground Dice of a study's metrics.csv, as the study's report scores it."""
    return case_scores(read_metrics_csv(metrics, classes), classes[0])


def _print_table(rows: list[dict]) -> None:
    outer = np.array([r["outer_model"] for r in rows])
    ensemble = np.array([r["ensemble"] for r in rows])
    inner = np.array([[v for k, v in r.items() if k.startswith("inner_")] for r in rows])
    columns = {
        "one model on all the outer training exams": outer,
        "one inner model alone (mean over the inner folds)": inner.mean(axis=1),
        "the best inner model of each exam (an upper bound, not a method)": inner.max(axis=1),
        "inner fold ensemble": ensemble,
    }
    print(f"{len(rows)} exams\n\n| prediction | mean Dice | median | worst |\n|---|---|---|---|")
    for name, values in columns.items():
        print(f"| {name} | {values.mean():.3f} | {np.median(values):.3f} | {values.min():.3f} |")
    print()
    for name, other in (("the outer model", outer), ("an inner model alone", inner.mean(axis=1))):
        difference = ensemble - other
        p = wilcoxon(ensemble, other).pvalue
        better = int((difference > 0).sum())
        print(
            f"ensemble against {name}: median difference {np.median(difference):+.4f}, "
            f"better in {better} of {len(rows)}, p = {p:.2g}"
        )


if __name__ == "__main__":
    main()
