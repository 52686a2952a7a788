"""Preprocessing shared by the cube builder and prediction: resampling, intensity normalization,
label remapping, ROI crop and fitting to the network's input shape.

Everything here is numpy/scipy on arrays indexed like `spine_keras.io.Volume.array`; no Keras, no files.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence

import numpy as np

from spine_keras.choices import FITS, INTENSITY_NORMALIZATIONS, INTERPOLATIONS
from spine_keras.errors import CaseError, UserError

NORMALIZATIONS = INTENSITY_NORMALIZATIONS
IGNORE = 255  # label id of voxels left out of the loss, the metrics and the evaluation
_RULE = re.compile(r"^\s*(\*|\d+)(?:\s*-\s*(\d+))?\s*:\s*(\d+|ignore)\s*$", re.IGNORECASE)


@dataclasses.dataclass
class PreprocessConfig:
    """How a volume becomes network input; recorded in every cube and model bundle so prediction repeats it."""

    spacing: tuple[float, ...] | None = None  # mm per axis; None keeps each volume's own spacing
    interpolation: str = "linear"  # image resampling: linear or cubic (labels always nearest)
    normalization: str = "zscore"  # zscore, percentile (clip + min-max) or minmax
    percentiles: tuple[float, float] = (0.5, 99.5)
    crop_roi_mm: float | None = None  # crop to the labelled region plus this margin (training only)
    auto_crop_mm: float | None = None  # crop to the body found in the image plus this margin (cube and prediction)
    fit: str = "resize"  # bring samples to the target shape by resizing, or by centre pad/crop (keeps mm)
    ignore_above_labels: bool = False  # truth above the top labelled row (axis 0) is IGNORE: not annotated there

    def __post_init__(self) -> None:
        if self.normalization not in NORMALIZATIONS:
            raise UserError(f"unknown normalization '{self.normalization}'; use one of {', '.join(NORMALIZATIONS)}")
        if self.interpolation not in INTERPOLATIONS:
            raise UserError(f"unknown interpolation '{self.interpolation}'; use linear or cubic")
        if self.fit not in FITS:
            raise UserError(f"unknown fit '{self.fit}'; use resize or pad")
        lo, hi = self.percentiles
        if not 0.0 <= lo < hi <= 100.0:
            raise UserError(f"percentiles {lo},{hi} must satisfy 0 <= low < high <= 100")
        if self.spacing is not None and not all(math.isfinite(s) and s > 0 for s in self.spacing):
            raise UserError(f"spacing {','.join(f'{s:g}' for s in self.spacing)} must be positive finite mm")
        if self.crop_roi_mm is not None and not (math.isfinite(self.crop_roi_mm) and self.crop_roi_mm >= 0):
            raise UserError(f"--crop-roi margin must be a finite number >= 0 mm, not {self.crop_roi_mm:g}")
        self._check_auto_crop()
        if not isinstance(self.ignore_above_labels, bool):
            raise UserError(f"ignore_above_labels must be true or false, not {self.ignore_above_labels!r}")

    def _check_auto_crop(self) -> None:
        """UserError for a bad --auto-crop margin, or --auto-crop with --crop-roi (one crop at a time)."""
        if self.auto_crop_mm is None:
            return
        if not (math.isfinite(self.auto_crop_mm) and self.auto_crop_mm >= 0):
            raise UserError(f"--auto-crop margin must be a finite number >= 0 mm, not {self.auto_crop_mm:g}")
        if self.crop_roi_mm is not None:
            raise UserError("--auto-crop and --crop-roi both crop the volume; choose one")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PreprocessConfig:
        data = dict(data)
        for key in ("spacing", "percentiles"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


@dataclasses.dataclass
class LabelMap:
    """Maps the published per-structure label ids to semantic classes, e.g. '1-7:1' or '1-5:1,6-10:2,*:0'.

    0 maps to 0 unless a rule says otherwise; `*:c` maps every other id to c. An id covered by no rule is an
    error, so a forgotten structure never silently becomes background. The target `ignore` (e.g. '6-9:ignore',
    '*:ignore') maps ids to IGNORE: voxels a data set does not annotate, left out of the loss and the metrics.
    """

    spec: str | None = None
    rules: list[tuple[int, int, int]] = dataclasses.field(default_factory=list)  # (low, high, class)
    default: int | None = None

    @classmethod
    def parse(cls, spec: str | None) -> LabelMap:
        if spec is None or not spec.strip():
            return cls(None)
        rules: list[tuple[int, int, int]] = []
        default = None
        for part in spec.split(","):
            match = _RULE.match(part)
            if not match:
                raise UserError(
                    f"--label-map: cannot read rule '{part.strip()}'; write 'ID:CLASS', 'LOW-HIGH:CLASS' "
                    "or '*:CLASS', comma-separated, e.g. '1-7:1'"
                )
            low, high, target = match.groups()
            target_id = _target_id(target, part.strip())
            if low == "*":
                default = target_id
                continue
            low_i, high_i = int(low), int(high if high is not None else low)
            if high_i < low_i:
                raise UserError(f"--label-map: range '{part.strip()}' runs backwards")
            rules.append((low_i, high_i, target_id))
        mapping = cls(spec.strip(), rules, default)
        mapping._check_unambiguous(spec.count("*"))
        return mapping

    def _check_unambiguous(self, stars: int) -> None:
        """UserError for an id given two rules, more than one `*` rule, or a map that leaves no class but
        background (a cube of one class cannot be trained)."""
        if stars > 1:
            raise UserError(f"--label-map '{self.spec}' has {stars} '*' rules; keep one")
        ordered = sorted(self.rules)
        for (_, high, _), (low, _, _) in zip(ordered, ordered[1:]):
            if low <= high:
                raise UserError(f"--label-map '{self.spec}' maps id {low} twice; give each id one rule")
        if self.n_classes is not None and self.n_classes < 2:
            raise UserError(f"--label-map '{self.spec}' maps no id to a class above 0; map the structures to 1, 2, ...")

    @property
    def identity(self) -> bool:
        return self.spec is None

    @property
    def n_classes(self) -> int | None:
        """Classes the map produces (max target + 1), or None for the identity map."""
        if self.identity:
            return None
        targets = [r[2] for r in self.rules] + ([self.default] if self.default is not None else []) + [0]
        return max(t for t in targets if t != IGNORE) + 1

    def lookup_table(self, max_id: int) -> np.ndarray:
        """Table from label id to class, -1 where no rule covers the id."""
        table = np.full(max_id + 1, -1 if self.default is None else self.default, dtype=np.int64)
        table[0] = 0
        for low, high, target in self.rules:
            table[low : min(high, max_id) + 1] = target
        return table

    def apply(self, label: np.ndarray, n_classes: int | None = None) -> np.ndarray:
        """Map a label array to uint8 class ids; CaseError for non-integer, negative or unmapped ids."""
        if not np.issubdtype(label.dtype, np.integer):
            if not np.all(np.isfinite(label)) or np.any(label != np.round(label)):
                raise CaseError("label map holds non-integer values; give an integer label volume")
        small = label.dtype in (np.uint8, np.uint16)
        values = np.flatnonzero(np.bincount(label.ravel())) if small else np.unique(label)
        if values.size and values[0] < 0:
            raise CaseError(f"label map holds negative id {int(values[0])}")
        ids = values.astype(np.int64)
        max_id = int(ids.max()) if ids.size else 0
        if self.identity:
            limit = n_classes if n_classes is not None else IGNORE
            bad = ids[(ids >= limit) & (ids != IGNORE)]
            if bad.size:
                raise CaseError(
                    f"label ids {bad.tolist()} are outside the {limit} classes; map them with "
                    "--label-map (e.g. '1-7:1') or name more --classes"
                )
            return label.astype(np.uint8)
        table = self.lookup_table(max_id)
        unmapped = ids[table[ids] < 0]
        if unmapped.size:
            raise CaseError(
                f"label ids {unmapped.tolist()} are not covered by --label-map '{self.spec}'; "
                "add a rule for them (map to 0 to drop them, or '*:0')"
            )
        if small:  # index with the label itself: no int64 copy of the volume
            return np.clip(table, 0, 255).astype(np.uint8)[label]
        return table[label.astype(np.int64)].astype(np.uint8)


def _target_id(target: str, rule: str) -> int:
    """The class id a rule's target names: a number below IGNORE, or `ignore` for IGNORE."""
    if target.lower() == "ignore":
        return IGNORE
    if int(target) > IGNORE:
        raise UserError(f"--label-map: class {target} in '{rule}' is above 255 (labels are uint8)")
    if int(target) == IGNORE:
        raise UserError(f"--label-map: class 255 in '{rule}' is the ignore id; write '{rule.split(':')[0]}:ignore'")
    return int(target)


def ignore_above_labels(label: np.ndarray, axis: int = 0) -> np.ndarray:
    """A copy of `label` with every voxel in the rows along `axis` before the first row holding a class (an id
    above 0 and below IGNORE) set to IGNORE; unchanged when no row holds one.

    For data sets that annotate only the lowest structures of the field of view (VB3 labels L1-L5, T12 above is
    unlabelled): the image above the top label is not background, so the loss and the metrics skip it.
    """
    label = np.asarray(label)
    labelled = (label > 0) & (label < IGNORE)
    others = tuple(a for a in range(label.ndim) if a != axis)
    rows = np.flatnonzero(np.any(labelled, axis=others))
    out = label.copy()
    if rows.size:
        above = [slice(None)] * label.ndim
        above[axis] = slice(0, int(rows[0]))
        out[tuple(above)] = IGNORE
    return out


def normalize(image: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Per-volume intensity normalization to float32 (z-score, percentile clip + min-max, or min-max)."""
    image = np.asarray(image, dtype=np.float32)
    if config.normalization == "zscore":
        mean, std = float(image.mean()), float(image.std())
        return (image - mean) / (std if std > 1e-8 else 1.0)
    if config.normalization == "percentile":
        low, high = (float(v) for v in np.percentile(image, config.percentiles))
        image = np.clip(image, np.float32(low), np.float32(high))
    else:
        low, high = float(image.min()), float(image.max())
    span = float(high - low)
    return (image - np.float32(low)) / np.float32(span if span > 1e-8 else 1.0)


def resample(
    array: np.ndarray,
    spacing: Sequence[float],
    new_spacing: Sequence[float],
    order: int,
    shape: Sequence[int] | None = None,
) -> np.ndarray:
    """Resample onto a grid of `new_spacing` with the same first voxel centre (origin and direction kept).

    The output shape defaults to the one covering the same extent; order 0 (nearest) is for labels.
    """
    spacing_a = np.asarray(spacing, dtype=float)
    new_a = np.asarray(new_spacing, dtype=float)
    if shape is None:
        shape = np.maximum(1, np.round(np.asarray(array.shape[: len(spacing_a)]) * spacing_a / new_a)).astype(int)
    shape = tuple(int(s) for s in shape)
    if shape == array.shape[: len(spacing_a)] and np.allclose(spacing_a, new_a):
        return array
    from scipy import ndimage  # here, not at the top: commands validate their flags without loading scipy

    scale = new_a / spacing_a
    out_dtype = array.dtype if order == 0 else np.float32
    src = array if order == 0 else array.astype(np.float32, copy=False)
    return ndimage.affine_transform(
        src, scale, output_shape=shape, order=order, mode="nearest", output=out_dtype, prefilter=order > 1
    )


def roi_slices(label: np.ndarray, spacing: Sequence[float], margin_mm: float) -> tuple[slice, ...]:
    """Bounding box of the labelled voxels (classes, not IGNORE) grown by `margin_mm` on every side, clipped to the
    volume."""
    nonzero = np.nonzero((label > 0) & (label != IGNORE))
    if not nonzero[0].size:
        return tuple(slice(0, n) for n in label.shape)
    box = []
    for axis, coords in enumerate(nonzero):
        margin = int(np.ceil(margin_mm / float(spacing[axis])))
        box.append(slice(max(0, int(coords.min()) - margin), min(label.shape[axis], int(coords.max()) + 1 + margin)))
    return tuple(box)


def _centre_pad_crop(array: np.ndarray, shape: Sequence[int], fill: float) -> np.ndarray:
    out = np.full(tuple(shape) + array.shape[len(shape) :], fill, dtype=array.dtype)
    src, dst = [], []
    for n_in, n_out in zip(array.shape, shape):
        if n_in >= n_out:
            start = (n_in - n_out) // 2
            src.append(slice(start, start + n_out))
            dst.append(slice(0, n_out))
        else:
            start = (n_out - n_in) // 2
            src.append(slice(0, n_in))
            dst.append(slice(start, start + n_in))
    out[tuple(dst)] = array[tuple(src)]
    return out


def resize(array: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    """Resize the leading spatial axes to `shape`, voxel centres aligned (order 0 for labels)."""
    shape = tuple(int(s) for s in shape)
    in_shape = array.shape[: len(shape)]
    if in_shape == shape:
        return array
    from scipy import ndimage

    scale = np.asarray(in_shape, dtype=float) / np.asarray(shape, dtype=float)
    offset = 0.5 * scale - 0.5
    src = array if order == 0 else array.astype(np.float32, copy=False)
    out_dtype = array.dtype if order == 0 else np.float32
    settings = {"offset": offset, "output_shape": shape, "order": order, "mode": "nearest", "output": out_dtype}

    def one(channel: np.ndarray) -> np.ndarray:
        return ndimage.affine_transform(channel, scale, prefilter=order > 1, **settings)

    if array.ndim == len(shape):
        return one(src)
    return np.stack([one(src[..., c]) for c in range(array.shape[-1])], axis=-1)


def fit_shape(array: np.ndarray, shape: Sequence[int], fit: str, order: int, fill: float = 0.0) -> np.ndarray:
    """Bring the leading spatial axes to `shape` by resizing or by centre pad/crop (`fill` pads)."""
    if fit == "resize":
        return resize(array, shape, order)
    return _centre_pad_crop(array, shape, fill)
