"""spine-predict: geometry restored exactly, seamless 3D windows, fold ensembles, metrics, bad inputs."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from spine_keras.cli.predict import main
from spine_keras.io import Volume, read_volume, write_volume
from spine_keras.models import build_model
from spine_keras.predict import load_segmenter
from spine_keras.predict.metrics import COLUMNS, case_scores, overall, pooled
from spine_keras.preprocess import PreprocessConfig
from spine_keras.surface import surface_metrics

CLASSES = ["background", "vertebra", "disc"]
SPACING = (0.9, 1.3, 2.5)
ORIGIN = (-12.5, 30.25, 7.75)


def rotation() -> np.ndarray:
    """An oblique orthonormal direction matrix (30 degrees about z after 20 about x)."""
    a, b = np.radians(30.0), np.radians(20.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


@pytest.fixture(scope="module")
def unet_run(write_bundle, tmp_path_factory) -> Path:
    """A tiny untrained 2D U-Net bundle that resamples to 1.1 x 1.1 x 1.7 mm and resizes slices to 32 x 32."""
    model = build_model("u1", (32, 32, 1), 3, filters=4, depth=2)
    return write_bundle(
        tmp_path_factory.mktemp("run") / "unet",
        model,
        "2d",
        PreprocessConfig(spacing=(1.1, 1.1, 1.7)),
        {"mode": "2d", "axis": 2, "shape": [32, 32], "stride": None},
    )


def write_scan(path: Path, shape=(30, 26, 9), channels: int = 1, seed: int = 0) -> Volume:
    """A random scan with oblique, anisotropic, off-origin geometry."""
    rng = np.random.default_rng(seed)
    array = rng.normal(100, 20, shape + ((channels,) if channels > 1 else ())).astype(np.float32)
    direction = rotation() if len(shape) == 3 else np.eye(len(shape))
    volume = Volume(array, SPACING[: len(shape)], ORIGIN[: len(shape)], direction)
    write_volume(volume, path)
    return volume


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz"])
def test_prediction_has_the_input_geometry_exactly(unet_run, tmp_path, suffix):
    scan = tmp_path / f"scan{suffix}"
    write_scan(scan)
    assert main([str(unet_run), str(scan), "-o", str(tmp_path / "out"), "--probabilities", "--tta=all"]) == 0
    given = read_volume(scan)
    # NIfTI keeps orientation as float32 quaternion/sform that ITK re-derives on every read: ~1e-8 jitter
    direction_atol = 1e-7 if suffix == ".nii.gz" else 0.0
    for kind in ("seg", "prob"):
        out = read_volume(tmp_path / "out" / f"scan_{kind}{suffix}")
        assert out.shape == given.shape == (30, 26, 9)
        assert out.spacing == given.spacing
        assert out.origin == given.origin
        np.testing.assert_allclose(out.direction, given.direction, rtol=0, atol=direction_atol)
    labels = read_volume(tmp_path / "out" / f"scan_seg{suffix}").array
    probabilities = read_volume(tmp_path / "out" / f"scan_prob{suffix}").array
    assert labels.dtype == np.uint8 and labels.max() < 3 and probabilities.shape == (30, 26, 9, 3)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-5)


def test_format_flag_converts_the_output(unet_run, tmp_path):
    scan = tmp_path / "scan.nrrd"
    write_scan(scan)
    assert main([str(unet_run), str(scan), "-o", str(tmp_path / "out"), "--format", "nii.gz"]) == 0
    out = read_volume(tmp_path / "out" / "scan_seg.nii.gz")
    assert out.shape == (30, 26, 9)
    np.testing.assert_allclose(out.spacing, SPACING, rtol=1e-6)
    np.testing.assert_allclose(out.direction, rotation(), atol=1e-6)


def test_3d_sliding_window_of_a_constant_model_is_constant(write_bundle, constant_model, tmp_path):
    model = constant_model((16, 16, 16, 1), [0.0, 1.0, 0.5])
    run = write_bundle(
        tmp_path / "run3d",
        model,
        "3d",
        PreprocessConfig(spacing=(1.5, 1.5, 1.5), fit="pad"),
        {"mode": "3d", "axis": 2, "shape": [16, 16, 16], "stride": [8, 8, 8]},
    )
    scan = tmp_path / "scan.nrrd"
    write_scan(scan, shape=(45, 33, 20))
    assert main([str(run), str(scan), "-o", str(tmp_path / "out"), "--probabilities", "--overlap", "0.6"]) == 0
    expected = np.exp([0.0, 1.0, 0.5]) / np.exp([0.0, 1.0, 0.5]).sum()
    probabilities = read_volume(tmp_path / "out" / "scan_prob.nrrd").array
    assert probabilities.shape == (45, 33, 20, 3)
    np.testing.assert_allclose(probabilities, np.broadcast_to(expected, probabilities.shape), rtol=1e-5)
    assert np.all(read_volume(tmp_path / "out" / "scan_seg.nrrd").array == 1)


def test_kfold_run_averages_its_folds(write_bundle, constant_model, tmp_path):
    for fold, logits in enumerate(([0.0, 2.0, 0.0], [0.0, 0.0, 1.0])):
        write_bundle(tmp_path / "kfold" / f"fold_{fold}", constant_model((16, 16, 1), logits), "2d")
    segmenter = load_segmenter(tmp_path / "kfold")
    softmax = [np.exp(v) / np.exp(v).sum() for v in ([0.0, 2.0, 0.0], [0.0, 0.0, 1.0])]
    out = segmenter.predict(np.zeros((2, 16, 16, 1), np.float32))
    np.testing.assert_allclose(out[1, 5, 7], (softmax[0] + softmax[1]) / 2, rtol=1e-6)


def test_case_scores_match_hand_computed_values():
    truth = np.array([0, 0, 1, 1, 1, 2, 2, 0])
    pred = np.array([0, 1, 1, 1, 0, 2, 0, 0])
    scores = case_scores("c", pred, truth, 4)
    # class 0: |P|=4 |T|=3 hit=2; class 1: |P|=3 |T|=3 hit=2; class 2: |P|=1 |T|=2 hit=1; class 3 absent
    np.testing.assert_allclose(scores.dice[:3], [4 / 7, 4 / 6, 2 / 3])
    np.testing.assert_allclose(scores.iou[:3], [2 / 5, 2 / 4, 1 / 2])
    assert np.isnan(scores.dice[3]) and np.isnan(scores.iou[3])
    other = case_scores("d", np.array([3, 0]), np.array([3, 3]), 4)
    mean = overall([scores, other])
    np.testing.assert_allclose(mean.dice, [(4 / 7 + 0) / 2, 4 / 6, 2 / 3, 2 / 3])
    # pooled over both cases: class 0 |P|=5 |T|=3 hit=2, class 3 |P|=1 |T|=2 hit=1
    pooled_scores = pooled([scores, other])
    np.testing.assert_allclose(np.array(pooled_scores.iou)[[0, 3]], [2 / 6, 1 / 2])


def test_label_metrics_table_and_csv(make_pair, write_bundle, constant_model, tmp_path, capsys):
    run = write_bundle(
        tmp_path / "run",
        constant_model((16, 16, 1), [0.0, 3.0]),
        "2d",
        label_map="1-2:1",
        class_names=["background", "vertebra"],
    )
    images, truths = [], []
    for i in range(2):
        image, label = make_pair(tmp_path, f"case{i}", shape=(20, 18, 6 + i), seed=i)
        images.append(image)
        truths.append(label)
    (tmp_path / "cases.txt").write_text(f"{images[1].name},{truths[1].name}\n")
    rc = main(
        [str(run), str(images[0]), str(tmp_path / "cases.txt"), "--label", str(truths[0]), "-o", str(tmp_path / "out")]
    )
    assert rc == 0
    # the model says "vertebra" everywhere: dice = 2|T|/(N+|T|), iou = |T|/N for vertebra, 0 for background
    expected = {}
    for i, truth in enumerate(truths):
        label = read_volume(truth).array
        fg, n = np.count_nonzero(label), label.size
        expected[f"case{i}"] = {"vertebra": (2 * fg / (n + fg), fg / n), "background": (0.0, 0.0)}
    expected["mean"] = {
        c: tuple(np.mean([expected[k][c][j] for k in ("case0", "case1")]) for j in range(2))
        for c in ("vertebra", "background")
    }
    fg = sum(np.count_nonzero(read_volume(t).array) for t in truths)
    n = sum(read_volume(t).array.size for t in truths)
    expected["all voxels"] = {"vertebra": (2 * fg / (n + fg), fg / n), "background": (0.0, 0.0)}
    with open(tmp_path / "out" / "metrics.csv", newline="") as handle:
        found = {(r["case"], r["class"]): (float(r["dice"]), float(r["iou"])) for r in csv.DictReader(handle)}
    assert len(found) == 8
    for case, classes in expected.items():
        for name, values in classes.items():
            np.testing.assert_allclose(found[(case, name)], values, atol=1e-6)
    assert f"{expected['mean']['vertebra'][0]:7.4f}" in capsys.readouterr().out


def test_bad_inputs_are_reported_and_the_rest_still_run(unet_run, tmp_path, capsys):
    good = tmp_path / "good.nrrd"
    write_scan(good)
    corrupt = tmp_path / "corrupt.nrrd"
    corrupt.write_bytes(b"NRRD0004\ntype: float\ngarbage\n")
    write_scan(tmp_path / "rgb.nrrd", channels=2)
    write_scan(tmp_path / "flat.nii.gz", shape=(30, 26))
    (tmp_path / "scan.dcm").write_bytes(b"\0\1")
    (tmp_path / "bad.txt").write_text("a.nrrd,b.nrrd,c.nrrd\n")
    write_scan(tmp_path / "other.nrrd", shape=(12, 12, 4))
    (tmp_path / "mismatch.txt").write_text("good.nrrd,other.nrrd\n")
    inputs = [
        "good.nrrd",
        "missing.nrrd",
        "corrupt.nrrd",
        "rgb.nrrd",
        "flat.nii.gz",
        "scan.dcm",
        "bad.txt",
        "mismatch.txt",
    ]
    rc = main([str(unet_run), *(str(tmp_path / name) for name in inputs), "-o", str(tmp_path / "out")])
    captured = capsys.readouterr()
    err = captured.err
    assert rc == 2
    assert read_volume(tmp_path / "out" / "good_seg.nrrd").shape == (30, 26, 9)
    assert "missing.nrrd' not found" in err
    assert "cannot read" in err and "corrupt.nrrd" in err
    assert "has 2 channel(s); the model expects 1" in err
    assert "has 2 spatial dimensions; the model expects 3D volumes" in err
    assert "scan.dcm': unsupported input type" in err
    assert "bad.txt line 1: malformed line" in err
    assert "label" in err and "other.nrrd' has shape (12, 12, 4)" in err
    assert "7 input(s) failed, 1 segmented" in captured.out  # stderr holds only the `error:` lines
    assert all(line.startswith("error: ") for line in err.splitlines())
    assert "Traceback" not in err


def test_bad_model_or_flags_exit_2(unet_run, tmp_path, capsys):
    scan = tmp_path / "scan.nrrd"
    write_scan(scan)
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "best.keras").write_bytes((unet_run / "best.keras").read_bytes())
    assert main([str(bare), str(scan)]) == 2
    assert "no spine_keras.json found" in capsys.readouterr().err
    assert main([str(tmp_path / "nowhere"), str(scan)]) == 2
    assert "not found" in capsys.readouterr().err
    assert main([str(unet_run), str(scan), "--label", str(scan), "--label", str(scan)]) == 2
    assert "--label was given 2 time(s) for 1 volume input(s)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main([str(unet_run), str(scan), "--overlap", "1"])
    assert exited.value.code == 2 and "--overlap: 1 is out of range: must be in [0, 1)" in capsys.readouterr().err
    out = tmp_path / "out"
    assert main([str(unet_run), str(scan), "-o", str(out), "--tta"]) == 2  # the bundle records no training flips
    assert "pass --tta all" in capsys.readouterr().err
    assert main([str(unet_run), str(scan), "-o", str(out), "--postprocess", "min-size:-1"]) == 2
    assert "--postprocess min-size takes a volume >= 0 in millilitres" in capsys.readouterr().err
    assert main([str(unet_run), str(scan), "-o", str(out), "--postprocess", "biggest"]) == 2
    assert "--postprocess must be none, largest or min-size:ML, not 'biggest'" in capsys.readouterr().err
    assert not out.exists()


@pytest.fixture
def vertebra_everywhere(write_bundle, constant_model, tmp_path) -> Path:
    """A 2-class model trained with label map `1-2:1` that says "vertebra" everywhere."""
    model = constant_model((16, 16, 1), [0.0, 3.0])
    return write_bundle(tmp_path / "run", model, "2d", label_map="1-2:1", class_names=["background", "vertebra"])


def test_label_map_scores_an_exam_from_another_dataset(vertebra_everywhere, make_pair, tmp_path, capsys):
    """Truth with ids 1..3 (id 3 unknown to the model's `1-2:1`) is refused without --label-map, scored with
    `--label-map 1-3:1`: Dice/IoU from the voxel counts, HD95/ASSD in mm with the label's anisotropic spacing."""
    spacing = (1.5, 1.0, 2.0)
    image, label = make_pair(tmp_path, "other", shape=(20, 18, 7), spacing=spacing, label_ids=(1, 2, 3))
    common = [str(vertebra_everywhere), str(image), "--label", str(label), "-o", str(tmp_path / "out")]
    assert main(common) == 2
    assert "label ids [3] are not covered by --label-map '1-2:1'" in capsys.readouterr().err
    assert main([*common, "--label-map", "1-3:1"]) == 0
    with open(tmp_path / "out" / "metrics.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        found = {(r["case"], r["class"]): r for r in reader}
    assert tuple(reader.fieldnames) == COLUMNS == ("case", "class", "dice", "iou", "hd95_mm", "assd_mm")
    truth = (read_volume(label).array > 0).astype(np.uint8)
    expected = surface_metrics(np.ones_like(truth), truth, spacing, 2)
    vertebra, background = found[("other", "vertebra")], found[("other", "background")]
    for key in ("dice", "iou", "hd95_mm", "assd_mm"):
        assert float(vertebra[key]) == pytest.approx(expected[1][key], abs=1e-6), key
    assert float(vertebra["hd95_mm"]) > 0 and float(background["dice"]) == 0.0
    assert background["hd95_mm"] == background["assd_mm"] == ""  # nothing predicted as background: undefined
    assert found[("all voxels", "vertebra")]["hd95_mm"] == ""
    assert f"{expected[1]['hd95_mm']:8.4f}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "case, spec, match",
    [
        ("unreadable rule", "1-:1", r"--label-map: cannot read rule '1-:1'"),
        ("backwards range", "9-1:1", r"--label-map: range '9-1:1' runs backwards"),
        ("more classes than the model", "1-5:1,6-9:2", r"makes 3 classes but the model has 2 \(background, vertebra\)"),
    ],
)
def test_bad_label_map_is_refused_before_any_work(vertebra_everywhere, make_pair, refusal, tmp_path, case, spec, match):
    image, label = make_pair(tmp_path, "other", shape=(20, 18, 7), label_ids=(1, 2, 3))
    args = [str(vertebra_everywhere), str(image), "--label", str(label), "--label-map", spec]
    refusal.check("predict", *args, match=match)  # and no `predictions/` folder left behind


def test_postprocess_flag_cleans_the_written_label_map(vertebra_everywhere, make_pair, tmp_path):
    """The model says "vertebra" on all 20 x 18 x 7 voxels of 1.5 x 1 x 2 mm (7.56 ml, one component): min-size
    7.56 keeps it, min-size 7.57 removes it, `largest` keeps it."""
    image, _ = make_pair(tmp_path, "scan", shape=(20, 18, 7), spacing=(1.5, 1.0, 2.0))
    for spec, expected in (("min-size:7.56", 1), ("min-size:7.57", 0), ("largest", 1)):
        out = tmp_path / spec.replace(":", "_")
        assert main([str(vertebra_everywhere), str(image), "-o", str(out), "--postprocess", spec]) == 0
        np.testing.assert_array_equal(read_volume(out / "scan_seg.nrrd").array, expected)
