"""The plain reference: a minimal Keras 2D U-Net as a careful researcher would write it without any toolkit.

It is the yardstick spine_keras's recipe must beat in the same CPU time (bench/time_to_accuracy.py runs both on the
same folds). Everything a toolkit would do is written out here in plain numpy, SciPy and Keras, on purpose:
- sagittal slices (axis 2) of z-scored volumes, resized to 128x128; every slice with vertebra, a quarter of the rest;
- on-the-fly augmentation each epoch: rotation +-10 degrees and zoom 0.9-1.1 (image linear, label nearest);
- a 4-level U-Net with 16 initial filters, batch norm and ReLU, transposed-convolution upsampling;
- Adam 1e-3, cross-entropy + batch Dice on the vertebra class;
- prediction slice by slice, probabilities resized back to the slice's own size, so the result lies in the
  patient's original geometry (the volumes are 1 mm isotropic, so no resampling is needed).
Only the reading of a list (spine_keras.io) is shared with the toolkit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import keras
import numpy as np
from keras import layers, ops
from scipy import ndimage

SIZE = 128


def zscore(volume: np.ndarray) -> np.ndarray:
    """The volume standardized by its own mean and standard deviation."""
    volume = volume.astype(np.float32)
    return (volume - volume.mean()) / (volume.std() + 1e-6)


def resize(array: np.ndarray, shape: tuple[int, ...], order: int) -> np.ndarray:
    """A 2D (or 2D x channels) array zoomed to `shape` in its first two axes."""
    factors = [t / s for t, s in zip(shape, array.shape[:2])] + [1.0] * (array.ndim - 2)
    return ndimage.zoom(array, factors, order=order, grid_mode=True, mode="nearest")


def slices(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """128x128 training slices of one case: all with vertebra, a random quarter of the others."""
    image, label = zscore(image), (label > 0).astype(np.uint8)
    keep = [k for k in range(image.shape[2]) if label[:, :, k].any() or rng.random() < 0.25]
    xs = [resize(image[:, :, k], (SIZE, SIZE), 1) for k in keep]
    ys = [resize(label[:, :, k], (SIZE, SIZE), 0) for k in keep]
    return np.stack(xs)[..., None], np.stack(ys)


def augment(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One random rotation (+-10 deg) and zoom (0.9-1.1) per slice, about the slice centre."""
    out_x, out_y = np.empty_like(x), np.empty_like(y)
    centre = (np.array([SIZE, SIZE]) - 1) / 2
    for i in range(len(x)):
        angle, zoom = math.radians(rng.uniform(-10, 10)), rng.uniform(0.9, 1.1)
        c, s = math.cos(angle), math.sin(angle)
        matrix = np.array([[c, -s], [s, c]]) / zoom
        offset = centre - matrix @ centre
        out_x[i, ..., 0] = ndimage.affine_transform(x[i, ..., 0], matrix, offset, order=1, mode="nearest")
        out_y[i] = ndimage.affine_transform(y[i], matrix, offset, order=0, mode="constant")
    return out_x, out_y


def _block(x, filters: int):
    for _ in range(2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.Activation("relu")(layers.BatchNormalization()(x))
    return x


def unet(filters: int = 16, depth: int = 4) -> keras.Model:
    """The textbook U-Net: `depth` poolings, filters doubling per level, softmax over background and vertebra."""
    inputs = keras.Input((SIZE, SIZE, 1))
    x, skips = inputs, []
    for level in range(depth):
        x = _block(x, filters * 2**level)
        skips.append(x)
        x = layers.MaxPooling2D()(x)
    x = _block(x, filters * 2**depth)
    for level in reversed(range(depth)):
        x = layers.Conv2DTranspose(filters * 2**level, 2, strides=2)(x)
        x = _block(layers.Concatenate()([x, skips[level]]), filters * 2**level)
    return keras.Model(inputs, layers.Conv2D(2, 1, activation="softmax")(x))


def ce_batch_dice(y_true, y_pred):
    """Cross-entropy plus 1 - Dice of the vertebra class over the whole batch."""
    ce = ops.mean(keras.losses.sparse_categorical_crossentropy(y_true, y_pred))
    truth, prob = ops.cast(ops.squeeze(y_true, -1) if len(y_true.shape) == 4 else y_true, "float32"), y_pred[..., 1]
    dice = (2 * ops.sum(truth * prob) + 1) / (ops.sum(truth) + ops.sum(prob) + 1)
    return ce + 1 - dice


def train(
    cases: list[tuple[np.ndarray, np.ndarray]],
    budget_s: float,
    on_epoch: Callable[[int, float, keras.Model], None],
    seed: int = 0,
) -> keras.Model:
    """Train until `budget_s` seconds have passed (checked after each epoch); `on_epoch(epoch, elapsed, model)`
    is called after every epoch and its own time is not counted."""
    start = time.perf_counter()
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    parts = [slices(image, label, rng) for image, label in cases]
    x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    model = unet()
    model.compile(keras.optimizers.Adam(1e-3), ce_batch_dice)
    epoch, paused = 0, 0.0
    while time.perf_counter() - start - paused < budget_s:
        ax, ay = augment(x, y, rng)
        model.fit(ax, ay, batch_size=8, epochs=1, shuffle=True, verbose=0)
        epoch += 1
        before = time.perf_counter()
        on_epoch(epoch, before - start - paused, model)
        paused += time.perf_counter() - before
    return model


def segment(model: keras.Model, image: np.ndarray) -> np.ndarray:
    """Vertebra mask of one volume in its own geometry: each sagittal slice predicted at 128x128 and resized back."""
    volume = zscore(image)
    batch = np.stack([resize(volume[:, :, k], (SIZE, SIZE), 1) for k in range(volume.shape[2])])[..., None]
    probs = model.predict(batch, batch_size=16, verbose=0)
    out = np.zeros(volume.shape, np.uint8)
    for k in range(volume.shape[2]):
        out[:, :, k] = np.argmax(resize(probs[k], volume.shape[:2], 1), axis=-1)
    return out
