"""`bench/instances_jax.py`, the route of the iterative network's GPU figures: pack, train (here on the TensorFlow
backend, the loop is the same) and runs give run folders that `spine-instances` reads, with the fold's split and
the trained weights."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spine_keras.instances.runfolder import read_metadata

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "instances_jax.py"


def bench_main(*args: str) -> None:
    spec = importlib.util.spec_from_file_location("instances_jax", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    saved = sys.argv
    sys.argv = [str(SCRIPT), *args]
    try:
        module.main()
    finally:
        sys.argv = saved


@pytest.mark.slow
def test_pack_train_runs_gives_spine_instances_run_folders(tmp_path: Path, instance_masks) -> None:
    instance_masks(tmp_path)
    images = tmp_path / "images.txt"
    images.write_text("p2_image.nrrd,p2_label.nrrd\np3_image.nrrd,p3_label.nrrd\n")
    pack = tmp_path / "pack"
    bench_main("pack", str(images), str(pack), "--levels", "L3-L5", "--folds", "2", "--spacing-mm", "2")
    meta = json.loads(Path(f"{pack}.json").read_text())
    assert sorted(f["split"]["held_out"] for f in meta["folds"]) == [["p2"], ["p3"]]
    env = os.environ | {"KERAS_BACKEND": "tensorflow", "PYTHONPATH": str(ROOT)}
    settings = ["patch=[16,16,16]", "filters=2", "depth=2", "steps=2", "epochs=3"]
    for fold in (0, 1):
        command = [sys.executable, str(SCRIPT), "train", str(pack), str(fold), str(tmp_path / "w"), "--workers", "1"]
        subprocess.run([*command, "--budget", "1e9", "--set", *settings], check=True, env=env, timeout=300)
    record = json.loads((tmp_path / "w" / "fold0.json").read_text())
    assert record["config"]["epochs"] == 3 and len(record["history"]["loss"]) == 3
    bench_main("runs", str(pack), str(tmp_path / "w"), str(tmp_path / "cv"))
    for fold in (0, 1):
        metadata = read_metadata(tmp_path / "cv" / f"run{fold}")
        assert metadata["held_out"] == meta["folds"][fold]["split"]["held_out"]
        assert metadata["cases"] == meta["folds"][fold]["train"] and metadata["levels"] == ["L3", "L4", "L5"]
        import keras

        model = keras.saving.load_model(tmp_path / "cv" / f"run{fold}" / "model.keras", compile=False)
        saved = np.load(tmp_path / "w" / f"fold{fold}_w0.npz")
        for weight, key in zip(model.get_weights(), sorted(saved.files), strict=True):
            np.testing.assert_array_equal(weight, saved[key])
