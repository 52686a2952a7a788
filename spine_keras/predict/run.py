"""A batch of inputs (volumes and list files) -> label maps (and probabilities, metrics) in an output folder.

A bad input is recorded and skipped, so one unreadable file never stops the rest of the batch; each input is read
and prepared before the model is loaded, so a batch of bad inputs never starts TensorFlow. A full disk stops the
batch: the case being written is removed, the cases written before it stay (each one complete) and are listed.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from spine_keras.bundle import ModelBundle
from spine_keras.choices import FORMATS
from spine_keras.destinations import check_folder, describe_os_error
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
from spine_keras.predict.postprocess import Postprocess
from spine_keras.predict.volume import Prediction, predict_prepared, prepare_volume
from spine_keras.prepare import Prepared
from spine_keras.preprocess import LabelMap, ignore_above_labels

METRICS_CSV = "metrics.csv"
DISK_FULL_TEXT = "No space left on device"  # how SimpleITK's writers report a full disk (a RuntimeError)
LIST_SUFFIXES = (".txt", ".csv", ".lst", ".list")


@dataclasses.dataclass
class PredictOptions:
    """How to predict and what to write."""

    out_dir: Path = Path("predictions")
    overlap: float = 0.5
    batch_size: int = 4
    probabilities: bool = False
    format: str | None = None  # a FORMATS key; None keeps each input's format
    label_map: str | None = None  # maps the ground truth's ids to classes instead of the model's own label map
    postprocess: str = "none"  # none, largest or min-size:ML (see spine_keras.predict.postprocess)

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        self.postprocess = str(Postprocess.parse(self.postprocess))
        if not 0.0 <= self.overlap < 1.0:
            raise UserError(f"--overlap must lie in [0, 1), got {self.overlap}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.format is not None and self.format not in FORMATS:
            raise UserError(f"--format must be one of {', '.join(FORMATS)}, got '{self.format}'")
        if self.label_map is not None:
            LabelMap.parse(self.label_map)

    def truth_map(self, bundle: ModelBundle) -> LabelMap:
        """The label map for the ground truth: `label_map` when given (UserError if it makes more classes than the
        model has), else the bundle's own."""
        if self.label_map is None:
            return bundle.truth_map()
        truth_map = LabelMap.parse(self.label_map)
        if (truth_map.n_classes or 0) > bundle.n_classes:
            raise UserError(
                f"--label-map '{self.label_map}' makes {truth_map.n_classes} classes but the model has "
                f"{bundle.n_classes} ({', '.join(bundle.class_names)})"
            )
        return truth_map


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


def read_truth(job: Job, image: Volume, bundle: ModelBundle, truth_map: LabelMap | None = None) -> np.ndarray:
    """The ground truth as class ids (through `truth_map`, by default the bundle's label map), on the image's
    grid; above its top labelled row IGNORE (not scored) when the model was trained so (`ignore_above_labels`)."""
    assert job.label is not None
    label = read_volume(job.label, job.source or None)
    if label.shape != image.shape or label.channels != 1:
        raise CaseError(
            f"{_where(job)}label '{job.label}' has shape {label.array.shape} but image '{job.image}' has "
            f"{image.shape}; they must match voxel for voxel"
        )
    try:
        truth_map = truth_map if truth_map is not None else bundle.truth_map()
        truth = truth_map.apply(label.array, bundle.n_classes)
    except CaseError as exc:
        raise CaseError(f"{_where(job)}label '{job.label}': {exc}") from exc
    return ignore_above_labels(truth) if bundle.preprocess.ignore_above_labels else truth


def output_path(out_dir: Path, job: Job, kind: str, fmt: str | None) -> Path:
    """`OUT/<case>_<kind><suffix>`, the input's suffix unless a format is forced."""
    return out_dir / f"{job.case_id}_{kind}{FORMATS[fmt] if fmt else suffix_of(job.image)}"


@dataclasses.dataclass
class CaseInput:
    """One job's inputs, read, checked and prepared: everything before the model runs."""

    image: Volume
    truth: np.ndarray | None
    case: Prepared


def read_job(job: Job, bundle: ModelBundle, truth_map: LabelMap | None = None) -> CaseInput:
    """Read, check and prepare one job's image (and ground truth, through `truth_map`, by default the bundle's);
    CaseError naming it when it cannot be."""
    image = read_volume(job.image, job.source or None)
    truth = read_truth(job, image, bundle, truth_map) if job.label is not None else None
    try:
        case = prepare_volume(image, bundle)
    except CaseError as exc:
        raise CaseError(f"{_where(job)}'{job.image}': {exc}") from exc
    return CaseInput(image, truth, case)


def _files(folder: Path) -> set[Path]:
    return set(folder.iterdir()) if folder.is_dir() else set()


def _write_failure(path: Path, exc: Exception, written: int) -> UserError | None:
    """The one-line UserError for an environment error (full disk, permissions) met writing `path`; None if the
    error is something else."""
    if isinstance(exc, OSError):
        reason = describe_os_error(exc, path)
    else:
        reason = f"no space left on the device: '{path}'" if DISK_FULL_TEXT in str(exc) else None
    if reason is None:
        return None
    return UserError(
        f"cannot write '{path}' ({reason}); stopped after {written} complete case(s), listed above; "
        "nothing else was left in the output folder"
    )


def _check_room(volume: Volume, path: Path, written: int) -> None:
    """UserError when the output folder has less free space than `volume` uncompressed: some writers (NIfTI)
    report a full disk only on stderr and leave a truncated file, so a write must not start without room."""
    free = shutil.disk_usage(path.parent).free
    if free < volume.array.nbytes:
        raise UserError(
            f"cannot write '{path}' (no space left on the device: {free} bytes free, up to "
            f"{volume.array.nbytes} needed); stopped after {written} complete case(s), listed above"
        )


def write_case(job: Job, prediction: Prediction, options: PredictOptions, written: int) -> list[Path]:
    """Write one case's outputs. A full disk removes whatever this case wrote, then raises a UserError naming
    the path; `written` (complete cases so far) goes into its message."""
    kinds = [("seg", prediction.labels), ("prob", prediction.probabilities)]
    outputs = [(output_path(options.out_dir, job, kind, options.format), v) for kind, v in kinds if v is not None]
    before = _files(options.out_dir)
    for path, volume in outputs:
        try:
            _check_room(volume, path, written)
            write_volume(volume, path)
        except (OSError, RuntimeError, UserError) as exc:
            for leftover in _files(options.out_dir) - before:  # detached headers and data files included
                leftover.unlink(missing_ok=True)
            failure = exc if isinstance(exc, UserError) else _write_failure(path, exc, written)
            if failure is None:
                raise
            raise failure from exc
    return [path for path, _ in outputs]


def run_case(
    job: Job, given: CaseInput, segmenter: Segmenter, options: PredictOptions, written: int
) -> tuple[list[Path], CaseScores | None]:
    """Predict one read job and write its outputs (making the output folder if needed); returns (files, scores)."""
    prediction = predict_prepared(
        given.case,
        given.image,
        segmenter,
        options.overlap,
        options.batch_size,
        options.probabilities,
        options.postprocess,
    )
    options.out_dir.mkdir(exist_ok=True)
    files = write_case(job, prediction, options, written)
    if given.truth is None:
        return files, None
    labels = prediction.labels  # in the input's geometry, voxel for voxel with the ground truth
    return files, case_scores(job.case_id, labels.array, given.truth, segmenter.bundle.n_classes, labels.spacing)


def predict_inputs(
    segmenter: Segmenter,
    inputs: Sequence[Path | str],
    labels: Sequence[Path | str] = (),
    options: PredictOptions | None = None,
    log: Callable[[str], None] = print,
) -> Report:
    """Segment every input; bad inputs are collected in the report and the rest still run. A full disk or a
    refused model stops the batch with a UserError (the output folder, if this call made it and it stayed empty,
    is removed)."""
    options = options or PredictOptions()
    truth_map = options.truth_map(segmenter.bundle)
    jobs, failures = collect_jobs(inputs, labels)
    check_folder(options.out_dir, "output folder", create_parents=False)
    report = Report(failures=failures)
    made_out_dir = not options.out_dir.exists()
    try:
        for job in jobs:
            try:
                given = read_job(job, segmenter.bundle, truth_map)
            except UserError as exc:
                report.failures.append(str(exc))
                log(f"{job.case_id}: failed")
                continue
            segmenter.load()
            start = time.perf_counter()
            files, scores = run_case(job, given, segmenter, options, len(report.outputs))
            report.outputs[job.case_id] = files
            report.scores += [scores] if scores is not None else []
            log(f"{job.case_id}: {time.perf_counter() - start:.1f} s -> {', '.join(str(p) for p in files)}")
        if report.scores:
            names = list(segmenter.bundle.class_names)
            report.table = format_table(report.scores, names)
            report.metrics_csv = _write_metrics(report.scores, names, options.out_dir / METRICS_CSV)
    except BaseException:
        if made_out_dir and options.out_dir.is_dir() and not any(options.out_dir.iterdir()):
            os.rmdir(options.out_dir)
        raise
    return report


def _write_metrics(scores: list[CaseScores], names: list[str], path: Path) -> Path:
    """The metrics CSV; a full disk is a UserError naming it."""
    try:
        return write_scores_csv(scores, names, path)
    except OSError as exc:
        reason = describe_os_error(exc, path)
        if reason is None:
            raise
        raise UserError(f"cannot write '{path}' ({reason}); the segmentations listed above are complete") from exc
