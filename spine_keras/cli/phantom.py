"""`spine-phantom`: write synthetic lumbar-spine phantom NRRD pairs and their list (the built-in demo data)."""

from __future__ import annotations

import argparse
from pathlib import Path

from spine_keras.cli import CliParser, user_errors_exit_2
from spine_keras.cli.flags import in_range
from spine_keras.destinations import check_file, check_folder

MAX_CASES = 1000
MAX_SEED = 2**32 - 1


def parser() -> argparse.ArgumentParser:
    p = CliParser(prog="spine-phantom", description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="demo", help="folder for the NRRD pairs (phantoms already there are replaced)")
    p.add_argument("--list", default="data_lists/demo.txt", help="list file to write (replaced if there)")
    p.add_argument("--cases", type=in_range(int, 1, MAX_CASES), default=6, help="number of exams")
    p.add_argument("--seed", type=in_range(int, 0, MAX_SEED), default=0, help="phantom seed")
    return p


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    check_args(args)
    from spine_keras.phantom import CLASS_NAMES, write_demo

    path = write_demo(args.out, args.list, cases=args.cases, seed=args.seed)
    print(f"wrote {args.cases} phantom cases into {args.out}/ and the list {path} (classes: {','.join(CLASS_NAMES)})")
    return 0


def check_args(args: argparse.Namespace) -> None:
    """Check both destinations before any phantom is drawn."""
    check_folder(args.out, "phantom folder")
    list_path = Path(args.list)
    if list_path.parent.exists():
        check_file(list_path, "phantom list", force=True)
    else:  # its folder will be created
        check_folder(list_path.parent, f"folder of the phantom list '{list_path}'")
