"""Instance segmentation: metrics on hand-made maps, the connected-component baseline, the vertebra table, the
sample generator, one training step, and the traversal with a hand-set model on the phantom."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spine_keras.instances.baseline import baseline_levels
from spine_keras.instances.cases import LabelledCase, training_view
from spine_keras.instances.config import InstanceConfig
from spine_keras.instances.metrics import instance_scores
from spine_keras.instances.reference import isotropic_input, traverse
from spine_keras.instances.report import pooled, score_case
from spine_keras.instances.samples import boundary_weights, sample_for_step
from spine_keras.instances.table import vertebra_rows, write_rows
from spine_keras.io import Volume
from spine_keras.levels import LEVEL_IDS, levels_ending_at, name_found, order_ids, relabel
from spine_keras.phantom import make_phantom

L1, L2, L3, L4 = (LEVEL_IDS[n] for n in ("L1", "L2", "L3", "L4"))
GEOMETRY = {"spacing": (1.0, 1.0, 1.0), "origin": (0.0, 0.0, 0.0), "direction": np.eye(3)}


def three_boxes() -> np.ndarray:
    """L1, L2, L3 as 4x6x6 boxes, top to bottom, two empty rows between them."""
    truth = np.zeros((24, 8, 8), np.uint8)
    for start, level in ((2, L1), (8, L2), (14, L3)):
        truth[start : start + 4, 1:7, 1:7] = level
    return truth


def test_scores_of_a_perfect_and_a_shifted_map() -> None:
    truth = three_boxes()
    perfect = instance_scores(truth, truth, (1.0, 1.0, 1.0))["summary"]
    assert perfect == {
        "mean_dice": 1.0,
        "mean_assd_mm": 0.0,
        "precision": 1.0,
        "recall": 1.0,
        "identification": 1.0,
        "merged": 0,
        "mean_level_dice": 1.0,
        "truths": 3,
        "predicted": 3,
    }
    shifted = truth.copy()
    shifted[truth == L3] = L4  # found, but named one level too low
    shifted[truth == L1] = 0  # missed
    scores = instance_scores(shifted, truth, (1.0, 1.0, 1.0))
    assert [r["found"] for r in scores["vertebrae"]] == [False, True, True]
    assert [r["identified"] for r in scores["vertebrae"]] == [False, True, False]
    summary = scores["summary"]
    assert summary["recall"] == pytest.approx(2 / 3, abs=1e-4) and summary["precision"] == 1.0
    assert summary["identification"] == pytest.approx(1 / 3, abs=1e-4)
    assert summary["mean_dice"] == pytest.approx(2 / 3, abs=1e-4)
    assert [r["level_dice"] for r in scores["vertebrae"]] == [0.0, 1.0, 0.0]  # L3 found, but as L4
    assert summary["mean_level_dice"] == pytest.approx(1 / 3, abs=1e-4)


def test_level_dice_pools_per_level_then_over_levels() -> None:
    truth = three_boxes()
    half = truth.copy()
    half[2:4] = 0  # L1 (4 rows of 36 voxels) keeps 2 rows: level Dice 2 * 72 / (144 + 72)
    cases = [
        score_case("a", truth, truth, (1.0, 1.0, 1.0)),
        score_case("b", half, truth, (1.0, 1.0, 1.0)),
        score_case("c", truth[:12], truth[:12], (1.0, 1.0, 1.0)),  # holds L1 and L2 only
    ]
    summary = pooled(cases)
    assert summary["level_dice"] == {"L1": pytest.approx((1 + 2 * 72 / 216 + 1) / 3, abs=1e-4), "L2": 1.0, "L3": 1.0}
    assert summary["mean_level_dice"] == pytest.approx((summary["level_dice"]["L1"] + 2) / 3, abs=1e-4)


def test_merged_neighbours_are_counted() -> None:
    truth = three_boxes()
    merged = np.where(truth > 0, L1, 0).astype(np.uint8)
    merged[truth == L3] = L3
    summary = instance_scores(merged, truth, (1.0, 1.0, 1.0))["summary"]
    assert summary["merged"] == 1 and summary["predicted"] == 2
    assert summary["recall"] == pytest.approx(2 / 3, abs=1e-4)  # L1's Dice with the merged blob is 2*96/(96+192)


def test_surface_distance_of_a_thicker_vertebra() -> None:
    truth = three_boxes()
    thick = truth.copy()
    thick[6, 1:7, 1:7] = L1  # one more row under L1
    row = instance_scores(thick, truth, (2.0, 1.0, 1.0))["vertebrae"][0]
    assert row["level"] == "L1" and row["dice"] == pytest.approx(2 * 144 / (144 + 180), abs=1e-4)
    assert row["assd_mm"] > 0


def test_baseline_splits_names_and_merges() -> None:
    truth = three_boxes()
    ids = baseline_levels(truth > 0, (1.0, 1.0, 1.0), ["L1", "L2", "L3"], min_ml=0.1)
    np.testing.assert_array_equal(ids, truth)
    touching = truth > 0
    touching[6:8, 1:7, 1:7] = True  # L1 and L2 touch in the mask: they merge, the anchor keeps L3 right
    merged = baseline_levels(touching, (1.0, 1.0, 1.0), ["L1", "L2", "L3"], min_ml=0.1)
    assert set(np.unique(merged)) == {0, L2, L3} and merged[3, 3, 3] == merged[9, 3, 3] == L2
    missing = (truth > 0) & (truth != L2)
    top_anchor = baseline_levels(missing, (1.0, 1.0, 1.0), ["L1", "L2", "L3"], "top", 0.1)
    assert top_anchor[3, 3, 3] == L1 and top_anchor[15, 3, 3] == L2  # a missed vertebra shifts the ones after it
    small = baseline_levels(truth > 0, (1.0, 1.0, 1.0), ["L1", "L2", "L3"], min_ml=0.2)
    assert not small.any()  # each box is 0.144 ml


def test_baseline_drops_fragments_by_share_of_the_median() -> None:
    truth = three_boxes()
    fragment = truth > 0
    fragment[-1, 2:4, 2:4] = True  # 4 voxels under L3, their own component: 4/144 of a vertebra
    kept = baseline_levels(fragment, (1.0, 1.0, 1.0), ["L1", "L2", "L3"], min_ml=0.0)
    assert kept[-1, 2, 2] == L3 and kept[15, 3, 3] == L2  # named as L3: every level above shifts by one
    dropped = baseline_levels(fragment, (1.0, 1.0, 1.0), ["L1", "L2", "L3"], min_ml=0.0, min_fraction=0.25)
    np.testing.assert_array_equal(dropped, truth)
    same = baseline_levels(truth > 0, (1.0, 1.0, 1.0), ["L1", "L2", "L3"], min_ml=0.0, min_fraction=1.0)
    np.testing.assert_array_equal(same, truth)  # equal boxes are all at the median


def test_name_found_anchors() -> None:
    assert name_found(3, ["L1", "L2", "L3", "L4", "L5"]) == ["L3", "L4", "L5"]
    assert name_found(2, ["T12", "L1", "L2"], anchor="top") == ["T12", "L1"]
    assert name_found(2, ["C1"], anchor="bottom") == [None, "C1"]


def test_vertebra_table(tmp_path: Path) -> None:
    volume = Volume(three_boxes(), (2.0, 1.0, 0.5), (10.0, 0.0, -5.0), np.eye(3))
    rows = vertebra_rows(volume, complete={L1: True}, confidence={L1: 0.9, L2: 0.2})
    assert [r["level"] for r in rows] == ["L1", "L2", "L3"]
    first = rows[0]
    assert first["voxels"] == 144 and first["volume_ml"] == pytest.approx(0.144)
    assert (first["centroid_x_mm"], first["centroid_y_mm"], first["centroid_z_mm"]) == (17.0, 3.5, -3.25)
    assert first["bbox_start"] == [2, 1, 1] and first["bbox_stop"] == [6, 7, 7]
    assert [r["complete"] for r in rows] == [True, False, False] and rows[2]["confidence"] is None
    csv_path, json_path = write_rows(rows, tmp_path / "case_vertebrae")
    assert csv_path.read_text().splitlines()[1].startswith("L1,20,144,0.144,17.0,3.5,-3.25,2 1 1,6 7 7,True,0.9")
    assert json.loads(json_path.read_text())[1]["level"] == "L2"


@pytest.fixture(scope="module")
def phantom_case() -> LabelledCase:
    """A small phantom with separate vertebra ids, named by level (the lowest L5)."""
    image, ids = make_phantom(5, shape=(96, 64, 40), vertebra_ids=True)
    names = order_ids(ids, levels_ending_at("L5", int(ids.max())))
    return LabelledCase("phantom", Volume(image, **GEOMETRY), relabel(ids, names))


def test_samples_memory_and_target_agree(phantom_case: LabelledCase) -> None:
    config = InstanceConfig(spacing_mm=2.0, patch=(24, 24, 16), depth=2, empty_fraction=0.3, seed=4)
    case = training_view(phantom_case, config.spacing_mm)
    count = int(case.ranked.max())
    assert case.image.shape == (48, 32, 20) and count == len(case.centres) - 1 >= 2
    samples = [sample_for_step([case], config, i) for i in range(40)]
    for sample in samples:
        assert sample.inputs.shape == (24, 24, 16, 2) and sample.target.shape == (24, 24, 16)
        memory, target = sample.inputs[..., 1] > 0, sample.target > 0
        assert not (memory & target).any()
        if sample.rank:
            nearest = 1 + config.weight_gamma * np.exp(
                -(config.spacing_mm**2) / config.weight_sigma_mm**2
            )  # 1 voxel off
            assert target.any() and sample.weight.max() == pytest.approx(nearest)
        else:
            assert not target.any() and sample.complete == 0 and np.all(sample.weight == 1)
    ranks = [s.rank for s in samples]
    assert 0 in ranks and len(set(ranks) - {0}) >= 2  # empty targets and several vertebrae
    again = sample_for_step([case], config, 7)
    np.testing.assert_array_equal(again.inputs, samples[7].inputs)
    assert any(s.complete == 1 for s in samples)


def test_sample_memory_holds_exactly_the_vertebrae_before_the_target(phantom_case: LabelledCase) -> None:
    config = InstanceConfig(spacing_mm=2.0, patch=(48, 32, 24), depth=2, empty_fraction=0.0, jitter=0.0)
    case = training_view(phantom_case, config.spacing_mm)
    for index in range(6):
        sample = sample_for_step([case], config, index)
        centre = np.round(case.centres[sample.rank]).astype(int)
        from spine_keras.instances.reference import crop

        ranked = crop(case.ranked, centre, config.patch)
        np.testing.assert_array_equal(sample.inputs[..., 1] > 0, (ranked > 0) & (ranked < sample.rank))
        np.testing.assert_array_equal(sample.target > 0, ranked == sample.rank)


def test_stop_samples_sit_where_the_traversal_looks_after_the_last_vertebra(phantom_case: LabelledCase) -> None:
    """A third of the empty targets show the patch at `next_centre` of the last vertebra with every vertebra in
    memory: the query on which the traversal must stop rather than take the unlabelled vertebra below."""
    from spine_keras.instances.reference import crop, next_centre

    config = InstanceConfig(spacing_mm=2.0, patch=(24, 24, 16), depth=2, empty_fraction=0.99, jitter=0.0)
    case = training_view(phantom_case, config.spacing_mm)
    count = int(case.ranked.max())
    last = case.ranked == count
    stop = next_centre(last)
    rows = np.flatnonzero(last.any(axis=(1, 2)))
    assert stop[0] == round(float(np.nonzero(last)[0].mean())) + rows[-1] - rows[0] + 1
    expected = crop(case.image, stop, config.patch)
    samples = [sample_for_step([case], config, i) for i in range(60)]
    at_stop = [s for s in samples if np.array_equal(s.inputs[..., 0], expected)]
    assert 10 <= len(at_stop) <= 30  # about a third of 60
    for sample in at_stop:
        np.testing.assert_array_equal(sample.inputs[..., 1] > 0, crop(case.ranked, stop, config.patch) > 0)
        assert sample.rank == 0 and not sample.target.any()


def test_boundary_weights_fall_with_distance() -> None:
    config = InstanceConfig(spacing_mm=1.0, weight_gamma=8.0, weight_sigma_mm=2.0)
    target = np.zeros((16, 16, 16), bool)
    target[4:12, 4:12, 4:12] = True
    weight = boundary_weights(target, config)
    assert weight[4, 8, 8] == pytest.approx(1 + 8 * np.exp(-1 / 4))  # 1 mm from the outside
    assert weight[3, 8, 8] == pytest.approx(weight[4, 8, 8]) and weight[0, 8, 8] == pytest.approx(1 + 8 * np.exp(-4))


@pytest.mark.slow
def test_one_training_step(phantom_case: LabelledCase) -> None:
    from spine_keras.instances.fit import train_network

    config = InstanceConfig(spacing_mm=4.0, patch=(16, 16, 16), filters=2, depth=2, steps=1, epochs=1, batch=2)
    model, history = train_network([training_view(phantom_case, config.spacing_mm)], config)
    assert np.isfinite(history["loss"][0]) and history["loss"][0] > 0
    out = model(np.zeros((1, 16, 16, 16, 2), np.float32))
    assert tuple(out["mask"].shape) == (1, 16, 16, 16, 1) and tuple(out["complete"].shape) == (1, 1)


def test_config_round_trip_and_runs_recorded_before_the_schedule() -> None:
    config = InstanceConfig(spacing_mm=2.0, lr_schedule="cosine")
    assert InstanceConfig.from_dict(config.to_dict()) == config
    old = {k: v for k, v in config.to_dict().items() if k != "lr_schedule"}  # instances.json of an earlier version
    assert InstanceConfig.from_dict(old).lr_schedule == "constant"


@pytest.mark.slow
def test_cosine_schedule_decays_to_zero_over_the_run(phantom_case: LabelledCase) -> None:
    from spine_keras.instances.fit import train_network
    from spine_keras.instances.network import learning_rate

    config = InstanceConfig(
        spacing_mm=4.0, patch=(16, 16, 16), filters=2, depth=2, steps=2, epochs=2, batch=1, lr_schedule="cosine"
    )
    assert [float(learning_rate(config)(t)) for t in (0, 2, 4)] == pytest.approx([1e-3, 5e-4, 0.0], abs=1e-9)
    assert learning_rate(InstanceConfig(lr_schedule="constant")) == 1e-3
    model, _ = train_network([training_view(phantom_case, config.spacing_mm)], config)
    assert int(model.optimizer.iterations) == 4
    assert float(model.optimizer.learning_rate) == pytest.approx(0.0, abs=1e-9)  # the rate after the last step


def oracle(prepared: np.ndarray, ranked: np.ndarray):
    """A hand-set 'network': in a patch, the topmost vertebra not in memory, recognised by its own intensity;
    complete when it does not touch the patch's border."""
    values = [None] + [float(prepared[ranked == r][0]) for r in range(1, int(ranked.max()) + 1)]

    def predict(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        image, memory = batch[0, ..., 0], batch[0, ..., 1] > 0
        for value in values[1:]:
            mask = np.isclose(image, value, atol=1e-5)
            if (mask & ~memory).any():
                inner = mask[1:-1, 1:-1, 1:-1].sum() == mask.sum()
                return mask[None].astype(np.float32), np.array([float(inner)])
        return np.zeros_like(image)[None], np.zeros(1)

    return predict


@pytest.mark.parametrize("start_at_second", [False, True])
def test_traversal_finds_every_phantom_vertebra_in_order(
    phantom_case: LabelledCase, start_at_second: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Down the spine from the start, then up from the first vertebra found: a start scan that takes the second
    vertebra for the first still gives every vertebra, ranked top to bottom."""
    from spine_keras.instances import reference

    ids = np.zeros(phantom_case.levels.shape, np.int16)
    present = sorted(int(i) for i in np.unique(phantom_case.levels) if i)
    for rank, level in enumerate(present, start=1):
        ids[phantom_case.levels == level] = rank
    image = np.where(ids > 0, 100.0 + 10 * ids, 0.0).astype(np.float32)
    prepared = isotropic_input(image, (1.0, 1.0, 1.0), 1.0)
    config = InstanceConfig(spacing_mm=1.0, patch=(40, 48, 40), min_ml=1.0)
    predict = oracle(prepared, ids)
    if start_at_second:
        second = tuple(int(round(float(c.mean()))) for c in np.nonzero(ids == 2))
        memory = ids == 1  # the oracle then segments the second vertebra, as a mistaken start scan does
        monkeypatch.setattr(
            reference,
            "find_start",
            lambda *_: reference.follow(
                prepared, memory, predict, second, config.traversal() | {"patch": config.patch}
            ),
        )
    found, completeness = traverse(prepared, predict, config.traversal() | {"patch": config.patch})
    np.testing.assert_array_equal(found, ids)
    assert completeness == [1.0] * len(present)


def near_sighted(prepared: np.ndarray, ranked: np.ndarray, patch: tuple[int, int, int], sight: float):
    """A hand-set 'network' that segments the topmost vertebra not in memory whose centre lies within `sight`
    rows of the patch's centre row, and sees nothing else (as a real one may at the edge of the field of view)."""
    values = [float(prepared[ranked == r][0]) for r in range(1, int(ranked.max()) + 1)]

    def predict(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        image, memory = batch[0, ..., 0], batch[0, ..., 1] > 0
        for value in values:
            mask = np.isclose(image, value, atol=1e-5) & ~memory
            if mask.any() and abs(np.nonzero(mask)[0].mean() - patch[0] // 2) <= sight:
                return mask[None].astype(np.float32), np.ones(1)
        return np.zeros_like(image)[None], np.zeros(1)

    return predict


@pytest.mark.parametrize("anchor", ["bottom", "top"])
def test_second_look_toward_the_end_the_levels_are_not_counted_from(
    anchor: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A short top vertebra right above a tall one lies 5.5 rows from where one height up looks and 2.5 rows from
    half a height up: a network that sees 3 rows around the patch centre finds it only at the second look, which
    the traversal takes upward when the levels are counted from the bottom, and not when they are counted from
    the top (an extra vertebra there would rename every other one)."""
    from spine_keras.instances import reference

    ids = np.zeros((64, 12, 12), np.int16)
    for rank, (start, stop) in enumerate(((16, 20), (20, 36), (38, 54)), start=1):
        ids[start:stop, 2:10, 2:10] = rank
    prepared = isotropic_input(np.where(ids > 0, 100.0 + 10 * ids, 0.0), (1.0, 1.0, 1.0), 1.0)
    settings = {"patch": (32, 12, 12), "threshold": 0.5, "min_voxels": 10, "max_vertebrae": 5, "anchor": anchor}
    predict = near_sighted(prepared, ids, settings["patch"], sight=3)
    monkeypatch.setattr(reference, "find_start", lambda *_: (ids == 3, 1.0))  # start at the bottom vertebra
    found, _ = traverse(prepared, predict, settings)
    expected = ids if anchor == "bottom" else np.where(ids > 1, ids - 1, 0)
    np.testing.assert_array_equal(found, expected)


def test_follow_keeps_the_vertebra_a_recentred_patch_loses() -> None:
    """Seen from the first centre and lost from the re-centred one (near the volume's edge), the vertebra found
    first is kept rather than dropped."""
    from spine_keras.instances.reference import follow

    image = np.zeros((40, 12, 12), np.float32)
    box = np.zeros((24, 12, 12), bool)
    box[2:8, 2:10, 2:10] = True  # rows 0..7 of the volume for a patch centred on row 12
    calls = []

    def predict(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        calls.append(1)
        mask = box if len(calls) == 1 else np.zeros_like(box)
        return mask[None].astype(np.float32), np.array([0.7])

    settings = {"patch": (24, 12, 12), "threshold": 0.5, "min_voxels": 10}
    mask, complete = follow(image, np.zeros(image.shape, bool), predict, (12, 6, 6), settings)
    assert len(calls) == 2 and complete == pytest.approx(0.7)
    assert mask.sum() == 6 * 8 * 8 and np.flatnonzero(mask.any(axis=(1, 2))).tolist() == [2, 3, 4, 5, 6, 7]
