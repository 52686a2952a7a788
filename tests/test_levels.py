"""Vertebra levels: the scheme, `--levels` parsing, naming ids by position, the phantom's per-vertebra ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spine_keras.errors import CaseError, UserError
from spine_keras.io import parse_list, read_volume
from spine_keras.levels import (
    LEVEL_IDS,
    id_centres,
    level_name,
    levels_ending_at,
    order_ids,
    parse_levels,
    relabel,
)
from spine_keras.phantom import make_phantom


def test_scheme_numbers() -> None:
    assert (LEVEL_IDS["C1"], LEVEL_IDS["C7"], LEVEL_IDS["T1"], LEVEL_IDS["T11"]) == (1, 7, 8, 18)
    assert (LEVEL_IDS["L1"], LEVEL_IDS["L5"], LEVEL_IDS["S1"]) == (20, 24, 25)
    assert level_name(24) == "L5" and len(LEVEL_IDS) == 25


def test_parse_levels() -> None:
    assert parse_levels("T11-L5") == ["T11", "T12", "L1", "L2", "L3", "L4", "L5"]
    assert parse_levels("l1 - l3, L5") == ["L1", "L2", "L3", "L5"]
    assert parse_levels("S1") == ["S1"]
    assert levels_ending_at("L5", 3) == ["L3", "L4", "L5"]


@pytest.mark.parametrize(
    "spec, match",
    [
        ("L5-L1", "runs upwards"),
        ("L6", "unknown vertebra level 'L6'"),
        ("L1-L3,L2", "every level once"),
        ("", "cannot read"),
    ],
)
def test_parse_levels_refuses(spec: str, match: str) -> None:
    with pytest.raises(UserError, match=match):
        parse_levels(spec)


def test_order_ids_by_position() -> None:
    label = np.zeros((30, 4, 4), np.uint8)
    label[0:5], label[10:14], label[20:26] = 7, 2, 5  # top to bottom: 7, 2, 5
    assert id_centres(label) == {2: 11.5, 5: 22.5, 7: 2.0}
    names = order_ids(label, ["L3", "L4", "L5"])
    assert names == {7: "L3", 2: "L4", 5: "L5"}
    levels = relabel(label, names)
    assert levels[2, 0, 0] == 22 and levels[12, 0, 0] == 23 and levels[22, 0, 0] == 24 and levels[8, 0, 0] == 0
    assert order_ids(np.moveaxis(label, 0, 2), ["L3", "L4", "L5"], axis=2) == names


def test_order_ids_refuses_a_wrong_count() -> None:
    label = np.zeros((20, 3, 3), np.uint8)
    label[2:5], label[10:15] = 1, 2
    with pytest.raises(CaseError, match=r"case VB2_09: label map has 2 vertebra id\(s\) but --levels names 3") as err:
        order_ids(label, ["L1", "L2", "L3"], case="VB2_09")
    assert err.value.case_id == "VB2_09"
    with pytest.raises(CaseError, match="non-negative integer"):
        order_ids(label.astype(np.float32), ["L1", "L2"])


def test_phantom_vertebra_ids_run_top_to_bottom() -> None:
    image, ids = make_phantom(3, shape=(96, 64, 20), vertebra_ids=True)
    same_image, semantic = make_phantom(3, shape=(96, 64, 20))
    np.testing.assert_array_equal(image, same_image)
    np.testing.assert_array_equal(ids > 0, semantic == 1)
    count = int(ids.max())
    assert count >= 2 and set(np.unique(ids)) == set(range(count + 1))
    names = order_ids(ids, levels_ending_at("L5", count))
    assert list(names) == list(range(1, count + 1))  # id 1 is the top one


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("prefix, levels", [("vb2", "T11-L5"), ("vb3", "L1-L5")])
def test_real_labels_get_distinct_levels_in_order(shared_mri: Path, prefix: str, levels: str) -> None:
    names = parse_levels(levels)
    orders = {}
    for entry in parse_list(shared_mri / "lists" / f"{prefix}.txt"):
        label = read_volume(entry.label).array
        mapping = order_ids(label, names, case=entry.case_id)
        centres = id_centres(label)
        by_level = sorted(mapping, key=lambda i: names.index(mapping[i]))
        assert sorted(mapping.values(), key=names.index) == names
        assert all(centres[a] < centres[b] for a, b in zip(by_level, by_level[1:])), entry.case_id
        orders[entry.case_id] = by_level
    if prefix == "vb3":
        assert all(order == [1, 2, 3, 4, 5] for order in orders.values())
    else:
        assert orders["VB2_06"] == [7, 6, 5, 4, 3, 2, 1] and orders["VB2_13"] == [2, 1, 4, 3, 7, 6, 5]
