"""`spine-train`: train one or several architectures on a cube (splits, folds, strategies, comparison, resume)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from spine_keras.cli import CliParser, add_verbose_flag, quiet_tensorflow, user_errors_exit_2
from spine_keras.cli.flags import add_settings_flags
from spine_keras.errors import UserError
from spine_keras.train.settings import GROUPS, TrainSettings, merge_settings

RESUME_OVERRIDES = ("epochs", "verbose")


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
        help="after training, export the best bundle as a SavedModel (default DIR: RUN/export)",
    )
    p.add_argument("--quiet", dest="verbose", action="store_const", const=0, help="no progress bar or epoch lines")
    add_verbose_flag(p)
    return p


def _resume_settings(run_dir: Path, flags: dict[str, Any]) -> dict[str, Any]:
    """The saved settings of a run folder, with the few flags a resumed run may change."""
    config = run_dir / "config.json"
    if not config.is_file():
        raise UserError(f"'{run_dir}' is not a run folder (no config.json); give the folder a run was writing")
    changed = sorted(set(flags) - set(RESUME_OVERRIDES))
    if changed:
        raise UserError(
            f"a resumed run keeps its settings; drop --{', --'.join(k.replace('_', '-') for k in changed)} "
            f"(only --{', --'.join(RESUME_OVERRIDES)} may change)"
        )
    settings = json.loads(config.read_text(encoding="utf-8"))["settings"]
    return {**settings, **flags, "out": str(run_dir)}


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
    """Parse flags, check inputs, train, report where the run is."""
    args = vars(parser().parse_args(argv))
    config, resume, export = args.pop("config"), args.pop("resume"), args.pop("export")
    quiet_tensorflow(args.pop("tf_verbose"))
    if resume:
        if config:
            raise UserError("--resume reads the run's own config.json; drop --config")
        settings = TrainSettings.from_dict(_resume_settings(Path(resume), args))
    else:
        settings = merge_settings(config, args)
    from spine_keras.train.run import train
    from spine_keras.train.strategy import is_chief

    outcome = train(settings, resume=bool(resume))
    print(f"run folder: {outcome.run_dir}")
    if export is not None and is_chief():
        _export(outcome.best_bundle(), export, outcome.run_dir)
    return 0
