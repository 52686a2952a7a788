"""U-Net family (u1, ud, umd, uvd, uamd, uvad, uad): one encoder-decoder with optional A, M, V, D ingredients."""

from __future__ import annotations

from keras import layers

from spine_keras.models import blocks
from spine_keras.models.config import BuildConfig, level_filters
from spine_keras.models.registry import VGG16_CONVS


def _block(x, filters: int, cfg: BuildConfig, name: str):
    """The configured body block: inception module for multi-kernel archs, else two convolutions."""
    if cfg.spec.multi_kernel:
        return blocks.inception_block(x, filters, cfg, name)
    return blocks.conv_block(x, filters, cfg, name)


def build_unet(inputs, cfg: BuildConfig) -> list:
    """Outputs of the U-Net: `seg` at full resolution, then `aux_1`.. (finest first) under deep supervision."""
    x, skips = inputs, []
    for level in range(cfg.depth):
        name = f"enc{level + 1}"
        if cfg.spec.vgg:
            x = blocks.conv_block(x, level_filters(cfg, level), cfg, name, convs=VGG16_CONVS[level])
        else:
            x = _block(x, level_filters(cfg, level), cfg, name)
        skips.append(x)
        x = blocks.pool(x, cfg, f"pool{level + 1}")
    x = _block(x, level_filters(cfg, cfg.depth), cfg, "bottleneck")
    aux = []
    for level in reversed(range(cfg.depth)):
        filters, skip = level_filters(cfg, level), skips[level]
        if cfg.spec.attention:
            skip = blocks.attention_gate(skip, x, cfg, level + 1)
        up = blocks.upsample(x, 2, filters, cfg, f"up{level + 1}")
        x = layers.Concatenate(name=f"concat{level + 1}")([up, skip])
        x = _block(x, filters, cfg, f"dec{level + 1}")
        if cfg.deep_supervision and level > 0:
            aux.append(blocks.seg_head(x, 2**level, cfg, f"aux_{level}"))
    return [blocks.seg_head(x, 1, cfg, "seg"), *reversed(aux)]
