"""Training the iterative network: samples drawn on the fly into tf.data, fit under a distribution strategy."""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf

from spine_keras.instances.cases import TrainingCase
from spine_keras.instances.config import InstanceConfig
from spine_keras.instances.network import build_network, compile_network
from spine_keras.instances.samples import step_arrays


def sample_dataset(cases: list[TrainingCase], config: InstanceConfig, start: int = 0) -> tf.data.Dataset:
    """Batches of ({"patch"}, {"mask": target + weight channels, "complete"}), sample i drawn from seed (seed, i)
    in parallel and delivered in order, so a run is reproducible whatever the thread count."""
    patch = tuple(config.patch)

    def draw(index: np.int64) -> tuple[np.ndarray, ...]:
        return step_arrays(cases, config, int(index))

    def as_tensors(index: tf.Tensor):
        inputs, mask, complete = tf.numpy_function(draw, [index], [tf.float32, tf.float32, tf.float32])
        inputs.set_shape((*patch, 2))
        mask.set_shape((*patch, 2))
        complete.set_shape((1,))
        return inputs, {"mask": mask, "complete": complete}

    total = config.steps * config.epochs * config.batch
    return (
        tf.data.Dataset.range(start, start + total)
        .map(as_tensors, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .batch(config.batch, drop_remainder=True)
        .prefetch(2)
    )


def train_network(
    cases: list[TrainingCase], config: InstanceConfig, strategy: tf.distribute.Strategy | None = None
) -> tuple[object, dict]:
    """Fit a new network on `cases`; returns (model, history with per-epoch losses and the wall time)."""
    import keras

    keras.utils.set_random_seed(config.seed)
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = compile_network(build_network(config), config)
    started = time.perf_counter()
    fitted = model.fit(
        sample_dataset(cases, config), epochs=config.epochs, steps_per_epoch=config.steps, shuffle=False, verbose=0
    )
    history = {k: [round(float(v), 5) for v in values] for k, values in fitted.history.items()}
    return model, history | {"train_seconds": round(time.perf_counter() - started, 1)}
