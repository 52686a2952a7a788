"""Training: strategy, data, model, losses, metrics and callbacks -> a run folder of bundles and reports."""

from spine_keras.train.run import RunResult, train
from spine_keras.train.settings import TrainSettings, merge_settings

__all__ = ["RunResult", "TrainSettings", "merge_settings", "train"]
