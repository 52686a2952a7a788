"""Building blocks shared by 2D and 3D models: the rank of the tensor picks Conv2D or Conv3D."""

from __future__ import annotations

import math
from typing import Any

from keras import layers

from spine_keras.models.config import BuildConfig
from spine_keras.models.upsample import LinearUpsample

_LAYERS = {
    2: {"conv": layers.Conv2D, "transpose": layers.Conv2DTranspose, "pool": layers.MaxPooling2D},
    3: {"conv": layers.Conv3D, "transpose": layers.Conv3DTranspose, "pool": layers.MaxPooling3D},
}
GROUPS = 8  # channel groups of 'group' normalization (fewer when the channels do not allow 8)
LEAKY_SLOPE = 0.1


def nd(kind: str, rank: int, *args: Any, **kwargs: Any) -> layers.Layer:
    """A 'conv', 'transpose' or 'pool' layer for `rank` spatial axes."""
    return _LAYERS[rank][kind](*args, **kwargs)


def conv(x, filters: int, kernel: int, cfg: BuildConfig, name: str, strides: int = 1, use_bias: bool = True):
    """A same-padded, He-initialised convolution of the model's rank."""
    return nd(
        "conv",
        cfg.rank,
        filters,
        kernel,
        strides=strides,
        padding="same",
        use_bias=use_bias,
        kernel_initializer="he_normal",
        name=name,
    )(x)


def normalize(x, cfg: BuildConfig, name: str):
    """Batch, group or instance normalization of `x` (or `x` itself for 'none')."""
    channels = x.shape[-1]
    if cfg.normalization == "batch":
        return layers.BatchNormalization(name=name)(x)
    if cfg.normalization == "group":
        return layers.GroupNormalization(groups=math.gcd(channels, GROUPS), name=name)(x)
    if cfg.normalization == "instance":
        return layers.GroupNormalization(groups=channels, name=name)(x)
    return x


def activate(x, cfg: BuildConfig, name: str):
    """ReLU, channel-wise PReLU or leaky ReLU, as configured."""
    if cfg.activation == "prelu":
        return layers.PReLU(shared_axes=list(range(1, cfg.rank + 1)), name=name)(x)
    if cfg.activation == "leaky_relu":
        return layers.LeakyReLU(negative_slope=LEAKY_SLOPE, name=name)(x)
    return layers.ReLU(name=name)(x)


def conv_norm_act(x, filters: int, kernel: int, cfg: BuildConfig, name: str):
    """Convolution, normalization, activation (the bias is left to the normalization when there is one)."""
    x = conv(x, filters, kernel, cfg, f"{name}_conv", use_bias=cfg.normalization == "none")
    return activate(normalize(x, cfg, f"{name}_norm"), cfg, f"{name}_act")


def dropout(x, cfg: BuildConfig, name: str):
    """Dropout at the configured rate, or `x` itself at rate 0."""
    return layers.Dropout(cfg.dropout, name=name)(x) if cfg.dropout else x


def conv_block(x, filters: int, cfg: BuildConfig, name: str, convs: int = 2):
    """`convs` 3-kernel conv-norm-act units, the plain U-Net block (and a VGG stage with convs=2 or 3)."""
    for i in range(1, convs + 1):
        x = conv_norm_act(x, filters, 3, cfg, f"{name}_{i}")
    return dropout(x, cfg, f"{name}_drop")


def inception_block(x, filters: int, cfg: BuildConfig, name: str):
    """Inception module: parallel 1, 3 and 5 kernels (after 1-kernel reductions) and a pooling branch."""
    branch = filters // 4
    one = conv_norm_act(x, filters - 3 * branch, 1, cfg, f"{name}_b1")
    three = conv_norm_act(conv_norm_act(x, branch, 1, cfg, f"{name}_b3r"), branch, 3, cfg, f"{name}_b3")
    five = conv_norm_act(conv_norm_act(x, branch, 1, cfg, f"{name}_b5r"), branch, 5, cfg, f"{name}_b5")
    pooled = nd("pool", cfg.rank, 3, strides=1, padding="same", name=f"{name}_pool")(x)
    pooled = conv_norm_act(pooled, branch, 1, cfg, f"{name}_bp")
    x = layers.Concatenate(name=f"{name}_concat")([one, three, five, pooled])
    return dropout(x, cfg, f"{name}_drop")


def pool(x, cfg: BuildConfig, name: str):
    """2x max pooling on every spatial axis."""
    return nd("pool", cfg.rank, 2, name=name)(x)


def upsample(x, factor: int, filters: int, cfg: BuildConfig, name: str, kernel: int | None = None):
    """Upsample by `factor` to `filters` channels: transposed convolution, or linear resize + 1-kernel conv."""
    if cfg.upsampling == "transpose":
        return nd(
            "transpose",
            cfg.rank,
            filters,
            kernel or factor,
            strides=factor,
            padding="same",
            kernel_initializer="he_normal",
            name=name,
        )(x)
    x = LinearUpsample(factor, name=f"{name}_resize")(x)
    return conv(x, filters, 1, cfg, name)


def attention_gate(skip, gating, cfg: BuildConfig, index: int):
    """Additive attention gate (Oktay et al. 2018): weights `skip` by coefficients in [0, 1] from `gating`.

    The coefficients are the output of the layer named `attention_{index}` (skip resolution, one channel).
    """
    inter = max(skip.shape[-1] // 2, 1)
    theta = conv(skip, inter, 2, cfg, f"att{index}_theta", strides=2, use_bias=False)
    phi = conv(gating, inter, 1, cfg, f"att{index}_phi")
    f = layers.ReLU(name=f"att{index}_relu")(layers.Add(name=f"att{index}_add")([theta, phi]))
    psi = layers.Activation("sigmoid", name=f"att{index}_sigmoid")(conv(f, 1, 1, cfg, f"att{index}_psi"))
    alpha = LinearUpsample(2, name=f"attention_{index}")(psi)
    return layers.Multiply(name=f"att{index}_gated")([skip, alpha])


def seg_head(x, factor: int, cfg: BuildConfig, name: str):
    """1-kernel class scores upsampled by `factor`, then the final activation in float32, named `name`."""
    x = conv(x, cfg.n_classes, 1, cfg, f"{name}_logits")
    if factor > 1:
        x = LinearUpsample(factor, name=f"{name}_up")(x)
    return layers.Activation(cfg.final_activation or "linear", dtype="float32", name=name)(x)
