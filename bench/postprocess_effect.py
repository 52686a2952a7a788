"""Post-processing on and off, measured on a finished study's held-out predictions without retraining.

Reads `<study>/predictions/<variant>/val/<case>_seg.nrrd`, applies `spine-predict --postprocess SPEC` to each, and
scores both against the truth mapped with the study's label map, exactly as the study does (spine_keras.surface).
Prints one markdown row per setting: mean and worst vertebra Dice, mean HD95 and ASSD in mm.

    python bench/postprocess_effect.py studies/ablation.yaml study-ablation 2d-u1 none min-size:0.5 min-size:2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from spine_keras.io import parse_list, read_volume
from spine_keras.predict.postprocess import postprocess_labels
from spine_keras.preprocess import LabelMap
from spine_keras.study.config import StudyConfig
from spine_keras.surface import surface_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", type=Path, help="the study file")
    parser.add_argument("results", type=Path, help="its results folder")
    parser.add_argument("variant", help="variant name, e.g. 2d-u1")
    parser.add_argument("specs", nargs="+", help="post-processing settings: none, largest, min-size:ML")
    args = parser.parse_args()
    config = StudyConfig.from_yaml(args.study, check_data=False)
    classes = config.classes
    cases = [(e, s.label_map) for s in config.train_lists for e in parse_list(s.list)]
    scores: dict[str, list[dict[str, float]]] = {spec: [] for spec in args.specs}
    for entry, label_map in cases:
        seg = read_volume(args.results / "predictions" / args.variant / "val" / f"{entry.case_id}_seg.nrrd")
        truth_volume = read_volume(entry.label)
        truth = LabelMap.parse(label_map).apply(truth_volume.array, len(classes))
        for spec in args.specs:
            labels = postprocess_labels(seg.array, seg.spacing, spec)
            scores[spec].append(surface_metrics(labels, truth, truth_volume.spacing, len(classes))[1])
    print("| post-processing | mean Dice | worst Dice | HD95 mm | ASSD mm |")
    print("|---|---|---|---|---|")
    for spec, rows in scores.items():
        dice = [r["dice"] for r in rows]
        hd95, assd = (float(np.nanmean([r[key] for r in rows])) for key in ("hd95_mm", "assd_mm"))
        print(f"| {spec} | {np.mean(dice):.3f} | {np.min(dice):.3f} | {hd95:.1f} | {assd:.2f} |")


if __name__ == "__main__":
    main()
