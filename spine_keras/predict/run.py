"""A batch of inputs (volumes and list files) -> label maps (and probabilities, metrics) in an output folder.

A bad input is recorded and skipped, so one unreadable file never stops the rest of the batch.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from spine_keras.bundle import ModelBundle
from spine_keras.choices import FORMATS
from spine_keras.errors import CaseError, UserError
from spine_keras.io import (
    SUPPORTED_SUFFIXES,
    Volume,
    case_id_from_path,
    parse_list,
    read_volume,
    suffix_of,
    write_volume,
)
from spine_keras.predict.metrics import CaseScores, case_scores, format_table, write_scores_csv
from spine_keras.predict.model import Segmenter
from spine_keras.predict.volume import predict_volume

METRICS_CSV = "metrics.csv"
LIST_SUFFIXES = (".txt", ".csv", ".lst", ".list")


@dataclasses.dataclass
class PredictOptions:
    """How to predict and what to write."""

    out_dir: Path = Path("predictions")
    overlap: float = 0.5
    batch_size: int = 4
    probabilities: bool = False
    format: str | None = None  # a FORMATS key; None keeps each input's format

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        if not 0.0 <= self.overlap < 1.0:
            raise UserError(f"--overlap must lie in [0, 1), got {self.overlap}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.format is not None and self.format not in FORMATS:
            raise UserError(f"--format must be one of {', '.join(FORMATS)}, got '{self.format}'")


@dataclasses.dataclass(frozen=True)
class Job:
    """One volume to segment, with its optional ground truth."""

    source: str  # "list.txt line 3" for list entries, "" for volumes given directly
    image: Path
    label: Path | None
    case_id: str


@dataclasses.dataclass
class Report:
    """What a batch produced: written files, metrics, and one message per failed input."""

    outputs: dict[str, list[Path]] = dataclasses.field(default_factory=dict)
    scores: list[CaseScores] = dataclasses.field(default_factory=list)
    failures: list[str] = dataclasses.field(default_factory=list)
    metrics_csv: Path | None = None
    table: str = ""


def _expand(path: Path, label: Path | None) -> list[Job]:
    """The jobs one INPUT names: itself if a volume, its lines if a list file."""
    if suffix_of(path) in SUPPORTED_SUFFIXES:
        return [Job("", path, label, case_id_from_path(path))]
    if path.suffix.lower() not in LIST_SUFFIXES:
        raise UserError(
            f"'{path}': unsupported input type; give a volume ({', '.join(SUPPORTED_SUFFIXES)}) "
            f"or a list file ({', '.join(LIST_SUFFIXES)})"
        )
    return [Job(e.source, e.image, e.label, e.case_id) for e in parse_list(path, require_label=False)]


def collect_jobs(inputs: Sequence[Path | str], labels: Sequence[Path | str] = ()) -> tuple[list[Job], list[str]]:
    """Expand INPUTs (volumes, list files) into jobs with unique case ids; bad list inputs become failures."""
    n_volumes = sum(suffix_of(p) in SUPPORTED_SUFFIXES for p in inputs)
    if labels and len(labels) != n_volumes:
        raise UserError(
            f"--label was given {len(labels)} time(s) for {n_volumes} volume input(s); give one "
            "ground truth per volume, in the same order (list files carry their own label column)"
        )
    volume_labels = iter(Path(p) for p in labels)
    jobs, failures, seen = [], [], set()
    for raw in inputs:
        path = Path(raw)
        label = next(volume_labels, None) if suffix_of(path) in SUPPORTED_SUFFIXES else None
        try:
            found = _expand(path, label)
        except UserError as exc:
            failures.append(str(exc))
            continue
        for job in found:
            case_id, n = job.case_id, 1
            while case_id in seen:
                n += 1
                case_id = f"{job.case_id}_{n}"
            seen.add(case_id)
            jobs.append(dataclasses.replace(job, case_id=case_id))
    return jobs, failures


def _where(job: Job) -> str:
    return f"{job.source}: " if job.source else ""


def read_truth(job: Job, image: Volume, bundle: ModelBundle) -> np.ndarray:
    """The ground truth as class ids (through the bundle's label map), on the image's grid."""
    assert job.label is not None
    label = read_volume(job.label, job.source or None)
    if label.shape != image.shape or label.channels != 1:
        raise CaseError(
            f"{_where(job)}label '{job.label}' has shape {label.array.shape} but image '{job.image}' has "
            f"{image.shape}; they must match voxel for voxel"
        )
    try:
        return bundle.truth_map().apply(label.array, bundle.n_classes)
    except CaseError as exc:
        raise CaseError(f"{_where(job)}label '{job.label}': {exc}") from exc


def output_path(out_dir: Path, job: Job, kind: str, fmt: str | None) -> Path:
    """`OUT/<case>_<kind><suffix>`, the input's suffix unless a format is forced."""
    return out_dir / f"{job.case_id}_{kind}{FORMATS[fmt] if fmt else suffix_of(job.image)}"


def predict_job(job: Job, segmenter: Segmenter, options: PredictOptions) -> tuple[list[Path], CaseScores | None]:
    """Segment one job, write its outputs, score it when ground truth is given."""
    image = read_volume(job.image, job.source or None)
    truth = read_truth(job, image, segmenter.bundle) if job.label is not None else None
    try:
        prediction = predict_volume(image, segmenter, options.overlap, options.batch_size, options.probabilities)
    except CaseError as exc:
        raise CaseError(f"{_where(job)}'{job.image}': {exc}") from exc
    written = [output_path(options.out_dir, job, "seg", options.format)]
    write_volume(prediction.labels, written[0])
    if prediction.probabilities is not None:
        written.append(output_path(options.out_dir, job, "prob", options.format))
        write_volume(prediction.probabilities, written[1])
    scores = None
    if truth is not None:
        scores = case_scores(job.case_id, prediction.labels.array, truth, segmenter.bundle.n_classes)
    return written, scores


def predict_inputs(
    segmenter: Segmenter,
    inputs: Sequence[Path | str],
    labels: Sequence[Path | str] = (),
    options: PredictOptions | None = None,
    log: Callable[[str], None] = print,
) -> Report:
    """Segment every input; failures are collected in the report and the rest still run."""
    options = options or PredictOptions()
    jobs, failures = collect_jobs(inputs, labels)
    report = Report(failures=failures)
    for job in jobs:
        start = time.perf_counter()
        try:
            written, scores = predict_job(job, segmenter, options)
        except UserError as exc:
            report.failures.append(str(exc))
            log(f"{job.case_id}: failed")
            continue
        except Exception as exc:  # noqa: BLE001 - one broken input must not stop the others
            report.failures.append(
                f"{job.source or job.image}: unexpected {type(exc).__name__} on '{job.image}': {exc}"
            )
            log(f"{job.case_id}: failed")
            continue
        report.outputs[job.case_id] = written
        if scores is not None:
            report.scores.append(scores)
        log(f"{job.case_id}: {time.perf_counter() - start:.1f} s -> {', '.join(str(p) for p in written)}")
    if report.scores:
        names = list(segmenter.bundle.class_names)
        report.table = format_table(report.scores, names)
        report.metrics_csv = write_scores_csv(report.scores, names, options.out_dir / METRICS_CSV)
    return report
