"""`spine-phantom`: write synthetic lumbar-spine phantom NRRD pairs and their list (the built-in demo data)."""

from __future__ import annotations

import argparse

from spine_keras.cli import CliParser, user_errors_exit_2


def parser() -> argparse.ArgumentParser:
    p = CliParser(prog="spine-phantom", description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="demo", help="folder for the NRRD pairs")
    p.add_argument("--list", default="data_lists/demo.txt", help="list file to write")
    p.add_argument("--cases", type=int, default=6, help="number of exams")
    p.add_argument("--seed", type=int, default=0, help="phantom seed")
    return p


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from spine_keras.phantom import CLASS_NAMES, write_demo

    path = write_demo(args.out, args.list, cases=args.cases, seed=args.seed)
    print(f"wrote {args.cases} phantom cases into {args.out}/ and the list {path} (classes: {','.join(CLASS_NAMES)})")
    return 0
