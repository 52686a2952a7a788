"""Settings of the iterative vertebra network: geometry, network size, sampling, loss and training, as one typed
dataclass written into every run folder and export (`instances.json`)."""

from __future__ import annotations

import dataclasses
import math

from spine_keras.errors import UserError


def _field(default: object, text: str) -> object:
    """A field whose `help` metadata is its spine-instances train flag's --help text."""
    return dataclasses.field(default=default, metadata={"help": text})


LR_SCHEDULES = ("constant", "cosine")
MAX_PATCH = 256  # voxels per side of a patch (a 256^3 float32 patch is 64 MiB, before the network)


@dataclasses.dataclass
class InstanceConfig:
    """What the network sees and how it learns. Sizes are in isotropic voxels of `spacing_mm`. The defaults are the
    CPU recipe measured on VB3 (docs/results.md): 5,000 steps of 2 patches, about 26 minutes on two cores."""

    spacing_mm: float = _field(1.5, "isotropic voxel size (mm) the volumes are resampled to")
    patch: tuple[int, int, int] = _field((48, 48, 48), "patch shape; must hold a whole vertebra; divisible by 2**depth")
    filters: int = _field(8, "channels of the first level, doubled per level")
    depth: int = _field(3, "poolings in the U-Net")
    empty_fraction: float = _field(0.25, "share of training patches whose target is empty")
    jitter: float = _field(0.2, "random shift of a patch from its vertebra's centre, as a fraction of the patch")
    weight_gamma: float = _field(8.0, "boundary weighting 1 + gamma * exp(-d^2 / sigma^2), d: distance to the surface")
    weight_sigma_mm: float = _field(6.0, "sigma (mm) of the boundary weighting")
    batch: int = _field(2, "patches per step")
    steps: int = _field(250, "steps per epoch")
    epochs: int = _field(20, "epochs of --steps steps")
    learning_rate: float = _field(1e-3, "Adam learning rate")
    lr_schedule: str = _field("cosine", "constant, or cosine: the rate decays to 0 over the run's steps")
    seed: int = _field(0, "seed of the samples and the initial weights")
    threshold: float = _field(0.5, "mask probability that counts as vertebra")
    min_ml: float = _field(2.0, "the smallest vertebra (ml) the traversal accepts")
    max_vertebrae: int = _field(30, "most vertebrae one traversal adds")

    def __post_init__(self) -> None:
        whole = [f.name for f in dataclasses.fields(self) if f.type == "int"]
        for name in whole:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise UserError(f"--{name.replace('_', '-')} must be a whole number, not {value}")
        self.patch = tuple(int(p) if float(p).is_integer() else p for p in self.patch)
        if len(self.patch) != 3 or any(not float(p).is_integer() or p % 2**self.depth or p <= 0 for p in self.patch):
            multiple = 2**self.depth
            raise UserError(
                f"--patch {self.patch}: give three sizes, each a positive multiple of 2**depth = {multiple}"
            )
        checks = {
            "--spacing-mm": (0.1 <= self.spacing_mm <= 20, "in [0.1, 20] mm"),
            "--patch": (max(self.patch) <= MAX_PATCH, f"at most {MAX_PATCH} a side"),
            "--filters": (self.filters >= 1, ">= 1"),
            "--depth": (1 <= self.depth <= 5, "in [1, 5]"),
            "--empty-fraction": (0.0 <= self.empty_fraction < 1.0, "in [0, 1)"),
            "--jitter": (0.0 <= self.jitter <= 0.5, "in [0, 0.5]"),
            "--weight-gamma": (0.0 <= self.weight_gamma < math.inf, "finite and >= 0"),
            "--weight-sigma-mm": (0.0 < self.weight_sigma_mm < math.inf, "finite and > 0"),
            "--batch": (self.batch >= 1, ">= 1"),
            "--steps": (self.steps >= 1, ">= 1"),
            "--epochs": (self.epochs >= 1, ">= 1"),
            "--learning-rate": (0 < self.learning_rate < 1, "in (0, 1)"),
            "--lr-schedule": (self.lr_schedule in LR_SCHEDULES, " or ".join(LR_SCHEDULES)),
            "--seed": (0 <= self.seed < 2**32, "in [0, 2**32)"),
            "--threshold": (0 < self.threshold < 1, "in (0, 1)"),
            "--min-ml": (0 <= self.min_ml < math.inf, "finite and >= 0"),
            "--max-vertebrae": (self.max_vertebrae >= 1, ">= 1"),
        }
        bad = [(flag, bounds) for flag, (ok, bounds) in checks.items() if not ok]
        if bad:
            raise UserError(f"{bad[0][0]} must be {bad[0][1]}; see spine-instances train --help")

    @property
    def min_voxels(self) -> int:
        """`min_ml` in isotropic voxels."""
        return max(1, int(round(self.min_ml * 1000.0 / self.spacing_mm**3)))

    def traversal(self) -> dict:
        """The settings `reference.traverse` reads."""
        return {"threshold": self.threshold, "min_voxels": self.min_voxels, "max_vertebrae": self.max_vertebrae}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"patch": list(self.patch)}

    @classmethod
    def from_dict(cls, data: dict) -> InstanceConfig:
        """The config a run recorded; a run recorded before `lr_schedule` existed trained at a constant rate."""
        names = {f.name for f in dataclasses.fields(cls)}
        data = {"lr_schedule": "constant"} | data
        return cls(**{k: (tuple(v) if k == "patch" else v) for k, v in data.items() if k in names})
