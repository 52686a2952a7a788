"""Validate a cube and summarize it (samples per case, class frequencies, intensities); draw a montage."""

from __future__ import annotations

import collections
import dataclasses
import textwrap
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from spine_keras import outputs
from spine_keras.cube.store import DATASETS, read_attrs
from spine_keras.errors import UserError
from spine_keras.io import one_line
from spine_keras.prepare import SamplingConfig
from spine_keras.preprocess import IGNORE, PreprocessConfig

BLOCK = 64  # samples read at a time: memory stays bounded whatever the cube's size
TITLE_CHARS_PER_INCH = 14  # a 9-point title's characters per inch of figure: longer titles wrap, not clip


@dataclasses.dataclass
class CubeReport:
    """What check_cube found: problems (empty when valid) and the summary figures."""

    path: Path
    attrs: dict[str, Any]
    problems: list[str]
    samples: int = 0
    originals: int = 0
    per_case: dict[str, int] = dataclasses.field(default_factory=dict)
    class_voxels: list[int] = dataclasses.field(default_factory=list)
    ignored_voxels: int = 0  # label voxels holding IGNORE: left out of the loss and the metrics
    intensity: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """Human-readable summary, one fact a line."""
        a = self.attrs
        norm = a.get("normalization")
        lines = [
            f"cube {self.path}: {'OK' if self.ok else 'INVALID'}",
            f"  mode {a.get('mode')}, {self.samples} samples ({self.originals} originals, "
            f"{self.samples - self.originals} augmented), {len(self.per_case)} cases",
            f"  classes ({a.get('n_classes')}): {', '.join(a.get('class_names') or [])}",
            f"  label map {a.get('label_map')!r}, spacing {a.get('spacing')}, normalization "
            f"{norm.get('method') if isinstance(norm, dict) else norm}, seed {a.get('seed')}",
        ]
        sampling = a.get("sampling") or {}
        shape = sampling.get("shape")
        if shape:
            lines.append(f"  sample shape {tuple(shape)}, axis {sampling.get('axis')}")
        total = sum(self.class_voxels) or 1
        names = a.get("class_names") or [str(i) for i in range(len(self.class_voxels))]
        freqs = ", ".join(
            f"{names[i] if i < len(names) else i} {100 * v / total:.2f}%" for i, v in enumerate(self.class_voxels)
        )
        lines.append(f"  class voxel frequency: {freqs}")
        if self.ignored_voxels:
            share = 100 * self.ignored_voxels / (sum(self.class_voxels) + self.ignored_voxels)
            lines.append(f"  ignored voxels (id {IGNORE}): {self.ignored_voxels} ({share:.2f}% of all label voxels)")
        if self.intensity:
            i = self.intensity
            lines.append(
                f"  intensity: mean {i['mean']:.3f}, std {i['std']:.3f}, min {i['min']:.3f}, max {i['max']:.3f}"
            )
        counts = sorted(self.per_case.items())
        lines.append("  samples per case: " + ", ".join(f"{c} {n}" for c, n in counts))
        skipped = a.get("skipped") or []
        if skipped:
            lines.append(f"  skipped cases ({len(skipped)}): " + ", ".join(s["case_id"] for s in skipped))
        lines.extend(f"  problem: {p}" for p in self.problems)
        return "\n".join(lines)


def _layout_problems(handle: h5py.File, attrs: dict[str, Any]) -> list[str]:
    """Datasets present, of the right kind, dtype, rank and length; then the attributes (cheap: no sample read)."""
    problems = [f"missing dataset '{name}'" for name in DATASETS if name not in handle and name != "positions"]
    kinds = {name: isinstance(handle[name], h5py.Dataset) for name in DATASETS if name in handle}
    problems += [f"'{name}' is not a dataset" for name, is_dataset in kinds.items() if not is_dataset]
    if problems:
        return problems
    images, labels = handle["images"], handle["labels"]
    rank = 2 if attrs.get("mode") == "2d" else 3
    if images.dtype != np.float32:
        problems.append(f"images are {images.dtype}, expected float32")
    if labels.dtype != np.uint8:
        problems.append(f"labels are {labels.dtype}, expected uint8")
    sampling = attrs.get("sampling") if isinstance(attrs.get("sampling"), dict) else {}
    channels = 2 * int(sampling.get("context") or 0) + 1  # 2.5D cubes: neighbouring slices as channels
    if images.ndim != rank + 2 or images.shape[-1] != channels:
        problems.append(f"images have shape {images.shape}, expected (N, {rank} spatial sides, {channels})")
    if labels.ndim != rank + 1 or labels.shape[1:] != images.shape[1:-1]:
        problems.append(f"labels have shape {labels.shape}, not matching images {images.shape}")
    if h5py.check_string_dtype(handle["case_ids"].dtype) is None:
        problems.append(f"case_ids are {handle['case_ids'].dtype}, expected strings")
    for name in ("augmented", "positions"):
        if name in handle and handle[name].dtype.kind not in "iu":
            problems.append(f"{name} are {handle[name].dtype}, expected integers")
    lengths = {name: handle[name].shape[0] if handle[name].ndim else None for name in DATASETS if name in handle}
    if len(set(lengths.values())) > 1:
        problems.append(f"datasets have different lengths: {lengths}")
    return problems + _attribute_problems(attrs, images.shape[1:-1])


def _attribute_problems(attrs: dict[str, Any], sample_shape: tuple[int, ...]) -> list[str]:
    """What is wrong with the attributes training and prediction rely on: mode, classes, sampling, preprocessing."""
    problems = []
    if attrs.get("mode") not in ("2d", "3d"):
        problems.append(f"attribute mode is {attrs.get('mode')!r}, expected '2d' or '3d'")
    n_classes, names = attrs.get("n_classes"), attrs.get("class_names")
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or not 2 <= n_classes <= 256:
        problems.append(f"attribute n_classes is {n_classes!r}, expected an integer from 2 to 256")
    elif not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        problems.append(f"attribute class_names is {names!r}, expected a list of names")
    elif len(names) != n_classes:
        problems.append(f"{len(names)} class names for {n_classes} classes")
    sampling = attrs.get("sampling")
    if sampling is not None:
        problems += _settings_problem("sampling", SamplingConfig, sampling)
        if isinstance(sampling, dict) and tuple(sampling.get("shape") or ()) != tuple(sample_shape):
            problems.append(f"attribute sampling has shape {sampling.get('shape')}, but the samples are {sample_shape}")
    if attrs.get("preprocess") is not None:
        problems += _settings_problem("preprocess", PreprocessConfig, attrs["preprocess"])
    return problems


def _settings_problem(name: str, cls: type, value: Any) -> list[str]:
    """[] when the attribute `name` rebuilds its settings class, else the one problem it has."""
    if not isinstance(value, dict):
        return [f"attribute {name} is {value!r}, expected a JSON object"]
    try:
        cls.from_dict(value)
    except (UserError, TypeError, ValueError) as exc:
        return [f"attribute {name} is invalid: {exc}"]
    return []


def check_cube(path: Path | str, scan: bool = True) -> CubeReport:
    """Validate layout, dtypes, lengths and attributes (cheap), then, with `scan`, finite values and label range,
    streaming every sample in blocks. Training runs the cheap checks always and the scan when asked."""
    path = Path(path)
    attrs = read_attrs(path)
    report = CubeReport(path, attrs, [])
    try:
        with h5py.File(path, "r") as handle:
            report.problems = _layout_problems(handle, attrs)
            if report.problems or not scan:
                return report
            _scan(handle, attrs, report)
    except (OSError, RuntimeError, ValueError) as exc:  # h5py's answers to a truncated file or a corrupt chunk
        report.problems.append(f"cannot read the samples ({one_line(str(exc))}); the file is truncated or corrupt")
    return report


def _scan(handle: h5py.File, attrs: dict[str, Any], report: CubeReport) -> None:
    """Fill `report` from the cube's datasets: sample and case counts, class voxels, intensity, bad values."""
    images, labels = handle["images"], handle["labels"]
    n = images.shape[0]
    n_classes = int(attrs["n_classes"])
    case_ids = handle["case_ids"].asstr()[:]
    augmented = handle["augmented"][:]
    report.samples, report.originals = n, int(np.count_nonzero(augmented == 0))
    report.per_case = dict(collections.Counter(case_ids.tolist()))
    counts, bad_values, intensity = _stream_statistics(images, labels)
    report.ignored_voxels = int(counts[IGNORE]) if n_classes <= IGNORE else 0
    out_of_range = counts[n_classes:].copy()
    if n_classes <= IGNORE:
        out_of_range[IGNORE - n_classes] = 0
    if bad_values:
        report.problems.append(f"{bad_values} image values are NaN or infinite")
    if out_of_range.any():
        report.problems.append(
            f"{int(out_of_range.sum())} label voxels hold ids >= n_classes ({n_classes}) other than the ignore id "
            f"{IGNORE}: {np.nonzero(out_of_range)[0] + n_classes}"
        )
    if n == 0:
        report.problems.append("the cube holds no samples")
    report.class_voxels = counts[:n_classes].tolist()
    if intensity is not None:
        report.intensity = intensity


def _stream_statistics(images: h5py.Dataset, labels: h5py.Dataset) -> tuple[np.ndarray, int, dict[str, float] | None]:
    """One pass in blocks of BLOCK samples: voxels per label id (0..255), the count of non-finite image values,
    and the finite values' mean, std, min and max (None when there are none)."""
    counts = np.zeros(256, np.int64)
    total, total_sq, voxels = 0.0, 0.0, 0
    low, high = np.inf, -np.inf
    bad_values = 0
    for start in range(0, images.shape[0], BLOCK):
        block = images[start : start + BLOCK]
        finite = np.isfinite(block)
        bad_values += int(block.size - np.count_nonzero(finite))
        values = block[finite].astype(np.float64)
        total += float(values.sum())
        total_sq += float(np.square(values).sum())
        voxels += values.size
        if values.size:
            low, high = min(low, float(values.min())), max(high, float(values.max()))
        counts += np.bincount(labels[start : start + BLOCK].ravel(), minlength=256)
    if not voxels:
        return counts, bad_values, None
    mean = total / voxels
    std = float(np.sqrt(max(total_sq / voxels - mean**2, 0.0)))
    return counts, bad_values, {"mean": mean, "std": std, "min": low, "max": high}


def montage(
    path: Path | str, png: Path | str, rows: int = 4, copies: int = 3, seed: int = 0, title: str | None = None
) -> Path:
    """Draw random original samples with their label overlaid, each beside up to `copies` augmented copies.

    Each class has its fixed colour (`outputs.class_colour`), ignored voxels are grey, and a legend names the
    cube's classes; `title` replaces the default one (the cube's file name).
    """
    plt = outputs.pyplot()
    png = Path(png)
    attrs = read_attrs(path)
    with h5py.File(path, "r") as handle:
        case_ids = handle["case_ids"].asstr()[:]
        augmented = handle["augmented"][:]
        positions = handle["positions"][:] if "positions" in handle else np.arange(len(case_ids))
        originals = np.nonzero(augmented == 0)[0]
        chosen = np.sort(np.random.default_rng(seed).choice(originals, size=min(rows, len(originals)), replace=False))
        cols = 1 + min(copies, int(augmented.max(initial=0)))
        ignored = False
        fig, axes = plt.subplots(len(chosen), cols, figsize=(2.6 * cols, 2.6 * len(chosen) + 0.7), squeeze=False)
        for row, index in enumerate(chosen):
            same = np.nonzero((case_ids == case_ids[index]) & (positions == positions[index]))[0]
            for col, sample in enumerate(same[:cols]):
                image, label = handle["images"][sample], handle["labels"][sample]
                image = image[..., image.shape[-1] // 2]  # the centre slice of a 2.5D sample
                if image.ndim == 3:  # 3D: show the middle slice of the last axis
                    image, label = image[..., image.shape[-1] // 2], label[..., label.shape[-1] // 2]
                ax = axes[row, col]
                ax.imshow(image, cmap="gray")
                ax.imshow(outputs.label_overlay(label), interpolation="nearest")
                ignored = ignored or bool(np.any(label == IGNORE))
                aug = f" aug {augmented[sample]}" if augmented[sample] else ""
                ax.set_title(f"{case_ids[sample]} #{positions[sample]}{aug}", fontsize=7)
            for ax in axes[row]:
                ax.axis("off")
        title = title or f"{Path(path).name}: originals and augmented copies"
        fig.suptitle(textwrap.fill(title, width=int(fig.get_figwidth() * TITLE_CHARS_PER_INCH)), fontsize=9)
        names = attrs.get("class_names") or [f"class_{i}" for i in range(int(attrs["n_classes"]))]
        outputs.add_class_legend(fig, list(names), ignored=ignored)
        fig.tight_layout(rect=(0, 0.25 / fig.get_figheight(), 1, 1))
        outputs.save_figure(fig, png, dpi=80)
    return png
