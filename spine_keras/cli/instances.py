"""`spine-instances train|predict|baseline|export`: vertebra-by-vertebra instance segmentation and identification.

train     LIST --levels T11-L5 --out RUN        fit the iterative network on `image,label` pairs
predict   RUN LIST --out DIR                    traverse each image; scores where the list gives labels
baseline  LIST --levels L1-L5 --out DIR         semantic vertebra masks (`mask,label` or `mask` lines) split into
                                                connected components, ordered along the spine
export    RUN [--out DIR]                       SavedModel + instances.json + reference_traversal.py

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
    add_dataclass_flags(train.add_argument_group("network and training"), _config_class())
    predict = commands.add_parser("predict", help="traverse images with a trained network")
    predict.add_argument("run", help="run folder written by `spine-instances train`")
    predict.add_argument("list", help="list of images, or image,label pairs (then scored)")
    predict.add_argument("--out", required=True, help="output folder to create (must not exist or be empty)")
    predict.add_argument("--levels", default=None, help="levels the labels span, for scoring (default: the run's)")
    baseline = commands.add_parser("baseline", help="connected components of semantic vertebra masks")
    baseline.add_argument("list", help="list of mask,label pairs (or masks alone); the mask is a semantic label map")
    _levels_flags(baseline, required=True)
    baseline.add_argument("--out", required=True, help="output folder to create (must not exist or be empty)")
    baseline.add_argument("--vertebra-class", type=in_range(int, 1, 255), default=1, help="the mask's vertebra id")
    baseline.add_argument("--min-ml", type=in_range(float, 0.0), default=1.0, help="smallest component kept (ml)")
    export = commands.add_parser("export", help="SavedModel + metadata + single-file reference traversal")
    export.add_argument("run", help="run folder written by `spine-instances train`")
    export.add_argument("--out", default=None, help="export folder to create (default RUN/export)")
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
    return {"train": _train, "predict": _predict, "baseline": _baseline, "export": _export}[args.command](args)


def _entries(list_path: str, require_label: bool):
    from spine_keras.io import parse_list

    return parse_list(list_path, require_label=require_label)


def _train(args: argparse.Namespace) -> int:
    from spine_keras.instances.cases import read_labelled, training_view
    from spine_keras.levels import parse_levels

    levels = parse_levels(args.levels)
    config = dataclass_from_flags(_config_class(), args)
    entries = _entries(args.list, require_label=True)
    out = check_folder(args.out, "run folder", empty=True)
    labelled = [read_labelled(entry, levels) for entry in entries]
    quiet_tensorflow(args.tf_verbose)
    from spine_keras.instances.fit import train_network
    from spine_keras.instances.runfolder import run_metadata, write_run
    from spine_keras.train.strategy import make_strategy

    strategy = make_strategy(args.strategy)
    cases = [training_view(case, config.spacing_mm) for case in labelled]
    model, history = train_network(cases, config, strategy)
    with _staged(out) as folder:
        write_run(folder, model, run_metadata(config, levels, args.anchor, [c.case_id for c in cases], history))
    print(f"trained on {len(cases)} cases in {history['train_seconds']:.0f} s -> {out}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from spine_keras.instances.cases import check_labels
    from spine_keras.instances.runfolder import read_metadata
    from spine_keras.levels import parse_levels

    run = Path(args.run)
    metadata = read_metadata(run)
    levels = parse_levels(args.levels) if args.levels else list(metadata["levels"])
    entries = _entries(args.list, require_label=False)
    out = check_folder(args.out, "output folder", empty=True)
    check_labels(entries, levels)
    quiet_tensorflow(args.tf_verbose)
    from spine_keras.instances.export import load_run_model
    from spine_keras.instances.network import keras_predict
    from spine_keras.instances.predict import predict_list

    predict = keras_predict(load_run_model(run))
    with _staged(out) as folder:
        summary = predict_list(entries, predict, metadata, folder, levels)
    _report(len(entries), out, summary)
    return 0


def _baseline(args: argparse.Namespace) -> int:
    from spine_keras.instances.cases import check_labels
    from spine_keras.instances.predict import baseline_list
    from spine_keras.levels import parse_levels

    levels = parse_levels(args.levels)
    entries = _entries(args.list, require_label=False)
    out = check_folder(args.out, "output folder", empty=True)
    check_labels(entries, levels)
    with _staged(out) as folder:
        summary = baseline_list(entries, folder, levels, args.anchor, args.vertebra_class, args.min_ml)
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


def _report(count: int, out: Path, summary: dict | None) -> None:
    line = f"{count} case(s) -> {out}"
    if summary:
        keys = ("mean_dice", "mean_assd_mm", "precision", "recall", "identification", "merged")
        line += "; " + ", ".join(f"{k} {summary[k]}" for k in keys)
    print(line)
