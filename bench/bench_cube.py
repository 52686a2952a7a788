"""Cube build throughput (cases/s) with 1 and 2 workers, and peak memory from 5 vs all cases of a list.

Peak memory is the largest summed resident set of the build's whole process tree (parent and workers),
sampled every 50 ms from /proc. Usage: python bench/bench_cube.py [--list LIST] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_LIST = REPO.parent / "shared" / "data" / "spine-mri" / "lists" / "vb2.txt"


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


def run_build(list_path: Path, workers: int, flags: list[str]) -> tuple[float, int, str]:
    """Run make_cube in a subprocess; return wall seconds, peak tree RSS (KiB) and its summary line."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            str(REPO / "scripts" / "make_cube.py"),
            str(list_path),
            "-o",
            f"{tmp}/c.h5",
            "--quiet",
            "--skip-bad",
            "--workers",
            str(workers),
            *flags,
        ]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        peak = [0]

        def sample() -> None:
            while proc.poll() is None:
                peak[0] = max(peak[0], tree_rss_kib(proc.pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        _, err = proc.communicate()
        sampler.join()
        seconds = time.perf_counter() - start
        if proc.returncode:
            raise SystemExit(f"build failed: {err}")
        return seconds, peak[0], err.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--list", type=Path, default=DEFAULT_LIST)
    parser.add_argument(
        "--flags",
        default="--label-map 1-7:1 --classes background,vertebra --augment 1",
        help="make_cube flags used for every build",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    flags = args.flags.split()
    lines = [line for line in args.list.read_text().splitlines() if line.strip() and not line.startswith("#")]
    rows = ["| build | cases in list | workers | wall s | cases/s | peak RSS (MiB) |", "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        five = Path(tmp) / "five.txt"
        five.write_text(
            "\n".join(",".join(str((args.list.parent / f.strip()).resolve()) for f in r.split(",")) for r in lines[:5])
            + "\n"
        )
        results = {}
        for name, path, workers in (("all", args.list, 1), ("all", args.list, 2), ("first 5", five, 2)):
            seconds, peak, summary = run_build(path, workers, flags)
            built = int(summary.split(" from ")[1].split()[0])
            results[(name, workers)] = peak
            rows.append(
                f"| {summary.split(' in ')[0]} | {len(lines) if name == 'all' else 5} | {workers} | "
                f"{seconds:.1f} | {built / seconds:.3f} | {peak / 1024:.0f} |"
            )
    ratio = results[("all", 2)] / results[("first 5", 2)]
    text = "\n".join(rows) + (
        f"\n\npeak memory ratio, all {len(lines)} cases vs 5 (2 workers): {ratio:.2f} "
        f"(target <= 1.3)\n\nhardware: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores; flags: {args.flags}\n"
    )
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
