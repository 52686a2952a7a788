"""One volume -> class probabilities and label map in the input's own geometry.

The volume goes through the cube builder's own preparation (`spine_keras.prepare`: resample to the recorded spacing,
the label-free body crop if recorded, normalization, 2D slices along the recorded axis or the 3D volume, fit to the
input shape; never the label-based ROI crop), the model runs, and each step is inverted: fit, crop (background
outside the box), then spacing (nearest neighbour for labels). Optional post-processing cleans the final label map.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from spine_keras.bundle import ModelBundle
from spine_keras.errors import CaseError
from spine_keras.io import Volume
from spine_keras.predict.model import Segmenter
from spine_keras.predict.postprocess import Postprocess, postprocess_labels
from spine_keras.predict.window import sliding_window
from spine_keras.prepare import Prepared, fit_sample, prepare, stack_inputs, stack_samples, unstack_samples
from spine_keras.preprocess import INTERPOLATIONS, fit_shape, resample

LINEAR = INTERPOLATIONS["linear"]


@dataclasses.dataclass
class Prediction:
    """Label map (uint8 class ids) and optionally per-class probabilities, both on the input's grid."""

    labels: Volume
    probabilities: Volume | None


def check_volume(volume: Volume, bundle: ModelBundle) -> None:
    """CaseError when the volume's dimensionality or channel count differs from what the model expects."""
    if volume.spatial_ndim != 3:
        raise CaseError(
            f"volume has {volume.spatial_ndim} spatial dimensions; the model expects 3D volumes ({bundle.mode} model)"
        )
    expected = bundle.channels // bundle.sampling.channels  # 2.5D models stack neighbouring slices as channels
    if volume.channels != expected:
        raise CaseError(f"volume has {volume.channels} channel(s); the model expects {expected}")


def windowed(bundle: ModelBundle) -> bool:
    """Patch-trained 3D models and pad-fitted models slide a window; resize-fitted ones see whole resized samples."""
    return bundle.preprocess.fit == "pad" or bundle.sampling.windowed


def model_inputs(case: Prepared, bundle: ModelBundle) -> np.ndarray:
    """The batch a resize-fitted model sees for a prepared volume: every sample fitted exactly as the cube did."""
    stack = stack_inputs(case.image, bundle.sampling)
    return np.stack([fit_sample(sample, bundle.window, bundle.preprocess, case.fill) for sample in stack])


def _run_resized(case: Prepared, segmenter: Segmenter, batch_size: int) -> np.ndarray:
    """Predict the fitted samples in batches and resize the probabilities back to the samples' sides (linear)."""
    bundle = segmenter.bundle
    spatial = stack_samples(case.image, bundle.sampling).shape[1:]
    batch = model_inputs(case, bundle)
    out = np.zeros((batch.shape[0], *spatial, bundle.n_classes), np.float32)
    for begin in range(0, batch.shape[0], batch_size):
        for i, prob in enumerate(segmenter.predict(batch[begin : begin + batch_size]), start=begin):
            out[i] = fit_shape(prob, spatial, "resize", LINEAR)
    return out


def _run_windowed(case: Prepared, segmenter: Segmenter, overlap: float, batch_size: int) -> np.ndarray:
    """Centre-pad samples smaller than the window (as training did), slide the window, crop the padding off."""
    bundle = segmenter.bundle
    samples = stack_inputs(case.image, bundle.sampling)
    spatial = samples.shape[1:-1]
    grown = tuple(max(n, w) for n, w in zip(spatial, bundle.window))
    if grown != spatial:
        samples = np.stack([fit_shape(sample, grown, "pad", 0, case.fill) for sample in samples])
    probabilities = sliding_window(samples, bundle.window, segmenter.predict, bundle.n_classes, overlap, batch_size)
    if grown == spatial:
        return probabilities
    return np.stack([fit_shape(prob, spatial, "pad", 0) for prob in probabilities])


def _to_input_grid(array: np.ndarray, case: Prepared, volume: Volume, order: int) -> np.ndarray:
    """Resample an array on the model's grid back onto the input volume's grid (no-op without a target spacing)."""
    if case.spacing == tuple(float(s) for s in volume.spacing) and array.shape[:3] == volume.shape:
        return array
    if array.ndim == 3:
        return resample(array, case.spacing, volume.spacing, order, shape=volume.shape)
    channels = [
        resample(array[..., c], case.spacing, volume.spacing, order, shape=volume.shape) for c in range(array.shape[-1])
    ]
    return np.stack(channels, axis=-1)


def prepare_volume(volume: Volume, bundle: ModelBundle) -> Prepared:
    """The volume checked against the model and prepared as the cube builder did; CaseError if it cannot be.
    Needs no model, so a bad input is refused before any model is loaded."""
    check_volume(volume, bundle)
    return prepare(volume, bundle.preprocess)


def predict_prepared(
    case: Prepared,
    volume: Volume,
    segmenter: Segmenter,
    overlap: float,
    batch_size: int,
    probabilities: bool,
    postprocess: Postprocess | str = "none",
) -> Prediction:
    """Run the model over a prepared volume and bring labels (and probabilities) back onto `volume`'s whole grid
    (background outside an automatic crop); `postprocess` then cleans the label map (the probabilities are kept)."""
    bundle = segmenter.bundle
    if windowed(bundle):
        stacked = _run_windowed(case, segmenter, overlap, batch_size)
    else:
        stacked = _run_resized(case, segmenter, batch_size)
    model_probs = unstack_samples(stacked, bundle.sampling)
    labels = case.uncrop(np.argmax(model_probs, axis=-1).astype(np.uint8))  # background outside an auto crop
    labels = postprocess_labels(_to_input_grid(labels, case, volume, 0), volume.spacing, postprocess)
    label_volume = Volume(labels, volume.spacing, volume.origin, volume.direction.copy())
    if not probabilities:
        return Prediction(label_volume, None)
    background = np.eye(bundle.n_classes, dtype=np.float32)[0]
    probs = _to_input_grid(case.uncrop(model_probs, background), case, volume, LINEAR).astype(np.float32)
    return Prediction(label_volume, Volume(probs, volume.spacing, volume.origin, volume.direction.copy()))


def predict_volume(
    volume: Volume,
    segmenter: Segmenter,
    overlap: float = 0.5,
    batch_size: int = 4,
    probabilities: bool = False,
    postprocess: Postprocess | str = "none",
) -> Prediction:
    """Segment one volume with the bundle's recorded preprocessing; outputs share the input's exact geometry.
    `postprocess` ('none', 'largest', 'min-size:ML' or a `Postprocess`) cleans the label map."""
    case = prepare_volume(volume, segmenter.bundle)
    return predict_prepared(case, volume, segmenter, overlap, batch_size, probabilities, postprocess)
