"""The study file: typed settings read from YAML and checked before anything runs.

`StudyConfig.from_yaml(path)` reads the file, refuses unknown keys (listing the valid ones), builds every variant's
cube and training settings (so a bad value is refused now, not an hour into the study), then checks the data: each
list exists and parses, each list's label map covers the label ids of every one of its label volumes and maps into
the study's classes, no case id appears twice among the training lists, and no test case is a training case.
Every problem is a `UserError` (one line, exit status 2). Nothing here imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spine_keras.errors import CaseError, UserError
from spine_keras.presets import DEFAULT_PRESET, PRESETS, cube_augment, cube_shape

TOP_KEYS = ("name", "output", "preset", "data", "classes", "cube", "variants", "folds", "seed", "train")
DATA_KEYS = ("train", "test")
LIST_KEYS = ("list", "label_map", "classes")
VARIANT_KEYS = ("mode", "arch", "shape", "suffix", "train", "cube")
MODES = ("2d", "3d")
PREPROCESS_KEYS = (
    "spacing",
    "interpolation",
    "normalization",
    "percentiles",
    "crop_roi_mm",
    "auto_crop_mm",
    "fit",
    "ignore_above_labels",
)
SAMPLING_KEYS = ("axis", "min_foreground", "stride", "background_keep", "context")
# Training settings the study itself decides (the cube it built, the variant's arch, the run folder, the folds, the
# preset of the top-level `preset:` key).
STUDY_OWNED_TRAIN = ("cube", "arch", "out", "folds", "fold", "seed", "val_fraction", "preset")
# Training defaults of a study: a fold's validation cases are its test cases, so none of them picks anything.
HELD_OUT_SAFE = {"keep": "last", "patience": 0, "lr_patience": 0}


def _augment_keys() -> tuple[str, ...]:
    from spine_keras.augment import AugmentConfig

    return tuple(f.name for f in dataclasses.fields(AugmentConfig))


def cube_keys() -> tuple[str, ...]:
    """Keys of a study's `cube:` mapping: preprocessing, sampling, `augment` (the number of copies), the
    augmentation ranges and `workers`."""
    return (*PREPROCESS_KEYS, *SAMPLING_KEYS, "augment", *_augment_keys(), "workers")


def short_hash(data: Any) -> str:
    """A 12-hex-digit sha256 of `data` as canonical JSON: the cache key of cubes and steps."""
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True)
class DataList:
    """One `image,label` list with the label map that turns its ids into the study's classes."""

    list: Path
    label_map: str | None = None
    classes: tuple[str, ...] | None = None  # when given, must equal the study's classes

    def to_dict(self) -> dict[str, Any]:
        return {"list": str(self.list), "label_map": self.label_map}


@dataclass(frozen=True)
class Variant:
    """One model to compare: a mode and an arch, with an optional sample shape and setting overrides."""

    mode: str
    arch: str
    shape: tuple[int, ...]
    suffix: str = ""
    train: dict[str, Any] = field(default_factory=dict)
    cube: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """`<mode>-<arch>`, plus `-<suffix>` for an override set, e.g. `2d-u1`, `3d-uamd-f8`."""
        return f"{self.mode}-{self.arch}" + (f"-{self.suffix}" if self.suffix else "")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "shape": list(self.shape), "name": self.name}


@dataclass
class StudyConfig:
    """A resolved study: data lists (absolute paths), classes, cube settings, variants, folds, seed, training, and
    the preset (spine_keras.presets) whose defaults both the cubes and the training take where the file is silent."""

    source: Path
    name: str
    output: Path
    train_lists: list[DataList]
    test: DataList | None
    classes: list[str]
    cube: dict[str, Any]
    variants: list[Variant]
    folds: int
    seed: int = 0
    train: dict[str, Any] = field(default_factory=dict)
    preset: str = DEFAULT_PRESET

    @classmethod
    def from_yaml(cls, path: Path | str, check_data: bool = True) -> StudyConfig:
        """Read and check a study file (with `check_data`, also every list and label volume it names)."""
        path = Path(path)
        config = cls.from_dict(_read_yaml(path), path)
        if check_data:
            config.check_data()
        return config

    @classmethod
    def from_dict(cls, data: Any, source: Path) -> StudyConfig:
        """The study from a parsed mapping; `source` is the study file (relative list paths resolve against it)."""
        where = f"study file '{source}'"
        data = _mapping(data, where, "the top level")
        _check_keys(data, TOP_KEYS, where, "the top level")
        for key in ("data", "classes", "variants", "folds"):
            if key not in data:
                raise UserError(f"{where}: missing '{key}' (needed keys: data, classes, variants, folds)")
        base = source.resolve().parent
        preset = _preset(data.get("preset") or DEFAULT_PRESET, where)  # an empty `preset:` is the default, as `cube:`
        lists, test = _data(data["data"], base, where)
        config = cls(
            source=source,
            name=str(data.get("name") or source.stem),
            output=Path(data.get("output") or f"study-{data.get('name') or source.stem}"),
            train_lists=lists,
            test=test,
            classes=_classes(data["classes"], where),
            cube=_mapping(data.get("cube") or {}, where, "cube"),
            variants=[
                _variant(v, i, where, lists, data.get("cube") or {}, preset)
                for i, v in enumerate(_sequence(data["variants"], where, "variants"))
            ],
            folds=_integer(data["folds"], where, "folds", 2),
            seed=_integer(data.get("seed", 0), where, "seed", 0),
            train=_mapping(data.get("train") or {}, where, "train"),
            preset=preset,
        )
        config.check_settings()
        return config

    @property
    def where(self) -> str:
        return f"study file '{self.source}'"

    def to_dict(self) -> dict[str, Any]:
        """The resolved study as plain JSON values (written to OUT/study.json)."""
        return {
            "source": str(self.source.resolve()),
            "name": self.name,
            "output": str(self.output),
            "preset": self.preset,
            "data": {
                "train": [d.to_dict() for d in self.train_lists],
                "test": self.test.to_dict() if self.test else None,
            },
            "classes": list(self.classes),
            "cube": dict(self.cube),
            "variants": [v.to_dict() for v in self.variants],
            "folds": self.folds,
            "seed": self.seed,
            "train": dict(self.train),
        }

    def check_settings(self) -> None:
        """Every variant's cube and training settings can be built; variant names are unique."""
        for index, source in enumerate([*self.train_lists, *([self.test] if self.test else [])]):
            if source.classes is not None and list(source.classes) != self.classes:
                what = f"data.train[{index}]" if index < len(self.train_lists) else "data.test"
                raise UserError(
                    f"{self.where}: {what} names classes {', '.join(source.classes)} but the study's classes are "
                    f"{', '.join(self.classes)}; every list must map into the same classes"
                )
        names = [v.name for v in self.variants]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise UserError(f"{self.where}: variant {repeated[0]} is listed twice; give one of them a 'suffix'")
        owned = sorted(set(self.train) & set(STUDY_OWNED_TRAIN))
        if owned:
            raise UserError(
                f"{self.where}: train.{owned[0]} is set by the study itself (preset, folds and seed at the top "
                "level, arch per variant); remove it"
            )
        for variant in self.variants:
            for index in range(len(self.train_lists)):
                self.cube_config(variant, index, Path("cube.h5"))
            self._check_model(variant, self.train_settings(variant, 0, Path("cube.h5"), Path("run")))

    def _check_model(self, variant: Variant, settings: Any) -> None:
        """The variant's model can be built on its sample shape (e.g. each side divisible by 2 ** depth)."""
        from spine_keras.models import preset
        from spine_keras.models.config import make_config

        channels = 2 * int(self.cube_settings(variant).get("context") or 0) + 1  # 2.5D: neighbouring slices
        try:
            make_config(
                variant.arch,
                (*variant.shape, channels),
                len(self.classes),
                settings.model_overrides(preset(variant.arch)),
            )
        except UserError as exc:
            raise UserError(f"{self.where}: variant {variant.name}: {exc}") from exc

    def cube_settings(self, variant: Variant) -> dict[str, Any]:
        """The cube settings of `variant`: the preset's augmentation overridden by the study's `cube:`, overridden by
        the variant's, with its mode and shape (so a cube's key changes with every resolved setting)."""
        merged = {**self.cube, **variant.cube}
        unknown = sorted(set(merged) - set(cube_keys()))
        if unknown:
            raise UserError(
                f"{self.where}: unknown cube setting(s) {', '.join(unknown)} (variant {variant.name}); valid keys: "
                f"{', '.join(cube_keys())}"
            )
        return {**cube_augment(self.preset), **merged, "mode": variant.mode, "shape": list(variant.shape)}

    def cube_key(self, variant: Variant) -> str:
        """The cache key of `variant`'s cube: every setting that changes its content (not `workers`)."""
        settings = {k: v for k, v in self.cube_settings(variant).items() if k != "workers"}
        lists = [d.to_dict() for d in self.train_lists]
        return short_hash({"cube": settings, "lists": lists, "classes": self.classes, "seed": self.seed})

    def cube_config(self, variant: Variant, index: int, output: Path):
        """The `CubeConfig` that builds training list `index` for `variant` into `output` (UserError if invalid)."""
        from spine_keras.augment import AugmentConfig
        from spine_keras.cube.build import CubeConfig
        from spine_keras.prepare import SamplingConfig
        from spine_keras.preprocess import PreprocessConfig

        settings = self.cube_settings(variant)
        pick = lambda keys: {k: settings[k] for k in keys if k in settings}  # noqa: E731
        source = self.train_lists[index]
        try:
            return CubeConfig(
                list_path=str(source.list),
                output=str(output),
                preprocess=PreprocessConfig.from_dict(pick(PREPROCESS_KEYS)),
                sampling=SamplingConfig.from_dict(pick(("mode", "shape", *SAMPLING_KEYS))),
                label_map=source.label_map,
                class_names=list(self.classes),
                augment=AugmentConfig.from_dict(pick(_augment_keys())),
                copies=settings.get("augment", 0),
                seed=self.seed,
                workers=settings.get("workers", 0),
                preset=self.preset,
            )
        except (TypeError, ValueError, UserError) as exc:
            raise UserError(f"{self.where}: bad cube settings for variant {variant.name}: {exc}") from exc

    def train_settings(self, variant: Variant, fold: int, cube: Path, out: Path):
        """The `TrainSettings` of `variant` on `fold`: the study's `train:` overridden by the variant's. A fold is
        validated on the cases it is then tested on, so nothing may be chosen by that validation unless the study
        file asks for it: `keep` is `last`, early stopping (`patience`) and the plateau reduction of the learning
        rate (`lr_patience`) are off unless set, whatever the preset. The preset supplies the other defaults."""
        from spine_keras.train.settings import TrainSettings

        owned = sorted(set(variant.train) & set(STUDY_OWNED_TRAIN))
        if owned:
            raise UserError(f"{self.where}: variant {variant.name}: train.{owned[0]} is set by the study; remove it")
        data = {"preset": self.preset, **HELD_OUT_SAFE, **self.train, **variant.train}
        data.update(arch=variant.arch, cube=str(cube), out=str(out), folds=self.folds, fold=str(fold), seed=self.seed)
        try:
            return TrainSettings.from_dict(data)
        except UserError as exc:
            raise UserError(f"{self.where}: variant {variant.name}: {exc}") from exc

    def check_data(self) -> None:
        """Lists exist and parse; label maps cover every label id and map into the classes; case ids are unique
        among the training lists; no test case is a training case."""
        training: dict[str, str] = {}
        for index, source in enumerate(self.train_lists):
            for case_id in check_list(source, self.classes, f"{self.where}: data.train[{index}]"):
                if case_id in training:
                    raise UserError(
                        f"{self.where}: case {case_id} is in data.train[{index}] and in {training[case_id]}; a "
                        "patient must be one case (rename it or drop it from one list)"
                    )
                training[case_id] = f"data.train[{index}]"
        if self.test is not None:
            overlap = sorted(set(check_list(self.test, self.classes, f"{self.where}: data.test")) & set(training))
            if overlap:
                raise UserError(
                    f"{self.where}: the test list '{self.test.list}' shares case(s) {', '.join(overlap[:5])} with "
                    "the training lists; a test case must never be trained on"
                )


def check_list(source: DataList, classes: list[str], where: str) -> list[str]:
    """The case ids of `source` after checking that its label map covers every label volume's ids and maps them
    into `classes`; UserError naming the list and the case."""
    from spine_keras.io import parse_list, read_volume
    from spine_keras.preprocess import LabelMap

    label_map = LabelMap.parse(source.label_map)
    produced = label_map.n_classes
    if produced is not None and produced != len(classes):
        raise UserError(
            f"{where}: label map '{source.label_map}' produces {produced} classes but the study's classes are "
            f"{len(classes)} ({', '.join(classes)}); every list must map into the same classes"
        )
    entries = parse_list(source.list)
    for entry in entries:
        try:
            label_map.apply(read_volume(entry.label, entry.source).array, len(classes))
        except CaseError as exc:
            raise UserError(f"{where} '{source.list}': case {entry.case_id}: {exc}") from exc
    return [entry.case_id for entry in entries]


def _read_yaml(path: Path) -> Any:
    """The parsed study file; UserError when it is missing, unreadable or not YAML."""
    import yaml

    if not path.is_file():
        raise UserError(f"study file '{path}' not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UserError(f"study file '{path}' cannot be read as YAML ({exc})") from exc


def _check_keys(data: Mapping[str, Any], valid: tuple[str, ...], where: str, what: str) -> None:
    unknown = sorted(str(k) for k in set(data) - set(valid))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)} in {what}; valid keys: {', '.join(valid)}")


def _mapping(value: Any, where: str, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UserError(f"{where}: {what} must be a mapping of keys to values, got {value!r}")
    return dict(value)


def _sequence(value: Any, where: str, what: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise UserError(f"{where}: {what} must be a non-empty list, got {value!r}")
    return value


def _integer(value: Any, where: str, what: str, lowest: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
        raise UserError(f"{where}: {what} must be a whole number >= {lowest}, got {value!r}")
    return value


def _classes(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or len(value) < 2 or not all(isinstance(v, str) and v.strip() for v in value):
        raise UserError(f"{where}: classes must be a list of at least two names, background first, got {value!r}")
    if len(set(value)) != len(value):
        raise UserError(f"{where}: classes names a class twice: {value}")
    return [str(v) for v in value]


def _data(value: Any, base: Path, where: str) -> tuple[list[DataList], DataList | None]:
    """The training lists and the optional test list of the `data:` mapping."""
    data = _mapping(value, where, "data")
    _check_keys(data, DATA_KEYS, where, "data")
    if "train" not in data:
        raise UserError(f"{where}: data needs 'train', one or more lists each with its label_map")
    raw_train = data["train"] if isinstance(data["train"], list) else [data["train"]]
    lists = [_data_list(item, base, where, f"data.train[{i}]") for i, item in enumerate(raw_train)]
    if not lists:
        raise UserError(f"{where}: data.train names no list")
    test = _data_list(data["test"], base, where, "data.test") if data.get("test") is not None else None
    return lists, test


def _data_list(value: Any, base: Path, where: str, what: str) -> DataList:
    """One list entry: `list` (relative to the study file) and `label_map`; a given `classes` is checked later."""
    item = _mapping(value, where, what)
    _check_keys(item, LIST_KEYS, where, what)
    if not isinstance(item.get("list"), str) or not item["list"].strip():
        raise UserError(f"{where}: {what} needs 'list', the path of an image,label list file")
    label_map = item.get("label_map")
    if label_map is not None and not isinstance(label_map, (str, int)):
        raise UserError(f"{where}: {what}.label_map must be text such as '1-5:1', got {label_map!r}")
    path = Path(item["list"]).expanduser()
    if not path.is_absolute():
        path = base / path
    if not path.is_file():
        raise UserError(
            f"{where}: {what}: list file '{path}' not found (relative paths resolve against the study file)"
        )
    from spine_keras.preprocess import LabelMap

    try:
        LabelMap.parse(None if label_map is None else str(label_map))
    except UserError as exc:
        raise UserError(f"{where}: {what}: {exc}") from exc
    classes = item.get("classes")
    if classes is not None:
        classes = tuple(_classes(classes, f"{where}: {what}"))
    return DataList(Path(os.path.normpath(path)), None if label_map is None else str(label_map), classes)


def _planned(mode: str, cube: dict[str, Any], lists: list[DataList]) -> tuple[tuple[int, ...], dict[str, Any]]:
    """`shape: auto`: the planner's shape from the training lists' headers, and the plan's fit and 3D stride as cube
    settings (for the variant's cube unless it sets them)."""
    from spine_keras.io import parse_list
    from spine_keras.planner import plan_entries

    entries = [entry for data_list in lists for entry in parse_list(data_list.list)]
    plan = plan_entries(entries, mode, int(cube.get("axis", 2)), cube.get("spacing"))
    return plan.shape, {"fit": plan.fit, **({"stride": list(plan.stride)} if plan.stride else {})}


def _preset(value: Any, where: str) -> str:
    """The study's `preset:`, one of the named presets."""
    if not isinstance(value, str) or value not in PRESETS:
        raise UserError(f"{where}: preset must be one of {', '.join(PRESETS)}, got {value!r}")
    return value


def _variant(value: Any, index: int, where: str, lists: list[DataList], study_cube: Any, preset: str) -> Variant:
    """One `variants:` entry: mode, arch (canonical code), shape (the preset's for the mode when absent, planned
    from the training lists for `auto`), overrides."""
    from spine_keras.models.registry import arch_code

    what = f"variants[{index}]"
    item = _mapping(value, where, what)
    _check_keys(item, VARIANT_KEYS, where, what)
    mode = str(item.get("mode", "")).lower()
    if mode not in MODES:
        raise UserError(f"{where}: {what}.mode must be one of {', '.join(MODES)}, got {item.get('mode')!r}")
    try:
        arch = arch_code(item.get("arch", ""))
    except UserError as exc:
        raise UserError(f"{where}: {what}.arch: {exc}") from exc
    shape = item.get("shape") or cube_shape(preset, mode)
    cube = _mapping(item.get("cube") or {}, where, f"{what}.cube")
    if isinstance(shape, str) and shape.strip().lower() == "auto":
        merged = {**_mapping(study_cube, where, "cube"), **cube}
        shape, planned = _planned(mode, merged, lists)
        cube = {**{k: v for k, v in planned.items() if k not in merged}, **cube}
    if not isinstance(shape, (list, tuple)) or not all(isinstance(s, int) and not isinstance(s, bool) for s in shape):
        raise UserError(f"{where}: {what}.shape must be a list of whole numbers or auto, got {shape!r}")
    suffix = str(item.get("suffix") or "")
    if suffix and not suffix.replace("_", "").replace("-", "").isalnum():
        raise UserError(f"{where}: {what}.suffix must be letters, digits, '-' or '_', got {suffix!r}")
    return Variant(
        mode,
        arch,
        tuple(shape),
        suffix,
        _mapping(item.get("train") or {}, where, f"{what}.train"),
        cube,
    )
