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
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import h5py
from tqdm import tqdm

from spine_keras import __version__
from spine_keras.augment import AugmentConfig
from spine_keras.cube.samples import CaseJob, CaseSamples, SamplingConfig, process_case
from spine_keras.cube.store import CUBE_FORMAT, CubeWriter, remove_stale_temps, temp_path_for, write_attrs
from spine_keras.errors import CaseError, UserError
from spine_keras.io import ListEntry, parse_list
from spine_keras.preprocess import LabelMap, PreprocessConfig


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

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain JSON values, the nested stage configs through their own `to_dict`."""
        data = dataclasses.asdict(self)
        data["preprocess"] = self.preprocess.to_dict()
        data["sampling"] = self.sampling.to_dict()
        data["augment"] = self.augment.to_dict()
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
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending: collections.deque[tuple[CaseJob, Future]] = collections.deque()
        queue = iter(jobs)
        try:
            for job in queue:
                pending.append((job, pool.submit(_run, job)))
                if len(pending) >= 2 * workers:
                    done_job, future = pending.popleft()
                    yield done_job, future.result()
            while pending:
                done_job, future = pending.popleft()
                yield done_job, future.result()
        finally:
            for _, future in pending:
                future.cancel()


def _run(job: CaseJob) -> CaseSamples | CaseError:
    """Process a case, returning (not raising) its user-level error so the parent decides to skip or stop."""
    try:
        return process_case(job)
    except CaseError as exc:
        exc.case_id = job.entry.case_id
        return exc
    except UserError as exc:
        return CaseError(str(exc), job.entry.case_id)
    except Exception as exc:  # noqa: BLE001 - one bad case must not end the build with a traceback
        return CaseError(
            f"{job.entry.source}: cannot process '{job.entry.image}' ({type(exc).__name__}: {exc})", job.entry.case_id
        )


def build_cube(config: CubeConfig, warn: Callable[[str], None] | None = None, progress: bool = True) -> BuildReport:
    """Build the cube described by `config`; raise UserError (and leave nothing behind) on bad input.

    Steps: check the target, plan one job per readable case, stream the samples into a temporary file,
    write the attributes, rename the file onto the target.
    """
    skips = _SkipLog(config.skip_bad, warn or _warn_on_stderr)
    target = _check_target(config)
    entries = parse_list(config.list_path)
    label_map = LabelMap.parse(config.label_map)
    n_classes = resolve_classes(label_map, config.class_names)
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


def _check_target(config: CubeConfig) -> Path:
    """The output path, after checking it may be written: not there (or --force), in an existing folder."""
    target = Path(config.output)
    if target.exists() and not config.force:
        raise UserError(f"'{target}' already exists; pass --force to replace it or -o to write elsewhere")
    if not target.parent.is_dir():
        raise UserError(f"output folder '{target.parent}' does not exist")
    return target


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

    On any failure (a bad case, Ctrl-C) the temporary file is deleted, so a cube either exists whole or not at all;
    temporaries of builds that were killed are removed first.
    """
    remove_stale_temps(target)
    tmp = temp_path_for(target)
    try:
        with h5py.File(tmp, "w") as handle:
            yield handle
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_samples(
    handle: h5py.File, config: CubeConfig, jobs: list[CaseJob], n_entries: int, skips: _SkipLog, progress: bool
) -> tuple[int, int]:
    """Stream each case's samples into `handle` in list order; returns (samples written, largest label seen)."""
    writer = CubeWriter(handle, config.sampling.shape)
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
