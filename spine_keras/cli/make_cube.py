"""`spine-make-cube LIST`: preprocess and augment an image/label list into an HDF5 training cube.

The defaults marked "the preset's" come from --preset: recipe (the default: the planner's native shape, mild
augmentation without flips, noise or blur) or paper (the ICPR 2020 protocol: 256x256 slices or 64x128x128
volumes, the paper's augmentation); a flag given overrides the preset's value."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from spine_keras.augment import AugmentConfig
from spine_keras.choices import FITS, INTENSITY_NORMALIZATIONS, INTERPOLATIONS
from spine_keras.cli import CliParser, user_errors_exit_2
from spine_keras.cli.flags import add_dataclass_flags, dataclass_from_flags, in_range, ints, names, numbers
from spine_keras.errors import UserError
from spine_keras.presets import CUBE_AUGMENT, CUBE_SHAPES, DEFAULT_PRESET, PRESETS, cube_augment, cube_shape, shown

MAX_WORKERS = 256  # the same limits as spine_keras.cube.build.CubeConfig, which checks them for library callers
MAX_COPIES = 32767
MAX_SEED = 2**63 - 1
MAX_CONTEXT = 16  # spine_keras.prepare.MAX_CONTEXT
DEFAULT_BUDGET_GB = 2.0  # spine_keras.planner.DEFAULT_BUDGET_GB

if TYPE_CHECKING:
    from spine_keras.cube.build import CubeConfig
    from spine_keras.planner import Plan


def parser() -> argparse.ArgumentParser:
    p = CliParser(prog="spine-make-cube", description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("list", help="text file, one 'image,label' pair a line (paths relative to the list's folder)")
    p.add_argument("-o", "--output", default="cube.h5", help="cube to write")
    p.add_argument("--force", action="store_true", help="replace an existing cube")
    p.add_argument(
        "--workers", type=in_range(int, 0, MAX_WORKERS), default=0, help="parallel case workers (0 = all cores)"
    )
    p.add_argument("--seed", type=in_range(int, 0, MAX_SEED), default=0, help="random seed: same seed, same cube")
    p.add_argument("--skip-bad", action="store_true", help="warn about and skip bad cases (recorded in the cube)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--preset",
        choices=PRESETS,
        default=DEFAULT_PRESET,
        help="named defaults of the settings shown as 'the preset's': recipe (measured on lumbar MRI) or paper "
        "(the ICPR 2020 protocol)",
    )
    _add_sampling_flags(p.add_argument_group("samples"))
    _add_preprocessing_flags(p.add_argument_group("preprocessing"))
    _add_augmentation_flags(p.add_argument_group("augmentation (offline copies; on the fly: spine-train)"))
    return p


def _add_sampling_flags(s: argparse._ArgumentGroup) -> None:
    """How samples are cut: mode, slice axis, shape, foreground filter, 3D patch tiling."""
    s.add_argument("--mode", choices=("2d", "3d"), default="2d")
    s.add_argument(
        "--axis", type=in_range(int, 0, 2), default=2, help="2D slice axis (2 = sagittal in the shared data)"
    )
    s.add_argument(
        "--shape",
        type=_shape,
        default=argparse.SUPPRESS,
        help="sample shape H,W (2d) or D,H,W (3d), or 'auto': planned from the list's median geometry (headers "
        f"only; see --memory-budget) (default: {_shape_shown()})",
    )
    s.add_argument(
        "--min-foreground",
        type=in_range(float, 0, 1, high_open=True),
        default=0.0,
        help="drop samples with a smaller labelled fraction",
    )
    s.add_argument(
        "--stride",
        type=ints,
        default=None,
        help="3d: tile patches of --shape with this stride (default: the plan's with --shape auto, else resize "
        "the whole volume to --shape)",
    )
    s.add_argument(
        "--background-keep",
        type=in_range(float, 0, 1),
        default=0.1,
        help="3d patches: probability of keeping a patch with no label (foreground-biased sampling)",
    )
    s.add_argument(
        "--context",
        type=in_range(int, 0, MAX_CONTEXT),
        default=0,
        metavar="K",
        help="2d only (2.5D): add the K neighbouring slices on each side as input channels (2K+1 channels)",
    )
    s.add_argument(
        "--memory-budget",
        type=in_range(float, 0),
        default=DEFAULT_BUDGET_GB,
        metavar="GB",
        help="--shape auto, 3d: activation memory for a batch of 2 that the planned patch must fit",
    )


def _add_preprocessing_flags(q: argparse._ArgumentGroup) -> None:
    """How a volume becomes samples: spacing, interpolation, normalization, ROI crop, fit, label map, classes."""
    q.add_argument("--spacing", type=numbers, default=None, help="resample to this spacing in mm (default: keep)")
    q.add_argument("--interpolation", choices=tuple(INTERPOLATIONS), default="linear", help="image resampling")
    q.add_argument("--normalization", choices=INTENSITY_NORMALIZATIONS, default="zscore", help="per-volume intensity")
    q.add_argument("--percentiles", type=numbers, default=(0.5, 99.5), help="clip range for percentile")
    q.add_argument(
        "--crop-roi",
        type=in_range(float, 0),
        default=None,
        metavar="MM",
        help="crop to the labelled region plus this margin before fitting to --shape",
    )
    q.add_argument(
        "--auto-crop",
        type=in_range(float, 0),
        default=None,
        metavar="MM",
        help="crop every volume to its body (found from the image alone, so prediction repeats it) plus this margin, "
        "after resampling and before normalizing; not with --crop-roi",
    )
    q.add_argument(
        "--fit",
        choices=FITS,
        default=None,
        help="bring samples to --shape by resizing or by centre pad/crop (keeps mm) (default: resize; pad with "
        "--shape auto)",
    )
    q.add_argument(
        "--label-map",
        default=None,
        help="label ids to classes, e.g. '1-7:1' or '1-5:1,6-10:2,*:0'; the class 'ignore' (e.g. '6-9:ignore') "
        "leaves those voxels out of the loss and the metrics",
    )
    q.add_argument(
        "--ignore-above-labels",
        action="store_true",
        help="ignore every row above the top labelled one (axis 0, superior): for lists that label only the lowest "
        "structures (e.g. L1-L5 with T12 unlabelled above)",
    )
    q.add_argument(
        "--classes", type=names, default=None, help="class names, background first, e.g. background,vertebra"
    )


def _add_augmentation_flags(a: argparse._ArgumentGroup) -> None:
    """The number of offline copies and one flag per AugmentConfig parameter."""
    a.add_argument(
        "--augment",
        type=in_range(int, 0, MAX_COPIES),
        default=0,
        metavar="N",
        help="augmented copies per original sample",
    )
    add_dataclass_flags(a, AugmentConfig, shown_as=_augment_shown())


def _augment_shown() -> dict[str, str]:
    """--help words of the augmentation fields whose default differs between the presets (a preset that leaves a
    field out keeps AugmentConfig's default)."""
    words = {}
    for name in sorted({name for preset in PRESETS for name in CUBE_AUGMENT[preset]}):
        default = AugmentConfig.__dataclass_fields__[name].default
        values = {preset: CUBE_AUGMENT[preset].get(name, default) for preset in PRESETS}
        if len(set(values.values())) > 1:
            words[name] = shown(values)
    return words


def _shape_shown() -> str:
    """--help words for --shape's default: 'auto', or each mode's shape, per preset."""
    return shown({preset: _shape_words(CUBE_SHAPES[preset]) for preset in PRESETS})


def _shape_words(shapes: Mapping[str, tuple[int, ...] | str]) -> str:
    """'auto' when every mode plans its shape, else e.g. '256,256 (2d) / 64,128,128 (3d)'."""
    if set(shapes.values()) == {"auto"}:
        return "auto"
    return " / ".join(
        f"{shape if isinstance(shape, str) else ','.join(map(str, shape))} ({mode})" for mode, shape in shapes.items()
    )


def _apply_preset(args: argparse.Namespace) -> None:
    """Give every preset-dependent flag the user left out the value of --preset: the sample shape of the mode and
    the augmentation fields the preset sets."""
    if getattr(args, "shape", None) is None:
        args.shape = cube_shape(args.preset, args.mode)
    for name, value in cube_augment(args.preset).items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)


def _shape(text: str) -> tuple[int, ...] | str:
    """--shape: whole numbers, or 'auto' for the planner."""
    return "auto" if text.strip().lower() == "auto" else ints(text)


def _plan(args: argparse.Namespace) -> Plan | None:
    """The planner's choice for --shape auto (headers of the list's images only); None for a given shape. The
    plan's fit applies unless --fit was given."""
    if args.shape != "auto":
        args.fit = args.fit or "resize"
        return None
    from spine_keras.planner import plan_list

    spacing = tuple(float(v) for v in args.spacing) if args.spacing and len(args.spacing) == 3 else None
    plan = plan_list(args.list, args.mode, args.axis, spacing, args.memory_budget, args.skip_bad)
    args.fit = args.fit or plan.fit
    return plan


def config_from_args(args: argparse.Namespace) -> CubeConfig:
    """Turn parsed flags into the build's settings (validated)."""
    from spine_keras.cube.build import CubeConfig

    _apply_preset(args)
    plan = _plan(args)
    _check_flag_combinations(args)
    try:
        augment = dataclass_from_flags(AugmentConfig, args)
    except (TypeError, ValueError) as exc:
        raise UserError(f"augmentation flags: {exc}") from exc
    return CubeConfig(
        list_path=args.list,
        output=args.output,
        preprocess=_preprocess_config(args),
        sampling=_sampling_config(args, plan),
        label_map=args.label_map,
        class_names=args.classes,
        augment=augment,
        copies=args.augment,
        seed=args.seed,
        workers=args.workers,
        skip_bad=args.skip_bad,
        force=args.force,
        plan=plan,
        preset=args.preset,
    )


def _check_flag_combinations(args: argparse.Namespace) -> None:
    """UserError for flags that are fine alone but wrong together or of the wrong length."""
    if args.crop_roi is not None and args.fit == "resize" and args.stride is None:
        raise UserError(
            "--crop-roi with --fit resize would train on anatomy scaled differently from what "
            "prediction sees (it cannot crop to a label it does not have); add --fit pad, or use "
            "--mode 3d --stride"
        )
    if len(args.percentiles) != 2:
        raise UserError("--percentiles takes two numbers, e.g. 0.5,99.5")
    if args.spacing is not None and len(args.spacing) != 3:
        raise UserError(
            f"--spacing takes three numbers in mm (one per volume axis), e.g. 1,1,1; got {len(args.spacing)}"
        )


def _preprocess_config(args: argparse.Namespace):
    """The PreprocessConfig the flags describe."""
    from spine_keras.preprocess import PreprocessConfig

    return PreprocessConfig(
        spacing=tuple(float(v) for v in args.spacing) if args.spacing else None,
        interpolation=args.interpolation,
        normalization=args.normalization,
        percentiles=tuple(float(v) for v in args.percentiles),
        crop_roi_mm=args.crop_roi,
        auto_crop_mm=args.auto_crop,
        fit=args.fit,
        ignore_above_labels=args.ignore_above_labels,
    )


def _sampling_config(args: argparse.Namespace, plan: Plan | None):
    """The SamplingConfig the flags describe (the plan's shape and stride with --shape auto, a given --stride
    winning)."""
    from spine_keras.prepare import SamplingConfig

    if plan is not None:
        shape, stride = plan.shape, args.stride or plan.stride
    else:
        shape, stride = args.shape, args.stride
    return SamplingConfig(
        mode=args.mode,
        axis=args.axis,
        shape=shape,
        min_foreground=args.min_foreground,
        stride=stride,
        background_keep=args.background_keep,
        context=args.context,
    )


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    config = config_from_args(args)
    from spine_keras.cube.build import build_cube

    signal.signal(signal.SIGTERM, _terminate)  # a killed build removes its temporary file too
    report = build_cube(config, progress=not args.quiet)
    if config.plan is not None:  # after the build: a refused build's stderr is its one error line
        print(config.plan.summary(), file=sys.stderr)
    rate = report.cases / report.seconds if report.seconds else float("inf")
    skipped = f", {len(report.skipped)} skipped" if report.skipped else ""
    print(
        f"wrote {report.samples} samples from {report.cases} cases{skipped} in {report.seconds:.1f} s "
        f"({rate:.2f} cases/s) -> {report.path}",
        file=sys.stderr,
    )
    return 0
