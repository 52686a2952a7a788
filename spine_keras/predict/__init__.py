"""Segment new volumes with a trained bundle: recorded preprocessing, 2D slices or a 3D sliding window,
outputs in the input's geometry, optional metrics against ground truth."""

from spine_keras.predict.model import Segmenter, load_segmenter
from spine_keras.predict.run import PredictOptions, Report, predict_inputs
from spine_keras.predict.volume import Prediction, predict_volume
from spine_keras.predict.window import gaussian_importance, sliding_window

__all__ = [
    "PredictOptions",
    "Prediction",
    "Report",
    "Segmenter",
    "gaussian_importance",
    "load_segmenter",
    "predict_inputs",
    "predict_volume",
    "sliding_window",
]
