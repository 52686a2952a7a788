"""Tiny synthetic cubes for the training tests: a box of class 1 with a core of class 2 on noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spine_keras.cube import write_cube_arrays


def make_training_cube(
    path: Path, shape: tuple[int, ...] = (32, 32), cases: int = 4, per_case: int = 3, copies: int = 1, seed: int = 0
) -> Path:
    """`cases` cases of `per_case` originals each, plus `copies` augmented copies of every original."""
    rng = np.random.default_rng(seed)
    images, labels, case_ids, augmented = [], [], [], []
    for case in range(cases):
        for copy in range(copies + 1):
            for _ in range(per_case):
                label = np.zeros(shape, np.uint8)
                corner = rng.integers(2, np.array(shape) - 10)
                label[tuple(slice(int(c), int(c) + 8) for c in corner)] = 1
                label[tuple(slice(int(c) + 2, int(c) + 5) for c in corner)] = 2
                images.append(rng.normal(0, 0.3, shape).astype(np.float32) + label)
                labels.append(label)
                case_ids.append(f"case{case}")
                augmented.append(copy)
    return write_cube_arrays(
        path,
        np.array(images),
        np.array(labels),
        case_ids,
        np.array(augmented),
        class_names=["background", "vertebra", "disc"],
        preprocess={"normalization": "zscore"},
        sampling={"mode": f"{len(shape)}d", "axis": 2, "shape": list(shape)},
    )
