"""`spine-models`: the architecture table, the diagrams, and exit status 2 on user errors."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

from spine_keras.cli.models import main

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--dims", "2", "--shape2d", "32", "32", "1", "--filters", "4", "--depth", "2"]


# uad, 2D, 1 input channel, 2 classes, filters 4, depth 2, batch norm (4 weights per channel), counted by hand: 7,914
UAD_PARAMS = sum(
    [
        9 * 1 * 4 + 16 + 9 * 4 * 4 + 16,  # enc1: two 3x3 convolutions (no bias) + batch norms, 4 filters
        9 * 4 * 8 + 32 + 9 * 8 * 8 + 32,  # enc2: 8 filters
        9 * 8 * 16 + 64 + 9 * 16 * 16 + 64,  # bottleneck: 16 filters
        2 * 2 * 8 * 4 + (16 * 4 + 4) + (4 + 1),  # attention gate 2: theta 2x2 (no bias), phi 1x1, psi 1x1
        2 * 2 * 16 * 8 + 8,  # up2: 2x2 transposed convolution 16 -> 8
        9 * 16 * 8 + 32 + 9 * 8 * 8 + 32,  # dec2: concat of 8 + 8 channels -> 8 filters
        8 * 2 + 2,  # aux_1 head: 1x1 convolution to 2 classes
        2 * 2 * 4 * 2 + (8 * 2 + 2) + (2 + 1),  # attention gate 1
        2 * 2 * 8 * 4 + 4,  # up1: 8 -> 4
        9 * 8 * 4 + 16 + 9 * 4 * 4 + 16,  # dec1: concat of 4 + 4 channels -> 4 filters
        4 * 2 + 2,  # seg head
    ]
)


def cells(out: str, arch: str) -> list[str]:
    """The cells of the table row of `arch` in the printed Markdown table."""
    (row,) = [line for line in out.splitlines() if line.startswith(f"| {arch} |")]
    return [cell.strip() for cell in row.strip("|").split("|")]


def test_table_lists_parameters_outputs_depth_and_receptive_field(capsys):
    assert main(["--archs", "U1", "uad", *SMALL]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "| arch | dims | input | params | outputs | depth | receptive field |"
    assert cells(out, "uad") == ["uad", "2D", "32x32x1", f"{UAD_PARAMS:,}", "seg, aux_1", "2", "50"]


def test_fcn_keeps_its_depth_under_depth_override(capsys):
    """--depth 2 reaches the U-Nets but not fcn, whose VGG16 encoder always pools 5 times."""
    assert main(["--archs", "u1", "fcn", *SMALL]) == 0
    out = capsys.readouterr().out
    assert cells(out, "u1")[5] == "2"
    assert cells(out, "fcn")[:3] == ["fcn", "2D", "32x32x1"] and cells(out, "fcn")[5] == "5"


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
    assert main(["--archs", "uamd", *SMALL, "--plot-model", str(tmp_path)]) == 0
    assert (tmp_path / "arch_uamd_2d_layers.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow  # a subprocess
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
