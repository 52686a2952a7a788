"""`build_model` and the views of a built model needed for export and visualisation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from spine_keras.errors import UserError
from spine_keras.models.config import make_config
from spine_keras.models.fcn import build_fcn
from spine_keras.models.unet import build_unet

MAIN_OUTPUT = "seg"
ATTENTION_PREFIX = "attention_"


def build_model(arch: str, input_shape: Sequence[int], n_classes: int, **overrides: Any) -> keras.Model:
    """Build architecture `arch` for `input_shape` ((H,W,C) for 2D, (D,H,W,C) for 3D) and `n_classes` classes.

    Overrides: filters, depth, activation, normalization, dropout, upsampling, final_activation,
    deep_supervision; filters and activation default to the arch's preset. Outputs: `seg` first, then
    `aux_1`.. (finest first, each at full resolution) when deep supervision is on.
    """
    cfg = make_config(arch, input_shape, n_classes, overrides)
    inputs = keras.Input(cfg.input_shape, name="image")
    outputs = build_fcn(inputs, cfg) if cfg.spec.fcn else build_unet(inputs, cfg)
    return keras.Model(inputs, outputs, name=f"{cfg.arch}_{cfg.rank}d")


def inference_model(model: keras.Model) -> keras.Model:
    """`model` reduced to its main `seg` output (for export and prediction), computing in float32.

    A model trained under mixed precision keeps float32 weights; its float32 copy predicts with them on any
    hardware, with no half-precision kernels and no rounding of the activations."""
    if any(layer.dtype_policy.name != "float32" for layer in model.layers):
        model = float32_copy(model)
    if len(model.outputs) == 1:
        return model
    return keras.Model(model.input, model.get_layer(MAIN_OUTPUT).output, name=f"{model.name}_inference")


def float32_copy(model: keras.Model) -> keras.Model:
    """A copy of `model` whose every layer computes in float32, holding the same weights, layer by layer."""

    def rebuilt(layer: keras.layers.Layer) -> keras.layers.Layer:
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    copy = keras.models.clone_model(model, clone_function=rebuilt)
    for layer in model.layers:
        copy.get_layer(layer.name).set_weights(layer.get_weights())
    return copy


def attention_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The attention-coefficient layers `attention_1`.. of `model`, finest first."""
    found = [layer for layer in model.layers if layer.name.startswith(ATTENTION_PREFIX)]
    return sorted(found, key=lambda layer: int(layer.name[len(ATTENTION_PREFIX) :]))


def attention_model(model: keras.Model) -> keras.Model:
    """A model (sharing weights) from `model`'s input to its attention coefficients, finest level first."""
    gates = attention_layers(model)
    if not gates:
        raise UserError(f"model {model.name!r} has no attention gates (use uad, uamd or uvad)")
    return keras.Model(model.input, [layer.output for layer in gates], name=f"{model.name}_attention")


def attention_maps(model: keras.Model, x: np.ndarray) -> list[np.ndarray]:
    """Attention coefficients in [0, 1] for batch `x`, one array (batch, *skip_shape, 1) per gate, finest first."""
    maps = attention_model(model)(x, training=False)
    return [keras.ops.convert_to_numpy(m) for m in (maps if isinstance(maps, (list, tuple)) else [maps])]
