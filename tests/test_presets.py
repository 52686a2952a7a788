"""The named presets: `recipe` (the default) and `paper` (the reproduction) resolve to their exact values in
spine-train, spine-make-cube and study files; a value the user gives wins; runs recorded before presets resume as
paper; a bad preset name is refused in one line."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from spine_keras.augment import AugmentConfig
from spine_keras.cli.make_cube import config_from_args
from spine_keras.cli.make_cube import parser as cube_parser
from spine_keras.cli.train import _resume_settings
from spine_keras.cli.train import parser as train_parser
from spine_keras.cube import read_attrs
from spine_keras.errors import UserError
from spine_keras.models import ARCHS, preset
from spine_keras.presets import DEFAULT_PRESET
from spine_keras.study.config import StudyConfig
from spine_keras.train.settings import TrainSettings, merge_settings

REPO = Path(__file__).resolve().parents[1]
# The paper's values, written out: what every default was before the presets existed.
PAPER_ARCHS = {
    "uad": ("rmsprop", 0.001, "relu", 16),
    "uvad": ("adam", 0.00033, "prelu", 32),
    "uamd": ("adam", 0.00033, "relu", 16),
    "uvd": ("adam", 0.00033, "prelu", 32),
    "umd": ("adam", 0.00033, "relu", 32),
    "ud": ("adam", 0.00033, "relu", 64),
    "u1": ("adadelta", 1.0, "relu", 64),
    "fcn": ("adam", 0.00033, "relu", 32),
}
PAPER_SCHEDULE = {
    "epochs": 100,
    "lr_schedule": "plateau",
    "keep": "best",
    "patience": 20,
    "lr_patience": 10,
    "online_augment": False,
    "mixed_precision": False,
}
PAPER_AUGMENT = {
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
RECIPE_TRAIN = {
    "optimizer": "adam",
    "lr": 0.001,
    "activation": "relu",
    "filters": 16,
    "epochs": 10,
    "lr_schedule": "cosine",
    "keep": "last",
    "patience": 0,
    "lr_patience": 10,  # not a preset value; used by the plateau schedule only
    "online_augment": True,
    "mixed_precision": "auto",
}
RECIPE_AUGMENT = {"rotation": 10.0, "zoom": (0.9, 1.1), "shift": 0.05, "flip_prob": 0.0, "noise_prob": 0.0}


def resolved(settings: TrainSettings, arch: str) -> tuple:
    """(optimizer, lr, activation, filters) that training uses for `arch`, as spine_keras.train.job resolves them."""
    overrides = settings.model_overrides(preset(arch))
    return (
        settings.optimizer or preset(arch)["optimizer"],
        settings.lr or preset(arch)["lr"],
        overrides["activation"],
        overrides["filters"],
    )


@pytest.mark.parametrize("arch", ARCHS)
def test_paper_preset_resolves_to_the_papers_values_for_every_arch(arch):
    settings = TrainSettings(preset="paper", arch=arch)
    assert resolved(settings, arch) == PAPER_ARCHS[arch]
    assert {name: getattr(settings, name) for name in PAPER_SCHEDULE} == PAPER_SCHEDULE
    assert TrainSettings(preset="paper").arch == ["uamd"]


@pytest.mark.parametrize("arch", ARCHS)
def test_recipe_is_the_default_and_the_same_for_every_arch(arch):
    settings = TrainSettings(arch=arch)
    assert settings.preset == "recipe" and TrainSettings().arch == ["u1"]
    assert {name: getattr(settings, name) for name in RECIPE_TRAIN} == RECIPE_TRAIN
    assert resolved(settings, arch) == ("adam", 0.001, "relu", 16)


def test_a_given_value_overrides_the_preset(tmp_path):
    config = tmp_path / "settings.yaml"
    config.write_text(yaml.safe_dump({"preset": "paper", "epochs": 7, "filters": 8}))
    settings = merge_settings(config, {"lr_schedule": "cosine"})
    assert (settings.epochs, settings.filters, settings.lr_schedule, settings.patience) == (7, 8, "cosine", 20)
    assert resolved(settings, "uamd") == ("adam", 0.00033, "relu", 8)
    flagged = merge_settings(config, {"preset": "recipe"})  # a flag's preset wins over the file's
    assert (flagged.epochs, flagged.filters, flagged.optimizer, flagged.keep) == (7, 8, "adam", "last")


def test_a_run_config_as_config_file_keeps_its_preset(tmp_path):
    old = TrainSettings(preset="paper", arch="uamd", cube="c.h5").to_dict()
    del old["preset"]  # a run recorded before presets existed: optimizer, lr, ... None = the arch's own
    (tmp_path / "config.json").write_text(json.dumps({"settings": old}))
    settings = merge_settings(tmp_path / "config.json", {"epochs": 3})
    assert settings.preset == "paper" and resolved(settings, "uamd") == PAPER_ARCHS["uamd"]
    with pytest.raises(UserError, match="resolved under the 'paper' preset; drop --preset"):
        merge_settings(tmp_path / "config.json", {"preset": "recipe"})


def test_plateau_under_the_recipe_still_reduces():
    settings = TrainSettings(lr_schedule="plateau")
    assert settings.preset == "recipe" and settings.lr_patience == 10


@pytest.mark.parametrize("name", ["recipe", "paper"])
def test_config_json_round_trips(name):
    settings = TrainSettings(preset=name, arch="u1,uamd", epochs=3)
    recorded = json.loads(json.dumps(settings.to_dict()))
    assert recorded["preset"] == name
    assert TrainSettings.from_dict(recorded) == settings


def test_a_run_recorded_before_presets_resumes_as_paper(tmp_path):
    old = {k: v for k, v in TrainSettings(preset="paper", cube="c.h5", out=str(tmp_path)).to_dict().items()}
    del old["preset"]
    (tmp_path / "config.json").write_text(json.dumps({"settings": old}))
    settings = _resume_settings(tmp_path, {"epochs": 120})
    assert settings.preset == "paper" and settings.epochs == 120
    assert (settings.optimizer, settings.lr_schedule, settings.keep, settings.online_augment) == (
        None,
        "plateau",
        "best",
        False,
    )
    assert resolved(settings, "uamd") == PAPER_ARCHS["uamd"]


def test_paper_augmentation_is_augment_configs_defaults():
    defaults = AugmentConfig()
    assert {name: getattr(defaults, name) for name in PAPER_AUGMENT} == PAPER_AUGMENT


def test_make_cube_defaults_follow_the_preset_and_flags_win(pair_list):
    listing = str(pair_list(2))
    recipe = config_from_args(cube_parser().parse_args([listing]))
    assert recipe.preset == "recipe" and recipe.plan is not None  # --shape auto: the planner's shape
    assert tuple(recipe.sampling.shape) == recipe.plan.shape and recipe.preprocess.fit == "pad"
    assert {name: getattr(recipe.augment, name) for name in RECIPE_AUGMENT} == RECIPE_AUGMENT
    assert recipe.augment.blur_prob == 0.0 and recipe.augment.intensity_prob == 0.5 and recipe.copies == 0
    paper = config_from_args(cube_parser().parse_args([listing, "--preset", "paper", "--rotation", "5"]))
    assert paper.plan is None and tuple(paper.sampling.shape) == (256, 256) and paper.preprocess.fit == "resize"
    assert dataclasses.asdict(paper.augment) == dataclasses.asdict(AugmentConfig(rotation=5))
    paper_3d = config_from_args(cube_parser().parse_args([listing, "--preset", "paper", "--mode", "3d"]))
    assert tuple(paper_3d.sampling.shape) == (64, 128, 128)
    given = config_from_args(cube_parser().parse_args([listing, "--shape", "32,32", "--flip-prob", "0.3"]))
    assert given.plan is None and tuple(given.sampling.shape) == (32, 32) and given.augment.flip_prob == 0.3


def test_the_default_cube_records_the_recipe(pair_list, tmp_path):
    from spine_keras.cli.make_cube import main

    out = tmp_path / "cube.h5"
    assert main([str(pair_list(2)), "-o", str(out), "--workers", "1", "--quiet"]) == 0
    attrs = read_attrs(out)
    assert attrs["config"]["preset"] == "recipe" and "plan" in attrs["config"]
    assert {name: attrs["augment"][name] for name in RECIPE_AUGMENT} == {
        k: list(v) if isinstance(v, tuple) else v for k, v in RECIPE_AUGMENT.items()
    }


def test_help_names_each_presets_default():
    cube_help = " ".join(cube_parser().format_help().split())
    assert "--rotation X (default the preset's: recipe 10.0, paper 20.0)" in cube_help
    assert "(default: the preset's: recipe auto, paper 256,256 (2d) / 64,128,128 (3d))" in cube_help
    train_help = " ".join(train_parser().format_help().split())
    assert "(default: the preset's: recipe cosine, paper plateau)" in train_help


@pytest.mark.parametrize("name", ["paper", "quick"])
def test_shipped_paper_and_quick_studies_resolve_to_paper(name):
    config = StudyConfig.from_yaml(REPO / "studies" / f"{name}.yaml", check_data=False)
    assert config.preset == "paper"
    for variant in config.variants:
        settings = config.train_settings(variant, 0, Path("cube.h5"), Path("run"))
        assert settings.preset == "paper" and settings.lr_schedule == "plateau"
        given = {**config.train, **variant.train}
        if not {"optimizer", "lr", "activation"} & set(given):  # the arch's own paper values
            assert resolved(settings, variant.arch)[:3] == PAPER_ARCHS[variant.arch][:3]
        augment = config.cube_config(variant, 0, Path("cube.h5")).augment
        assert {field: getattr(augment, field) for field in PAPER_AUGMENT} == PAPER_AUGMENT


def study_file(folder: Path, lists: Path, **changes) -> Path:
    """A minimal study over `lists` with top-level `changes`."""
    content = {
        "data": {"train": [{"list": str(lists), "label_map": "1-2:1"}]},
        "classes": ["background", "vertebra"],
        "variants": [{"mode": "2d", "arch": "u1", "shape": [32, 32]}],
        "folds": 2,
        **changes,
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(content))
    return path


def test_study_preset_sets_cube_and_training_and_changes_the_cube_key(pair_list, tmp_path):
    lists = pair_list(2)
    recipe = StudyConfig.from_yaml(study_file(tmp_path, lists), check_data=False)
    paper = StudyConfig.from_yaml(study_file(tmp_path, lists, preset="paper"), check_data=False)
    variant = recipe.variants[0]
    assert recipe.preset == "recipe" and recipe.cube_config(variant, 0, Path("c.h5")).augment.rotation == 10.0
    assert paper.cube_config(variant, 0, Path("c.h5")).augment.rotation == 20.0
    assert recipe.cube_key(variant) != paper.cube_key(variant)
    settings = paper.train_settings(variant, 0, Path("c.h5"), Path("run"))
    assert (settings.optimizer, settings.epochs, settings.keep, settings.patience) == (None, 100, "last", 0)
    unshaped = [{"mode": "2d", "arch": "u1"}]
    paper_shape = StudyConfig.from_yaml(study_file(tmp_path, lists, preset="paper", variants=unshaped), False)
    assert paper_shape.variants[0].shape == (256, 256)


def test_an_empty_preset_in_a_study_file_is_the_default(pair_list, tmp_path):
    lists = pair_list(2)
    empty = StudyConfig.from_yaml(study_file(tmp_path, lists, preset=None), check_data=False)
    assert empty.preset == DEFAULT_PRESET == "recipe"


def test_bad_preset_in_a_study_file_is_refused_naming_the_file(pair_list, tmp_path):
    lists = pair_list(2)
    with pytest.raises(UserError, match=r"study file '.*study\.yaml': preset must be one of recipe, paper, got 'x'"):
        StudyConfig.from_yaml(study_file(tmp_path, lists, preset="x"), check_data=False)
    with pytest.raises(UserError, match=r"train\.preset is set by the study itself"):
        StudyConfig.from_yaml(study_file(tmp_path, lists, train={"preset": "paper"}), check_data=False)


def test_bad_preset_flag_or_config_value_is_refused_in_one_line(refusal, tmp_path):
    refusal.check("train", "--preset", "nonsense", match=r"argument --preset: invalid choice: 'nonsense'")
    refusal.check("make_cube", "list.txt", "--preset", "nonsense", match=r"argument --preset: invalid choice")
    (tmp_path / "bad.yaml").write_text("preset: x\n")
    refusal.check(
        "train", "--config", "bad.yaml", match=r"preset in config file 'bad\.yaml' must be one of recipe, paper"
    )


def test_the_recipe_refuses_to_replay_a_paper_cubes_augmentation_on_the_fly(pair_list, tmp_path, capsys):
    from spine_keras.cli.make_cube import main as make_cube
    from spine_keras.cli.train import main as train

    cube = tmp_path / "paper.h5"
    assert make_cube([str(pair_list(2)), "-o", str(cube), "--preset", "paper", "--shape", "32,32", "--quiet"]) == 0
    capsys.readouterr()
    run = tmp_path / "run"
    assert train(["--cube", str(cube), "--out", str(run), "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds the paper's augmentation ranges" in err and "--no-online-augment" in err and "\n" not in err
    assert not run.exists()
