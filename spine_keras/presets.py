"""The two named sets of defaults, as plain data: `recipe` (the default) and `paper` (the reproduction).

`spine-make-cube --preset`, `spine-train --preset` and a study file's `preset:` key pick one; every value a user
gives (a flag, a --config value, a study key) overrides the preset's. Nothing here imports more than the standard
library, so the commands build their parsers and `--help` from it without NumPy or TensorFlow.

- `recipe`: what measured best on real lumbar MRI (studies/ablation.yaml, variant 2d-u1-native): a plain U-Net (`u1`, 16
  filters, Adam 1e-3, ReLU) on z-scored slices at the planner's native in-plane shape (`--shape auto`), mild
  augmentation on the fly (rotation 10 degrees, zoom 0.9-1.1, shift 0.05, no flips, noise or blur; no offline
  copies), 10 epochs with a cosine decay, keeping the last epoch (no early stopping, no plateau reduction), mixed
  precision where the hardware computes it natively (float32 elsewhere).
- `paper`: the ICPR 2020 paper's protocol, kept exactly: 256x256 slices (64x128x128 volumes in 3D), the paper's
  heavy augmentation (flips, noise, blur), each arch's own optimizer, learning rate, activation and filters
  (spine_keras.models.registry.PRESETS), up to 100 epochs with a plateau reduction (10 epochs), early stopping
  (20 epochs) and the best epoch kept, no online augmentation, float32.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

PRESETS = ("recipe", "paper")
DEFAULT_PRESET = "recipe"
LEGACY_PRESET = "paper"  # the defaults of a run recorded before presets existed (its config.json names none)
ARCH_OWN = "the arch's"  # how --help names a value that each arch's paper preset supplies (None in the data)

# The sample shape per mode; "auto" asks the planner (spine_keras.planner) for the list's native shape.
CUBE_SHAPES: MappingProxyType[str, MappingProxyType[str, Any]] = MappingProxyType(
    {
        "recipe": MappingProxyType({"2d": "auto", "3d": "auto"}),
        "paper": MappingProxyType({"2d": (256, 256), "3d": (64, 128, 128)}),
    }
)

# AugmentConfig fields each preset sets; the fields a preset leaves out keep AugmentConfig's defaults (the MRI
# transforms: off). The paper's values are spelled out so that the reproduction never follows a changed default.
CUBE_AUGMENT: MappingProxyType[str, MappingProxyType[str, Any]] = MappingProxyType(
    {
        "recipe": MappingProxyType(
            {"rotation": 10.0, "zoom": (0.9, 1.1), "shift": 0.05, "flip_prob": 0.0, "noise_prob": 0.0, "blur_prob": 0.0}
        ),
        "paper": MappingProxyType(
            {
                "rotation": 20.0,
                "zoom": (0.5, 1.5),
                "flip_prob": 0.5,
                "shift": 0.1,
                "noise_std": (0.0, 0.1),
                "noise_prob": 0.5,
                "blur_sigma": (0.5, 1.0),
                "blur_prob": 0.25,
                "intensity_scale": (0.9, 1.1),
                "intensity_shift": (-0.1, 0.1),
                "intensity_prob": 0.5,
            }
        ),
    }
)

# TrainSettings values each preset supplies where the user gave none. None: each arch's paper preset
# (optimizer, lr, activation, filters), so several archs compared under `paper` each get their own.
TRAIN: MappingProxyType[str, MappingProxyType[str, Any]] = MappingProxyType(
    {
        "recipe": MappingProxyType(
            {
                "arch": ("u1",),
                "optimizer": "adam",
                "lr": 0.001,
                "activation": "relu",
                "filters": 16,
                "epochs": 10,
                "lr_schedule": "cosine",
                "keep": "last",
                "patience": 0,
                "online_augment": True,
                "mixed_precision": "auto",
            }
        ),
        "paper": MappingProxyType(
            {
                "arch": ("uamd",),
                "optimizer": None,
                "lr": None,
                "activation": None,
                "filters": None,
                "epochs": 100,
                "lr_schedule": "plateau",
                "keep": "best",
                "patience": 20,
                "online_augment": False,
                "mixed_precision": False,
            }
        ),
    }
)


def cube_augment(preset: str) -> dict[str, Any]:
    """The AugmentConfig fields `preset` sets, as plain JSON-able values (lists for ranges)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in CUBE_AUGMENT[preset].items()}


def cube_shape(preset: str, mode: str) -> tuple[int, ...] | str:
    """The sample shape of `preset` in `mode` ('2d' or '3d'): whole numbers, or 'auto' for the planner."""
    return CUBE_SHAPES[preset][mode]


def train_values(preset: str) -> dict[str, Any]:
    """The TrainSettings values `preset` supplies (a fresh dict; lists for the arch codes)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in TRAIN[preset].items()}


def _words(value: Any) -> str:
    """One default as --help shows it: 'a,b' for lists, yes/no for booleans, the arch's own for None."""
    if value is None:
        return ARCH_OWN
    if isinstance(value, bool):
        return "yes" if value else "no"
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def shown(values: dict[str, Any]) -> str:
    """--help words for a default that depends on the preset, e.g. "the preset's: recipe adam, paper the arch's"."""
    return "the preset's: " + ", ".join(f"{name} {_words(values[name])}" for name in PRESETS)


def train_shown(name: str) -> str:
    """--help words for the default of the training setting `name`."""
    return shown({preset: TRAIN[preset][name] for preset in PRESETS})
