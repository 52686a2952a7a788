"""tf.distribute on the CPU: MirroredStrategy over 2 logical devices == one device; 2 workers on 127.0.0.1."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # subprocesses that train
REPO = Path(__file__).resolve().parents[1]
ENV = {
    **os.environ,
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}",
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "2",
}
COMMON = {"arch": ["ud"], "filters": 4, "depth": 2, "normalization": "none", "epochs": 2, "seed": 0, "verbose": 0}

MIRRORED = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from spine_keras.train import TrainSettings, train
    cube, out, common = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    train(TrainSettings(cube=cube, out=out + "/one", strategy="one", batch_size=4, **common))
    train(TrainSettings(cube=cube, out=out + "/mirrored", strategy="mirrored", batch_size=2, **common))
""")


def rows(folder: Path) -> list[dict[str, float]]:
    with open(folder / "history.csv") as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_mirrored_two_devices_equals_one_device(tmp_path, make_training_cube):
    cube = make_training_cube(tmp_path / "cube.h5", (32, 32), cases=4, per_case=2)
    done = subprocess.run(
        [sys.executable, "-c", MIRRORED, str(cube), str(tmp_path), json.dumps(COMMON)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    strategy = json.loads((tmp_path / "mirrored" / "config.json").read_text())["strategy"]
    assert (strategy["kind"], strategy["replicas"], strategy["global_batch"]) == ("MirroredStrategy", 2, 4)
    one, mirrored = rows(tmp_path / "one"), rows(tmp_path / "mirrored")
    assert len(one) == len(mirrored) == 2
    for a, b in zip(one, mirrored):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)  # per-sample losses / GLOBAL batch: same update
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4)
        for key in ("val_miou", "val_miou_nobg", "val_iou_vertebra", "val_dice_disc"):
            assert b[key] == pytest.approx(a[key], abs=2e-3), key


def test_multiworker_two_processes_on_loopback(tmp_path, make_training_cube):
    cube = make_training_cube(tmp_path / "cube.h5", (32, 32), cases=4, per_case=2)
    workers = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    run = tmp_path / "run"
    argv = [
        sys.executable,
        str(REPO / "scripts" / "train.py"),
        "--cube",
        str(cube),
        "--arch",
        "u1",
        "--depth",
        "2",
        "--filters",
        "4",
        "--epochs",
        "1",
        "--steps-per-epoch",
        "2",
        "--batch-size",
        "2",
        "--strategy",
        "multiworker",
        "--out",
        str(run),
        "--quiet",
    ]
    procs = []
    for index in range(2):
        env = {
            **ENV,
            "TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}),
        }
        # workers ignore SIGTERM while they wait for a peer: `timeout -k` follows up with SIGKILL
        procs.append(
            subprocess.Popen(
                ["timeout", "-k", "10", "150", *argv],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=200)[0] for p in procs]
    for proc, output in zip(procs, outputs):
        assert proc.returncode == 0, output[-3000:]
    strategy = json.loads((run / "config.json").read_text())["strategy"]
    assert (strategy["kind"], strategy["replicas"], strategy["global_batch"]) == ("CollectiveAllReduceStrategy", 2, 4)
    assert (run / "best.keras").is_file() and len(rows(run)) == 1
