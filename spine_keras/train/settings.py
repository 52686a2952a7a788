"""Every training setting as one dataclass: defaults, then a JSON/YAML `--config` file, then flags."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from spine_keras.errors import UserError
from spine_keras.losses import LOSSES
from spine_keras.models import ARCHS, arch_code
from spine_keras.train.strategy import STRATEGIES

DEFAULT_BATCH = {"2d": 8, "3d": 2}
FLOATS = ("lr", "dropout", "dice_smooth", "val_fraction", "min_delta", "lr_factor", "min_lr")
OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd", "adadelta", "adagrad", "nadam")


@dataclass
class TrainSettings:
    """What to train and how; None means the arch's preset (optimizer, lr, activation, filters) or the default."""

    cube: str = "cube.h5"
    arch: list[str] = field(default_factory=lambda: ["uamd"])
    out: str | None = None
    optimizer: str | None = None
    lr: float | None = None
    activation: str | None = None
    filters: int | None = None
    depth: int | None = None
    normalization: str = "batch"
    dropout: float = 0.0
    upsampling: str = "transpose"
    deep_supervision: bool | None = None
    loss: str = "ce+dice"
    dice_background: bool = False
    dice_smooth: float = 1.0
    epochs: int = 100
    batch_size: int | None = None
    steps_per_epoch: int | None = None
    folds: int | None = None
    fold: str = "all"
    val_fraction: float = 0.2
    seed: int = 0
    online_augment: bool = False
    augment: dict[str, Any] | None = None
    strategy: str = "auto"
    mixed_precision: bool = False
    jit: bool = False
    patience: int = 20
    min_delta: float = 0.0
    lr_patience: int = 10
    lr_factor: float = 0.5
    min_lr: float = 1e-6
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
    items = value.split(",") if isinstance(value, str) else list(value)
    codes: list[str] = []
    for item in (str(i).strip() for i in items if str(i).strip()):
        codes.extend(ARCHS if item.lower() == "all" else [arch_code(item)])
    if not codes:
        raise UserError("no architecture given; use --arch CODE[,CODE...] or all")
    return list(dict.fromkeys(codes))


def read_config_file(path: Path | str) -> dict[str, Any]:
    """Settings from a JSON or YAML file (a mapping of setting names to values)."""
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
