"""Hostile inputs and faults for `spine-train`, run as a user would (a subprocess in the test's own folder).

Every case must end with its exit status, exactly one `error: ...` line, no traceback, no file left behind and every
file that was there untouched (bytes and modification times). The fast table is refused before TensorFlow loads;
the slow cases need training (a diverging loss, a chunk that breaks mid-epoch, a full disk, a real resume).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import REPO, write_training_cube

TINY = ["--arch", "u1", "--depth", "2", "--filters", "4", "--batch-size", "4", "--quiet"]
BASE = ["--cube", "cube.h5", *TINY, "--epochs", "1", "--out", "run"]
RESUME = ["--resume", "done"]


@pytest.fixture(scope="module")
def cubes(tmp_path_factory) -> Path:
    """A folder with the tiny 2D cube and the variants a resumed run must notice (classes, shape, mode)."""
    folder = tmp_path_factory.mktemp("cubes")
    write_training_cube(folder / "cube.h5")
    write_training_cube(folder / "wide.h5", shape=(48, 48))
    write_training_cube(folder / "cube3d.h5", shape=(16, 16, 16))
    shutil.copy(folder / "cube.h5", folder / "renamed.h5")
    with h5py.File(folder / "renamed.h5", "r+") as handle:
        handle.attrs["class_names"] = json.dumps(["background", "bone", "disc"])
    return folder


@pytest.fixture(scope="module")
def finished_run(cubes: Path, tmp_path_factory) -> Path:
    """A real one-epoch run folder of the tiny cube (trained once, in a subprocess, for the whole module)."""
    folder = tmp_path_factory.mktemp("finished")
    shutil.copy(cubes / "cube.h5", folder / "cube.h5")
    # the paper's plateau (a learning-rate variable) and best epoch, which the divergence test needs
    result = _run_train(folder, *BASE[:-1], "done", "--optimizer", "sgd", "--lr", "0.01", "--preset", "paper")
    assert result.returncode == 0, result.stderr
    return folder / "done"


def _run_train(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train.py"), *args], cwd=cwd, env=env, capture_output=True, text=True
    )


# --- setups: each writes what its case needs into the test folder (a copy of cube.h5 is already there) -------------


def write(name: str, text: str) -> Callable[[Path], None]:
    return lambda tmp: (tmp / name).parent.mkdir(parents=True, exist_ok=True) or (tmp / name).write_text(text)


def edit_cube(change: Callable[[h5py.File], None], name: str = "cube.h5") -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        with h5py.File(tmp / name, "r+") as handle:
            change(handle)

    return setup


def replace_dataset(name: str, values: Callable[[np.ndarray], np.ndarray]) -> Callable[[h5py.File], None]:
    def change(handle: h5py.File) -> None:
        data = values(handle[name][()])
        del handle[name]
        handle[name] = data

    return change


def set_values(name: str, value: float, index=(0, 3, 3)) -> Callable[[h5py.File], None]:
    def change(handle: h5py.File) -> None:
        handle[name][index] = value

    return change


def corrupt_chunks(samples: range | None = None, name: str = "cube.h5") -> Callable[[Path], None]:
    """Overwrite the compressed bytes of these samples' image chunks (all with None), as a failing disk would."""

    def setup(tmp: Path) -> None:
        with h5py.File(tmp / name, "r") as handle:
            images = handle["images"]
            chunks = [images.id.get_chunk_info(i) for i in samples or range(images.shape[0])]
        with open(tmp / name, "r+b") as raw:
            for chunk in chunks:
                raw.seek(chunk.byte_offset)
                raw.write(b"\xff" * chunk.size)

    return setup


def truncate(tmp: Path) -> None:
    size = (tmp / "cube.h5").stat().st_size
    with open(tmp / "cube.h5", "r+b") as handle:
        handle.truncate(size // 2)


def unwritable(tmp: Path) -> None:
    (tmp / "locked").mkdir()
    (tmp / "locked").chmod(0o555)


def edit_json(path: str, change: Callable[[dict], None]) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        data = json.loads((tmp / path).read_text())
        change(data)
        (tmp / path).write_text(json.dumps(data))

    return setup


def use_cube(name: str) -> Callable[[Path], None]:
    """The resumed run's cube.h5 replaced by another cube (the run recorded cube.h5)."""
    return lambda tmp: shutil.copy(tmp / name, tmp / "cube.h5")


def both(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    return lambda tmp: [setup(tmp) for setup in setups] and None


def nothing(tmp: Path) -> None:
    return None


def settings_edit(key: str, value) -> Callable[[dict], None]:
    return lambda data: data["settings"].__setitem__(key, value)


# (id, setup, args, expected message). Resume cases run on a copy of a real finished run folder, `done/`.
FLAGS = [
    ("epochs_zero", nothing, [*BASE, "--epochs", "0"], r"--epochs must be a positive integer, got 0"),
    ("lr_negative", nothing, [*BASE, "--lr", "-1"], r"--lr must be > 0"),
    ("lr_zero", nothing, [*BASE, "--lr", "0"], r"--lr must be > 0"),
    ("lr_nan", nothing, [*BASE, "--lr", "nan"], r"--lr must be a finite number"),
    ("lr_inf", nothing, [*BASE, "--lr", "inf"], r"--lr must be a finite number"),
    ("dropout_one", nothing, [*BASE, "--dropout", "1"], r"--dropout must be in \[0, 1\)"),
    ("dropout_negative", nothing, [*BASE, "--dropout", "-0.1"], r"--dropout must be in \[0, 1\)"),
    ("dice_smooth_negative", nothing, [*BASE, "--dice-smooth", "-1"], r"--dice-smooth must be >= 0"),
    ("val_fraction_zero", nothing, [*BASE, "--val-fraction", "0"], r"--val-fraction must be in \(0, 1\)"),
    ("val_fraction_one", nothing, [*BASE, "--val-fraction", "1"], r"--val-fraction must be in \(0, 1\)"),
    ("min_lr_negative", nothing, [*BASE, "--min-lr=-1e-6"], r"--min-lr must be >= 0"),
    ("min_delta_nan", nothing, [*BASE, "--min-delta", "nan"], r"--min-delta must be a finite number"),
    ("lr_factor_one", nothing, [*BASE, "--lr-factor", "1"], r"--lr-factor must be in \(0, 1\)"),
    ("patience_negative", nothing, [*BASE, "--patience", "-1"], r"--patience must be an integer >= 0"),
    ("seed_negative", nothing, [*BASE, "--seed", "-3"], r"--seed must be an integer >= 0"),
    ("batch_zero", nothing, [*BASE, "--batch-size", "0"], r"--batch-size must be a positive integer"),
    ("steps_zero", nothing, [*BASE, "--steps-per-epoch", "0"], r"--steps-per-epoch must be a positive integer"),
    ("filters_zero", nothing, [*BASE, "--filters", "0"], r"--filters must be a positive integer"),
    ("folds_one", nothing, [*BASE, "--folds", "1"], r"--folds must be at least 2"),
    ("fold_without_folds", nothing, [*BASE, "--fold", "1"], r"--fold must be 'all' or an index below folds"),
    ("fold_out_of_range", nothing, [*BASE, "--folds", "2", "--fold", "2"], r"--fold must be 'all' or an index"),
    ("epochs_text", nothing, [*BASE, "--epochs", "ten"], r"argument --epochs: invalid int value"),
    ("check_cube_choice", nothing, [*BASE, "--check-cube", "deep"], r"argument --check-cube: invalid choice"),
    ("batch_too_large", nothing, [*BASE, "--batch-size", "64"], r"larger than the \d+ training samples"),
    ("arch_unknown", nothing, [*BASE, "--arch", "u9"], r"unknown architecture 'u9'"),
    ("warmup_beyond_epochs", nothing, [*BASE, "--lr-schedule", "cosine", "--warmup-epochs", "100", "--epochs", "10"],
     r"--warmup-epochs must be below epochs \(10\), got 100"),
    ("warmup_negative", nothing, [*BASE, "--warmup-epochs", "-1"], r"--warmup-epochs must be an integer >= 0"),
    ("lr_schedule_unknown", nothing, [*BASE, "--lr-schedule", "step"], r"argument --lr-schedule: invalid choice"),
    ("ce_weight_nan", nothing, [*BASE, "--ce-weight", "nan"], r"--ce-weight must be a finite number, got nan"),
    ("ce_weight_negative", nothing, [*BASE, "--ce-weight", "-1"], r"--ce-weight must be >= 0"),
    ("loss_weights_zero", nothing, [*BASE, "--ce-weight", "0", "--dice-weight", "0"],
     r"--ce-weight must be > 0 when dice_weight is 0"),
    ("online_augment_axes", write("c.json", '{"augment": {"lowres_axes": [5], "lowres_prob": 1}}'),
     [*BASE, "--online-augment", "--config", "c.json"], r"lowres_axes \(5,\) out of range for 2D samples"),
]  # fmt: skip
CONFIG = [
    ("config_dice_smooth", write("c.json", '{"dice_smooth": -1}'), [*BASE, "--config", "c.json"],
     r"dice_smooth in config file 'c.json' must be >= 0"),
    ("config_nan", write("c.json", '{"lr": NaN}'), [*BASE, "--config", "c.json"],
     r"lr in config file 'c.json' must be a finite number"),
    ("config_yaml_inf", write("c.yaml", "epochs: .inf\n"), [*BASE[:-4], "--config", "c.yaml", "--out", "run"],
     r"epochs in config file 'c.yaml' must be a positive integer"),
    ("config_bool_text", write("c.yaml", 'jit: "yes"\n'), [*BASE, "--config", "c.yaml"],
     r"jit in config file 'c.yaml' must be true or false"),
    ("config_dropout_text", write("c.yaml", "dropout: half\n"), [*BASE, "--config", "c.yaml"],
     r"dropout in config file 'c.yaml' must be a number"),
    ("config_unknown_key", write("c.json", '{"epoch": 3}'), [*BASE, "--config", "c.json"],
     r"unknown training setting\(s\): epoch in config file 'c.json'"),
    ("config_not_mapping", write("c.json", "[1, 2]"), [*BASE, "--config", "c.json"], r"must hold a mapping"),
    ("config_bad_json", write("c.json", '{"lr": '), [*BASE, "--config", "c.json"], r"is not valid JSON"),
    ("config_arch_number", write("c.json", '{"arch": 5}'), [*BASE[:2], "--config", "c.json"],
     r"arch in config file 'c.json' must be a code, a comma list"),
    ("config_missing", nothing, [*BASE, "--config", "none.yaml"], r"cannot read config file 'none.yaml'"),
    ("config_augment_scalar", write("c.json", '{"augment": 3}'), [*BASE, "--config", "c.json"],
     r"augment in config file 'c.json' must be a mapping"),
]  # fmt: skip
PATHS = [
    ("out_is_file", write("afile", "x"), [*BASE, "--out", "afile"], r"--out 'afile' is a file"),
    ("out_parent_is_file", write("afile", "x"), [*BASE, "--out", "afile/run"], r"'afile' is a file, not a folder"),
    ("out_not_empty", write("run/x", "x"), BASE, r"run folder 'run' already exists; continue it with --resume"),
    ("export_is_file", write("afile", "x"), [*BASE, "--export", "afile"], r"--export folder 'afile' is a file"),
    ("export_under_file", write("afile", "x"), [*BASE, "--export", "afile/x"], r"'afile' is a file, not a folder"),
    pytest.param(
        "out_unwritable",
        unwritable,
        [*BASE, "--out", "locked/run"],
        r"folder 'locked' is not writable",
        marks=pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere"),
        id="out_unwritable",
    ),
]
CUBE = [
    ("cube_missing", nothing, [*BASE, "--cube", "nope.h5"], r"cube 'nope.h5' not found"),
    ("cube_not_hdf5", write("text.h5", "hello"), [*BASE, "--cube", "text.h5"], r"not a readable HDF5 file"),
    ("cube_foreign", edit_cube(lambda h: h.attrs.__setitem__("format", "other")), BASE, r"not a spine_keras cube"),
    ("cube_nan_images", edit_cube(set_values("images", np.nan)), BASE, r"1 image values are NaN or infinite"),
    ("cube_inf_images", edit_cube(set_values("images", np.inf, (2, 0, 0))), BASE, r"NaN or infinite"),
    ("cube_label_ids", edit_cube(set_values("labels", 3, (1, 5, 5))), BASE, r"label voxels hold ids >= n_classes"),
    ("cube_images_float64", edit_cube(replace_dataset("images", lambda a: a.astype(np.float64))), BASE,
     r"images are float64, expected float32"),
    ("cube_labels_int32", edit_cube(replace_dataset("labels", lambda a: a.astype(np.int32))), BASE,
     r"labels are int32, expected uint8"),
    ("cube_lengths", edit_cube(replace_dataset("case_ids", lambda a: a[:-1])), BASE, r"different lengths"),
    ("cube_n_classes", edit_cube(lambda h: h.attrs.__setitem__("n_classes", 1)), BASE, r"n_classes is 1"),
    ("cube_class_names", edit_cube(lambda h: h.attrs.__setitem__("class_names", '["a", "b"]')), BASE,
     r"2 class names for 3 classes"),
    ("cube_no_case_ids", edit_cube(lambda h: h.__delitem__("case_ids")), BASE, r"case_ids"),
    ("cube_corrupt_chunk", corrupt_chunks(range(5, 6)), BASE, r"truncated or corrupt"),
    ("cube_truncated", truncate, BASE, r"'cube.h5' is not a readable HDF5 file \(.*truncated"),
    ("cube_malformed_attribute", edit_cube(lambda h: h.attrs.__setitem__("sampling", "{not json")), BASE,
     r"attribute 'sampling' is not valid JSON"),
]  # fmt: skip
RESUME_CASES = [
    ("resume_not_a_run", nothing, ["--resume", "nowhere"], r"'nowhere' is not a run folder"),
    ("resume_config_corrupt", write("done/config.json", "{"), RESUME, r"config.json' is unreadable or not valid JSON"),
    ("resume_config_list", write("done/config.json", "[]"), RESUME, r"does not hold a JSON mapping"),
    ("resume_config_no_settings", edit_json("done/config.json", lambda d: d.pop("settings")), RESUME,
     r"has no 'settings' mapping"),
    ("resume_config_edited", edit_json("done/config.json", settings_edit("dice_smooth", -1)), RESUME,
     r"dice_smooth in 'done/config.json' must be >= 0"),
    ("resume_config_no_cube", edit_json("done/config.json", lambda d: d.pop("cube")), RESUME,
     r"does not record the cube"),
    ("resume_state_corrupt", write("done/state.json", "not json"), RESUME, r"saved state 'done/state.json'"),
    ("resume_state_field", edit_json("done/state.json", lambda d: d.__setitem__("epoch", "one")), RESUME,
     r"bad or missing 'epoch'"),
    ("resume_state_best", edit_json("done/state.json", lambda d: d.pop("best")), RESUME, r"bad or missing 'best'"),
    ("resume_state_split", edit_json("done/state.json", lambda d: d["split"].__setitem__("val_cases", ["x"])),
     RESUME, r"its split split changed"),
    ("resume_state_no_result", edit_json("done/state.json", lambda d: d.pop("result")), RESUME,
     r"says completed but holds no 'result'"),
    ("resume_bundle_corrupt", write("done/spine_keras.json", "{"), RESUME, r"spine_keras.json"),
    ("resume_last_missing", lambda tmp: (tmp / "done" / "last.keras").unlink(), RESUME, r"last.keras' is missing"),
    ("resume_classes_changed", use_cube("renamed.h5"), RESUME, r"class names changed from .* to"),
    ("resume_shape_changed", use_cube("wide.h5"), RESUME, r"sample shape changed from \[32, 32\] to \[48, 48\]"),
    ("resume_mode_changed", use_cube("cube3d.h5"), RESUME, r"mode changed from 2d to 3d"),
    ("resume_corrupt_cube", corrupt_chunks(range(0, 1)), RESUME, r"truncated or corrupt"),
    ("resume_bundle_edited", edit_json("done/spine_keras.json", lambda d: d.__setitem__("input_shape", "big")),
     RESUME, r"field 'input_shape'"),
    ("resume_flag_changed", nothing, [*RESUME, "--lr", "0.1"], r"a resumed run keeps its settings; drop --lr"),
    ("resume_with_config", write("c.json", "{}"), [*RESUME, "--config", "c.json"], r"drop --config"),
    ("resume_epochs_zero", nothing, [*RESUME, "--epochs", "0"], r"--epochs must be a positive integer"),
]  # fmt: skip
CASES = FLAGS + CONFIG + PATHS + CUBE + RESUME_CASES


def fingerprint(folder: Path) -> dict[str, tuple[int, str]]:
    """Every file under `folder` with its modification time and content hash."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("case, setup, args, match", CASES, ids=[c[0] if isinstance(c, tuple) else None for c in CASES])
def test_refused_before_training(case, setup, args, match, cubes, finished_run, tmp_path, refusal):
    for cube in cubes.iterdir():
        shutil.copy(cube, tmp_path / cube.name)
    shutil.copytree(finished_run, tmp_path / "done")
    setup(tmp_path)
    before = fingerprint(tmp_path)
    refusal.check("train", *args, match=match)
    assert fingerprint(tmp_path) == before, "a refused run changed a file"


def test_fast_refusals_need_no_tensorflow(cubes, tmp_path):
    """The refusals above happen before TensorFlow is imported (so they answer in well under a second)."""
    shutil.copy(cubes / "cube.h5", tmp_path / "cube.h5")
    code = (
        "import sys; from spine_keras.cli.train import main; "
        "main(['--cube', 'cube.h5', '--lr', '-1']); main(['--cube', 'cube.h5', '--resume', 'x']); "
        "main(['--cube', 'cube.h5', '--out', 'cube.h5']); assert 'tensorflow' not in sys.modules, 'TF loaded'"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True
    )
    assert result.returncode == 0, result.stderr


# --- slow: training has to start -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_diverged_fresh_run_exits_3_and_leaves_nothing(cubes, tmp_path, refusal):
    shutil.copy(cubes / "cube.h5", tmp_path / "cube.h5")
    refusal.check(
        "train",
        *BASE,
        "--optimizer",
        "sgd",
        "--lr",
        "1e12",
        match=r"training diverged: (loss is (nan|inf) at epoch 1 step \d+|weight .*) \(u1 split\); no epoch was saved; "
        r"lower --lr",
        status=3,
    )


@pytest.mark.slow
def test_diverged_resume_marks_failed_and_keeps_best(finished_run, cubes, tmp_path, refusal):
    shutil.copy(cubes / "cube.h5", tmp_path / "cube.h5")
    shutil.copytree(finished_run, tmp_path / "done")
    run = tmp_path / "done"
    import keras

    import spine_keras.models.factory  # noqa: F401 - registers the custom layers

    model = keras.saving.load_model(run / "last.keras")
    model.optimizer.learning_rate.assign(1e12)  # the resumed optimizer state carries its learning rate
    model.save(run / "last.keras")
    kept = {name: fingerprint(run)[name] for name in ("best.keras", "spine_keras.json", "last.keras")}
    result = refusal.run("train", *RESUME, "--epochs", "3")
    assert result.returncode == 3, result.stderr
    assert re.match(r"error: training diverged: (loss is (nan|inf) at epoch 2|weight)", result.stderr), result.stderr
    assert "best.keras keeps epoch 1" in result.stderr and "Traceback" not in result.stderr
    state = json.loads((run / "state.json").read_text())
    assert state["completed"] is False and "diverged" in state["failed"] and state["epoch"] == 1
    assert {name: fingerprint(run)[name] for name in kept} == kept


@pytest.mark.slow
def test_chunk_corrupt_mid_epoch_is_one_line_and_leaves_nothing(cubes, tmp_path, refusal):
    """With --check-cube quick the scan that would find it is skipped: the read fails inside tf.data."""
    shutil.copy(cubes / "cube.h5", tmp_path / "cube.h5")
    corrupt_chunks()(tmp_path)
    refusal.check(
        "train", *BASE, "--check-cube", "quick", match=r"sample \d+ of cube 'cube.h5' cannot be read .* corrupt"
    )


@pytest.mark.slow
def test_resume_removes_stale_temporaries(finished_run, cubes, tmp_path):
    shutil.copy(cubes / "cube.h5", tmp_path / "cube.h5")
    shutil.copytree(finished_run, tmp_path / "done")
    stale = [tmp_path / "done" / ".last.keras.k2j4_x9a.tmp.keras", tmp_path / "done" / ".state.json.abcdefgh.tmp.json"]
    for path in stale:
        path.write_bytes(b"half a save")
    result = _run_train(tmp_path, *RESUME, "--epochs", "2")
    assert result.returncode == 0, result.stderr
    assert not any(path.exists() for path in stale)
    assert json.loads((tmp_path / "done" / "state.json").read_text())["epoch"] == 2


@pytest.fixture
def full_disk(tmp_path: Path):
    """A 300 KiB tmpfs at tmp_path/full: room for the run's first files, not for its checkpoints."""
    mount = tmp_path / "full"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.slow
def test_disk_full_is_one_line_and_removes_the_run(cubes, tmp_path, full_disk, refusal):
    shutil.copy(cubes / "cube.h5", tmp_path / "cube.h5")
    refusal.check(
        "train",
        *BASE[:-1],
        "full/run",
        "--epochs",
        "3",
        match=r"cannot write .*'full/run.*': no space left on the device",
    )
    assert not any(full_disk.iterdir())
