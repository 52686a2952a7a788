#!/usr/bin/env python
"""Cube build time with 1 and 2 workers, and peak memory for a whole list vs its first 5 cases, taking turns.

    python bench/bench_cube.py [--quick] [--list LIST] [--rounds 3] [--no-write]

Each round runs `scripts/make_cube.py` once per build (the whole list with 1 worker, with 2 workers, and its first
5 lines with 2 workers), the builds taking turns. Peak memory is the largest summed resident set of the build's
process tree (parent and workers), sampled every 50 ms from /proc. --quick uses the list's first 9 lines as the
whole list. The table goes to the `cube` section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import common  # first: sets OMP_WAIT_POLICY before any library loads (bench/ is on sys.path as a script's folder)
from common import LocalSide

DEFAULT_LIST = common.DATA / "lists" / "vb2.txt"
PACKAGES = ["numpy", "scipy", "SimpleITK", "h5py"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(p, rounds=3, quick_rounds=2)
    p.add_argument("--list", type=Path, default=DEFAULT_LIST, help="image/label list (default: the shared vb2.txt)")
    p.add_argument(
        "--flags",
        default="--preset paper --label-map 1-7:1 --classes background,vertebra --augment 1",
        help="make_cube flags used for every build",
    )
    return p.parse_args(argv)


def tree_rss_kib(pid: int) -> int:
    """Summed VmRSS of a process and all its descendants."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            with open(f"/proc/{current}/status") as status:
                total += next((int(line.split()[1]) for line in status if line.startswith("VmRSS:")), 0)
            with open(f"/proc/{current}/task/{current}/children") as children:
                stack.extend(int(c) for c in children.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def build(side: LocalSide, list_path: Path, workers: int, flags: list[str]) -> None:
    """One make_cube run; records its peak tree RSS and summary line in the side's info."""
    with tempfile.TemporaryDirectory() as tmp:
        script = common.REPO / "scripts" / "make_cube.py"
        cmd = [sys.executable, str(script), str(list_path), "-o", f"{tmp}/c.h5", "--quiet", "--skip-bad"]
        proc = subprocess.Popen([*cmd, "--workers", str(workers), *flags], stderr=subprocess.PIPE, text=True)
        peak = [0]

        def sample() -> None:
            while proc.poll() is None:
                peak[0] = max(peak[0], tree_rss_kib(proc.pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        _, err = proc.communicate()
        sampler.join()
    if proc.returncode:
        raise SystemExit(f"build failed: {err.strip().splitlines()[-1:]}")
    side.info["peak_mib"] = max(side.info.get("peak_mib", 0), peak[0] / 1024)
    side.info["summary"] = err.strip().splitlines()[-1]


def list_files(args: argparse.Namespace, folder: Path) -> tuple[Path, Path, int]:
    """The 'whole' list (first 9 lines with --quick) and its first 5 lines, with absolute paths; and its length."""
    lines = [line for line in args.list.read_text().splitlines() if line.strip() and not line.startswith("#")]
    lines = lines[:9] if args.quick else lines

    def absolute(rows: list[str], name: str) -> Path:
        path = folder / name
        text = "\n".join(",".join(str((args.list.parent / f.strip()).resolve()) for f in r.split(",")) for r in rows)
        path.write_text(text + "\n")
        return path

    return absolute(lines, "whole.txt"), absolute(lines[:5], "five.txt"), len(lines)


def main(args: argparse.Namespace) -> int:
    """Three builds taking turns, then the `cube` section."""
    flags = args.flags.split()
    with tempfile.TemporaryDirectory() as tmp:
        whole, five, n = list_files(args, Path(tmp))
        one = LocalSide(f"{n} lines, 1 worker", f"`{args.list.name}`" + (" (first 9 lines)" if args.quick else ""))
        two = LocalSide(f"{n} lines, 2 workers", "the same", one.name)
        first = LocalSide("first 5 lines, 2 workers", "the same list's first 5 lines", one.name)
        for side, path, workers in ((one, whole, 1), (two, whole, 2), (first, five, 2)):
            side.step = lambda s=side, p=path, w=workers: build(s, p, w, flags)
        sides = [one, two, first]
        load = common.interleave(sides, common.rounds_of(args))
    built = {s.name: int(s.info["summary"].split(" from ")[1].split()[0]) for s in sides}
    extra = {
        "cases built": lambda s: str(built[s.name]),
        "cases/s": lambda s: f"{built[s.name] / statistics.median(s.seconds()):.3g}",
        "peak RSS MiB": lambda s: f"{s.info['peak_mib']:.0f}",
    }
    ratio = two.info["peak_mib"] / first.info["peak_mib"]
    body = (
        f"**Cube build, seconds per build** (make_cube flags `{args.flags}`); peak RSS is the build's whole "
        f"process tree. Peak memory, {n} lines vs 5 (2 workers): {ratio:.2f}x (target at most 1.3x: memory is "
        "bounded by the cases in flight, not by the list).\n"
        f"{common.conditions(args.threads, load, PACKAGES)}\n\n{common.comparison_table(sides, extra)}"
    )
    common.publish(args, "cube", body)
    return 0


if __name__ == "__main__":
    ARGS = parse_args()
    common.set_threads(ARGS.threads)
    sys.exit(main(ARGS))
