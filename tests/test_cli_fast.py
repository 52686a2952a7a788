"""The command line answers fast and quietly: --help and flag errors without TensorFlow, one-line argparse errors,
spine-train's flags generated from TrainSettings, and no TensorFlow start-up line on stderr unless --verbose."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from spine_keras.cli import TF_NOISE
from spine_keras.cli.train import parser as train_parser
from spine_keras.train.settings import GROUPS, TrainSettings

REPO = Path(__file__).resolve().parents[1]
# Every console command (pyproject.toml) and its wrapper scripts/<module>.py, e.g. spine-train -> scripts/train.py.
COMMANDS = {
    name: target.split(":")[0].rsplit(".", 1)[1] + ".py"
    for name, target in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"].items()
}
SCRIPTS = sorted(COMMANDS.values())
ENV = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # the commands must quiet TF themselves
# Runs a script as `python scripts/X.py ARGS` would, then reports which of TensorFlow and Keras it imported.
PROBE = """
import runpy, sys
script, sys.argv, code = sys.argv[1], sys.argv[1:], 0
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit as exc:
    code = exc.code
print("imported:", [m for m in ("tensorflow", "keras") if m in sys.modules], "exit:", code)
"""
NOISE_PREFIXES = ("I0000", "W0000", "E0000", "WARNING: All log messages")


def probe(script: str, *args: str) -> tuple[subprocess.CompletedProcess, str]:
    """Run scripts/`script` with `args` in a fresh interpreter; the result and the probe's last stdout line."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(REPO / "scripts" / script), *args],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=REPO,
        timeout=120,
    )
    return done, done.stdout.strip().splitlines()[-1]


def prog(script: str) -> str:
    return next(name for name, wrapper in COMMANDS.items() if wrapper == script)


def noise(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(NOISE_PREFIXES) or "oneDNN" in line]


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_prints_usage_without_tensorflow(script):
    done, last = probe(script, "--help")
    assert done.stderr == ""
    assert done.stdout.startswith(f"usage: {prog(script)} ")
    assert last == "imported: [] exit: 0"


@pytest.mark.parametrize("script", SCRIPTS)
def test_unknown_flag_is_one_line_and_a_hint(script):
    done, last = probe(script, "--no-such-flag")
    error, hint = done.stderr.splitlines()  # exactly two lines (commands with positionals miss those first)
    assert error.startswith(("error: unrecognized arguments: --no-such-flag", "error: the following arguments"))
    assert hint == f"usage hint: {prog(script)} --help"
    assert last == "imported: [] exit: 2"


def test_bad_value_names_the_flag_exit_2():
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train.py"), "--epochs", "x"], capture_output=True, text=True, env=ENV
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == "error: argument --epochs: invalid int value: 'x'\nusage hint: spine-train --help\n"


def test_every_train_setting_is_a_flag_with_its_default_in_help():
    by_dest = {a.dest: a for a in train_parser()._actions}
    flagged = [f for f in dataclasses.fields(TrainSettings) if "help" in f.metadata]
    assert {f.name for f in dataclasses.fields(TrainSettings)} - {f.name for f in flagged} == {"augment", "verbose"}
    help_text = " ".join(train_parser().format_help().split())
    for f in flagged:
        assert by_dest[f.name].option_strings[0] == "--" + f.name.replace("_", "-")
        assert f.metadata["group"] in GROUPS
    assert (
        "--patience PATIENCE early stopping on val_miou_nobg, 0 = off (default: the preset's: recipe 0, paper 20)"
        in help_text
    )
    assert "--lr-factor LR_FACTOR learning-rate reduction factor (default: 0.5)" in help_text
    assert (
        "--arch ARCH arch code, comma list (u1,uvd,uamd) or all; several archs are compared on the same folds "
        "(default: the preset's: recipe u1, paper uamd)" in help_text
    )
    assert "(default: the preset's: recipe adam, paper the arch's)" in help_text and "(default: no)" in help_text


def test_train_flags_parse_to_settings_and_absent_flags_stay_absent():
    args = vars(train_parser().parse_args(["--epochs", "3", "--lr", "1e-3", "--no-deep-supervision", "--quiet"]))
    assert args == {
        "epochs": 3,
        "lr": 0.001,
        "deep_supervision": False,
        "verbose": 0,
        "config": None,
        "resume": None,
        "export": None,
        "check_cube": "full",
        "tf_verbose": False,
    }
    args = vars(train_parser().parse_args(["--deep-supervision", "--strategy", "mirrored", "--arch", "u1,uvd"]))
    assert (args["deep_supervision"], args["strategy"], args["arch"]) == (True, "mirrored", "u1,uvd")
    assert "epochs" not in args  # a --config file's value stands unless the flag is given


def test_export_help_names_the_export_folder_the_code_uses():
    from spine_keras.cli.export import parser as export_parser
    from spine_keras.export import DEFAULT_DIR

    assert f"(default RUN_DIR/{DEFAULT_DIR})" in " ".join(export_parser().format_help().split())
    assert f"(default DIR: RUN/{DEFAULT_DIR})" in " ".join(train_parser().format_help().split())


def test_tf_noise_pattern_matches_tensorflow_start_up_lines_only():
    lines = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1795310810.955726    7562 port.cc:153] oneDNN custom operations are on.",
        "E0000 00:00:1795310912.704891   14846 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error",
        "W0000 00:00:1795310912.704891   14846 gpu_device.cc:2344] Cannot dlopen some GPU libraries.",
    ]
    assert all(TF_NOISE.match(line) for line in lines)
    for kept in ("error: file 'x.nrrd' not found", "Traceback (most recent call last):", "UserWarning: I0000 says"):
        assert not TF_NOISE.match(kept)


def test_input_error_before_tensorflow_work_is_one_line_without_tensorflow(tmp_path):
    done, last = probe("export.py", str(tmp_path / "no-run"))
    assert done.stderr == f"error: run folder '{tmp_path / 'no-run'}' not found\n"
    assert last == "imported: [] exit: 2"


@pytest.mark.slow
def test_train_export_predict_print_no_tensorflow_line_unless_verbose(tmp_path, make_training_cube, make_pair):
    cube = make_training_cube(tmp_path / "cube.h5", (32, 32), cases=3, per_case=2)
    run = tmp_path / "run"
    flags = ["--cube", str(cube), "--arch", "u1", "--filters", "4", "--depth", "2", "--epochs", "1", "--quiet"]
    done = spine("train.py", *flags, "--out", str(run), "--export")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.splitlines()[-2:] == [f"run folder: {run}", f"exported {run} to {run / 'export'}"]
    assert (run / "export" / "saved_model" / "saved_model.pb").is_file()
    scan, _ = make_pair(tmp_path, "scan", shape=(24, 20, 6))
    quiet = spine("predict.py", str(run), str(scan), "-o", str(tmp_path / "out"))
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    loud = spine("predict.py", str(run), str(scan), "-o", str(tmp_path / "loud"), "--verbose")
    assert loud.returncode == 0, loud.stderr
    assert noise(loud.stderr)  # TensorFlow did talk while loading the model: the quiet run swallowed it


def spine(script: str, *args: str) -> subprocess.CompletedProcess:
    """Run `python scripts/SCRIPT ARGS` as a user would (TF_CPP_MIN_LOG_LEVEL unset)."""
    command = [sys.executable, str(REPO / "scripts" / script), *args]
    return subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=600)
