"""The one preprocessing path from a volume to network samples, shared by the cube builder and prediction.

read -> check -> remap labels (the caller's) -> `prepare` (resample, normalize) -> `stack_samples` (2D slices along
the recorded axis, or the whole 3D volume) -> `fit_sample` (resize or centre pad/crop to the input shape). The cube
builder stores what this path produces; prediction feeds the model what this path produces; a test checks that
both agree bit for bit, so training and inference cannot drift.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from spine_keras.body_crop import body_box
from spine_keras.errors import CaseError, UserError
from spine_keras.io import Volume
from spine_keras.preprocess import INTERPOLATIONS, PreprocessConfig, fit_shape, normalize, resample

MIN_SIDE = 16
MODES = ("2d", "3d")
MAX_CONTEXT = 16  # 2.5D: at most this many neighbouring slices on each side (33 channels)
MAX_SAMPLE_BYTES = 1 << 30  # one float32 sample: one HDF5 chunk (HDF5 caps chunks at 4 GiB), several per case in memory
MAX_VOLUME_VOXELS = 1 << 30  # a volume resampled to --spacing: 4 GiB as float32, before its copies


@dataclasses.dataclass
class SamplingConfig:
    """How samples are cut from a prepared volume; recorded in every cube and model bundle."""

    mode: str = "2d"
    axis: int = 2  # 2D: slice axis (2 = sagittal in the shared data)
    shape: tuple[int, ...] = (256, 256)  # 2D (H, W) or 3D (D, H, W)
    min_foreground: float = 0.0  # drop 2D slices / 3D patches whose labelled fraction is below this
    stride: tuple[int, ...] | None = None  # 3D: tile patches with this stride; None resizes the whole volume
    background_keep: float = 0.1  # 3D patches: keep a patch without any label with this probability
    context: int = 0  # 2D only (2.5D): this many neighbouring slices on each side become extra input channels

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)
        self.stride = None if self.stride is None else tuple(int(s) for s in self.stride)
        if self.mode not in MODES:
            raise UserError(f"--mode must be 2d or 3d, not '{self.mode}'")
        self._check_shape()
        if self.mode == "2d" and self.axis not in (0, 1, 2):
            raise UserError(f"--axis must be 0, 1 or 2, not {self.axis}")
        if self.stride is not None and (self.mode != "3d" or len(self.stride) != 3 or min(self.stride) < 1):
            raise UserError("--stride takes three positive sides and only applies to --mode 3d")
        if not 0.0 <= self.min_foreground < 1.0:
            raise UserError("--min-foreground must lie in [0, 1)")
        if not 0.0 <= self.background_keep <= 1.0:
            raise UserError("--background-keep must lie in [0, 1]")
        self._check_context()

    def _check_context(self) -> None:
        if isinstance(self.context, bool) or not isinstance(self.context, int) or not 0 <= self.context <= MAX_CONTEXT:
            raise UserError(f"--context must be a whole number of slices from 0 to {MAX_CONTEXT}, not {self.context}")
        if self.context and self.mode != "2d":
            raise UserError("--context (neighbouring slices as channels) applies only to --mode 2d; drop it for 3d")

    def _check_shape(self) -> None:
        rank = 2 if self.mode == "2d" else 3
        shown = ",".join(map(str, self.shape))
        if len(self.shape) != rank:
            raise UserError(f"--shape needs {rank} sides for --mode {self.mode}, got {shown}")
        if min(self.shape) < MIN_SIDE:
            raise UserError(
                f"target shape {shown} is too small: every side must be at least {MIN_SIDE} so the networks can "
                "downsample it"
            )
        size = 4 * int(np.prod(self.shape, dtype=np.float64))
        if size > MAX_SAMPLE_BYTES:
            raise UserError(
                f"a {'x'.join(map(str, self.shape))} float32 sample is {_bytes(size)}; each sample is one HDF5 chunk "
                f"(HDF5 caps chunks at 4 GiB) and a case holds several in memory: keep it under "
                f"{_bytes(MAX_SAMPLE_BYTES)} (e.g. 256,256 in 2D or 128,256,256 in 3D)"
            )

    @property
    def channels(self) -> int:
        """Input channels a single-channel volume gives each sample: the slice and its 2 x context neighbours."""
        return 2 * self.context + 1

    @property
    def windowed(self) -> bool:
        """Whether samples are windows of a larger grid (3D patches), not whole slices or volumes."""
        return self.stride is not None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SamplingConfig:
        """From `to_dict` output (lists for tuples); unknown keys are ignored."""
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


@dataclasses.dataclass
class Prepared:
    """A volume on the model's grid: normalized image, optional class-id label, spacing, and the padding value.

    With an automatic crop, `image` and `label` hold only the body's box: `box` places them in the resampled grid
    of shape `grid_shape`, so that prediction can put its result back (see `uncrop`).
    """

    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, ...]
    fill: float  # the normalized volume's minimum: what training and inference pad the image with
    box: tuple[slice, ...] | None = None  # where `image` lies in the resampled grid; None = the whole grid
    grid_shape: tuple[int, ...] | None = None  # the resampled grid's spatial shape

    def uncrop(self, array: np.ndarray, background: np.ndarray | float = 0) -> np.ndarray:
        """`array` on this volume's (cropped) grid, trailing axes kept, placed into the whole resampled grid;
        `background` fills the rest (a class id, or a vector of class probabilities)."""
        if self.box is None or self.grid_shape is None:
            return array
        out = np.empty(self.grid_shape + array.shape[len(self.grid_shape) :], array.dtype)
        out[...] = background
        out[self.box] = array
        return out


def prepare(image: Volume, config: PreprocessConfig, label: np.ndarray | None = None) -> Prepared:
    """Resample to the configured spacing (image linear or cubic, label nearest), crop to the body's box when
    `auto_crop_mm` is set (found from the image alone, so prediction repeats it), then normalize what is left.

    `label` holds class ids on the image's grid (already remapped); prediction passes none. The one gate for
    intensities, shared by the cube builder and prediction: NaN or infinite values, and values too large to
    normalize in float32, are a `CaseError` (the caller names the case), as is a resampled grid too large to hold.
    """
    array, spacing = image.array, tuple(float(s) for s in image.spacing)
    if array.ndim == len(spacing) + 1 and array.shape[-1] == 1:  # a single-channel volume stored with its channel
        array = array[..., 0]
    check_finite(array, "the image")
    if config.spacing is not None:
        if len(config.spacing) != len(spacing):
            raise UserError(f"--spacing needs {len(spacing)} values for these volumes")
        _check_resampled_size(array.shape[: len(spacing)], spacing, config.spacing)
        array = resample(array, spacing, config.spacing, INTERPOLATIONS[config.interpolation])
        label = None if label is None else resample(label, spacing, config.spacing, 0)
        spacing = tuple(float(s) for s in config.spacing)
    grid_shape, box = tuple(array.shape), None
    if config.auto_crop_mm is not None:
        box = body_box(array, spacing, config.auto_crop_mm)
        array, label = array[box], None if label is None else label[box]
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported below, as one line
        array = normalize(array, config)
    if not np.all(np.isfinite(array)):
        raise CaseError("the image's intensities are too large to normalize in float32; rescale the volume")
    return Prepared(array, label, spacing, float(array.min()), box, grid_shape)


def check_finite(array: np.ndarray, what: str) -> None:
    """CaseError when a floating-point `array` holds NaN or infinite values (integer arrays always pass)."""
    if not np.issubdtype(array.dtype, np.inexact):
        return
    finite = np.isfinite(array)
    if finite.all():
        return
    bad = int(finite.size - np.count_nonzero(finite))
    first = tuple(int(i) for i in np.argwhere(~finite)[0])
    raise CaseError(
        f"{what} holds {bad} NaN or infinite intensity value(s) (the first at voxel {first}); fix or drop the scan"
    )


def _check_resampled_size(shape: tuple[int, ...], spacing: tuple[float, ...], target: tuple[float, ...]) -> None:
    """CaseError when resampling `shape` from `spacing` to `target` would make an absurdly large grid."""
    new_shape = [max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, target)]
    voxels = float(np.prod(new_shape, dtype=np.float64))
    if voxels > MAX_VOLUME_VOXELS:
        raise CaseError(
            f"resampling this {'x'.join(map(str, shape))} volume to spacing {','.join(f'{t:g}' for t in target)} mm "
            f"would make a {'x'.join(map(str, new_shape))} grid ({_bytes(4 * voxels)} as float32); choose a "
            "coarser --spacing"
        )


def _bytes(size: float) -> str:
    """A byte count for people: '256 GiB', '64 MiB', '1.5 KiB'."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    power = min(len(units) - 1, int(math.log(max(size, 1.0), 1024)))
    return f"{size / 1024**power:.3g} {units[power]}"


def stack_samples(array: np.ndarray, sampling: SamplingConfig) -> np.ndarray:
    """The volume as a stack of samples, sample axis first: its slices along `axis` (2D) or itself (3D)."""
    if sampling.mode == "2d":
        return np.ascontiguousarray(np.moveaxis(array, sampling.axis, 0))  # one copy, then cheap slices
    return array[None]


def stack_inputs(array: np.ndarray, sampling: SamplingConfig) -> np.ndarray:
    """The image volume as model inputs, sample axis first and channels last: (n, *sides, channels).

    With 2.5D `context` k, channel j of slice i is slice i + j - k (the slice itself in the middle channel), slices
    beyond the volume's edge repeating the edge slice; without context the one channel is the sample itself.
    """
    stack = stack_samples(array, sampling)
    if not sampling.context:
        return stack[..., None]
    offsets = np.arange(-sampling.context, sampling.context + 1)
    neighbours = np.clip(np.arange(stack.shape[0])[:, None] + offsets, 0, stack.shape[0] - 1)
    return np.ascontiguousarray(np.moveaxis(stack[neighbours], 1, -1))


def unstack_samples(stack: np.ndarray, sampling: SamplingConfig) -> np.ndarray:
    """Inverse of `stack_samples` (trailing axes such as classes are kept)."""
    if sampling.mode == "2d":
        return np.moveaxis(stack, 0, sampling.axis)
    return stack[0]


def fit_sample(sample: np.ndarray, shape: tuple[int, ...], config: PreprocessConfig, fill: float) -> np.ndarray:
    """Bring an image sample to the model's input `shape` with the configured fit and interpolation (trailing
    channels, such as 2.5D neighbours, are fitted one by one)."""
    return fit_shape(sample, shape, config.fit, INTERPOLATIONS[config.interpolation], fill)


def fit_label(sample: np.ndarray, shape: tuple[int, ...], config: PreprocessConfig) -> np.ndarray:
    """Bring a label sample to `shape` the same way as its image (nearest neighbour, padded with background)."""
    return fit_shape(sample, shape, config.fit, 0, 0)
