#!/usr/bin/env python
"""Run every bench one at a time, each writing its section of docs/performance.md.

    python bench/run_all.py [--quick] [--threads 2] [--only augment train ...] [--quiet-below LOAD]

Benches never overlap: each is a separate process started after the previous one ended. With --quiet-below, each
bench waits (up to 10 minutes) until the 1-minute load average is below LOAD, so its figures are taken on a quiet
machine; the load average each table ran under is recorded beside it either way.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
BENCHES = {
    "augment": "bench_augment.py",
    "train": "bench_train.py",
    "predict": "bench_predict.py",
    "cube": "bench_cube.py",
    "models": "bench_models.py",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The runner's command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="pass --quick to every bench")
    p.add_argument("--threads", type=int, default=2, help="threads per side in every bench (default 2)")
    p.add_argument("--only", nargs="+", choices=list(BENCHES), default=list(BENCHES), help="benches to run")
    p.add_argument("--quiet-below", type=float, metavar="LOAD", help="wait for a 1-min load average below LOAD")
    p.add_argument("--no-write", action="store_true", help="print the tables only")
    return p.parse_args(argv)


def wait_for_quiet(limit: float, patience_s: float = 600.0) -> None:
    """Poll the load average every 10 s until it is below `limit`, or `patience_s` has passed."""
    deadline = time.monotonic() + patience_s
    while os.getloadavg()[0] >= limit and time.monotonic() < deadline:
        print(f"load average {os.getloadavg()[0]:.2f} >= {limit}: waiting", file=sys.stderr, flush=True)
        time.sleep(10)


def main(argv: list[str] | None = None) -> int:
    """Each chosen bench in turn; the exit status is the number of benches that failed."""
    args = parse_args(argv)
    flags = ["--threads", str(args.threads)] + ["--quick"] * args.quick + ["--no-write"] * args.no_write
    failed = []
    for name in args.only:
        if args.quiet_below is not None:
            wait_for_quiet(args.quiet_below)
        print(f"== {name} (load average {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
        if subprocess.run([sys.executable, str(BENCH / BENCHES[name]), *flags], check=False).returncode:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return len(failed)


if __name__ == "__main__":
    sys.exit(main())
