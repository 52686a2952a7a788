"""`spine-check-cube [CUBE]`: validate a cube, print its summary, optionally draw a montage PNG."""

from __future__ import annotations

import argparse
import sys

from spine_keras.cli import CliParser, user_errors_exit_2


def parser() -> argparse.ArgumentParser:
    p = CliParser(prog="spine-check-cube", description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("cube", nargs="?", default="cube.h5", help="cube to check")
    p.add_argument("--png", default=None, help="write a montage of random samples (original beside its copies)")
    p.add_argument("--rows", type=int, default=4, help="montage rows (random original samples)")
    p.add_argument("--seed", type=int, default=0, help="which samples the montage shows")
    return p


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from spine_keras.cube.check import check_cube, montage

    report = check_cube(args.cube)
    print(report.summary())
    if not report.ok:
        print(f"error: cube '{args.cube}' is invalid: {'; '.join(report.problems)}", file=sys.stderr)
        return 1
    if args.png:
        print(f"montage -> {montage(args.cube, args.png, rows=args.rows, seed=args.seed)}")
    return 0
