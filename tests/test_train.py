"""End-to-end training on tiny cubes: 2D folds and comparison, 3D, resume, precision/XLA, settings, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import keras
import numpy as np
import pytest

from spine_keras.bundle import ModelBundle, file_sha256, load_keras_model, read_bundle
from spine_keras.cli.train import main
from spine_keras.models import ARCHS, build_model
from spine_keras.preprocess import PreprocessConfig
from spine_keras.train import merge_settings
from spine_keras.train.callbacks import RunState

BUNDLE = (
    "best.keras",
    "last.keras",
    "config.json",
    "spine_keras.json",
    "history.csv",
    "iou_table.csv",
    "iou_table.md",
    "loss.png",
    "iou.png",
    "state.json",
)
TINY = ["--filters", "4", "--epochs", "1", "--quiet"]


@pytest.fixture(scope="module")
def cube2d(tmp_path_factory, make_training_cube) -> Path:
    return make_training_cube(tmp_path_factory.mktemp("cube2d") / "cube.h5", (32, 32), cases=4, per_case=2)


def history(folder: Path) -> list[dict[str, str]]:
    with open(folder / "history.csv") as handle:
        return list(csv.DictReader(handle))


def check_bundle(folder: Path, arch: str, input_shape: list[int]) -> ModelBundle:
    for name in BUNDLE:
        assert (folder / name).is_file(), f"{folder / name} missing"
    assert list((folder / "logs" / "validation").glob("events.out.tfevents.*"))
    bundle = read_bundle(folder)
    assert bundle.arch == arch and list(bundle.input_shape) == input_shape and bundle.axis == 2
    assert bundle.class_names == ("background", "vertebra", "disc")
    assert bundle.preprocess == PreprocessConfig()
    assert bundle.provenance.cube_sha256 == file_sha256(bundle.provenance.cube)
    assert set(bundle.provenance.val_cases).isdisjoint(bundle.provenance.train_cases)
    assert 0 <= bundle.metrics["val_miou_nobg"] <= 1 and bundle.metrics["monitor"] == "val_miou_nobg"
    rebuilt = build_model(bundle.arch, bundle.input_shape, bundle.n_classes, **bundle.build)
    best = keras.saving.load_model(folder / "best.keras")
    assert rebuilt.count_params() == best.count_params()
    return bundle


@pytest.mark.slow
def test_2d_comparison_on_grouped_folds(cube2d, tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "--cube",
                str(cube2d),
                "--arch",
                "u1,ud",
                "--depth",
                "2",
                "--folds",
                "2",
                "--batch-size",
                "4",
                "--out",
                str(run),
                *TINY[:-1],
            ]
        )
        == 0
    )
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch 1/1: loss")]
    assert len(lines) == 4 and "IoU" in lines[0] and "vertebra=" in lines[0]
    for arch in ("u1", "ud"):
        val_cases = []
        for fold in (0, 1):
            folder = run / arch / f"fold_{fold}"
            check_bundle(folder, arch, [32, 32, 1])
            split = json.loads((folder / "config.json").read_text())["split"]
            assert not set(split["train_cases"]) & set(split["val_cases"])
            val_cases += split["val_cases"]
            assert {"val_iou_vertebra", "val_dice_disc", "val_miou", "val_miou_nobg"} <= set(history(folder)[0])
        assert sorted(val_cases) == ["case0", "case1", "case2", "case3"]  # same folds for every arch
        with open(run / arch / "folds.csv") as handle:
            assert [r["fold"] for r in csv.DictReader(handle)] == ["fold_0", "fold_1", "mean", "std"]
    assert len(keras.saving.load_model(run / "ud" / "fold_0" / "best.keras").outputs) == 2  # deep supervision
    table = (run / "comparison.md").read_text()
    assert "|  | u1 | ud |" in table and "| IoU without background | " in table and " ± " in table
    with open(run / "comparison.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["row"] for r in rows] == [
        "background",
        "vertebra",
        "disc",
        "IoU without background",
        "IoU with background",
    ]
    assert set(rows[0]) == {"row", "u1", "u1_std", "ud", "ud_std"}
    u1_folds = [json.loads((run / "u1" / f"fold_{i}" / "spine_keras.json").read_text())["metrics"] for i in (0, 1)]
    assert float(rows[3]["u1"]) == pytest.approx(np.mean([m["val_miou_nobg"] for m in u1_folds]))
    assert (run / "comparison.png").stat().st_size > 1000


@pytest.mark.slow
@pytest.mark.parametrize("shape, unets", [((32, 32), "uamd"), ((32, 32, 32), "u1,uamd")], ids=["2d", "3d"])
def test_one_epoch_u1_uamd_fcn(tmp_path, make_training_cube, shape, unets):
    """u1 in 2D is trained by the comparison test above."""
    cube = make_training_cube(tmp_path / "cube.h5", shape, cases=3, per_case=1, copies=0)
    assert (
        main(
            [
                "--cube",
                str(cube),
                "--arch",
                unets,
                "--depth",
                "2",
                "--batch-size",
                "2",
                "--out",
                str(tmp_path / "unets"),
                *TINY,
            ]
        )
        == 0
    )
    assert main(["--cube", str(cube), "--arch", "fcn", "--batch-size", "2", "--out", str(tmp_path / "fcn"), *TINY]) == 0
    folders = [(tmp_path / "unets" / a if "," in unets else tmp_path / "unets", a) for a in unets.split(",")]
    for folder, arch in [*folders, (tmp_path / "fcn", "fcn")]:
        assert check_bundle(folder, arch, [*shape, 1]).mode == f"{len(shape)}d"


@pytest.mark.slow
def test_resume_after_interruption_continues_where_it_stopped(cube2d, tmp_path, monkeypatch):
    flags = [
        "--cube",
        str(cube2d),
        "--arch",
        "u1",
        "--depth",
        "2",
        "--filters",
        "4",
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--online-augment",
        "--quiet",
    ]
    assert main([*flags, "--out", str(tmp_path / "straight")]) == 0
    original = RunState.on_epoch_end

    def killed_after_first_epoch(self, epoch, logs=None):
        original(self, epoch, logs)
        raise KeyboardInterrupt

    monkeypatch.setattr(RunState, "on_epoch_end", killed_after_first_epoch)
    assert main([*flags, "--out", str(tmp_path / "killed")]) == 130
    assert json.loads((tmp_path / "killed" / "state.json").read_text())["epoch"] == 1
    monkeypatch.setattr(RunState, "on_epoch_end", original)
    assert main(["--resume", str(tmp_path / "killed"), "--quiet"]) == 0
    resumed, straight = history(tmp_path / "killed"), history(tmp_path / "straight")
    assert [r["epoch"] for r in resumed] == ["0", "1"]
    assert float(resumed[0]["loss"]) == pytest.approx(float(straight[0]["loss"]), rel=1e-4)  # seeded start
    assert float(resumed[1]["loss"]) == pytest.approx(float(straight[1]["loss"]), rel=1e-4)
    assert float(resumed[1]["val_miou"]) == pytest.approx(float(straight[1]["val_miou"]), abs=1e-3)
    last = keras.saving.load_model(tmp_path / "killed" / "last.keras")
    assert int(last.optimizer.iterations.numpy()) == 2 * 3  # optimizer state restored: 12 samples / 4 = 3 steps
    exported = []
    monkeypatch.setattr("spine_keras.export.export_bundle", lambda run, out: exported.append((Path(run), Path(out))))
    assert main(["--resume", str(tmp_path / "killed"), "--epochs", "2", "--quiet", "--export"]) == 0  # finished
    assert len(history(tmp_path / "killed")) == 2
    assert exported == [(tmp_path / "killed", tmp_path / "killed" / "export")]


@pytest.mark.slow
def test_mixed_precision_and_jit(cube2d, tmp_path):
    run = tmp_path / "mp"
    assert (
        main(
            [
                "--cube",
                str(cube2d),
                "--arch",
                "u1",
                "--depth",
                "2",
                "--batch-size",
                "4",
                "--mixed-precision",
                "--jit",
                "--out",
                str(run),
                *TINY,
            ]
        )
        == 0
    )
    config = json.loads((run / "config.json").read_text())
    assert config["precision"] == "mixed_bfloat16" and config["jit"] is True
    assert np.isfinite(float(history(run)[0]["loss"]))
    assert keras.config.dtype_policy().name == "float32"
    served = load_keras_model(run / "last.keras")  # what prediction and export use
    assert {layer.dtype_policy.name for layer in served.layers} == {"float32"}


def test_config_file_then_flags(tmp_path):
    (tmp_path / "c.yaml").write_text("epochs: 7\nfilters: 8\narch: u1,fcn\nval-fraction: 0.3\n")
    settings = merge_settings(tmp_path / "c.yaml", {"epochs": 2})
    assert (settings.epochs, settings.filters, settings.arch, settings.val_fraction) == (2, 8, ["u1", "fcn"], 0.3)
    (tmp_path / "c.json").write_text(json.dumps({"settings": {"loss": "dice", "lr": 0.01}}))
    assert merge_settings(tmp_path / "c.json", {}).loss == "dice"
    assert merge_settings(None, {"arch": "all"}).arch == list(ARCHS)
    assert merge_settings(None, {"arch": "UAMD, u1,uamd", "lr": "1e-3"}).arch == ["uamd", "u1"]


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "not found"),
        ("foreign", "not a spine_keras cube"),
        ("no_case_ids", "case_ids"),
        ("empty_fold", "no validation case"),
        ("batch", "larger than"),
        ("dims", "not divisible"),
        ("arch", "unknown architecture"),
        ("config_key", "unknown training setting"),
        ("resume", "not a run folder"),
        ("exists", "already exists"),
    ],
)
def test_bad_input_exits_2_before_training(cube2d, tmp_path, capsys, case, message):
    import h5py

    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as handle:
        handle["x"] = np.zeros(3)
    no_ids = tmp_path / "no_ids.h5"
    with h5py.File(cube2d) as src, h5py.File(no_ids, "w") as dst:
        for name in ("images", "labels"):
            src.copy(name, dst)
        dst.attrs.update(src.attrs)
    (tmp_path / "bad.json").write_text('{"epoch": 3}')
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    base = ["--cube", str(cube2d), "--arch", "u1", "--out", str(tmp_path / "run"), "--quiet"]
    argv = {
        "missing": ["--cube", str(tmp_path / "nope.h5")],
        "foreign": ["--cube", str(foreign)],
        "no_case_ids": ["--cube", str(no_ids)],
        "empty_fold": ["--folds", "5"],
        "batch": ["--batch-size", "64"],
        "dims": ["--depth", "6"],
        "arch": ["--arch", "u9"],
        "config_key": ["--config", str(tmp_path / "bad.json")],
        "resume": ["--resume", str(tmp_path)],
        "exists": ["--out", str(tmp_path / "taken")],
    }[case]
    argv = argv if case == "resume" else base + argv
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
