"""The iterative vertebra network: a 3D U-Net with two input channels (image, instance memory), a sigmoid mask of
the next vertebra, and a completeness classifier on the bottleneck; and its losses.

The mask loss is a voxel-weighted binary cross-entropy plus a soft Dice term; the weights travel as the second
channel of the mask target (`y_true[..., 1]`), so the loss needs no extra inputs and the saved model none of it.
"""

from __future__ import annotations

import math

import keras
from keras import layers, ops

from spine_keras.instances.config import InstanceConfig
from spine_keras.train.schedule import WarmupDecay

EPSILON = 1e-6


def _block(x, filters: int, name: str):
    """Two 3x3x3 convolutions, each with group normalization and ReLU."""
    for i in (1, 2):
        x = layers.Conv3D(filters, 3, padding="same", kernel_initializer="he_normal", name=f"{name}_conv{i}")(x)
        x = layers.GroupNormalization(groups=math.gcd(filters, 4), name=f"{name}_norm{i}")(x)
        x = layers.ReLU(name=f"{name}_relu{i}")(x)
    return x


def build_network(config: InstanceConfig) -> keras.Model:
    """Inputs (P, P, P, 2) -> {"mask": (P, P, P, 1) sigmoid, "complete": (1,) sigmoid}."""
    inputs = keras.Input((*config.patch, 2), name="patch")
    x, skips = inputs, []
    for level in range(config.depth):
        x = _block(x, config.filters * 2**level, f"down{level}")
        skips.append(x)
        x = layers.MaxPooling3D(2, name=f"pool{level}")(x)
    x = _block(x, config.filters * 2**config.depth, "bottom")
    pooled = layers.GlobalAveragePooling3D(name="bottom_pool")(x)
    complete = layers.Dense(1, activation="sigmoid", name="complete")(pooled)
    for level in reversed(range(config.depth)):
        x = layers.UpSampling3D(2, name=f"up{level}")(x)
        x = layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = _block(x, config.filters * 2**level, f"dec{level}")
    mask = layers.Conv3D(1, 1, activation="sigmoid", name="mask")(x)
    return keras.Model(inputs, {"mask": mask, "complete": complete}, name="iterative_vertebra_fcn")


def weighted_mask_loss(y_true, y_pred):
    """Weighted binary cross-entropy (weights in `y_true[..., 1]`) plus (1 - soft Dice) of the target."""
    target, weight = y_true[..., 0], y_true[..., 1]
    prob = ops.clip(y_pred[..., 0], EPSILON, 1 - EPSILON)
    bce = -(target * ops.log(prob) + (1 - target) * ops.log(1 - prob))
    weighted = ops.sum(weight * bce, axis=(1, 2, 3)) / ops.sum(weight, axis=(1, 2, 3))
    overlap = ops.sum(target * prob, axis=(1, 2, 3))
    dice = (2 * overlap + 1) / (ops.sum(target, axis=(1, 2, 3)) + ops.sum(prob, axis=(1, 2, 3)) + 1)
    return weighted + (1 - dice)


def learning_rate(config: InstanceConfig) -> float | WarmupDecay:
    """The configured rate: a plain float, or spine-train's schedule decaying to 0 over the run's steps x epochs."""
    if config.lr_schedule == "constant":
        return config.learning_rate
    return WarmupDecay(config.learning_rate, config.steps * config.epochs, decay=config.lr_schedule)


def compile_network(model: keras.Model, config: InstanceConfig) -> keras.Model:
    """Adam, the weighted mask loss and binary cross-entropy for completeness."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate(config)),
        loss={"mask": weighted_mask_loss, "complete": keras.losses.BinaryCrossentropy()},
        metrics={"complete": [keras.metrics.BinaryAccuracy(name="accuracy")]},
    )
    return model


def keras_predict(model: keras.Model):
    """The model as the traversal's Predict function: (B, P, P, P, 2) -> (mask probabilities, completeness)."""

    def predict(batch):
        out = model(batch, training=False)
        return keras.ops.convert_to_numpy(out["mask"])[..., 0], keras.ops.convert_to_numpy(out["complete"])[:, 0]

    return predict
