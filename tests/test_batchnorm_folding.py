"""Batch-norm folding: same outputs, no BatchNormalization left, hand-computed folded weights, unsafe pairs kept."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from spine_keras.models import build_model
from spine_keras.predict.batchnorm_folding import fold_batchnorm, foldable_pairs


def norms(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


@pytest.mark.parametrize(
    "arch, shape",
    [("u1", (16, 16, 16, 1)), ("uad", (32, 32, 1)), ("umd", (32, 32, 1)), ("uad", (16, 16, 16, 1))],
)
def test_folded_model_keeps_the_outputs_and_drops_every_norm(arch, shape):
    rng = np.random.default_rng(4)
    model = build_model(arch, shape, 3, filters=4, depth=2)
    for norm in norms(model):  # trained-looking statistics, so the fold has something to do
        n = norm.moving_mean.shape[0]
        norm.set_weights(
            [rng.uniform(0.5, 1.5, n), rng.normal(0, 0.2, n), rng.normal(0, 0.3, n), rng.uniform(0.5, 2.0, n)]
        )
    folded = fold_batchnorm(model)
    assert len(foldable_pairs(model)) == len(norms(model)) > 0
    assert norms(folded) == []
    assert len(folded.layers) == len(model.layers) - len(norms(model))
    batch = rng.normal(size=(2, *shape)).astype(np.float32)
    expected, found = (keras.tree.flatten(m(batch, training=False)) for m in (model, folded))
    assert len(expected) == len(found) == len(model.outputs) == len(folded.outputs)
    assert folded.output_names == model.output_names
    for want, got in zip(expected, found):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


def test_folded_weights_match_the_hand_computed_affine_map():
    inputs = keras.Input((4, 4, 1))
    conv = keras.layers.Conv2D(1, 1, name="conv")
    norm = keras.layers.BatchNormalization(epsilon=1e-12, name="norm")
    model = keras.Model(inputs, keras.layers.Activation("linear", name="out")(norm(conv(inputs))))
    conv.set_weights([np.full((1, 1, 1, 1), 2.0), np.array([1.0])])
    norm.set_weights([np.array([0.5]), np.array([1.0]), np.array([3.0]), np.array([4.0])])  # gamma beta mean var
    folded = fold_batchnorm(model)
    kernel, bias = folded.get_layer("conv").get_weights()
    # ((2x + 1) - 3) / sqrt(4) * 0.5 + 1 = 0.5x + 0.5
    np.testing.assert_allclose(kernel.ravel(), [0.5], rtol=1e-6)
    np.testing.assert_allclose(bias, [0.5], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(folded(np.full((1, 4, 4, 1), 3.0, np.float32))), 2.0, rtol=1e-6)


def test_a_conv_with_a_second_consumer_or_a_norm_as_output_is_not_folded():
    inputs = keras.Input((8, 8, 2))
    shared = keras.layers.Conv2D(2, 3, padding="same", name="shared")(inputs)
    normed = keras.layers.BatchNormalization(name="norm_shared")(shared)
    added = keras.layers.Add(name="add")([normed, shared])  # the raw conv output is used again
    last = keras.layers.Conv2D(2, 1, name="last")(added)
    out = keras.layers.BatchNormalization(name="norm_out")(last)  # a model output keeps its name
    model = keras.Model(inputs, out)
    assert foldable_pairs(model) == {}
    assert fold_batchnorm(model) is model


def test_sequential_model_is_returned_unchanged():
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3), keras.layers.BatchNormalization()])
    assert fold_batchnorm(model) is model
