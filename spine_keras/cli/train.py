"""`spine-train`: train one or several architectures on a cube (splits, folds, strategies, comparison, resume).

The defaults marked "the preset's" come from --preset: recipe (the default: u1, 16 filters, Adam 1e-3, 10 epochs,
cosine decay, online augmentation, last epoch kept) or paper (the ICPR 2020 protocol: each arch's paper preset,
up to 100 epochs, plateau reduction, early stopping, best epoch kept)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from spine_keras.cli import CliParser, add_verbose_flag, one_line, quiet_tensorflow, user_errors_exit_2
from spine_keras.cli.flags import add_settings_flags
from spine_keras.destinations import check_folder
from spine_keras.errors import UserError
from spine_keras.presets import LEGACY_PRESET
from spine_keras.train.settings import CUBE_CHECKS, GROUPS, TrainSettings, merge_settings

RESUME_OVERRIDES = ("epochs", "verbose")
EXIT_DIVERGED = 3  # the run started and failed (NaN or infinite loss): not a mistake in the input (exit 2)


def parser() -> argparse.ArgumentParser:
    """Flags generated from `TrainSettings` (its fields hold every default and help text), plus the command's own.

    Every setting defaults to 'not given', so a --config file's value stands unless a flag overrides it.
    """
    p = CliParser(prog="spine-train", description=__doc__, argument_default=argparse.SUPPRESS)
    add_settings_flags(p, TrainSettings, GROUPS)
    p.add_argument(
        "--config", default=None, help="JSON or YAML file of settings (same names as the flags); flags override it"
    )
    p.add_argument(
        "--resume",
        default=None,
        metavar="RUN_DIR",
        help="continue a killed or finished run (same settings and split; --epochs may extend it)",
    )
    p.add_argument(
        "--export",
        nargs="?",
        const="",
        default=None,
        metavar="DIR",
        help="after training, export the kept bundle (--keep) as a SavedModel (default DIR: RUN/export)",
    )
    p.add_argument(
        "--check-cube",
        choices=CUBE_CHECKS,
        default="full",
        help="before training, read every cube value (NaN, label ids >= n_classes, corrupt chunks: about one read "
        "of the cube) or only its layout, dtypes and attributes (default: full)",
    )
    p.add_argument("--quiet", dest="verbose", action="store_const", const=0, help="no progress bar or epoch lines")
    add_verbose_flag(p)
    return p


def _resume_settings(run_dir: Path, flags: dict[str, Any]) -> TrainSettings:
    """The saved settings of a run folder, with the few flags a resumed run may change. A config.json written
    before presets existed names none: it was trained with the paper's defaults, so it resumes as `paper`."""
    changed = sorted(set(flags) - set(RESUME_OVERRIDES))
    if changed:
        raise UserError(
            f"a resumed run keeps its settings; drop --{', --'.join(k.replace('_', '-') for k in changed)} "
            f"(only --{', --'.join(RESUME_OVERRIDES)} may change)"
        )
    from spine_keras.train.preflight import run_settings

    settings, origins = run_settings(run_dir)
    settings.setdefault("preset", LEGACY_PRESET)
    origins.update({k: "flag" for k in flags})
    return TrainSettings.from_dict({**settings, **flags, "out": str(run_dir)}, origins)


def _export(run_bundle: Path, target: str, run_dir: Path) -> None:
    """Hand the best bundle to the export step, imported only when asked for."""
    try:
        from spine_keras.export import DEFAULT_DIR, export_bundle
    except ImportError as exc:
        raise UserError(f"--export is not available in this installation ({exc})") from exc
    out = Path(target) if target else run_dir / DEFAULT_DIR
    export_bundle(run_bundle, out)
    print(f"exported {run_bundle} to {out}")


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    """Parse flags, check every input (before TensorFlow loads or anything is written), train, report the run."""
    args = vars(parser().parse_args(argv))
    config, resume, export = args.pop("config"), args.pop("resume"), args.pop("export")
    cube_check, verbose = args.pop("check_cube"), args.pop("tf_verbose")
    if resume:
        if config:
            raise UserError("--resume reads the run's own config.json; drop --config")
        settings = _resume_settings(Path(resume), args)
    else:
        settings = merge_settings(config, args)
    from spine_keras.train.preflight import is_chief, plan_run  # h5py and NumPy: after the settings are checked

    plan = plan_run(settings, resume=bool(resume), cube_check=cube_check)
    if export:
        check_folder(export, "--export folder")
    quiet_tensorflow(verbose)
    from spine_keras.train.loop import TrainingDiverged
    from spine_keras.train.run import run_plan

    try:
        outcome = run_plan(plan)
    except TrainingDiverged as exc:
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_DIVERGED
    print(f"run folder: {outcome.run_dir}")
    if export is not None and is_chief():
        _export(outcome.best_bundle(), export, outcome.run_dir)
    return 0
