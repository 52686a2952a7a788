"""`spine-train`: train one or several architectures on a cube (splits, folds, strategies, comparison, resume)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from spine_keras.cli import user_errors_exit_2
from spine_keras.errors import UserError

RESUME_OVERRIDES = ("epochs", "verbose")


def parser() -> argparse.ArgumentParser:
    """Flags; every setting defaults to 'not given' so a --config file's value stands unless a flag overrides it."""
    from spine_keras.losses import LOSSES
    from spine_keras.models.config import ACTIVATIONS, NORMALIZATIONS, UPSAMPLINGS
    from spine_keras.train.settings import OPTIMIZERS, TrainSettings
    from spine_keras.train.strategy import STRATEGIES

    d = TrainSettings().to_dict()
    p = argparse.ArgumentParser(prog="spine-train", description=__doc__, argument_default=argparse.SUPPRESS)
    add = p.add_argument
    add("--cube", help=f"training cube (default {d['cube']})")
    add(
        "--arch",
        help="arch code, comma list (u1,uvd,uamd) or all; several archs are compared on the same "
        f"folds (default {','.join(d['arch'])})",
    )
    add("--out", help="run folder (default runs/<arch>-<2d|3d>-<timestamp>)")
    add("--config", default=None, help="JSON or YAML file of settings (same names as the flags); flags override it")
    add(
        "--resume",
        default=None,
        metavar="RUN_DIR",
        help="continue a killed or finished run (same settings and split; --epochs may extend it)",
    )
    add(
        "--export",
        nargs="?",
        const="",
        default=None,
        metavar="DIR",
        help="after training, export the best bundle as a SavedModel (default DIR: RUN/export)",
    )
    m = p.add_argument_group("model and optimizer (default: the arch's preset)")
    m.add_argument("--optimizer", choices=OPTIMIZERS)
    m.add_argument("--lr", type=float, help="learning rate")
    m.add_argument("--activation", choices=ACTIVATIONS)
    m.add_argument("--filters", type=int, help="initial filters")
    m.add_argument("--depth", type=int, help="pooling levels (default: the arch's)")
    m.add_argument("--normalization", choices=NORMALIZATIONS, help=f"(default {d['normalization']})")
    m.add_argument("--dropout", type=float, help=f"(default {d['dropout']})")
    m.add_argument("--upsampling", choices=UPSAMPLINGS, help=f"(default {d['upsampling']})")
    m.add_argument("--deep-supervision", action=argparse.BooleanOptionalAction, help="(default: the arch's)")
    lo = p.add_argument_group("loss")
    lo.add_argument("--loss", choices=LOSSES, help=f"(default {d['loss']})")
    lo.add_argument(
        "--dice-background",
        action=argparse.BooleanOptionalAction,
        help="include the background class in the Dice loss (default no)",
    )
    lo.add_argument("--dice-smooth", type=float, help=f"Dice smoothing term (default {d['dice_smooth']})")
    s = p.add_argument_group("schedule")
    s.add_argument("--epochs", type=int, help=f"(default {d['epochs']})")
    s.add_argument("--batch-size", type=int, help="per replica (default 8 for 2D, 2 for 3D)")
    s.add_argument("--steps-per-epoch", type=int, help="cap on global steps per epoch (default: one pass)")
    s.add_argument("--patience", type=int, help=f"early stopping on val_miou_nobg, 0 = off (default {d['patience']})")
    s.add_argument("--min-delta", type=float, help=f"smallest improvement that counts (default {d['min_delta']})")
    s.add_argument(
        "--lr-patience",
        type=int,
        help=f"epochs without improvement before the learning rate is reduced, 0 = off (default {d['lr_patience']})",
    )
    s.add_argument("--lr-factor", type=float, help=f"learning-rate reduction factor (default {d['lr_factor']})")
    s.add_argument("--min-lr", type=float, help=f"(default {d['min_lr']})")
    da = p.add_argument_group("data")
    da.add_argument("--folds", type=int, help="K-fold cross-validation grouped by case (default: one split)")
    da.add_argument("--fold", help="fold index or all (default all)")
    da.add_argument("--val-fraction", type=float, help=f"cases held out without --folds (default {d['val_fraction']})")
    da.add_argument("--seed", type=int, help=f"(default {d['seed']})")
    da.add_argument(
        "--online-augment",
        action=argparse.BooleanOptionalAction,
        help="augment training samples on the fly with the cube's augmentation settings",
    )
    pe = p.add_argument_group("performance")
    pe.add_argument("--strategy", choices=STRATEGIES, help=f"(default {d['strategy']})")
    pe.add_argument(
        "--mixed-precision", action=argparse.BooleanOptionalAction, help="mixed_float16 on GPU, mixed_bfloat16 on CPU"
    )
    pe.add_argument("--jit", action=argparse.BooleanOptionalAction, help="XLA-compile the forward/backward pass")
    p.add_argument("--quiet", dest="verbose", action="store_const", const=0, help="no progress bar or epoch lines")
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
    """Hand the best bundle to the export step (issue 5), imported only when asked for."""
    try:
        from spine_keras.export import export_bundle
    except ImportError as exc:
        raise UserError(f"--export is not available in this installation ({exc})") from exc
    out = Path(target) if target else run_dir / "export"
    export_bundle(run_bundle, out)
    print(f"exported {run_bundle} to {out}")


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    """Parse flags, check inputs, train, report where the run is."""
    args = vars(parser().parse_args(argv))
    config, resume, export = args.pop("config"), args.pop("resume"), args.pop("export")
    from spine_keras.train import TrainSettings, merge_settings, train
    from spine_keras.train.strategy import is_chief

    if resume:
        if config:
            raise UserError("--resume reads the run's own config.json; drop --config")
        settings = TrainSettings.from_dict(_resume_settings(Path(resume), args))
    else:
        settings = merge_settings(config, args)
    outcome = train(settings, resume=bool(resume))
    print(f"run folder: {outcome.run_dir}")
    if export is not None and is_chief():
        _export(outcome.best_bundle(), export, outcome.run_dir)
    return 0
