"""spine-export: SavedModel + .keras + metadata, reloadable with TensorFlow alone (the README snippet)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from spine_keras.cli.export import main
from spine_keras.export import export_bundle
from spine_keras.models import build_model
from spine_keras.predict import load_segmenter

UD = {"filters": 4, "depth": 2}
REPO = Path(__file__).resolve().parents[1]
SNIPPET_MARK = "<!-- snippet: tf-only -->"
SNIPPET_DOCS = (REPO / "README.md", REPO / "docs" / "export-and-prediction.md")
# Runs before the snippet in the fresh process: any import of spine_keras fails there.
BLOCKER = """import sys
class _NoSpineKeras:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "spine_keras":
            raise ImportError("spine_keras is blocked in this test")
sys.meta_path.insert(0, _NoSpineKeras())
"""
DRIVER = """
try:
    import spine_keras
except ImportError:
    pass
else:
    raise SystemExit("spine_keras must not be importable here")
model, meta = load_export(sys.argv[1])
for name in sys.argv[2:]:
    probabilities, labels = segment(model, np.load(name))
    np.savez(name.replace(".npy", "_out.npz"), probabilities=probabilities, labels=labels)
print(",".join(meta["class_names"]))
"""


def readme_snippet() -> str:
    """The TF-only snippet, as README.md shows it."""
    found = []
    for doc in SNIPPET_DOCS:
        text = doc.read_text(encoding="utf-8") if doc.is_file() else ""
        match = re.search(re.escape(SNIPPET_MARK) + r"\s*```python\n(.*?)```", text, re.DOTALL)
        if match:
            found.append(match.group(1))
    assert found, f"no '{SNIPPET_MARK}' python block in {', '.join(str(d) for d in SNIPPET_DOCS)}"
    assert all(s == found[0] for s in found), "the TF-only snippet differs between README.md and docs"
    return found[0]


@pytest.fixture(scope="module")
def exported(write_bundle, tmp_path_factory):
    """A deep-supervised 2D U-Net run, exported; returns (export folder, Keras model)."""
    model = build_model("ud", (32, 32, 1), 3, **UD)
    assert len(model.outputs) == 2  # seg + aux_1
    run = write_bundle(tmp_path_factory.mktemp("export") / "run", model, "2d")
    return export_bundle(run), model


def keras_seg(model, batch: np.ndarray, arch: str = "ud", **overrides) -> np.ndarray:
    """The main `seg` output of the Keras model for `batch`; other sides go through a rebuild with its weights."""
    if tuple(batch.shape[1:]) != tuple(model.input_shape[1:]):
        sized = build_model(arch, batch.shape[1:], model.outputs[0].shape[-1], **(overrides or UD))
        sized.set_weights(model.get_weights())
        model = sized
    out = model(batch, training=False)
    return np.asarray(out[0] if isinstance(out, (list, tuple)) else out)


def test_export_layout_and_metadata(exported):
    out, _ = exported
    beside = json.loads((out / "spine_keras.json").read_text())
    inside = json.loads((out / "saved_model" / "assets" / "spine_keras.json").read_text())
    assert beside == inside
    assert (out / "model.keras").is_file() and (out / "saved_model" / "saved_model.pb").is_file()
    assert beside["class_names"] == ["background", "vertebra", "disc"] and beside["input_shape"] == [32, 32, 1]
    for key in ("label_map", "axis", "preprocess", "sampling", "arch", "preset", "provenance", "metrics", "versions"):
        assert key in beside
    assert beside["export"]["input_shape"] == [None, None, None, 1]
    assert beside["export"]["flexible_sides"] is True and beside["export"]["side_multiple"] == 4


@pytest.mark.slow
def test_readme_snippet_runs_with_tensorflow_alone(exported, tmp_path):
    out, model = exported
    rng = np.random.default_rng(0)
    batches = {"train_shape.npy": rng.normal(size=(3, 32, 32, 1)), "wider.npy": rng.normal(size=(2, 48, 64, 1))}
    for name, batch in batches.items():
        np.save(tmp_path / name, batch.astype(np.float32))
    script = tmp_path / "snippet_run.py"
    script.write_text(BLOCKER + readme_snippet() + DRIVER, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-I", str(script), str(out), *(str(tmp_path / n) for n in batches)],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "background,vertebra,disc"
    for name, batch in batches.items():
        found = np.load(tmp_path / name.replace(".npy", "_out.npz"))
        expected = keras_seg(model, batch.astype(np.float32))
        assert found["probabilities"].shape == expected.shape
        np.testing.assert_allclose(found["probabilities"], expected, atol=1e-5)
        np.testing.assert_array_equal(found["labels"], found["probabilities"].argmax(-1))


def test_every_model_form_predicts_the_same(exported):
    out, model = exported
    batch = np.random.default_rng(1).normal(size=(2, 32, 32, 1)).astype(np.float32)
    expected = keras_seg(model, batch)
    run = out.parent
    for form in (run, run / "best.keras", out, out / "saved_model", out / "model.keras"):
        np.testing.assert_allclose(load_segmenter(form).predict(batch), expected, atol=1e-5, err_msg=str(form))


WIDE = np.random.default_rng(3).normal(size=(2, 64, 96, 1)).astype(np.float32)


def export_32x32(write_bundle, tmp_path: Path, arch: str, overrides: dict) -> tuple[dict, object, object]:
    """Export `arch` built for 32x32 inputs; returns (its 'export' metadata, the loaded SavedModel, the Keras model)."""
    model = build_model(arch, (32, 32, 1), 2, **overrides)
    info = json.loads((export_bundle(write_bundle(tmp_path / arch, model, "2d")) / "spine_keras.json").read_text())
    loaded = tf.saved_model.load(str(tmp_path / arch / "export" / "saved_model"))
    batch = np.random.default_rng(2).normal(size=(1, 32, 32, 1)).astype(np.float32)
    np.testing.assert_allclose(loaded.serve(batch)["probabilities"], keras_seg(model, batch), atol=1e-5)
    return info["export"], loaded, model


@pytest.mark.slow
def test_fcn_export_serves_any_side_that_32_divides(write_bundle, tmp_path):
    """fcn is convolutions and poolings only: its SavedModel takes any side 2^5 divides, recorded as flexible."""
    export, loaded, model = export_32x32(write_bundle, tmp_path, "fcn", {"filters": 1})
    assert (export["flexible_sides"], export["side_multiple"], export["input_shape"]) == (True, 32, [None] * 3 + [1])
    expected = keras_seg(model, WIDE, "fcn", filters=1)
    np.testing.assert_allclose(loaded.serve(WIDE)["probabilities"], expected, atol=1e-5)


def test_uad_export_keeps_its_training_sides(write_bundle, tmp_path):
    """uad's attention gates upsample by their input's static sides: its SavedModel takes 32x32 only, recorded so."""
    export, loaded, _ = export_32x32(write_bundle, tmp_path, "uad", UD)
    assert (export["flexible_sides"], export["side_multiple"], export["input_shape"]) == (False, 4, [None, 32, 32, 1])
    with pytest.raises((ValueError, TypeError)):
        loaded.serve(WIDE)


def test_kfold_export_and_cli_errors(write_bundle, constant_model, tmp_path, capsys):
    for fold in range(2):
        write_bundle(tmp_path / "kfold" / f"fold_{fold}", constant_model((16, 16, 16, 1), [0.0, fold + 1.0]), "3d")
    assert main([str(tmp_path / "kfold"), "-o", str(tmp_path / "exp")]) == 0
    assert main([str(tmp_path / "kfold"), "-o", str(tmp_path / "exp")]) == 0  # replaces the earlier export
    info = json.loads((tmp_path / "exp" / "fold_1" / "spine_keras.json").read_text())
    assert info["export"]["input_shape"] == [None, 16, 16, 16, 1]
    ensemble = load_segmenter(tmp_path / "exp").predict(np.zeros((1, 16, 16, 16, 1), np.float32))
    softmax = [1 / (1 + np.exp(-v)) for v in (1.0, 2.0)]  # class-1 probability of logits [0, v]
    np.testing.assert_allclose(ensemble[0, 3, 4, 5, 1], np.mean(softmax), rtol=1e-6)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    assert main([str(tmp_path / "kfold" / "fold_0"), "-o", str(tmp_path / "taken")]) == 2
    assert "is not a spine_keras export" in capsys.readouterr().err
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"
    fold_0 = tmp_path / "kfold" / "fold_0"
    assert main([str(fold_0), "-o", str(fold_0)]) == 2  # never replaces the run folder itself
    assert "is not a spine_keras export" in capsys.readouterr().err and (fold_0 / "best.keras").is_file()
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "run folder" in capsys.readouterr().err
    assert main([str(tmp_path / "taken")]) == 2
    assert "no model in" in capsys.readouterr().err
