"""Static facts about built models: parameter count, outputs and theoretical receptive field."""

from __future__ import annotations

import math

import keras

from spine_keras.models.upsample import LinearUpsample


def _step(layer: keras.layers.Layer, rf: float, jump: float) -> tuple[float, float]:
    """Receptive field and input-pixel jump after `layer`, along one spatial axis."""
    cfg = layer.get_config()
    if isinstance(layer, (keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)):
        k, s = cfg["kernel_size"][0], cfg["strides"][0]
        return rf + (math.ceil(k / s) - 1) * jump, jump / s
    if "kernel_size" in cfg:
        k, s, d = cfg["kernel_size"][0], cfg["strides"][0], cfg["dilation_rate"][0]
        return rf + (k - 1) * d * jump, jump * s
    if "pool_size" in cfg:
        k, s = cfg["pool_size"][0], cfg["strides"][0]
        return rf + (k - 1) * jump, jump * s
    if isinstance(layer, LinearUpsample) and layer.factor > 1:
        return rf + jump, jump / layer.factor
    return rf, jump


def _walk(model: keras.Model) -> dict[int, tuple[float, float]]:
    """Receptive field and feature stride of every tensor of `model`, keyed by tensor id."""
    known: dict[int, tuple[float, float]] = {id(t): (1.0, 1.0) for t in model.inputs}
    pending = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    while pending:
        for layer in list(pending):
            ins = layer.input if isinstance(layer.input, (list, tuple)) else [layer.input]
            if all(id(t) in known for t in ins):
                rf = max(known[id(t)][0] for t in ins)
                known[id(layer.output)] = _step(layer, rf, known[id(ins[0])][1])
                pending.remove(layer)
    return known


def receptive_field(model: keras.Model, output: str = "seg") -> int:
    """Theoretical receptive field (pixels per axis) of `output`, from kernels, strides and upsampling.

    Merges take the widest branch; normalization statistics are ignored.
    """
    return round(_walk(model)[id(model.get_layer(output).output)][0])


def describe(model: keras.Model) -> dict:
    """Parameters, output names, depth (2x poolings down to the coarsest level) and receptive field of `model`."""
    known = _walk(model)
    coarsest = max(jump for _, jump in known.values())
    return {
        "params": model.count_params(),
        "outputs": list(model.output_names),
        "depth": round(math.log2(coarsest)),
        "receptive_field": round(known[id(model.get_layer("seg").output)][0]),
    }
