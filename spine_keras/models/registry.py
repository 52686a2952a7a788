"""Architecture codes of the ICPR 2020 paper and their training presets, kept as plain data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spine_keras.errors import UserError


@dataclass(frozen=True)
class ArchSpec:
    """Which ingredients one architecture code combines."""

    description: str
    attention: bool = False
    multi_kernel: bool = False
    vgg: bool = False
    deep_supervision: bool = False
    fcn: bool = False


ARCHS: dict[str, ArchSpec] = {
    "u1": ArchSpec("U-Net"),
    "ud": ArchSpec("U-Net + deep supervision", deep_supervision=True),
    "umd": ArchSpec("U-Net + multi-kernel + deep supervision", multi_kernel=True, deep_supervision=True),
    "uvd": ArchSpec("U-Net + VGG16 encoder + deep supervision", vgg=True, deep_supervision=True),
    "uamd": ArchSpec(
        "U-Net + attention gates + multi-kernel + deep supervision",
        attention=True,
        multi_kernel=True,
        deep_supervision=True,
    ),
    "uvad": ArchSpec(
        "U-Net + VGG16 encoder + attention gates + deep supervision", attention=True, vgg=True, deep_supervision=True
    ),
    "uad": ArchSpec("U-Net + attention gates + deep supervision", attention=True, deep_supervision=True),
    "fcn": ArchSpec("FCN8 on a VGG16 backbone", vgg=True, fcn=True),
}

PRESETS: dict[str, dict[str, Any]] = {
    "uad": {"optimizer": "rmsprop", "lr": 0.001, "activation": "relu", "filters": 16},
    "uvad": {"optimizer": "adam", "lr": 0.00033, "activation": "prelu", "filters": 32},
    "uamd": {"optimizer": "adam", "lr": 0.00033, "activation": "relu", "filters": 16},
    "uvd": {"optimizer": "adam", "lr": 0.00033, "activation": "prelu", "filters": 32},
    "umd": {"optimizer": "adam", "lr": 0.00033, "activation": "relu", "filters": 32},
    "ud": {"optimizer": "adam", "lr": 0.00033, "activation": "relu", "filters": 64},
    "u1": {"optimizer": "adadelta", "lr": 1.0, "activation": "relu", "filters": 64},
    "fcn": {"optimizer": "adam", "lr": 0.00033, "activation": "relu", "filters": 32},
}

# VGG16: 13 convolutions in 5 stages, each stage closed by a 2x max pooling.
VGG16_CONVS: tuple[int, ...] = (2, 2, 3, 3, 3)


def arch_code(arch: str) -> str:
    """The canonical (lower-case) code of `arch`, or a UserError listing the valid codes."""
    code = str(arch).strip().lower()
    if code not in ARCHS:
        raise UserError(f"unknown architecture {arch!r}; valid codes: {', '.join(ARCHS)}")
    return code


def preset(arch: str) -> dict[str, Any]:
    """The paper's training preset of `arch` (optimizer, lr, activation, filters) as a fresh dict."""
    return dict(PRESETS[arch_code(arch)])
