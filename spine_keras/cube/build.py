"""Build a cube from a list: cases processed in parallel workers, written in list order as they finish.

Memory stays bounded by a few cases in flight (at most two per worker) whatever the list's length; the cube
is written to a hidden temporary file beside the target and renamed only when complete.
"""

from __future__ import annotations

import collections
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
    """Build the cube described by `config`; raise UserError (and leave nothing behind) on bad input."""
    warn = warn or (lambda message: print(f"warning: {message}", file=sys.stderr))
    target = Path(config.output)
    if target.exists() and not config.force:
        raise UserError(f"'{target}' already exists; pass --force to replace it or -o to write elsewhere")
    if not target.parent.is_dir():
        raise UserError(f"output folder '{target.parent}' does not exist")
    entries = parse_list(config.list_path)
    label_map = LabelMap.parse(config.label_map)
    n_classes = resolve_classes(label_map, config.class_names)
    skipped: list[dict[str, str]] = []
    jobs = []
    for index, entry in enumerate(entries):
        try:
            _check_files(entry)
        except CaseError as exc:
            if not config.skip_bad:
                raise
            warn(f"skipping case {entry.case_id}: {exc}")
            skipped.append({"case_id": entry.case_id, "source": entry.source, "reason": str(exc)})
            continue
        jobs.append(
            CaseJob(
                entry,
                index,
                config.preprocess,
                config.sampling,
                label_map,
                n_classes,
                config.augment if config.copies else None,
                config.copies,
                config.seed,
            )
        )
    workers = config.workers or os.cpu_count() or 1
    remove_stale_temps(target)
    tmp = temp_path_for(target)
    start = time.perf_counter()
    max_label = 0
    try:
        with h5py.File(tmp, "w") as handle:
            writer = CubeWriter(handle, config.sampling.shape)
            bar = tqdm(total=len(entries), unit="case", desc="cases", disable=not progress, initial=len(skipped))
            for job, result in _ordered_results(jobs, min(workers, max(1, len(jobs)))):
                bar.update(1)
                if isinstance(result, CaseError):
                    if not config.skip_bad:
                        raise result
                    warn(f"skipping case {job.entry.case_id}: {result}")
                    skipped.append({"case_id": job.entry.case_id, "source": job.entry.source, "reason": str(result)})
                    continue
                writer.append(result.images, result.labels, result.case_id, result.augmented, result.positions)
                max_label = max(max_label, result.max_label)
            bar.close()
            if writer.count == 0:
                raise UserError(
                    f"no samples were produced from '{config.list_path}' "
                    f"({len(skipped)} of {len(entries)} cases skipped; lower --min-foreground?)"
                )
            classes = n_classes or max(2, max_label + 1)
            names = config.class_names or ["background"] + [f"class_{i}" for i in range(1, classes)]
            write_attrs(handle, _attributes(config, classes, names, skipped))
            count = writer.count
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return BuildReport(target, count, len(entries) - len(skipped), skipped, time.perf_counter() - start)


def _attributes(config: CubeConfig, n_classes: int, names: list[str], skipped: list[dict[str, str]]) -> dict:
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
