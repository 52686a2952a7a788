"""`spine-predict MODEL INPUT... [-o OUT_DIR]`: segment volumes (NRRD, NIfTI, MHA) or list files with a
trained model; label maps are written in each input's geometry, with Dice/IoU when ground truth is given."""

from __future__ import annotations

import argparse
import sys

from spine_keras.choices import FORMATS, TTA_MODES
from spine_keras.cli import (
    EXIT_USER_ERROR,
    CliParser,
    add_verbose_flag,
    one_line,
    quiet_tensorflow,
    user_errors_exit_2,
)
from spine_keras.cli.flags import in_range


def parser() -> argparse.ArgumentParser:
    p = CliParser(prog="spine-predict", description=__doc__)
    p.add_argument(
        "model",
        metavar="MODEL",
        help="run folder, k-fold run root (folds are averaged), .keras file, "
        "exported SavedModel folder or export folder",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="volumes (.nrrd, .nhdr, .nii, .nii.gz, .mha, .mhd) or list files (image[,label] a line)",
    )
    p.add_argument(
        "-o", "--out-dir", default="predictions", help="output folder, made if its parent exists (default predictions)"
    )
    p.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="PATH",
        help="ground truth for the volume INPUTs, once per volume in the same order: Dice/IoU/HD95/ASSD table + CSV",
    )
    p.add_argument(
        "--label-map",
        default=None,
        metavar="SPEC",
        help="map the ground truth's ids to the model's classes with SPEC (e.g. '1-9:1') instead of the model's own "
        "label map: for exams labelled by another dataset",
    )
    p.add_argument(
        "--overlap",
        type=in_range(float, 0, 1, high_open=True),
        default=0.5,
        help="sliding-window overlap in [0, 1) (default 0.5)",
    )
    p.add_argument(
        "--batch-size", type=in_range(int, 1, 4096), default=4, help="windows or slices per model call (default 4)"
    )
    p.add_argument(
        "--tta",
        nargs="?",
        const="train",
        default=None,
        choices=TTA_MODES,
        help="test-time augmentation: average over the flips the model saw in training ('train', the value of a "
        "bare --tta; refused if it saw none) or over every flip of every spatial axis ('all'); put it after the "
        "INPUTs or write --tta=all",
    )
    p.add_argument(
        "--postprocess",
        default="none",
        metavar="none|largest|min-size:ML",
        help="clean the label map: keep each class's largest connected component, or remove components smaller "
        "than ML millilitres (default none)",
    )
    p.add_argument("--probabilities", action="store_true", help="also write per-class probability maps (_prob)")
    p.add_argument("--format", choices=sorted(FORMATS), default=None, help="output format (default: the input's)")
    p.add_argument(
        "--trust-model",
        action="store_true",
        help="run a SavedModel even if its graph holds ops outside the allow-list or it has no recorded file hashes "
        "(only for models from people you trust: a SavedModel is a program)",
    )
    add_verbose_flag(p)
    return p


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    quiet_tensorflow(args.tf_verbose)
    from spine_keras.predict import PredictOptions, load_segmenter, predict_inputs

    options = PredictOptions(
        out_dir=args.out_dir,
        overlap=args.overlap,
        batch_size=args.batch_size,
        probabilities=args.probabilities,
        format=args.format,
        label_map=args.label_map,
        postprocess=args.postprocess,
    )
    segmenter = load_segmenter(args.model, tta=args.tta, trust=args.trust_model)
    report = predict_inputs(segmenter, args.inputs, args.label, options)
    if report.table:
        print(report.table)
        print(f"metrics -> {report.metrics_csv}")
    for failure in report.failures:
        print(f"error: {one_line(failure)}", file=sys.stderr)
    if report.failures:
        print(f"{len(report.failures)} input(s) failed, {len(report.outputs)} segmented")
        return EXIT_USER_ERROR
    return 0
