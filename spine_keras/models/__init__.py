"""Model factory: the ICPR 2020 U-Net variants and FCN8, in 2D and 3D, from one call."""

from spine_keras.models.config import OVERRIDES
from spine_keras.models.factory import attention_layers, attention_maps, attention_model, build_model, inference_model
from spine_keras.models.introspect import describe, receptive_field
from spine_keras.models.registry import ARCHS, PRESETS, arch_code, preset
from spine_keras.models.upsample import LinearUpsample

__all__ = [
    "ARCHS",
    "OVERRIDES",
    "PRESETS",
    "LinearUpsample",
    "arch_code",
    "attention_layers",
    "attention_maps",
    "attention_model",
    "build_model",
    "describe",
    "inference_model",
    "preset",
    "receptive_field",
]
