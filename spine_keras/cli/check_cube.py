"""`spine-check-cube [CUBE]`: validate a cube, print its summary, optionally draw a montage PNG."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spine_keras.cli import CliParser, user_errors_exit_2
from spine_keras.cli.flags import in_range
from spine_keras.destinations import check_file
from spine_keras.errors import UserError

MAX_ROWS = 64


def parser() -> argparse.ArgumentParser:
    p = CliParser(prog="spine-check-cube", description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("cube", nargs="?", default="cube.h5", help="cube to check")
    p.add_argument(
        "--png", default=None, help="write a montage of random samples (original beside its copies); replaced if there"
    )
    p.add_argument("--rows", type=in_range(int, 1, MAX_ROWS), default=4, help="montage rows (random original samples)")
    p.add_argument("--seed", type=in_range(int, 0), default=0, help="which samples the montage shows")
    return p


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    check_args(args)
    from spine_keras.cube.check import check_cube, montage

    report = check_cube(args.cube, scan=True)
    print(report.summary())
    if not report.ok:
        print(f"error: cube '{args.cube}' is invalid: {'; '.join(report.problems)}", file=sys.stderr)
        return 1
    if args.png:
        print(f"montage -> {montage(args.cube, args.png, rows=args.rows, seed=args.seed)}")
    return 0


def check_args(args: argparse.Namespace) -> None:
    """Check the montage's path before the cube is read."""
    if args.png is not None:
        if Path(args.png).suffix.lower() != ".png":
            raise UserError(f"--png '{args.png}' must name a .png file")
        check_file(args.png, "montage", force=True)
