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
from spine_keras.phantom import make_phantom  # noqa: E402
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


class Refusal:
    """Runs a spine_keras command in a subprocess, as a user would, and checks it refused cleanly: the expected exit
    status, exactly one stderr line (`error: ...`, plus argparse's `usage hint:` line) matching a pattern, no
    traceback, no new file left behind in the watched folder, and no process of its own left running."""

    def __init__(self, folder: Path):
        self.folder = folder

    def run(self, command: str, *args: str, timeout: float = 120, env: dict | None = None):
        """Run `scripts/<command>.py ARGS` in `folder`; returns the CompletedProcess."""
        import subprocess
        import sys
        import uuid

        token = uuid.uuid4().hex
        environment = {**os.environ, "SPINE_KERAS_TEST_TOKEN": token, "PYTHONPATH": str(REPO), **(env or {})}
        script = REPO / "scripts" / f"{command}.py"
        result = subprocess.run(
            [sys.executable, str(script), *args],
            cwd=self.folder,
            env=environment,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        result.token = token
        return result

    def check(self, command: str, *args: str, match: str, status: int = 2, env: dict | None = None, **kw) -> str:
        """Run and assert a clean refusal whose one stderr line matches `match` (a regex); returns that line."""
        import re

        before = snapshot(self.folder)
        result = self.run(command, *args, env=env, **kw)
        lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("usage hint: ")]
        where = f"{command} {' '.join(args)}\nstderr:\n{result.stderr}"
        assert result.returncode == status, f"exit {result.returncode}, expected {status}: {where}"
        assert len(lines) == 1 and lines[0].startswith("error: "), f"not one error line: {where}"
        assert "Traceback" not in result.stderr + result.stdout, where
        assert re.search(match, lines[0]), f"{match!r} not in {lines[0]!r}"
        assert snapshot(self.folder) == before, f"files left behind: {snapshot(self.folder) - before}: {where}"
        assert not processes_with(result.token), f"processes left running: {where}"
        return lines[0]


def snapshot(folder: Path) -> set[str]:
    """Every path under `folder`, hidden ones included, relative to it."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def processes_with(token: str) -> list[int]:
    """Process ids whose environment carries `token` (children of a command under test)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if token.encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@pytest.fixture
def refusal(tmp_path: Path) -> Refusal:
    """A `Refusal` runner working in this test's own folder."""
    return Refusal(tmp_path)


INSTANCE_GEOMETRY = {"spacing": (1.0, 1.0, 1.0), "origin": (4.0, -2.0, 1.0), "direction": np.eye(3)}
INSTANCE_SHAPE = (96, 64, 40)
INSTANCE_SEEDS = (2, 3)  # two phantoms with three vertebrae each: L3, L4, L5


def write_instance_masks(folder: Path) -> Path:
    """Per phantom: its semantic label as the 'mask' (vertebra = 1), its per-vertebra ids (scrambled) as the truth,
    and its image."""
    lines = []
    for seed in INSTANCE_SEEDS:
        _, semantic = make_phantom(seed, INSTANCE_SHAPE)
        image, ids = make_phantom(seed, INSTANCE_SHAPE, vertebra_ids=True)
        assert ids.max() == 3
        scrambled = np.array([0, 3, 1, 2], np.uint8)[ids]  # ids out of anatomical order, as in VB2
        for name, array in (("mask", semantic), ("label", scrambled), ("image", image)):
            write_volume(Volume(array, **INSTANCE_GEOMETRY), folder / f"p{seed}_{name}.nrrd")
        lines.append(f"p{seed}_mask.nrrd,p{seed}_label.nrrd")
    path = folder / "masks.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def instance_masks() -> Callable[[Path], Path]:
    """`instance_masks(folder)`: two phantom mask/label/image triples (L3-L5) and their `mask,label` list."""
    return write_instance_masks


def write_hand_set_instance_run(folder: Path) -> Path:
    """A run folder whose network is set by hand: mask = bright voxels not in memory, completeness from the mean."""
    from spine_keras.instances.config import InstanceConfig
    from spine_keras.instances.runfolder import run_metadata, write_run

    config = InstanceConfig(spacing_mm=2.0, patch=(24, 32, 24), min_ml=2.0)
    inputs = keras.Input((*config.patch, 2), name="patch")
    mask = keras.layers.Conv3D(1, 1, activation="sigmoid", name="mask")(inputs)
    pooled = keras.layers.GlobalAveragePooling3D()(inputs)
    complete = keras.layers.Dense(1, activation="sigmoid", name="complete")(pooled)
    model = keras.Model(inputs, {"mask": mask, "complete": complete})
    model.get_layer("mask").set_weights([np.array([10.0, -40.0]).reshape(1, 1, 1, 2, 1), np.array([-5.0])])
    model.get_layer("complete").set_weights([np.array([[1.0], [-1.0]]), np.array([0.5])])
    return write_run(folder, model, run_metadata(config, ["L3", "L4", "L5"], "bottom", [], {}))


@pytest.fixture(scope="session")
def hand_set_instance_run() -> Callable[[Path], Path]:
    """`hand_set_instance_run(folder)`: a spine-instances run folder whose network is set by hand."""
    return write_hand_set_instance_run
