"""The demo phantom: plausible anatomy, reproducible from its seed, and a list the cube builder reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spine_keras.io import parse_list, read_volume
from spine_keras.phantom import make_phantom, write_demo


def test_phantom_anatomy_and_seed() -> None:
    image, label = make_phantom(3, shape=(96, 80, 24))
    assert image.shape == label.shape == (96, 80, 24)
    assert set(np.unique(label)) == {0, 1, 2}
    fractions = np.bincount(label.ravel(), minlength=3) / label.size
    assert 0.02 < fractions[1] < 0.4 and 0.005 < fractions[2] < fractions[1]
    discs = label == 2
    assert image[discs].mean() > image[label == 1].mean() > image[label == 0].mean()
    again, _ = make_phantom(3, shape=(96, 80, 24))
    np.testing.assert_array_equal(image, again)
    assert not np.array_equal(image, make_phantom(4, shape=(96, 80, 24))[0])


def test_write_demo_list(tmp_path: Path) -> None:
    lst = write_demo(tmp_path / "data", tmp_path / "lists" / "demo.txt", cases=2, shape=(64, 64, 16))
    entries = parse_list(lst)
    assert [e.case_id for e in entries] == ["phantom_00", "phantom_01"]
    volume = read_volume(entries[1].label)
    assert volume.shape == (64, 64, 16) and volume.spacing == (1.0, 1.0, 1.0)
