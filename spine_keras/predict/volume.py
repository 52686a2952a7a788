"""One volume -> class probabilities and label map in the input's own geometry.

Repeats the cube builder's preprocessing exactly (resample to the recorded spacing, whole-volume
normalization, 2D slices along the recorded axis or the 3D volume, fit to the input shape; no ROI crop),
runs the model, and inverts each step: fit, then spacing (nearest neighbour for labels).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from spine_keras.errors import CaseError
from spine_keras.io import Volume
from spine_keras.predict.model import Segmenter
from spine_keras.predict.window import sliding_window
from spine_keras.preprocess import INTERPOLATIONS, PreprocessConfig, fit_shape, normalize, resample

LINEAR = INTERPOLATIONS["linear"]


@dataclasses.dataclass
class Prediction:
    """Label map (uint8 class ids) and optionally per-class probabilities, both on the input's grid."""

    labels: Volume
    probabilities: Volume | None


def check_volume(volume: Volume, metadata: dict[str, Any]) -> None:
    """CaseError when the volume's dimensionality or channel count differs from what the model expects."""
    if volume.spatial_ndim != 3:
        raise CaseError(
            f"volume has {volume.spatial_ndim} spatial dimensions; the model expects 3D volumes "
            f"({metadata['mode']} model)"
        )
    channels = int(metadata["input_shape"][-1])
    if volume.channels != channels:
        raise CaseError(f"volume has {volume.channels} channel(s); the model expects {channels}")


def _samples(image: np.ndarray, metadata: dict[str, Any]) -> np.ndarray:
    """(n, *sample_shape, channels): 2D slices along the recorded axis, or the whole 3D volume as one sample."""
    image = image if image.ndim == 4 else image[..., None]
    if metadata["mode"] == "2d":
        return np.moveaxis(image, int(metadata["axis"]), 0)
    return image[None]


def _unsamples(probabilities: np.ndarray, metadata: dict[str, Any]) -> np.ndarray:
    if metadata["mode"] == "2d":
        return np.moveaxis(probabilities, 0, int(metadata["axis"]))
    return probabilities[0]


def _windowed(metadata: dict[str, Any], config: PreprocessConfig) -> bool:
    """Patch-trained 3D models and pad-fitted models slide a window; resize-fitted ones see whole resized samples."""
    stride = (metadata.get("sampling") or {}).get("stride")
    return config.fit == "pad" or (metadata["mode"] == "3d" and stride is not None)


def _run_resized(
    samples: np.ndarray, segmenter: Segmenter, window: tuple[int, ...], order: int, batch_size: int
) -> np.ndarray:
    """Resize each sample to the model's input, predict in batches, resize the probabilities back (linear)."""
    n_classes = int(segmenter.metadata["n_classes"])
    spatial = samples.shape[1:-1]
    out = np.zeros(samples.shape[:-1] + (n_classes,), np.float32)
    for begin in range(0, samples.shape[0], batch_size):
        chunk = samples[begin : begin + batch_size]
        batch = np.stack([fit_shape(sample, window, "resize", order) for sample in chunk])
        for i, prob in enumerate(segmenter.predict(batch), start=begin):
            out[i] = fit_shape(prob, spatial, "resize", LINEAR)
    return out


def _run_windowed(
    samples: np.ndarray, segmenter: Segmenter, window: tuple[int, ...], fill: float, overlap: float, batch_size: int
) -> np.ndarray:
    """Centre-pad samples smaller than the window (as training did), slide the window, crop the padding off."""
    spatial = samples.shape[1:-1]
    grown = tuple(max(n, w) for n, w in zip(spatial, window))
    if grown != spatial:
        samples = np.stack([fit_shape(sample, grown, "pad", 0, fill) for sample in samples])
    probabilities = sliding_window(
        samples, window, segmenter.predict, int(segmenter.metadata["n_classes"]), overlap, batch_size
    )
    if grown == spatial:
        return probabilities
    return np.stack([fit_shape(prob, spatial, "pad", 0) for prob in probabilities])


def predict_volume(
    volume: Volume, segmenter: Segmenter, overlap: float = 0.5, batch_size: int = 4, probabilities: bool = False
) -> Prediction:
    """Segment one volume with the bundle's recorded preprocessing; outputs share the input's exact geometry."""
    metadata = segmenter.metadata
    check_volume(volume, metadata)
    config = PreprocessConfig.from_dict(metadata["preprocess"])
    order = INTERPOLATIONS[config.interpolation]
    image, spacing = volume.array, volume.spacing
    if config.spacing is not None:
        image = resample(image, spacing, config.spacing, order)
    image = normalize(image, config)
    window = tuple(int(s) for s in metadata["input_shape"][:-1])
    samples = _samples(image, metadata)
    if _windowed(metadata, config):
        model_probs = _run_windowed(samples, segmenter, window, float(image.min()), overlap, batch_size)
    else:
        model_probs = _run_resized(samples, segmenter, window, order, batch_size)
    model_probs = _unsamples(model_probs, metadata)
    labels = np.argmax(model_probs, axis=-1).astype(np.uint8)
    if config.spacing is not None:
        labels = resample(labels, config.spacing, spacing, 0, shape=volume.shape)
    label_volume = Volume(labels, volume.spacing, volume.origin, volume.direction.copy())
    if not probabilities:
        return Prediction(label_volume, None)
    if config.spacing is not None:
        model_probs = np.stack(
            [
                resample(model_probs[..., c], config.spacing, spacing, LINEAR, shape=volume.shape)
                for c in range(model_probs.shape[-1])
            ],
            axis=-1,
        )
    return Prediction(
        label_volume, Volume(model_probs.astype(np.float32), volume.spacing, volume.origin, volume.direction.copy())
    )
