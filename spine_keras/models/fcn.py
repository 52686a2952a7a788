"""FCN8 (Long et al. 2015) on a VGG16 backbone: pool3/pool4 skip fusion and 8x upsampling."""

from __future__ import annotations

from keras import layers

from spine_keras.models import blocks
from spine_keras.models.config import FC_SCALE, BuildConfig, level_filters
from spine_keras.models.registry import VGG16_CONVS


def build_fcn(inputs, cfg: BuildConfig) -> list:
    """The single `seg` output of FCN8."""
    x, pools = inputs, []
    for level, convs in enumerate(VGG16_CONVS):
        x = blocks.conv_block(x, level_filters(cfg, level), cfg, f"enc{level + 1}", convs=convs)
        x = blocks.pool(x, cfg, f"pool{level + 1}")
        pools.append(x)
    x = blocks.conv_norm_act(x, FC_SCALE * cfg.filters, 3, cfg, "fc6")
    x = blocks.dropout(x, cfg, "fc6_drop")
    x = blocks.conv_norm_act(x, FC_SCALE * cfg.filters, 1, cfg, "fc7")
    x = blocks.dropout(x, cfg, "fc7_drop")
    score = blocks.conv(x, cfg.n_classes, 1, cfg, "score_fr")
    for pool in (4, 3):
        score = blocks.upsample(score, 2, cfg.n_classes, cfg, f"up_to_pool{pool}", kernel=4)
        skip = blocks.conv(pools[pool - 1], cfg.n_classes, 1, cfg, f"score_pool{pool}")
        score = layers.Add(name=f"fuse_pool{pool}")([score, skip])
    score = blocks.upsample(score, 8, cfg.n_classes, cfg, "up_8x", kernel=16)
    return [layers.Activation(cfg.final_activation or "linear", dtype="float32", name="seg")(score)]
