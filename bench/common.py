"""What every bench shares: the environment set before any library loads, sides that take turns round by round,
the facts each table records (CPU, cores, load average, versions), and the one writer of docs/performance.md.

Import this module first in a bench, before numpy, TensorFlow or torch: the OpenMP wait policy and the thread
counts are read once, when a library loads. `OMP_WAIT_POLICY=PASSIVE` makes idle OpenMP threads sleep instead of
spinning, so a torch peer does not burn contended cores while it waits (that spinning, not the work, is what
slows it down on a loaded machine).

A side is one thing being timed. A `Worker` runs a side in its own process (its own imports, thread pools and
peak memory), set up and warmed up once, then timed one round per request; a `LocalSide` runs one in this process.
`interleave` asks the sides for one round each in turn, reversing the order every other round (A B, B A, ...),
so a change of machine load reaches every side alike; ratios are taken between medians and round by round.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "performance.md"
DATA = REPO.parent / "shared" / "data" / "spine-mri"
PROTOCOL = "@@bench "  # prefix of the lines a worker answers with; anything else a library prints is ignored
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


class Unavailable(Exception):
    """A side cannot run here (a peer library is not installed); its row says why instead of a time."""


STARTED = time.perf_counter()


def note(message: str) -> None:
    """A progress line on stderr, with the seconds since the bench started."""
    print(f"[{time.perf_counter() - STARTED:6.1f} s] {message}", file=sys.stderr, flush=True)


def set_threads(threads: int) -> None:
    """Thread count for every library of this process and of the workers it starts (call before importing them)."""
    for name in THREAD_VARS:
        os.environ[name] = str(threads)


def add_common_args(parser: argparse.ArgumentParser, rounds: int, quick_rounds: int) -> None:
    """The flags every bench takes."""
    parser.add_argument("--quick", action="store_true", help="small sizes and few rounds: proves the bench runs")
    parser.add_argument("--rounds", type=int, help=f"timed rounds per side (default {rounds}, --quick {quick_rounds})")
    parser.add_argument("--threads", type=int, default=2, help="threads for every library, each side (default 2)")
    parser.add_argument("--no-write", action="store_true", help=f"print the table only; leave {DOC.name} alone")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # set in a worker process: the side it runs
    parser.set_defaults(default_rounds=(rounds, quick_rounds))


def rounds_of(args: Any) -> int:
    """--rounds, else the bench's default for the chosen size."""
    full, quick = args.default_rounds
    return args.rounds or (quick if args.quick else full)


def command_line() -> str:
    """The command that is running, as a reader would type it from the repository root."""
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(REPO) if script.is_relative_to(REPO) else script
    return "python " + shlex.join([str(shown), *sys.argv[1:]])


# --- sides and rounds ---------------------------------------------------------------------------------------


@dataclass
class Side:
    """One timed thing: its row name, what it runs, the side its ratio is taken against, and its rounds."""

    name: str
    runs: str
    reference: str | None = None
    items: int = 1  # things a round processes (batches, samples): seconds are reported per item
    info: dict[str, Any] = field(default_factory=dict)
    missing: str | None = None
    rounds: list[dict[str, float]] = field(default_factory=list)

    def start(self) -> None:
        """Get ready for the first round (a worker starts its process here)."""

    def ready(self) -> None:
        """Wait until the first round can be timed."""

    def round(self) -> dict[str, float]:
        """Time one round: at least {'seconds': wall seconds}."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what `start` took."""

    def seconds(self) -> list[float]:
        """Wall seconds per item, one value per round."""
        return [r["seconds"] / self.items for r in self.rounds]


@dataclass
class LocalSide(Side):
    """A side timed in this process: `step` is one round."""

    step: Callable[[], object] | None = None

    def round(self) -> dict[str, float]:
        start, cpu = time.perf_counter(), time.process_time()
        self.step()
        return {"seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu}


@dataclass
class Worker(Side):
    """A side run by `python <this bench> <argv> --worker <name>` in its own process (see `serve`)."""

    argv: Sequence[str] = ()
    _proc: subprocess.Popen | None = None
    _log: Any = None

    def start(self) -> None:
        self._log = tempfile.TemporaryFile("w+")
        cmd = [sys.executable, sys.argv[0], *self.argv, "--worker", self.name]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True)

    def _answer(self) -> dict[str, Any]:
        for line in self._proc.stdout:
            if line.startswith(PROTOCOL):
                return json.loads(line[len(PROTOCOL) :])
        self._log.seek(0)
        tail = [line for line in self._log.read().splitlines() if line.strip()][-1:] or ["no output"]
        raise RuntimeError(f"worker {self.name!r} exited with {self._proc.wait()}: {tail[0]}")

    def ready(self) -> None:
        answer = self._answer()
        self.missing, self.info = answer.get("missing"), answer.get("ready", {})

    def round(self) -> dict[str, float]:
        self._proc.stdin.write("run\n")
        self._proc.stdin.flush()
        return self._answer()

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.stdin.close()
            self._proc.wait(timeout=60)
        if self._log is not None:
            self._log.close()


def serve(setup: Callable[[], tuple[dict[str, Any], Callable[[], object]]], warmup: int) -> int:
    """A worker's main loop: set up, warm up, say ready, then time one round per 'run' line on stdin."""

    def emit(data: dict[str, Any]) -> None:
        print(PROTOCOL + json.dumps(data), flush=True)

    try:
        info, step = setup()
    except Unavailable as why:
        emit({"missing": str(why)})
        return 0
    for _ in range(warmup):
        step()
    emit({"ready": info})
    for line in sys.stdin:
        if line.strip() != "run":
            break
        start, cpu = time.perf_counter(), time.process_time()
        step()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        emit({"seconds": seconds, "cpu": cpu, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    return 0


def interleave(sides: Sequence[Side], rounds: int) -> tuple[float, float]:
    """Time `rounds` rounds of every available side, taking turns (order reversed every other round).

    Returns the 1-minute load average before and after the timed rounds.
    """
    for side in sides:
        side.start()
    try:
        for side in sides:
            side.ready()
        ready = [side for side in sides if side.missing is None]
        note(f"timing {rounds} rounds of {', '.join(side.name for side in ready)}")
        before = os.getloadavg()[0]
        for i in range(rounds):
            for side in ready if i % 2 == 0 else ready[::-1]:
                side.rounds.append(side.round())
        return before, os.getloadavg()[0]
    finally:
        for side in sides:
            side.close()


# --- statistics and tables ------------------------------------------------------------------------------------


def ratio_cells(side: Side, by_name: dict[str, Side]) -> tuple[str, str]:
    """(ratio of medians, min-max of the per-round ratios) of this side's time over its reference's."""
    ref = by_name.get(side.reference) if side.reference else None
    if ref is None or not ref.rounds:
        return "reference", ""
    ratio = statistics.median(side.seconds()) / statistics.median(ref.seconds())
    per_round = [a / b for a, b in zip(side.seconds(), ref.seconds())]
    return f"{ratio:.3g}x {ref.name}", f"{min(per_round):.3g}-{max(per_round):.3g}x"


def comparison_table(
    sides: Sequence[Side], extra: dict[str, Callable[[Side], str]] | None = None, unit: str = "median s"
) -> str:
    """One row per side: median seconds per item, its time over its reference's, the spread, the command."""
    extra = extra or {}
    by_name = {side.name: side for side in sides}
    head = [
        "side",
        "runs",
        unit,
        *extra,
        "time / reference (ratio of medians)",
        "per-round ratio (min-max)",
        "rounds",
        "command",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    command = f"`{command_line()}`"
    for side in sides:
        if side.missing is not None or not side.rounds:
            cells = [side.name, side.runs, "-", *("-" for _ in extra), side.missing or "no rounds", "", "0", command]
        else:
            ratio, spread = ratio_cells(side, by_name)
            median = f"{statistics.median(side.seconds()):.4g}"
            values = [fn(side) for fn in extra.values()]
            cells = [side.name, side.runs, median, *values, ratio, spread, str(len(side.rounds)), command]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions(names: Sequence[str]) -> str:
    """'name version' of each installed distribution among `names`."""
    found = []
    for name in names:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            continue
    return ", ".join(found)


def conditions(threads: int, load: tuple[float, float], packages: Sequence[str]) -> str:
    """The lines under a table's title: date, machine, threads, wait policy, load average, versions."""
    cores = os.cpu_count() or 1
    busy = max(load) > cores
    note = f" **Above the core count ({cores}): not representative.**" if busy else ""
    today = datetime.date.today().isoformat()
    return (
        f"Measured {today} on {cpu_name()}, {cores} cores; {threads} threads per side; "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}. "
        f"Load average (1 min): {load[0]:.2f} before, {load[1]:.2f} after.{note}\n"
        f"Versions: Python {platform.python_version()}, "
        f"{versions(packages)}."
    )


def write_section(name: str, body: str, doc: Path = DOC) -> None:
    """Replace the text between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->` in the performance page.

    Only that section changes; a section not yet on the page is appended at its end.
    """
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = doc.read_text(encoding="utf-8") if doc.exists() else "# Performance\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    tmp = doc.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(doc)


def publish(args: Any, name: str, body: str) -> None:
    """Print a bench's section and, unless --no-write, put it on the performance page."""
    print(body, flush=True)
    if not args.no_write:
        write_section(name, body)
        print(f"wrote section '{name}' of {DOC.relative_to(REPO)}", file=sys.stderr)
