"""A finished study's held-out predictions scored twice: on every row, and with the rows above each exam's top
labelled vertebra left out (the ignore label's scoring), whichever way the variants were trained.

A model trained with `ignore_above_labels` is scored by its study without those rows, one trained without it on
every row; to compare the two, both need both scores. Reads `<results>/predictions/<variant>/val/<case>_seg.nrrd`
and each case's truth mapped with its list's label map; the vertebra (class 1) Dice of `spine_keras.surface`, as the
study scores. Prints one markdown row per variant (mean and worst of each scoring) and the per-case values with
`--cases`.

    python bench/rows_scored.py studies/vb3-to-vb2.yaml study-vb3-to-vb2 2d-u1 2d-u1-labelled
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from spine_keras.io import parse_list, read_volume
from spine_keras.preprocess import LabelMap, ignore_above_labels
from spine_keras.study.config import StudyConfig
from spine_keras.surface import surface_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", type=Path, help="the study file")
    parser.add_argument("results", type=Path, help="its results folder")
    parser.add_argument("variants", nargs="+", help="variant names, e.g. 2d-u1")
    parser.add_argument("--cases", action="store_true", help="also print each case's two scores")
    args = parser.parse_args()
    config = StudyConfig.from_yaml(args.study, check_data=False)
    cases = [(e, s.label_map) for s in config.train_lists for e in parse_list(s.list)]
    truths = {}
    for entry, label_map in cases:
        volume = read_volume(entry.label)
        truth = LabelMap.parse(label_map).apply(volume.array, len(config.classes))
        truths[entry.case_id] = (truth, ignore_above_labels(truth), volume.spacing)
    print("| variant | every row: mean | worst | rows above the top label left out: mean | worst |")
    print("|---|---|---|---|---|")
    for variant in args.variants:
        every, labelled = [], []
        for case, (truth, annotated, spacing) in truths.items():
            seg = read_volume(args.results / "predictions" / variant / "val" / f"{case}_seg.nrrd").array
            every.append(surface_metrics(seg, truth, spacing, len(config.classes))[1]["dice"])
            labelled.append(surface_metrics(seg, annotated, spacing, len(config.classes))[1]["dice"])
            if args.cases:
                print(f"{variant} {case}: {every[-1]:.4f} {labelled[-1]:.4f}")
        cells = [np.mean(every), min(every), np.mean(labelled), min(labelled)]
        print(f"| {variant} | " + " | ".join(f"{value:.3f}" for value in cells) + " |")


if __name__ == "__main__":
    main()
