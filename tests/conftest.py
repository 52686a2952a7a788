"""Shared fixtures: small generated volumes, and the real MRI folder (tests needing it skip when absent)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from spine_keras.io import Volume, write_volume  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_MRI = Path(os.environ.get("SPINE_MRI_DIR", REPO.parent / "shared" / "data" / "spine-mri"))


def limit_tf_threads() -> None:
    """Two intra-op threads and one inter-op thread, as on CI's 2 cores (a no-op once TF has started)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(2)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass


@pytest.fixture
def shared_mri() -> Path:
    """The real lumbar MRI folder; the test is skipped where it is absent."""
    if not (SHARED_MRI / "lists" / "vb2.txt").is_file():
        pytest.skip(f"real MRI not found at {SHARED_MRI}")
    return SHARED_MRI


def make_pair(
    folder: Path,
    name: str,
    shape=(40, 32, 12),
    spacing=(1.0, 1.0, 1.0),
    suffix=".nrrd",
    seed: int = 0,
    label_ids=(1, 2),
) -> tuple[Path, Path]:
    """Write a small image/label pair: a noisy volume with one box per label id."""
    rng = np.random.default_rng(seed)
    image = rng.normal(100, 10, shape).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    for i, label_id in enumerate(label_ids):
        box = tuple(slice(n // 4 + i, n // 4 + i + max(2, n // 4)) for n in shape)
        label[box] = label_id
        image[box] += 50 * label_id
    geometry = dict(spacing=tuple(spacing), origin=(1.5, -2.0, 3.0), direction=np.eye(3))
    image_path, label_path = folder / f"{name}_image{suffix}", folder / f"{name}_label{suffix}"
    write_volume(Volume(image, **geometry), image_path)
    write_volume(Volume(label, **geometry), label_path)
    return image_path, label_path


@pytest.fixture
def pair_list(tmp_path: Path):
    """Factory: write `n` small pairs and a list naming them; returns the list path."""

    def factory(n: int = 3, **kwargs) -> Path:
        lines = []
        for i in range(n):
            image, label = make_pair(tmp_path, f"case{i}", seed=i, **kwargs)
            lines.append(f"{image.name},{label.name}")
        path = tmp_path / "list.txt"
        path.write_text("\n".join(lines) + "\n")
        return path

    return factory
