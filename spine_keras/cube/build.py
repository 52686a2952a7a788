"""Build a cube from a list: cases processed in parallel workers, written in list order as they finish.

Memory stays bounded by a few cases in flight (at most two per worker) whatever the list's length; the cube
is written to a hidden temporary file beside the target and renamed only when complete.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import multiprocessing
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import h5py
from tqdm import tqdm

from spine_keras import __version__
from spine_keras.augment import AugmentConfig
from spine_keras.cube.samples import CaseJob, CaseSamples, SamplingConfig, process_case
from spine_keras.cube.store import CUBE_FORMAT, CubeWriter, remove_stale_temps, temp_path_for, write_attrs
from spine_keras.destinations import check_file, disk_errors, writer_lock
from spine_keras.errors import CaseError, UserError
from spine_keras.io import ListEntry, parse_list
from spine_keras.planner import Plan
from spine_keras.preprocess import LabelMap, PreprocessConfig
from spine_keras.presets import PRESETS

MAX_WORKERS = 256
MAX_COPIES = 32767  # copy numbers are stored as int16
MAX_SEED = 2**63 - 1  # stored as a native HDF5 int64 attribute
PR_SET_PDEATHSIG = 1  # linux/prctl.h
_PARENT: int | None = None  # in a worker: the build process it serves


@dataclasses.dataclass
class CubeConfig:
    """Every setting of a cube build; written into the cube as JSON so it can be rebuilt exactly."""

    list_path: str
    output: str = "cube.h5"
    preprocess: PreprocessConfig = dataclasses.field(default_factory=PreprocessConfig)
    sampling: SamplingConfig = dataclasses.field(default_factory=SamplingConfig)
    label_map: str | None = None
    class_names: list[str] | None = None
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    copies: int = 0  # augmented copies per original sample
    seed: int = 0
    workers: int = 0  # 0 = all cores
    skip_bad: bool = False
    force: bool = False
    plan: Plan | None = None  # what `--shape auto` derived the sample shape from (None: the shape was given)
    preset: str | None = None  # the named defaults (spine_keras.presets) the settings were resolved from, if any

    def __post_init__(self) -> None:
        for flag, value, high in (
            ("--augment", self.copies, MAX_COPIES),
            ("--seed", self.seed, MAX_SEED),
            ("--workers", self.workers, MAX_WORKERS),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
                raise UserError(f"{flag} must be a whole number from 0 to {high}, not {value}")
        if self.preset is not None and self.preset not in PRESETS:
            raise UserError(f"preset must be one of {', '.join(PRESETS)}, not {self.preset!r}")
        if self.copies:
            self._check_augment_axes()

    def _check_augment_axes(self) -> None:
        """UserError for flip or low-resolution axes the samples do not have (a trial draw checks them), before
        any worker starts."""
        import numpy as np

        from spine_keras.augment import sample_params

        try:
            sample_params(self.augment, tuple(self.sampling.shape), np.random.default_rng(0))
        except ValueError as exc:
            raise UserError(f"augmentation flags: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain JSON values, the nested stage configs through their own `to_dict`."""
        data = dataclasses.asdict(self)
        data["preprocess"] = self.preprocess.to_dict()
        data["sampling"] = self.sampling.to_dict()
        data["augment"] = self.augment.to_dict()
        if self.plan is None:
            del data["plan"]  # a cube built without the planner keeps the exact settings JSON it always had
        else:
            data["plan"] = self.plan.to_dict()
        if self.preset is None:
            del data["preset"]  # likewise for a cube whose settings were all given, as library callers do
        return data


@dataclasses.dataclass
class BuildReport:
    """What a build produced, for the summary line and tests."""

    path: Path
    samples: int
    cases: int
    skipped: list[dict[str, str]]
    seconds: float


def resolve_classes(label_map: LabelMap, class_names: list[str] | None) -> int | None:
    """Number of classes fixed before reading any case, or None when it must be found from the labels."""
    mapped = label_map.n_classes
    if class_names is not None:
        if len(class_names) < 2:
            raise UserError("--classes needs at least two names, background first")
        if mapped is not None and mapped > len(class_names):
            raise UserError(f"--label-map produces {mapped} classes but --classes names {len(class_names)}")
        return len(class_names)
    return mapped


def _check_files(entry: ListEntry) -> None:
    """CaseError when the entry's image or label file is missing, before a worker is spent on it."""
    for kind, path in (("image", entry.image), ("label", entry.label)):
        if path is None or not path.is_file():
            raise CaseError(
                f"{entry.source}: {kind} file '{path}' not found; fix the path (relative paths "
                "resolve against the list's folder)",
                entry.case_id,
            )


def _ordered_results(jobs: list[CaseJob], workers: int) -> Iterator[tuple[CaseJob, CaseSamples | CaseError]]:
    """Run jobs in worker processes, at most two per worker in flight, yielding results in list order."""
    if workers <= 1:
        for job in jobs:
            yield job, _run(job)
        return
    context = multiprocessing.get_context("spawn")  # no fork: the caller may have threads (TF, h5py)
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_worker_init, initargs=(os.getpid(),)
    ) as pool:
        pending: collections.deque[tuple[CaseJob, Future]] = collections.deque()
        queue = iter(jobs)
        try:
            for job in queue:
                pending.append((job, pool.submit(_run, job)))
                if len(pending) >= 2 * workers:
                    yield _result(*pending.popleft())
            while pending:
                yield _result(*pending.popleft())
        finally:
            for _, future in pending:
                future.cancel()


def _result(job: CaseJob, future: Future) -> tuple[CaseJob, CaseSamples | CaseError]:
    """The job with its worker's result; a worker that died (killed, out of memory) is a UserError naming the case."""
    try:
        return job, future.result()
    except BrokenProcessPool as exc:
        raise UserError(
            f"{job.entry.source}: a worker process died while processing '{job.entry.image}' (killed, or out of "
            "memory?); try fewer --workers"
        ) from exc


def _worker_init(parent: int) -> None:
    """Runs first in every worker: die with the build process, whatever kills it (Linux), and leave at once if
    it is already gone."""
    global _PARENT
    _PARENT = parent
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    _exit_if_orphaned()


def _exit_if_orphaned() -> None:
    """In a worker whose build process has gone: exit now rather than work for nobody."""
    if _PARENT is not None and os.getppid() != _PARENT:
        os._exit(1)


def _run(job: CaseJob) -> CaseSamples | CaseError:
    """Process a case, returning (not raising) its user-level error so the parent decides to skip or stop."""
    _exit_if_orphaned()
    try:
        return process_case(job)
    except CaseError as exc:
        exc.case_id = job.entry.case_id
        return exc
    except UserError as exc:
        return CaseError(str(exc), job.entry.case_id)
    except MemoryError:
        return CaseError(
            f"{job.entry.source}: not enough memory to process '{job.entry.image}'; try fewer --workers, a "
            "coarser --spacing or a smaller --shape",
            job.entry.case_id,
        )


def build_cube(config: CubeConfig, warn: Callable[[str], None] | None = None, progress: bool = True) -> BuildReport:
    """Build the cube described by `config`; raise UserError (and leave nothing behind) on bad input.

    Steps: check the target, plan one job per readable case, stream the samples into a temporary file,
    write the attributes, rename the file onto the target.
    """
    skips = _SkipLog(config.skip_bad, warn or _warn_on_stderr)
    target = check_file(config.output, "cube", force=config.force)
    entries = parse_list(config.list_path)
    _check_not_an_input(target, Path(config.list_path), entries)
    label_map = LabelMap.parse(config.label_map)
    n_classes = resolve_classes(label_map, config.class_names)
    with writer_lock(target, "cube"):
        check_file(target, "cube", force=config.force)  # another build may have finished it while we checked
        jobs = _plan_jobs(config, entries, label_map, n_classes, skips)
        start = time.perf_counter()
        with _atomic_cube_file(target) as handle:
            count, max_label = _write_samples(handle, config, jobs, len(entries), skips, progress)
            if count == 0:
                raise UserError(
                    f"no samples were produced from '{config.list_path}' "
                    f"({len(skips.records)} of {len(entries)} cases skipped; lower --min-foreground?)"
                )
            _finish_attributes(handle, config, n_classes, max_label, skips.records)
    return BuildReport(target, count, len(entries) - len(skips.records), skips.records, time.perf_counter() - start)


def _warn_on_stderr(message: str) -> None:
    """The default warning channel of a build: one `warning:` line on stderr."""
    print(f"warning: {message}", file=sys.stderr)


class _SkipLog:
    """The skip-bad policy: without --skip-bad a bad case ends the build, with it the case is warned and recorded."""

    def __init__(self, skip_bad: bool, warn: Callable[[str], None]):
        self.skip_bad = skip_bad
        self.warn = warn
        self.records: list[dict[str, str]] = []

    def skip(self, entry: ListEntry, error: CaseError) -> None:
        """Re-raise `error` unless bad cases are skipped; else warn and record it for the cube's `skipped`."""
        if not self.skip_bad:
            raise error
        self.warn(f"skipping case {entry.case_id}: {error}")
        self.records.append({"case_id": entry.case_id, "source": entry.source, "reason": str(error)})


def _check_not_an_input(target: Path, list_path: Path, entries: list[ListEntry]) -> None:
    """UserError when the cube would replace the list or one of its volumes (links resolved)."""
    output = target.resolve()
    if output == list_path.resolve():
        raise UserError(f"cube '{target}' is the input list itself; choose another -o")
    for entry in entries:
        if output in (entry.image.resolve(), entry.label.resolve() if entry.label else None):
            raise UserError(f"cube '{target}' is an input volume of {entry.source}; choose another -o")


def _plan_jobs(
    config: CubeConfig, entries: list[ListEntry], label_map: LabelMap, n_classes: int | None, skips: _SkipLog
) -> list[CaseJob]:
    """One job per list entry whose files exist, in list order; a missing file goes through the skip policy."""
    augment = config.augment if config.copies else None
    jobs = []
    for index, entry in enumerate(entries):
        try:
            _check_files(entry)
        except CaseError as exc:
            skips.skip(entry, exc)
            continue
        jobs.append(
            CaseJob(
                entry,
                index,
                config.preprocess,
                config.sampling,
                label_map,
                n_classes,
                augment,
                config.copies,
                config.seed,
            )
        )
    return jobs


@contextlib.contextmanager
def _atomic_cube_file(target: Path) -> Iterator[h5py.File]:
    """An HDF5 file open for writing at a hidden temporary path beside `target`, renamed onto it on success.

    On any failure (a bad case, a full disk, Ctrl-C) the file is closed and the temporary deleted, so a cube either
    exists whole or not at all; temporaries of builds that were killed are removed first. A full disk or a vanished
    folder becomes a UserError naming the cube.
    """
    remove_stale_temps(target)
    tmp = temp_path_for(target)
    handle = None
    try:
        with hdf5_disk_errors(target, "cube"):
            handle = h5py.File(tmp, "w", rdcc_nbytes=0)  # no chunk cache: a full disk fails the write, not the close
            yield handle
            handle.close()  # the last flush: a full disk may show only here
            os.replace(tmp, target)
    except BaseException:
        _discard(handle, tmp)
        raise


@contextlib.contextmanager
def hdf5_disk_errors(path: Path, what: str) -> Iterator[None]:
    """`disk_errors` for HDF5 writes: h5py reports a full disk as an OSError or RuntimeError whose errno is only in
    its text ('errno = 28'), so that errno is lifted into a plain OSError first."""
    with disk_errors(path, what):
        try:
            yield
        except (OSError, RuntimeError) as exc:
            found = re.search(r"errno = (\d+)", str(exc))
            if isinstance(exc, OSError) and exc.errno or found is None:
                raise
            code = int(found.group(1))
            raise OSError(code, os.strerror(code)) from exc


def _discard(handle: h5py.File | None, tmp: Path) -> None:
    """Close a failed cube's file and delete it. HDF5 crashes (SIGSEGV) closing a file whose flush fails on a full
    disk, so the file is first truncated to free the disk; a close that still fails is ignored, the file goes."""
    if handle is not None:
        with contextlib.suppress(OSError):
            os.truncate(tmp, 0)
        with contextlib.suppress(OSError, RuntimeError):
            handle.close()
    tmp.unlink(missing_ok=True)


def _write_samples(
    handle: h5py.File, config: CubeConfig, jobs: list[CaseJob], n_entries: int, skips: _SkipLog, progress: bool
) -> tuple[int, int]:
    """Stream each case's samples into `handle` in list order; returns (samples written, largest label seen)."""
    writer = CubeWriter(handle, config.sampling.shape, config.sampling.channels)
    workers = min(config.workers or os.cpu_count() or 1, max(1, len(jobs)))
    max_label = 0
    bar = tqdm(total=n_entries, unit="case", desc="cases", disable=not progress, initial=len(skips.records))
    for job, result in _ordered_results(jobs, workers):
        bar.update(1)
        if isinstance(result, CaseError):
            skips.skip(job.entry, result)
            continue
        writer.append(result.images, result.labels, result.case_id, result.augmented, result.positions)
        max_label = max(max_label, result.max_label)
    bar.close()
    return writer.count, max_label


def _finish_attributes(
    handle: h5py.File, config: CubeConfig, n_classes: int | None, max_label: int, skipped: list[dict[str, str]]
) -> None:
    """Write the cube's attributes; classes not fixed by --classes/--label-map come from the largest label."""
    classes = n_classes or max(2, max_label + 1)
    names = config.class_names or ["background"] + [f"class_{i}" for i in range(1, classes)]
    write_attrs(handle, _attributes(config, classes, names, skipped))


def _attributes(config: CubeConfig, n_classes: int, names: list[str], skipped: list[dict[str, str]]) -> dict:
    """The cube's root attributes: what it holds, how it was made (settings, source list, version), what was skipped."""
    pre = config.preprocess
    return {
        "format": CUBE_FORMAT,
        "mode": config.sampling.mode,
        "n_classes": n_classes,
        "class_names": names,
        "spacing": list(pre.spacing) if pre.spacing else None,
        "label_map": config.label_map,
        "normalization": {"method": pre.normalization, "percentiles": list(pre.percentiles)},
        "augment": {"copies": config.copies, **config.augment.to_dict()},
        "preprocess": pre.to_dict(),
        "sampling": config.sampling.to_dict(),
        "seed": config.seed,
        "source_list": str(Path(config.list_path).resolve()),
        "spine_keras_version": __version__,
        "skipped": skipped,
        "config": config.to_dict(),
    }
