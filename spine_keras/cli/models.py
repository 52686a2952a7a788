"""`spine-models`: parameters, outputs, depth and receptive field of every arch in 2D and 3D; diagrams."""

from __future__ import annotations

import argparse
from pathlib import Path

from spine_keras.cli import user_errors_exit_2
from spine_keras.errors import UserError

DEFAULT_2D = (256, 256, 1)
DEFAULT_3D = (64, 128, 128, 1)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line of spine-models."""
    from spine_keras.models import ARCHS

    p = argparse.ArgumentParser(prog="spine-models", description=__doc__)
    p.add_argument("--archs", nargs="+", default=list(ARCHS), metavar="CODE", help="architecture codes (default: all)")
    p.add_argument("--dims", nargs="+", type=int, choices=(2, 3), default=[2, 3], help="2D and/or 3D (default: both)")
    p.add_argument("--shape2d", nargs=3, type=int, default=DEFAULT_2D, metavar=("H", "W", "C"))
    p.add_argument("--shape3d", nargs=4, type=int, default=DEFAULT_3D, metavar=("D", "H", "W", "C"))
    p.add_argument("--classes", type=int, default=2, help="number of classes (default 2)")
    p.add_argument("--filters", type=int, help="initial filters (default: each arch's preset)")
    p.add_argument(
        "--depth",
        type=int,
        help="pooling levels of the U-Nets (default: 4, or 5 for VGG16 encoders; fcn keeps its fixed 5)",
    )
    p.add_argument("--plot", type=Path, metavar="DIR", help="also draw each model to DIR/arch_<code>_<n>d.png")
    p.add_argument("--dpi", type=int, default=48, help="resolution of the diagrams (default 48)")
    p.add_argument("--rankdir", choices=("LR", "TB"), default="LR", help="diagram direction (default LR)")
    return p.parse_args(argv)


def overrides(arch: str, args: argparse.Namespace) -> dict:
    """The --filters/--depth overrides that apply to `arch` (fcn has no depth to choose)."""
    found = {"filters": args.filters, "depth": None if arch.lower() == "fcn" else args.depth}
    return {k: v for k, v in found.items() if v is not None}


def plot(model, path: Path, dpi: int, rankdir: str) -> None:
    """Draw `model` into the PNG `path` (needs pydot and Graphviz's dot)."""
    import keras

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        keras.utils.plot_model(model, to_file=str(path), rankdir=rankdir, dpi=dpi, show_layer_names=True)
    except ImportError as exc:
        raise UserError(f"--plot needs pydot and Graphviz (apt-get install graphviz): {exc}") from exc


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    """Print a Markdown table of the requested architectures; with --plot, write their diagrams."""
    args = parse_args(argv)
    import keras

    from spine_keras.models import build_model, describe

    print("| arch | dims | input | params | outputs | depth | receptive field |")
    print("|---|---|---|---:|---|---:|---:|")
    for arch in args.archs:
        for dims in args.dims:
            shape = tuple(args.shape2d if dims == 2 else args.shape3d)
            model = build_model(arch, shape, args.classes, **overrides(arch, args))
            info = describe(model)
            print(
                f"| {arch.lower()} | {dims}D | {'x'.join(map(str, shape))} | {info['params']:,} | "
                f"{', '.join(info['outputs'])} | {info['depth']} | {info['receptive_field']} |",
                flush=True,
            )
            if args.plot:
                plot(model, args.plot / f"arch_{arch.lower()}_{dims}d.png", args.dpi, args.rankdir)
            keras.backend.clear_session()
    return 0
