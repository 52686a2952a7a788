"""Every training setting as one dataclass: defaults (a named preset's, see spine_keras.presets), then a JSON/YAML
`--config` file, then flags."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spine_keras.choices import (
    ACTIVATIONS,
    KEEPS,
    LOSSES,
    LR_SCHEDULES,
    NORMALIZATIONS,
    OPTIMIZERS,
    STRATEGIES,
    UPSAMPLINGS,
)
from spine_keras.errors import UserError
from spine_keras.presets import DEFAULT_PRESET, LEGACY_PRESET, PRESETS, train_shown, train_values

DEFAULT_BATCH = {"2d": 8, "3d": 2}
CUBE_CHECKS = ("full", "quick")  # spine-train --check-cube: read every value before training, or the layout only
MONITOR = "val_miou_nobg"  # the validation value that picks the best epoch (early stopping, checkpoints)
FLOATS = (
    "lr",
    "dropout",
    "dice_smooth",
    "ce_weight",
    "dice_weight",
    "val_fraction",
    "min_delta",
    "lr_factor",
    "min_lr",
)
# integer settings and their lowest value (None allowed where the default is None)
INTS = {
    "epochs": 1,
    "batch_size": 1,
    "steps_per_epoch": 1,
    "filters": 1,
    "depth": 1,
    "folds": 1,
    "seed": 0,
    "patience": 0,
    "lr_patience": 0,
    "warmup_epochs": 0,
    "verbose": 0,
}
BOOLS = ("deep_supervision", "dice_background", "dice_batch", "online_augment", "jit")
CHOICES = (
    ("loss", LOSSES),
    ("strategy", STRATEGIES),
    ("normalization", NORMALIZATIONS),
    ("upsampling", UPSAMPLINGS),
    ("lr_schedule", LR_SCHEDULES),
    ("keep", KEEPS),
)
GROUPS = {  # metadata "group" -> title of its section in `spine-train --help` ("" = the command's own flags)
    "": "",
    "model": "model and optimizer",
    "loss": "loss",
    "schedule": "schedule",
    "data": "data",
    "performance": "performance",
}


class SettingError(UserError):
    """A training setting outside its range; `name` says which, so the caller can say where it was given."""

    def __init__(self, name: str, expected: str, value: Any):
        super().__init__(f"{name} must be {expected}, got {value!r}")
        self.name, self.expected, self.value = name, expected, value

    def located(self, source: str) -> UserError:
        """The same error naming where the value came from: a flag (`--dice-smooth`) or a file."""
        where = f"--{self.name.replace('_', '-')}" if source == "flag" else f"{self.name} in {source}"
        return UserError(f"{where} must be {self.expected}, got {self.value!r}")


def _one_of(options: Sequence[str]) -> str:
    return f"one of {', '.join(options)}"


def _number(name: str, value: Any) -> float | None:
    """`value` as a finite float (None stays None); SettingError for text, booleans, NaN and infinities."""
    if value is None and name == "lr":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise SettingError(name, "a number", value)
    try:
        number = float(value)
    except ValueError:
        raise SettingError(name, "a number", value) from None
    if not math.isfinite(number):
        raise SettingError(name, "a finite number", value)
    return number


def _check_int(name: str, value: Any, lowest: int) -> None:
    """SettingError unless `value` is a whole number >= `lowest` (None allowed for the settings defaulting to it)."""
    if value is None and TrainSettings.__dataclass_fields__[name].default is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
        expected = "a positive integer" if lowest == 1 else f"an integer >= {lowest}"
        raise SettingError(name, expected, value)


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
    """What to train and how. A setting left None takes the value of the named `preset` (spine_keras.presets:
    `recipe` by default, or `paper`) when the object is built, so a recorded config.json holds the resolved values;
    optimizer, lr, activation and filters may stay None under `paper`: each arch's own paper preset. `depth`,
    `deep_supervision`, `batch_size`, `steps_per_epoch` and `folds` left None mean the arch's or the default.

    Each field with flag metadata (see `setting`) is also a `spine-train --NAME` flag; `augment` is config-only and
    `verbose` is set by `--quiet`.
    """

    preset: str = setting(
        DEFAULT_PRESET,
        "named defaults of the settings shown as 'the preset's': recipe (a plain U-Net recipe measured on lumbar "
        "MRI) or paper (the ICPR 2020 protocol, each arch at its paper preset)",
        choices=PRESETS,
    )
    cube: str = setting("cube.h5", "training cube")
    arch: list[str] | None = setting(
        None,
        "arch code, comma list (u1,uvd,uamd) or all; several archs are compared on the same folds",
        shown=train_shown("arch"),
    )
    out: str | None = setting(None, "run folder", shown="runs/<arch>-<2d|3d>-<timestamp>")
    optimizer: str | None = setting(None, "optimizer", "model", choices=OPTIMIZERS, shown=train_shown("optimizer"))
    lr: float | None = setting(None, "learning rate", "model", shown=train_shown("lr"))
    activation: str | None = setting(
        None, "activation after each convolution", "model", choices=ACTIVATIONS, shown=train_shown("activation")
    )
    filters: int | None = setting(None, "initial filters", "model", shown=train_shown("filters"))
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
    dice_batch: bool = setting(
        False, "Dice over the whole batch (each sample gets the batch's value) instead of per sample", "loss"
    )
    ce_weight: float = setting(1.0, "weight of the cross-entropy term", "loss")
    dice_weight: float = setting(1.0, "weight of the Dice term", "loss")
    epochs: int | None = setting(None, "most epochs to train", "schedule", shown=train_shown("epochs"))
    batch_size: int | None = setting(None, "per replica", "schedule", shown="8 for 2D, 2 for 3D")
    steps_per_epoch: int | None = setting(None, "cap on global steps per epoch", "schedule", shown="one pass")
    folds: int | None = setting(None, "K-fold cross-validation grouped by case", "data", shown="one split")
    fold: str = setting("all", "fold index or all", "data")
    val_fraction: float = setting(0.2, "cases held out without --folds", "data")
    seed: int = setting(0, "seed of the split, the shuffling and the initial weights", "data")
    online_augment: bool | None = setting(
        None,
        "augment training samples on the fly with the cube's augmentation settings",
        "data",
        shown=train_shown("online_augment"),
    )
    augment: dict[str, Any] | None = None
    strategy: str = setting("auto", "distribution strategy", "performance", choices=STRATEGIES)
    mixed_precision: bool | str | None = setting(
        None,
        "mixed_float16 on GPU, mixed_bfloat16 on CPU; auto: only where the hardware computes that type natively "
        "(a GPU of compute capability 7.0 or above, a CPU with AVX512-BF16 or AMX), else float32",
        "performance",
        shown=train_shown("mixed_precision"),
    )
    jit: bool = setting(False, "XLA-compile the forward/backward pass", "performance")
    patience: int | None = setting(
        None, "early stopping on val_miou_nobg, 0 = off", "schedule", shown=train_shown("patience")
    )
    min_delta: float = setting(0.0, "smallest improvement that counts", "schedule")
    lr_patience: int = setting(
        10, "epochs without improvement before the learning rate is reduced (plateau only), 0 = off", "schedule"
    )
    lr_factor: float = setting(0.5, "learning-rate reduction factor", "schedule")
    min_lr: float = setting(1e-6, "floor of the learning-rate reduction", "schedule")
    lr_schedule: str | None = setting(
        None,
        "learning rate over the steps: reduced on a val_miou_nobg plateau (--lr-patience, --lr-factor, --min-lr; "
        "plateau only), constant, or cosine or poly ((1 - t/T)^0.9) decay to 0 at the last step",
        "schedule",
        choices=LR_SCHEDULES,
        shown=train_shown("lr_schedule"),
    )
    warmup_epochs: int = setting(0, "epochs of linear warm-up from lr/10 to lr, step by step", "schedule")
    keep: str | None = setting(
        None,
        "the model a run keeps: the best epoch on val_miou_nobg, or the last epoch",
        "schedule",
        choices=KEEPS,
        shown=train_shown("keep"),
    )
    verbose: int = 1

    def __post_init__(self) -> None:
        self._resolve_preset()
        self.arch = parse_archs(self.arch)
        self.fold = str(self.fold).strip().lower()
        self.cube = str(self.cube) if isinstance(self.cube, os.PathLike) else self.cube
        self.out = str(self.out) if isinstance(self.out, os.PathLike) else self.out
        for name in FLOATS:  # YAML reads 1e-3 as a string
            setattr(self, name, _number(name, getattr(self, name)))
        for name, lowest in INTS.items():
            _check_int(name, getattr(self, name), lowest)
        for name in BOOLS:
            value = getattr(self, name)
            if not isinstance(value, bool) and not (value is None and name == "deep_supervision"):
                raise SettingError(name, "true or false", value)
        for name, ok, expected in self._checks():
            if not ok:
                raise SettingError(name, expected, getattr(self, name))

    def _resolve_preset(self) -> None:
        """Fill every setting left None with the preset's value (None stays None where the preset defers to each
        arch's own paper preset)."""
        if not isinstance(self.preset, str) or self.preset not in PRESETS:
            raise SettingError("preset", _one_of(PRESETS), self.preset)
        for name, value in train_values(self.preset).items():
            if getattr(self, name) is None:
                setattr(self, name, value)

    def _checks(self) -> list[tuple[str, bool, str]]:
        """(setting, holds, what it must be) for every choice and range rule."""
        return [
            *((name, getattr(self, name) in options, f"one of {', '.join(options)}") for name, options in CHOICES),
            ("optimizer", self.optimizer is None or str(self.optimizer).lower() in OPTIMIZERS, _one_of(OPTIMIZERS)),
            ("activation", self.activation is None or self.activation in ACTIVATIONS, _one_of(ACTIVATIONS)),
            (
                "mixed_precision",
                isinstance(self.mixed_precision, bool) or self.mixed_precision == "auto",
                _one_of(("true", "false", "auto")),
            ),
            ("cube", isinstance(self.cube, str) and bool(self.cube.strip()), "a file path"),
            ("out", self.out is None or (isinstance(self.out, str) and bool(self.out.strip())), "a folder path"),
            ("augment", self.augment is None or isinstance(self.augment, dict), "a mapping of augmentation settings"),
            ("lr", self.lr is None or self.lr > 0, "> 0"),
            ("dropout", 0 <= self.dropout < 1, "in [0, 1)"),
            ("dice_smooth", self.dice_smooth >= 0, ">= 0"),
            ("val_fraction", 0 < self.val_fraction < 1, "in (0, 1)"),
            ("min_delta", self.min_delta >= 0, ">= 0"),
            ("lr_factor", 0 < self.lr_factor < 1, "in (0, 1)"),
            ("min_lr", self.min_lr >= 0, ">= 0"),
            ("warmup_epochs", self.warmup_epochs < self.epochs, f"below epochs ({self.epochs})"),
            *self._weight_checks(),
            ("folds", self.folds is None or self.folds >= 2, "at least 2 (or not given, for one split)"),
            ("fold", self.fold == "all" or self.fold.isdigit(), "a fold index or 'all'"),
            (
                "fold",
                self.fold == "all" or not self.fold.isdigit() or int(self.fold) < (self.folds or 0),
                "'all' or an index below folds (with folds given)",
            ),
        ]

    def _weight_checks(self) -> list[tuple[str, bool, str]]:
        """Loss weights are >= 0, and the terms the loss uses do not all weigh 0 (the loss would be 0)."""
        used = {"ce": ("ce_weight",), "dice": ("dice_weight",), "ce+dice": ("ce_weight", "dice_weight")}[self.loss]
        zero = all(getattr(self, name) == 0 for name in used)
        other = f" when {used[1]} is 0" if len(used) == 2 else ""
        return [
            ("ce_weight", self.ce_weight >= 0, ">= 0"),
            ("dice_weight", self.dice_weight >= 0, ">= 0"),
            (used[0], not zero, f"> 0{other} (with loss {self.loss} the loss would be 0)"),
        ]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (recorded in config.json, accepted back by from_dict)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], origins: Mapping[str, str] | None = None) -> TrainSettings:
        """Settings from a mapping with dashed or underscored keys; an unknown key or a value out of range is a
        UserError, naming where the value came from when `origins` says (setting -> "flag" or "config file 'x'")."""
        data = {str(k).replace("-", "_"): v for k, v in data.items()}
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            where = sorted({(origins or {}).get(k, "") for k in unknown} - {"", "flag"})
            raise UserError(f"unknown training setting(s): {', '.join(unknown)}{' in ' + where[0] if where else ''}")
        try:
            return cls(**data)
        except SettingError as exc:
            source = (origins or {}).get(exc.name)
            raise (exc.located(source) if source else exc) from None

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

    if not isinstance(value, (str, list, tuple)) or any(not isinstance(v, str) for v in value):
        raise SettingError("arch", "a code, a comma list of codes or 'all'", value)
    items = value.split(",") if isinstance(value, str) else list(value)
    codes: list[str] = []
    for item in (str(i).strip() for i in items if str(i).strip()):
        codes.extend(ARCHS if item.lower() == "all" else [arch_code(item)])
    if not codes:
        raise UserError("no architecture given; use --arch CODE[,CODE...] or all")
    return list(dict.fromkeys(codes))


def read_config_file(path: Path | str) -> tuple[dict[str, Any], bool]:
    """Settings from a JSON or YAML file (a mapping of setting names to values), and whether the file is a run
    folder's config.json (its settings under a `settings` mapping)."""
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
    run_config = isinstance(data.get("settings"), dict)
    return (data["settings"] if run_config else data), run_config


def merge_settings(config_file: Path | str | None, flags: dict[str, Any]) -> TrainSettings:
    """Defaults, overridden by the config file, overridden by the flags given on the command line.

    A run's config.json holds resolved values: one written before presets existed names no preset and was trained
    with the paper's defaults (None meaning each arch's own), so it reads as `paper`; and a `--preset` flag cannot
    change the preset of a file whose values were already resolved under another one."""
    data, run_config = read_config_file(config_file) if config_file else ({}, False)
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    if run_config:
        recorded = data.setdefault("preset", LEGACY_PRESET)
        if "preset" in flags and flags["preset"] != recorded:
            raise UserError(
                f"--preset {flags['preset']}: config file '{config_file}' holds a run's settings resolved under the "
                f"{recorded!r} preset; drop --preset, or give the settings to change as flags"
            )
    origins = {k: f"config file '{config_file}'" for k in data}
    data.update(flags)
    origins.update({k: "flag" for k in flags})
    return TrainSettings.from_dict(data, origins)
