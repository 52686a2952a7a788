"""`spine-instances train|predict|baseline|export|figure`: vertebra-by-vertebra instance segmentation and
identification.

train     LIST --levels T11-L5 --out RUN        fit the iterative network on `image,label` pairs
          [--folds K --fold k]                  ... on every case but fold k's (patient-grouped, from --seed)
predict   RUN LIST --out DIR                    traverse each image; scores where the list gives labels
          RUN [RUN ...] LIST --held-out         each case by the run that held it out; scores pooled
baseline  LIST --levels L1-L5 --out DIR         semantic vertebra masks (`mask,label` or `mask` lines) split into
                                                connected components, ordered along the spine; a mask's case id
                                                drops a trailing _seg/_mask/_label/_pred (VB3_01_seg -> VB3_01)
export    RUN [--out DIR]                       SavedModel + instances.json + reference_traversal.py
figure    DIR LIST --out PNG [--levels ...]     best, median and worst case of a scored DIR: sagittal slices,
                                                truth beside prediction, coloured by level

Label ids are named with levels by their position along axis 0 (superior -> inferior); a case whose id count
differs from --levels is refused, naming the case and both counts. Outputs: per case `<case>_instances.nrrd` (ids are
levels: C1=1 .. L5=24, S1=25) and `<case>_vertebrae.csv/.json`; with labels `scores.csv` and `summary.json`.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from spine_keras.cli import CliParser, add_verbose_flag, quiet_tensorflow, user_errors_exit_2
from spine_keras.cli.flags import add_dataclass_flags, dataclass_from_flags, in_range
from spine_keras.destinations import check_folder

ANCHORS = ("bottom", "top")


def parser() -> argparse.ArgumentParser:
    p = CliParser(prog="spine-instances", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = p.add_subparsers(dest="command", required=True, parser_class=CliParser)
    train = commands.add_parser("train", help="fit the iterative network")
    train.add_argument("list", help="list of image,label pairs")
    _levels_flags(train, required=True)
    train.add_argument("--out", required=True, help="run folder to create (must not exist or be empty)")
    train.add_argument("--strategy", default="auto", help="distribution strategy: auto, one, mirrored, multiworker")
    train.add_argument("--folds", type=in_range(int, 2), default=None, help="patient-grouped folds of LIST")
    train.add_argument("--fold", type=in_range(int, 0), default=None, help="the fold held out (0..folds-1)")
    add_dataclass_flags(train.add_argument_group("network and training"), _config_class())
    predict = commands.add_parser("predict", help="traverse images with a trained network")
    predict.add_argument("run", nargs="+", help="run folder(s) of `spine-instances train` (several with --held-out)")
    predict.add_argument("list", help="list of images, or image,label pairs (then scored)")
    predict.add_argument("--out", required=True, help="output folder to create (must not exist or be empty)")
    predict.add_argument("--levels", default=None, help="levels the labels span, for scoring (default: the run's)")
    predict.add_argument(
        "--held-out", action="store_true", help="predict each case with the run (one per fold) that held it out"
    )
    baseline = commands.add_parser("baseline", help="connected components of semantic vertebra masks")
    baseline.add_argument("list", help="list of mask,label pairs (or masks alone); the mask is a semantic label map")
    _levels_flags(baseline, required=True)
    baseline.add_argument("--out", required=True, help="output folder to create (must not exist or be empty)")
    baseline.add_argument("--vertebra-class", type=in_range(int, 1, 255), default=1, help="the mask's vertebra id")
    baseline.add_argument("--min-ml", type=in_range(float, 0.0), default=1.0, help="smallest component kept (ml)")
    baseline.add_argument(
        "--min-fraction",
        type=in_range(float, 0.0, 1.0),
        default=0.0,
        help="drop components smaller than this share of the median component's volume, e.g. 0.25 (default 0: keep)",
    )
    export = commands.add_parser("export", help="SavedModel + metadata + single-file reference traversal")
    export.add_argument("run", help="run folder written by `spine-instances train`")
    export.add_argument("--out", default=None, help="export folder to create (default RUN/export)")
    figure = commands.add_parser("figure", help="sagittal slices coloured by level: best, median and worst case")
    figure.add_argument("dir", help="output folder of `spine-instances predict` or `baseline`, with scores")
    figure.add_argument("list", help="list of image,label pairs the folder was predicted from")
    figure.add_argument("--out", required=True, help="PNG file to write")
    figure.add_argument("--levels", default=None, help="levels the labels span (default: the folder's)")
    figure.add_argument("--force", action="store_true", help="overwrite an existing PNG")
    for sub in (train, predict, export):
        add_verbose_flag(sub)
    return p


def _config_class() -> type:
    from spine_keras.instances.config import InstanceConfig

    return InstanceConfig


def _levels_flags(sub: argparse.ArgumentParser, required: bool) -> None:
    sub.add_argument("--levels", required=required, help="levels the labels span, top to bottom, e.g. T11-L5")
    sub.add_argument(
        "--anchor", choices=ANCHORS, default="bottom", help="which end of --levels the vertebrae found are counted from"
    )


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    commands = {"train": _train, "predict": _predict, "baseline": _baseline, "export": _export, "figure": _figure}
    return commands[args.command](args)


def _entries(list_path: str, require_label: bool):
    from spine_keras.io import parse_list

    return parse_list(list_path, require_label=require_label)


def _train(args: argparse.Namespace) -> int:
    from spine_keras.instances.cases import read_labelled, training_view
    from spine_keras.levels import parse_levels

    levels = parse_levels(args.levels)
    config = dataclass_from_flags(_config_class(), args)
    entries = _entries(args.list, require_label=True)
    entries, split = _training_split(entries, args.folds, args.fold, config.seed)
    out = check_folder(args.out, "run folder", empty=True)
    labelled = [read_labelled(entry, levels) for entry in entries]
    quiet_tensorflow(args.tf_verbose)
    from spine_keras.instances.fit import train_network
    from spine_keras.instances.runfolder import run_metadata, write_run
    from spine_keras.train.strategy import make_strategy

    strategy = make_strategy(args.strategy)
    cases = [training_view(case, config.spacing_mm) for case in labelled]
    model, history = train_network(cases, config, strategy)
    metadata = run_metadata(config, levels, args.anchor, [c.case_id for c in cases], history, split)
    with _staged(out) as folder:
        write_run(folder, model, metadata)
    held = f", {len(split['held_out'])} held out" if split["held_out"] else ""
    print(f"trained on {len(cases)} cases{held} in {history['train_seconds']:.0f} s -> {out}")
    return 0


def _training_split(entries: list, folds: int | None, fold: int | None, seed: int) -> tuple[list, dict]:
    """The entries to train on and the split record: every entry without --folds, else all but fold `fold`'s."""
    from spine_keras.errors import UserError
    from spine_keras.instances.folds import held_out_cases, split_record

    if (folds is None) != (fold is None):
        raise UserError("--folds and --fold go together: give both (e.g. --folds 5 --fold 0) or neither")
    if folds is None:
        return entries, split_record(None, None, [])
    held_out = held_out_cases([entry.case_id for entry in entries], folds, fold, seed)
    return [e for e in entries if e.case_id not in held_out], split_record(folds, fold, held_out)


def _predict(args: argparse.Namespace) -> int:
    from spine_keras.errors import UserError
    from spine_keras.instances.cases import check_labels
    from spine_keras.instances.folds import route_held_out
    from spine_keras.instances.runfolder import read_metadata

    if len(args.run) > 1 and not args.held_out:
        raise UserError(f"{len(args.run)} run folders given; give one, or one per fold with --held-out")
    runs = [(str(run), read_metadata(Path(run))) for run in args.run]
    levels = _prediction_levels(args.levels, runs)
    entries = _entries(args.list, require_label=False)
    routes = route_held_out(entries, runs) if args.held_out else [0] * len(entries)
    out = check_folder(args.out, "output folder", empty=True)
    check_labels(entries, levels)
    quiet_tensorflow(args.tf_verbose)
    from spine_keras.instances.export import load_run_model
    from spine_keras.instances.network import keras_predict
    from spine_keras.instances.predict import predict_held_out, predict_list

    used = set(routes)  # only the runs that hold out a case of LIST are loaded
    predictors = [
        (name, keras_predict(load_run_model(Path(name))) if index in used else None, metadata)
        for index, (name, metadata) in enumerate(runs)
    ]
    with _staged(out) as folder:
        if args.held_out:
            summary = predict_held_out(entries, predictors, routes, folder, levels)
        else:
            summary = predict_list(entries, predictors[0][1], runs[0][1], folder, levels)
    _report(len(entries), out, summary, f" by {len(used)} run(s)" if args.held_out else "")
    return 0


def _prediction_levels(flag: str | None, runs: list[tuple[str, dict]]) -> list[str]:
    """The levels to score with: --levels, else the runs' own (which must agree)."""
    from spine_keras.errors import UserError
    from spine_keras.levels import parse_levels

    if flag:
        return parse_levels(flag)
    named = {tuple(metadata["levels"]) for _, metadata in runs}
    if len(named) > 1:
        raise UserError("the runs were trained on different --levels; give --levels for scoring")
    return list(named.pop())


def _baseline(args: argparse.Namespace) -> int:
    from spine_keras.instances.cases import check_labels, mask_case_ids
    from spine_keras.instances.predict import baseline_list
    from spine_keras.levels import parse_levels

    levels = parse_levels(args.levels)
    entries = mask_case_ids(_entries(args.list, require_label=False))
    out = check_folder(args.out, "output folder", empty=True)
    check_labels(entries, levels)
    with _staged(out) as folder:
        summary = baseline_list(
            entries, folder, levels, args.anchor, args.vertebra_class, args.min_ml, args.min_fraction
        )
    _report(len(entries), out, summary)
    return 0


def _export(args: argparse.Namespace) -> int:
    from spine_keras.instances.runfolder import read_metadata

    run = Path(args.run)
    read_metadata(run)
    out = check_folder(Path(args.out) if args.out else run / "export", "export folder", empty=True)
    quiet_tensorflow(args.tf_verbose)
    from spine_keras.instances.export import export_run

    export_run(run, out)
    print(f"exported -> {out}")
    return 0


def _figure(args: argparse.Namespace) -> int:
    from spine_keras.destinations import check_file
    from spine_keras.errors import UserError
    from spine_keras.instances.figure import case_dice, level_figure, summary_levels
    from spine_keras.levels import parse_levels

    folder = Path(args.dir)
    case_dice(folder)
    levels = parse_levels(args.levels) if args.levels else summary_levels(folder)
    if not levels:
        raise UserError(f"'{folder}/summary.json' does not name its levels; give --levels (e.g. L1-L5)")
    entries = _entries(args.list, require_label=True)
    png = check_file(args.out, "figure", force=args.force)
    rows = level_figure(folder, entries, levels, png)
    print(", ".join(f"{row.role} {row.case} (mean Dice {row.mean_dice:.3f})" for row in rows) + f" -> {png}")
    return 0


@contextlib.contextmanager
def _staged(out: Path) -> Iterator[Path]:
    """A hidden folder beside `out` to write into, moved onto `out` (absent or empty) when the block succeeds and
    removed when it fails, so a failed or interrupted command leaves nothing behind."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield staging
        if out.is_dir():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _report(count: int, out: Path, summary: dict | None, how: str = "") -> None:
    line = f"{count} case(s){how} -> {out}"
    if summary:
        keys = ("mean_dice", "mean_assd_mm", "precision", "recall", "identification", "merged", "mean_level_dice")
        line += "; " + ", ".join(f"{k} {summary[k]}" for k in keys)
    print(line)
