"""Run a study's steps into its results folder, resumably (the layout is in docs/study.md).

Each step runs under a lock of its own (two processes never run one step), writes its outputs, then its marker
`OUT/steps/<id>.done` (atomically, with its key, timing and, for prediction steps, its metric rows). A step whose
marker holds the current key is skipped, so a killed study reruns only what is unfinished. A train step always
starts from scratch in a hidden work folder beside its bundle folder and is renamed into place when it finishes:
a killed fold is retrained whole, never half-resumed. Prediction steps end by gathering the metric rows of every
finished prediction step of their variant into `metrics.csv` and `timing.json`.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from spine_keras.bundle import write_json
from spine_keras.destinations import disk_errors, writer_lock
from spine_keras.errors import UserError
from spine_keras.study.config import StudyConfig
from spine_keras.study.plan import Step, StudyPlan

METRIC_COLUMNS = (
    "case",
    "fold",
    "class",
    "dice",
    "iou",
    "hd95_mm",
    "assd_mm",
    "truth_voxels",
    "predicted_voxels",
    "seconds",
)


def marker_path(out: Path, step: Step) -> Path:
    return out / "steps" / f"{step.id}.done"


def read_marker(out: Path, step: Step) -> dict[str, Any] | None:
    """The step's marker when it records the step's current key, else None (not done, or done with old settings)."""
    import json

    path = marker_path(out, step)
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("key") == step.key else None


def done_steps(plan: StudyPlan, out: Path) -> set[str]:
    """The ids of the steps whose markers hold their current keys."""
    return {step.id for step in plan.steps if read_marker(out, step) is not None}


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def hardware() -> dict[str, Any]:
    """CPU model, cores, GPU names (nvidia-smi, when present) and memory of this machine."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = None
    if shutil.which("nvidia-smi"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            found = subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
            ).stdout.split("\n")
            gpu = ", ".join(g.strip() for g in found if g.strip()) or None
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "memory_gb": round(memory, 1)}


def stack_versions() -> dict[str, str]:
    """Versions of Python, spine_keras and the libraries a study uses (read from their metadata, no import)."""
    from importlib import metadata

    found = {"python": platform.python_version()}
    for name in ("spine_keras", "tensorflow", "keras", "numpy", "scipy", "h5py", "SimpleITK"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def write_study_json(plan: StudyPlan, out: Path) -> None:
    """OUT/study.json: the resolved study, the folds, the hardware and the versions."""
    data = plan.config.to_dict()
    data.update(fold_cases=plan.fold_cases, hardware=hardware(), versions=stack_versions())
    with disk_errors(out, "the study folder"):
        write_json(data, out / "study.json")


def run_study(plan: StudyPlan, out: Path, jobs: int = 1, verbose: bool = False) -> list[Step]:
    """Run every unfinished step: in order in this process (`jobs` 1), or `jobs` at a time, each in its own
    process (`spine-study --step`). Returns the steps that ran."""
    write_study_json(plan, out)
    pending = [step for step in plan.steps if read_marker(out, step) is None]
    if jobs > 1:
        _schedule(plan, out, pending, jobs, verbose)
        return pending
    for step in pending:
        run_step(plan, out, step)
    return pending


def run_one(plan: StudyPlan, out: Path, step: Step) -> bool:
    """Run one step (its dependencies must be done); False when it was already done."""
    steps = plan.by_id()
    missing = [steps[d] for d in step.deps if read_marker(out, steps[d]) is None]
    if missing:
        names = ", ".join(f"{s.number} ({s.id})" for s in missing)
        raise UserError(f"step {step.number} ({step.id}) needs step(s) {names} to finish first")
    if read_marker(out, step) is not None:
        return False
    write_study_json(plan, out)
    run_step(plan, out, step)
    return True


def run_step(plan: StudyPlan, out: Path, step: Step) -> None:
    """Run `step` under its lock and write its marker; prediction steps then gather their variant's metrics."""
    from spine_keras.study import steps as kinds

    (out / "steps").mkdir(parents=True, exist_ok=True)
    with writer_lock(out / "steps" / step.id, "study step"):
        print(f"step {step.number}/{len(plan.steps)}: {step.id}", file=sys.stderr, flush=True)
        start = time.perf_counter()
        result = getattr(kinds, f"{step.kind}_step")(plan, out, step)
        marker = {"id": step.id, "key": step.key, "kind": step.kind, "seconds": time.perf_counter() - start}
        marker.update(peak_rss_mb=peak_rss_mb(), finished=time.strftime("%Y-%m-%d %H:%M:%S"))
        marker.update(result)
        with disk_errors(out, "the study folder"):
            write_json(marker, marker_path(out, step))
    if step.kind in ("predict", "test"):
        gather_predictions(plan, out, step.variant)


def _schedule(plan: StudyPlan, out: Path, pending: list[Step], jobs: int, verbose: bool) -> None:
    """Run `pending` steps `jobs` at a time, each as `spine-study STUDY -o OUT --step ID` in its own process, a
    step once its dependencies are done; its output goes to OUT/logs/<id>.log. A failed step stops new launches;
    the running ones finish, then a UserError names the failure."""
    waiting, running, failed = list(pending), {}, []
    devices = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    (out / "logs").mkdir(parents=True, exist_ok=True)
    while waiting or running:
        done = done_steps(plan, out)
        free = [slot for slot in range(jobs) if slot not in running]
        ready = [s for s in waiting if all(d in done for d in s.deps)] if not failed else []
        for slot, step in zip(free, ready):
            waiting.remove(step)
            running[slot] = (step, _launch(plan, out, step, slot, devices, verbose))
        for slot, (step, process) in list(running.items()):
            if process.poll() is not None:
                del running[slot]
                if process.returncode != 0:
                    failed.append(f"step {step.number} ({step.id}) failed, exit {process.returncode}")
        if not running and waiting and not ready:
            break
        time.sleep(0.2)
    if failed:
        raise UserError(f"{'; '.join(failed)}; see its log in {out / 'logs'}, then rerun the study to go on")


def _launch(plan: StudyPlan, out: Path, step: Step, slot: int, devices: list[str], verbose: bool) -> subprocess.Popen:
    """Start one step in its own process; with several GPUs listed in CUDA_VISIBLE_DEVICES, slot i gets GPU i."""
    env = dict(os.environ)
    if len(devices) > 1:
        env["CUDA_VISIBLE_DEVICES"] = devices[slot % len(devices)]
    command = [sys.executable, "-m", "spine_keras.cli.study", str(plan.config.source), "-o", str(out), "--step"]
    command += [step.id, *(["--verbose"] if verbose else [])]
    with open(out / "logs" / f"{step.id}.log", "w", encoding="utf-8") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)


@contextlib.contextmanager
def _waiting_lock(path: Path) -> Iterator[None]:
    """An exclusive flock on `path`, waiting for it (prediction steps of one variant gather one at a time)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def gather_predictions(plan: StudyPlan, out: Path, variant: str) -> None:
    """Rewrite `variant`'s val/metrics.csv, test/metrics.csv and timing.json from its finished prediction steps."""
    folder = out / "predictions" / variant
    with _waiting_lock(out / "steps" / f".gather-{variant}.lock"):
        markers = [read_marker(out, s) for s in plan.steps if s.variant == variant and s.kind in ("predict", "test")]
        markers = [m for m in markers if m is not None]
        for kind, split in (("predict", "val"), ("test", "test")):
            rows = [row for m in markers if m["kind"] == kind for row in m["rows"]]
            if rows:
                write_metrics_csv(rows, folder / split / "metrics.csv")
        seconds = [s for m in markers for s in m["volume_seconds"]]
        if seconds:
            timing = {
                "seconds_per_volume": float(np.median(seconds)),
                "peak_rss_mb": max(m["peak_rss_mb"] for m in markers),
            }
            write_json(timing, folder / "timing.json")


def write_metrics_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """metrics.csv with the contract's columns; NaN (undefined) values are empty cells."""
    from spine_keras.io import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with disk_errors(path, "metrics.csv"), atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=METRIC_COLUMNS)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _cell(row.get(k)) for k in METRIC_COLUMNS})


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def config_and_plan(study: Path, check_data: bool = True) -> StudyPlan:
    """The checked study file and its plan."""
    from spine_keras.study.plan import make_plan

    return make_plan(StudyConfig.from_yaml(study, check_data=check_data))
