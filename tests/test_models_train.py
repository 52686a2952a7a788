"""Model factory: a few optimizer steps lower the loss, and `.keras` round trips give identical predictions."""

import functools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

from spine_keras.models import ARCHS, attention_maps, build_model, inference_model

STEPS = 3
# 2D in the fast core; 3D shares every block with 2D (one implementation), so it runs with the slow tests.
CASES = [(arch, 2) for arch in ARCHS] + [pytest.param(arch, 3, marks=pytest.mark.slow) for arch in ARCHS]


def tiny_shape(arch: str, rank: int) -> tuple[int, ...]:
    """The smallest input the arch accepts at the tiny depth (fcn: VGG16's 2^5)."""
    return (32 if arch == "fcn" else 16,) * rank + (1,)


@functools.cache
def trained(arch: str, rank: int) -> tuple[keras.Model, np.ndarray, list[float]]:
    """A tiny model after STEPS eager Adam steps on a fixed batch, with that batch and the losses seen."""
    keras.utils.set_random_seed(0)
    shape = tiny_shape(arch, rank)
    overrides = {"filters": 4} if arch == "fcn" else {"filters": 4, "depth": 2}
    model = build_model(arch, shape, 2, **overrides)
    n_out = len(model.outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=["sparse_categorical_crossentropy"] * n_out,
        loss_weights=[1.0] + [0.5**k for k in range(1, n_out)],
        run_eagerly=True,
    )
    x = np.random.default_rng(3).random((2, *shape), dtype=np.float32)
    y = [(x[..., 0] > 0.5).astype("int32")] * n_out
    losses = [float(model.train_on_batch(x, y)[0] if n_out > 1 else model.train_on_batch(x, y)) for _ in range(STEPS)]
    return model, x, losses


@pytest.mark.parametrize("arch,rank", CASES)
def test_optimizer_steps_lower_the_loss(arch, rank):
    _, _, losses = trained(arch, rank)
    assert np.all(np.isfinite(losses))
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("arch,rank", CASES)
def test_keras_round_trip_gives_identical_predictions(arch, rank, tmp_path):
    model, x, _ = trained(arch, rank)
    path = tmp_path / f"{arch}_{rank}d.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    assert loaded.output_names == model.output_names
    for before, after in zip(model(x, training=False), loaded(x, training=False)):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(before), keras.ops.convert_to_numpy(after))
    if ARCHS[arch].attention:
        for before, after in zip(attention_maps(model, x), attention_maps(loaded, x)):
            np.testing.assert_array_equal(before, after)


def test_exported_inference_model_round_trip(tmp_path):
    model, x, _ = trained("uvad", 3)
    path = tmp_path / "uvad_inference.keras"
    inference_model(model).save(path)
    loaded = keras.saving.load_model(path, compile=False)
    assert loaded.output_names == ["seg"]
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded(x, training=False)), keras.ops.convert_to_numpy(model(x, training=False)[0])
    )
