"""Learning-rate schedules with warm-up, loss weights and the kept epoch: the formulas, the settings' refusals, the
custom step under loss scaling, and tiny trainings (logged rates, keep=last, resume mid-schedule)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from spine_keras.bundle import read_bundle
from spine_keras.cli.train import main
from spine_keras.errors import UserError
from spine_keras.train.callbacks import RunState
from spine_keras.train.schedule import WarmupDecay, applied_learning_rate, learning_rate
from spine_keras.train.settings import TrainSettings
from spine_keras.train.step import Steps

LR = 0.01


def rates(schedule: WarmupDecay, steps: list[int]) -> list[float]:
    return [float(schedule(step)) for step in steps]


def test_cosine_poly_and_constant_follow_their_formulas():
    total = 100
    assert rates(WarmupDecay(LR, total, 0, "cosine"), [0, 25, 50, 75, 100, 140]) == pytest.approx(
        [LR, LR * (1 + math.cos(math.pi / 4)) / 2, LR / 2, LR * (1 + math.cos(3 * math.pi / 4)) / 2, 0, 0], abs=1e-9
    )
    assert rates(WarmupDecay(LR, total, 0, "poly"), [0, 30, 50, 99, 100]) == pytest.approx(
        [LR, LR * 0.7**0.9, LR * 0.5**0.9, LR * 0.01**0.9, 0], abs=1e-9
    )
    assert rates(WarmupDecay(LR, total, 0, "constant"), [0, 50, 100]) == pytest.approx([LR] * 3)


def test_warmup_ramps_from_a_tenth_then_decays_over_the_remaining_steps():
    schedule = WarmupDecay(LR, 110, 10, "cosine")
    assert rates(schedule, [0, 5, 9]) == pytest.approx([LR * 0.1, LR * 0.55, LR * 0.91], rel=1e-6)
    assert rates(schedule, [10, 60, 110]) == pytest.approx([LR, LR / 2, 0], abs=1e-9)  # cosine over 100 steps
    assert rates(WarmupDecay(LR, 20, 10, "constant"), [9, 10, 19]) == pytest.approx([LR * 0.91, LR, LR])


def test_schedule_round_trips_through_keras_serialization():
    schedule = WarmupDecay(LR, 40, 8, "poly")
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert isinstance(again, WarmupDecay) and again.get_config() == schedule.get_config()
    assert rates(again, [3, 20]) == rates(schedule, [3, 20])


@pytest.mark.parametrize(
    "values, message",
    [
        ({"lr_schedule": "step"}, "lr_schedule must be one of plateau, constant, cosine, poly"),
        ({"epochs": 5, "warmup_epochs": 5}, r"warmup_epochs must be below epochs \(5\), got 5"),
        ({"warmup_epochs": -1}, "warmup_epochs must be an integer >= 0"),
        ({"keep": "worst"}, "keep must be one of best, last"),
        ({"ce_weight": -0.5}, "ce_weight must be >= 0"),
        ({"dice_weight": "nan"}, "dice_weight must be a finite number"),
        ({"ce_weight": 0, "dice_weight": 0}, "ce_weight must be > 0 when dice_weight is 0"),
        ({"loss": "dice", "dice_weight": 0}, "dice_weight must be > 0 .with loss dice"),
        ({"dice_batch": "yes"}, "dice_batch must be true or false"),
    ],
)
def test_settings_refuse_bad_schedules_and_weights(values, message):
    with pytest.raises(UserError, match=message):
        TrainSettings.from_dict(values)


def test_cli_refuses_warmup_as_long_as_training(refusal):
    refusal.check("train", "--epochs", "3", "--warmup-epochs", "3", match=r"--warmup-epochs must be below epochs \(3\)")
    refusal.check("train", "--lr-schedule", "step", match="invalid choice: 'step'")


def test_plateau_keeps_a_float_rate_and_the_others_build_a_schedule():
    assert learning_rate(TrainSettings(preset="paper"), LR, 7) == LR  # the paper's plateau: a plain rate
    schedule = learning_rate(TrainSettings(epochs=10, warmup_epochs=2, lr_schedule="poly"), LR, 7)
    assert schedule.get_config() == {"lr": LR, "total_steps": 70, "warmup_steps": 14, "decay": "poly"}


def test_custom_step_under_loss_scaling_applies_the_scheduled_rate():
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1, activation="softmax")(inputs))
    schedule = WarmupDecay(LR, 10, 4, "cosine")
    model.compile(optimizer=keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(schedule)))
    loss = lambda labels, outputs: tf.reduce_mean(  # noqa: E731
        keras.losses.sparse_categorical_crossentropy(labels, outputs[0]), axis=(1, 2)
    )
    steps = Steps(tf.distribute.get_strategy(), model, loss, global_batch=2, n_classes=2)
    data = tf.data.Dataset.from_tensors((tf.ones((2, 8, 8, 1)), tf.ones((2, 8, 8), tf.int32))).repeat()
    iterator = iter(data)
    for _ in range(3):
        steps.train(iterator)
    assert int(model.optimizer.iterations.numpy()) == 3
    assert applied_learning_rate(model.optimizer) == pytest.approx(LR * (0.1 + 0.9 * 2 / 4))


# Tiny trainings: 2 epochs of a 2-level u1 with 4 filters.


@pytest.fixture(scope="module")
def cube(tmp_path_factory, make_training_cube) -> Path:
    return make_training_cube(tmp_path_factory.mktemp("cube") / "cube.h5", (32, 32), cases=4, per_case=2)


def flags(cube: Path, *extra: str) -> list[str]:
    tiny = ["--arch", "u1", "--depth", "2", "--filters", "4", "--batch-size", "4", "--optimizer", "sgd"]
    return ["--cube", str(cube), *tiny, "--lr", str(LR), "--epochs", "2", "--quiet", *extra]


def history(folder: Path) -> list[dict[str, str]]:
    with open(folder / "history.csv") as handle:
        return list(csv.DictReader(handle))


def steps_per_epoch(folder: Path) -> int:
    return json.loads((folder / "config.json").read_text())["strategy"]["steps_per_epoch"]


@pytest.fixture(scope="module")
def cosine_run(cube, tmp_path_factory) -> Path:
    """Two epochs, the first a warm-up, then cosine decay; the run keeps the last epoch."""
    out = tmp_path_factory.mktemp("cosine") / "run"
    extra = ("--lr-schedule", "cosine", "--warmup-epochs", "1", "--keep", "last", "--out", str(out))
    assert main(flags(cube, *extra)) == 0
    return out


@pytest.mark.slow
def test_logged_rate_follows_warmup_then_cosine_and_settings_are_recorded(cosine_run):
    n = steps_per_epoch(cosine_run)
    expected = [LR * (0.1 + 0.9 * (n - 1) / n), LR * (1 + math.cos(math.pi * (n - 1) / n)) / 2]  # last step of each
    assert [float(row["learning_rate"]) for row in history(cosine_run)] == pytest.approx(expected, rel=1e-5)
    config = json.loads((cosine_run / "config.json").read_text())
    assert config["optimizer"]["schedule"] == {"lr": LR, "total_steps": 2 * n, "warmup_steps": n, "decay": "cosine"}
    settings = TrainSettings.from_dict(config["settings"])
    assert (settings.lr_schedule, settings.warmup_epochs, settings.keep) == ("cosine", 1, "last")


@pytest.mark.slow
def test_keep_last_puts_the_last_epoch_into_the_bundle(cosine_run):
    kept = keras.saving.load_model(cosine_run / "best.keras")
    last = keras.saving.load_model(cosine_run / "last.keras")
    for mine, theirs in zip(kept.weights, last.weights, strict=True):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    metrics = read_bundle(cosine_run).metrics
    assert (metrics["epoch"], metrics["keep"]) == (2, "last")
    assert metrics["val_miou_nobg"] == pytest.approx(float(history(cosine_run)[1]["val_miou_nobg"]))


@pytest.mark.slow
def test_resume_goes_on_with_the_uninterrupted_schedule(cosine_run, cube, tmp_path, monkeypatch):
    original = RunState.on_epoch_end

    def killed_after_first_epoch(self, epoch, logs=None):
        original(self, epoch, logs)
        raise KeyboardInterrupt

    killed = tmp_path / "killed"
    monkeypatch.setattr(RunState, "on_epoch_end", killed_after_first_epoch)
    extra = ("--lr-schedule", "cosine", "--warmup-epochs", "1", "--keep", "last", "--out", str(killed))
    assert main(flags(cube, *extra)) == 130
    monkeypatch.setattr(RunState, "on_epoch_end", original)
    assert main(["--resume", str(killed), "--quiet"]) == 0
    resumed, straight = history(killed), history(cosine_run)
    for key in ("learning_rate", "loss"):
        assert [float(r[key]) for r in resumed] == pytest.approx([float(r[key]) for r in straight], rel=1e-4), key
    last = keras.saving.load_model(killed / "last.keras")
    assert int(last.optimizer.iterations.numpy()) == 2 * steps_per_epoch(killed)


@pytest.mark.slow
def test_plateau_warmup_ramps_the_float_rate_then_holds_it(cube, tmp_path):
    out = tmp_path / "plateau"
    extra = ("--lr-schedule", "plateau", "--warmup-epochs", "1", "--ce-weight", "0.5", "--dice-batch")
    assert main(flags(cube, *extra, "--out", str(out))) == 0
    n = steps_per_epoch(out)
    assert [float(row["learning_rate"]) for row in history(out)] == pytest.approx(
        [LR * (0.1 + 0.9 * (n - 1) / n), LR], rel=1e-5
    )


@pytest.mark.parametrize(
    "train, kept",
    [({}, ("last", 0, 0)), ({"keep": "best", "patience": 5, "lr_patience": 3}, ("best", 5, 3))],
)
def test_study_runs_choose_nothing_on_held_out_cases_unless_the_study_file_says(tmp_path, train, kept):
    from spine_keras.study.config import StudyConfig

    (tmp_path / "a.txt").write_text("a_image.nrrd,a_label.nrrd\n")
    study = {
        "data": {"train": [{"list": "a.txt", "label_map": "1-2:1"}]},
        "classes": ["background", "vertebra"],
        "variants": [{"mode": "2d", "arch": "u1", "shape": [32, 32]}],
        "folds": 2,
        "train": train,
    }
    config = StudyConfig.from_dict(study, tmp_path / "study.yaml")
    settings = config.train_settings(config.variants[0], 0, tmp_path / "cube.h5", tmp_path / "run")
    assert (settings.keep, settings.patience, settings.lr_patience) == kept
