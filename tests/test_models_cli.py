"""`spine-models`: the architecture table, the diagrams, and exit status 2 on user errors."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

from spine_keras.cli.models import main
from spine_keras.models import build_model

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--dims", "2", "--shape2d", "32", "32", "1", "--filters", "4", "--depth", "2"]


def test_table_lists_parameters_outputs_depth_and_receptive_field(capsys):
    assert main(["--archs", "U1", "uad", *SMALL]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0] == "| arch | dims | input | params | outputs | depth | receptive field |"
    params = build_model("uad", (32, 32, 1), 2, filters=4, depth=2).count_params()
    assert rows[3] == f"| uad | 2D | 32x32x1 | {params:,} | seg, aux_1 | 2 | 50 |"


def test_fcn_keeps_its_depth_under_depth_override(capsys):
    assert main(["--archs", "fcn", *SMALL]) == 0
    assert "| fcn | 2D | 32x32x1 |" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--archs", "unet"], "unknown architecture 'unet'"),
        (["--archs", "u1", "--dims", "2", "--shape2d", "30", "32", "1"], "input side H=30"),
    ],
)
def test_user_errors_exit_2(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_plot_writes_png(tmp_path):
    assert main(["--archs", "uamd", *SMALL, "--plot", str(tmp_path)]) == 0
    assert (tmp_path / "arch_uamd_2d.png").read_bytes()[:4] == b"\x89PNG"


def test_script_wrapper_runs_3d():
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "models.py"),
        "--archs",
        "ud",
        "--dims",
        "3",
        "--shape3d",
        "16",
        "16",
        "16",
        "1",
        "--filters",
        "4",
        "--depth",
        "2",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    assert "| ud | 3D | 16x16x16x1 |" in done.stdout and "seg, aux_1 |" in done.stdout
