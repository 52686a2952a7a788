"""Every training setting as one dataclass: defaults, then a JSON/YAML `--config` file, then flags."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spine_keras.choices import ACTIVATIONS, LOSSES, NORMALIZATIONS, OPTIMIZERS, STRATEGIES, UPSAMPLINGS
from spine_keras.errors import UserError

DEFAULT_BATCH = {"2d": 8, "3d": 2}
FLOATS = ("lr", "dropout", "dice_smooth", "val_fraction", "min_delta", "lr_factor", "min_lr")
GROUPS = {  # metadata "group" -> title of its section in `spine-train --help` ("" = the command's own flags)
    "": "",
    "model": "model and optimizer",
    "loss": "loss",
    "schedule": "schedule",
    "data": "data",
    "performance": "performance",
}


def setting(default: Any, help: str, group: str = "", *, choices: Sequence[str] | None = None, shown: str = "") -> Any:
    """A field whose metadata also describes its spine-train flag: help, --help section, choices, and `shown`,
    the words for a default that is not a plain value (e.g. None meaning "the arch's preset").
    A list default is given as a tuple and copied per instance."""
    metadata = {"help": help, "group": group, "choices": choices, "shown": shown}
    if isinstance(default, tuple):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainSettings:
    """What to train and how; None means the arch's preset (optimizer, lr, activation, filters) or the default.

    Each field with flag metadata (see `setting`) is also a `spine-train --NAME` flag; `augment` is config-only and
    `verbose` is set by `--quiet`.
    """

    cube: str = setting("cube.h5", "training cube")
    arch: list[str] = setting(
        ("uamd",), "arch code, comma list (u1,uvd,uamd) or all; several archs are compared on the same folds"
    )
    out: str | None = setting(None, "run folder", shown="runs/<arch>-<2d|3d>-<timestamp>")
    optimizer: str | None = setting(None, "optimizer", "model", choices=OPTIMIZERS, shown="the arch's preset")
    lr: float | None = setting(None, "learning rate", "model", shown="the arch's preset")
    activation: str | None = setting(
        None, "activation after each convolution", "model", choices=ACTIVATIONS, shown="the arch's preset"
    )
    filters: int | None = setting(None, "initial filters", "model", shown="the arch's preset")
    depth: int | None = setting(None, "pooling levels", "model", shown="the arch's")
    normalization: str = setting("batch", "normalization layer after each convolution", "model", choices=NORMALIZATIONS)
    dropout: float = setting(0.0, "dropout rate", "model")
    upsampling: str = setting("transpose", "decoder upsampling", "model", choices=UPSAMPLINGS)
    deep_supervision: bool | None = setting(
        None, "auxiliary outputs and losses on the decoder levels", "model", shown="the arch's"
    )
    loss: str = setting("ce+dice", "cross-entropy, Dice or their sum", "loss", choices=LOSSES)
    dice_background: bool = setting(False, "include the background class in the Dice loss", "loss")
    dice_smooth: float = setting(1.0, "Dice smoothing term", "loss")
    epochs: int = setting(100, "most epochs to train", "schedule")
    batch_size: int | None = setting(None, "per replica", "schedule", shown="8 for 2D, 2 for 3D")
    steps_per_epoch: int | None = setting(None, "cap on global steps per epoch", "schedule", shown="one pass")
    folds: int | None = setting(None, "K-fold cross-validation grouped by case", "data", shown="one split")
    fold: str = setting("all", "fold index or all", "data")
    val_fraction: float = setting(0.2, "cases held out without --folds", "data")
    seed: int = setting(0, "seed of the split, the shuffling and the initial weights", "data")
    online_augment: bool = setting(
        False, "augment training samples on the fly with the cube's augmentation settings", "data"
    )
    augment: dict[str, Any] | None = None
    strategy: str = setting("auto", "distribution strategy", "performance", choices=STRATEGIES)
    mixed_precision: bool = setting(False, "mixed_float16 on GPU, mixed_bfloat16 on CPU", "performance")
    jit: bool = setting(False, "XLA-compile the forward/backward pass", "performance")
    patience: int = setting(20, "early stopping on val_miou_nobg, 0 = off", "schedule")
    min_delta: float = setting(0.0, "smallest improvement that counts", "schedule")
    lr_patience: int = setting(
        10, "epochs without improvement before the learning rate is reduced, 0 = off", "schedule"
    )
    lr_factor: float = setting(0.5, "learning-rate reduction factor", "schedule")
    min_lr: float = setting(1e-6, "floor of the learning-rate reduction", "schedule")
    verbose: int = 1

    def __post_init__(self) -> None:
        self.arch = parse_archs(self.arch)
        for name in FLOATS:  # YAML reads 1e-3 as a string
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                try:
                    setattr(self, name, float(value))
                except (TypeError, ValueError) as exc:
                    raise UserError(f"{name} must be a number, got {value!r}") from exc
        self.fold = str(self.fold).strip().lower()
        for name in ("epochs", "batch_size", "steps_per_epoch", "filters", "depth", "folds"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise UserError(f"{name} must be a positive integer, got {value!r}")
        checks = [
            ("loss", self.loss in LOSSES, f"one of {', '.join(LOSSES)}"),
            ("strategy", self.strategy in STRATEGIES, f"one of {', '.join(STRATEGIES)}"),
            (
                "optimizer",
                self.optimizer is None or self.optimizer.lower() in OPTIMIZERS,
                f"one of {', '.join(OPTIMIZERS)}",
            ),
            ("lr", self.lr is None or self.lr > 0, "> 0"),
            ("fold", self.fold == "all" or self.fold.isdigit(), "a fold index or 'all'"),
            ("lr_factor", 0 < self.lr_factor < 1, "in (0, 1)"),
            ("patience", self.patience >= 0, ">= 0"),
            ("lr_patience", self.lr_patience >= 0, ">= 0"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise UserError(f"{name} must be {expected}, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (recorded in config.json, accepted back by from_dict)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainSettings:
        """Settings from a mapping with dashed or underscored keys; an unknown key is a UserError."""
        data = {str(k).replace("-", "_"): v for k, v in data.items()}
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise UserError(f"unknown training setting(s): {', '.join(unknown)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise UserError(f"bad training settings: {exc}") from exc

    def model_overrides(self, preset: dict[str, Any]) -> dict[str, Any]:
        """build_model keyword overrides: the preset's filters/activation unless set, plus the other options."""
        overrides: dict[str, Any] = {
            "filters": self.filters or preset["filters"],
            "activation": self.activation or preset["activation"],
            "normalization": self.normalization,
            "dropout": self.dropout,
            "upsampling": self.upsampling,
        }
        if self.depth is not None:
            overrides["depth"] = self.depth
        if self.deep_supervision is not None:
            overrides["deep_supervision"] = self.deep_supervision
        return overrides

    def batch_for(self, mode: str) -> int:
        """Per-replica batch size: the setting, else 8 for 2D and 2 for 3D."""
        return self.batch_size or DEFAULT_BATCH[mode]


def parse_archs(value: str | list[str]) -> list[str]:
    """'all', 'u1,uvd' or a list into canonical arch codes (duplicates dropped, order kept)."""
    from spine_keras.models.registry import ARCHS, arch_code  # Keras loads only once settings are built

    items = value.split(",") if isinstance(value, str) else list(value)
    codes: list[str] = []
    for item in (str(i).strip() for i in items if str(i).strip()):
        codes.extend(ARCHS if item.lower() == "all" else [arch_code(item)])
    if not codes:
        raise UserError("no architecture given; use --arch CODE[,CODE...] or all")
    return list(dict.fromkeys(codes))


def read_config_file(path: Path | str) -> dict[str, Any]:
    """Settings from a JSON or YAML file (a mapping of setting names to values)."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read config file '{path}' ({exc.strerror})") from exc
    try:
        data = yaml.safe_load(text) if path.suffix.lower() in (".yaml", ".yml") else json.loads(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise UserError(f"config file '{path}' is not valid {path.suffix[1:].upper() or 'JSON'}: {exc}") from exc
    if not isinstance(data, dict):
        raise UserError(f"config file '{path}' must hold a mapping of settings, e.g. {{\"epochs\": 50}}")
    return data.get("settings", data) if isinstance(data.get("settings"), dict) else data


def merge_settings(config_file: Path | str | None, flags: dict[str, Any]) -> TrainSettings:
    """Defaults, overridden by the config file, overridden by the flags given on the command line."""
    data = read_config_file(config_file) if config_file else {}
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    data.update(flags)
    return TrainSettings.from_dict(data)
