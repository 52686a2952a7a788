"""`spine-models`: parameters, outputs, depth and receptive field of every arch in 2D and 3D; diagrams.

`--diagram DIR` writes a U-shaped block diagram of each arch (levels, widths, skips, attention gates, inception
blocks, deep-supervision heads), drawn from the build configuration without building a model. `--plot-model DIR`
writes every layer with `keras.utils.plot_model` (needs pydot and Graphviz's `dot`).
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
from pathlib import Path

from spine_keras.cli import CliParser, add_verbose_flag, quiet_tensorflow, user_errors_exit_2
from spine_keras.cli.flags import in_range
from spine_keras.destinations import check_folder
from spine_keras.errors import UserError
from spine_keras.models.config import make_config
from spine_keras.models.registry import ARCHS, arch_code

DEFAULT_2D = (256, 256, 1)
DEFAULT_3D = (64, 128, 128, 1)
SIDE = in_range(int, 1, 16384)  # a spatial side or a channel count


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line of spine-models (no TensorFlow is imported to build it)."""
    p = CliParser(prog="spine-models", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", nargs="+", default=list(ARCHS), metavar="CODE", help="architecture codes (default: all)")
    p.add_argument("--dims", nargs="+", type=int, choices=(2, 3), default=[2, 3], help="2D and/or 3D (default: both)")
    p.add_argument("--shape2d", nargs=3, type=SIDE, default=DEFAULT_2D, metavar=("H", "W", "C"))
    p.add_argument("--shape3d", nargs=4, type=SIDE, default=DEFAULT_3D, metavar=("D", "H", "W", "C"))
    p.add_argument("--classes", type=in_range(int, 2, 1000), default=2, help="number of classes (default 2)")
    p.add_argument("--filters", type=in_range(int, 1, 1024), help="initial filters (default: each arch's preset)")
    p.add_argument(
        "--depth",
        type=in_range(int, 1, 12),
        help="pooling levels of the U-Nets (default: 4, or 5 for VGG16 encoders; fcn keeps its fixed 5)",
    )
    p.add_argument("--diagram", type=Path, metavar="DIR", help="also write block diagrams DIR/arch_<code>_<n>d.png")
    p.add_argument(
        "--plot-model",
        type=Path,
        metavar="DIR",
        help="also draw every layer to DIR/arch_<code>_<n>d_layers.png (keras plot_model; needs pydot and Graphviz)",
    )
    p.add_argument(
        "--dpi", type=in_range(int, 1, 600), default=48, help="resolution of the --plot-model drawings (default 48)"
    )
    p.add_argument("--rankdir", choices=("LR", "TB"), default="LR", help="--plot-model direction (default LR)")
    add_verbose_flag(p)
    return p.parse_args(argv)


def overrides(arch: str, args: argparse.Namespace) -> dict:
    """The --filters/--depth overrides that apply to `arch` (fcn has no depth to choose)."""
    found = {"filters": args.filters, "depth": None if arch.lower() == "fcn" else args.depth}
    return {k: v for k, v in found.items() if v is not None}


def check_graphviz() -> None:
    """UserError unless pydot and Graphviz's `dot` program are both available (keras plot_model needs them)."""
    if importlib.util.find_spec("pydot") is None or shutil.which("dot") is None:
        raise UserError(
            "--plot-model needs pydot (pip install pydot) and Graphviz's dot program on the PATH "
            "(install Graphviz with your system's package manager); --diagram needs neither"
        )


def plot(model, path: Path, dpi: int, rankdir: str) -> None:
    """Draw every layer of `model` into the PNG `path` with keras plot_model."""
    import keras

    path.parent.mkdir(parents=True, exist_ok=True)
    keras.utils.plot_model(model, to_file=str(path), rankdir=rankdir, dpi=dpi, show_layer_names=True)


def diagrams(args: argparse.Namespace) -> None:
    """Write the block diagram of every requested arch and dims to args.diagram."""
    from spine_keras.models.diagram import draw_architectures

    shapes = [args.shape2d if dims == 2 else args.shape3d for dims in args.dims]
    for arch in args.archs:
        draw_architectures(args.diagram, [arch], shapes, args.classes, **overrides(arch, args))


def check_request(args: argparse.Namespace) -> None:
    """Every requested arch, shape and override, and the picture folders, checked before anything is built or
    drawn (no TensorFlow): a UserError names the first that cannot work."""
    args.archs = [arch_code(arch) for arch in args.archs]
    for arch in args.archs:
        for dims in args.dims:
            make_config(arch, args.shape2d if dims == 2 else args.shape3d, args.classes, overrides(arch, args))
    for folder, what in ((args.diagram, "--diagram folder"), (args.plot_model, "--plot-model folder")):
        if folder is not None:
            check_folder(folder, what, create_parents=False)
    if args.plot_model:
        check_graphviz()


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    """Print a Markdown table of the requested architectures; with --diagram/--plot-model, write their pictures."""
    args = parse_args(argv)
    check_request(args)
    if args.diagram:
        diagrams(args)
    quiet_tensorflow(args.tf_verbose)
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
            if args.plot_model:
                plot(model, args.plot_model / f"arch_{arch.lower()}_{dims}d_layers.png", args.dpi, args.rankdir)
            keras.backend.clear_session()
    return 0
