"""Shared fixtures: small generated volumes and training cubes, and the real MRI folder (skipped when absent).

Markers (declared in pyproject.toml): `slow` for multi-process, subprocess and multi-epoch tests, so that
`pytest -m "not slow"` runs the fast core; `realdata` for tests that read the real MRI folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from spine_keras.bundle import ModelBundle  # noqa: E402
from spine_keras.io import Volume, write_volume  # noqa: E402
from spine_keras.prepare import SamplingConfig  # noqa: E402
from spine_keras.preprocess import PreprocessConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["background", "vertebra", "disc"]
SHARED_MRI = Path(os.environ.get("SPINE_MRI_DIR", REPO.parent / "shared" / "data" / "spine-mri"))


@pytest.fixture(scope="session", autouse=True)
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
    """The real lumbar MRI folder (`SPINE_MRI_DIR` overrides it); the test is skipped where it is absent."""
    if not (SHARED_MRI / "lists" / "vb2.txt").is_file():
        pytest.skip(f"real MRI not found at {SHARED_MRI}")
    return SHARED_MRI


def write_pair(
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
            image, label = write_pair(tmp_path, f"case{i}", seed=i, **kwargs)
            lines.append(f"{image.name},{label.name}")
        path = tmp_path / "list.txt"
        path.write_text("\n".join(lines) + "\n")
        return path

    return factory


def write_training_cube(
    path: Path, shape: tuple[int, ...] = (32, 32), cases: int = 4, per_case: int = 3, copies: int = 1, seed: int = 0
) -> Path:
    """A tiny cube of `cases` cases with `per_case` originals each, plus `copies` augmented copies of each.

    Every sample is a box of class 1 with a core of class 2, on noise, at a seeded random place.
    """
    from spine_keras.cube import write_cube_arrays

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


@pytest.fixture(scope="session")
def make_training_cube() -> Callable[..., Path]:
    """Factory `make_training_cube(path, shape, cases, per_case, copies, seed)` (session-scoped, so that
    module-scoped fixtures can build their cube with it)."""
    return write_training_cube


def write_run_bundle(
    folder: Path,
    model: keras.Model,
    mode: str,
    preprocess: PreprocessConfig | None = None,
    sampling: dict | None = None,
    label_map: str | None = None,
    class_names: list[str] = CLASSES,
) -> Path:
    """A run folder as training leaves it: best.keras and spine_keras.json."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "best.keras")
    shape = list(model.input_shape[1:])
    ModelBundle(
        arch="u1",
        input_shape=tuple(shape),
        class_names=tuple(class_names),
        preprocess=preprocess or PreprocessConfig(),
        sampling=SamplingConfig.from_dict(sampling or {"mode": mode, "shape": shape[:-1]}),
        label_map=label_map,
    ).write(folder)
    return folder


def constant_softmax_model(input_shape: tuple[int, ...], logits: list[float]) -> keras.Model:
    """A model whose softmax output is the same everywhere, whatever the input."""
    conv = keras.layers.Conv2D if len(input_shape) == 3 else keras.layers.Conv3D
    inputs = keras.Input(input_shape)
    scores = conv(len(logits), 1, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(logits))(
        inputs
    )
    return keras.Model(inputs, keras.layers.Softmax(name="seg")(scores))


@pytest.fixture(scope="session")
def make_pair() -> Callable[..., tuple[Path, Path]]:
    """Factory `make_pair(folder, name, shape, spacing, suffix, seed, label_ids)`: a small image/label pair."""
    return write_pair


@pytest.fixture(scope="session")
def write_bundle() -> Callable[..., Path]:
    """Factory `write_bundle(folder, model, mode, preprocess, sampling, label_map, class_names)`: a run folder."""
    return write_run_bundle


@pytest.fixture(scope="session")
def constant_model() -> Callable[..., object]:
    """Factory `constant_model(input_shape, logits)`: a model with the same softmax output everywhere."""
    return constant_softmax_model
