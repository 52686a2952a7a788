"""A synthetic lumbar-spine phantom (vertebral bodies, discs, canal, noise, bias field) for the demo and tests.

Axes follow the shared data: 0 = superior->inferior, 1 = anterior->posterior, 2 = left->right (sagittal
slice index), 1 mm voxels. Labels are semantic: 0 background, 1 vertebral body, 2 intervertebral disc; with
`vertebra_ids` they are per structure instead, as in the published vertebra sets: 0 background, 1..n one id per
vertebral body from top to bottom (discs 0). Every phantom vertebra lies completely inside the volume.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from scipy import ndimage

from spine_keras.destinations import disk_errors
from spine_keras.io import Volume, atomic_path, write_volume

CLASS_NAMES = ["background", "vertebra", "disc"]
DEFAULT_SHAPE = (160, 112, 40)
GEOMETRY = {"spacing": (1.0, 1.0, 1.0), "origin": (0.0, 0.0, 0.0), "direction": np.eye(3)}


def make_phantom(
    seed: int, shape: tuple[int, int, int] = DEFAULT_SHAPE, vertebra_ids: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic T2-like exam: (image uint16, label uint8), varying with `seed` in size, curve and contrast.

    `vertebra_ids` labels each vertebral body with its own id (1 at the top) and leaves the discs 0; the image
    is the same either way."""
    rng = np.random.default_rng(seed)
    si, ap, lr = (np.arange(n, dtype=np.float32) for n in shape)
    z, y, x = np.meshgrid(si, ap, lr, indexing="ij")
    label = np.zeros(shape, np.uint8)
    instances = np.zeros(shape, np.uint8)
    canal = np.zeros(shape, bool)
    body_h, disc_h = rng.uniform(20, 26), rng.uniform(7, 10)
    depth, width = rng.uniform(28, 36), rng.uniform(26, 32)
    curve = rng.uniform(4, 10)
    centre_lr = shape[2] / 2 + rng.uniform(-2, 2)
    top = rng.uniform(4, 12)
    front = shape[1] * 0.3 + curve * np.sin(np.pi * z / shape[0])  # lordosis: bodies bow anteriorly
    while top + body_h < shape[0] - 2:
        in_body = (z >= top) & (z < top + body_h)
        body = in_body & (((y - front - depth / 2) / (depth / 2)) ** 2 + ((x - centre_lr) / (width / 2)) ** 2 <= 1)
        label[body] = 1
        instances[body] = instances.max() + 1
        disc_top = top + body_h
        in_disc = (z >= disc_top) & (z < disc_top + disc_h)
        disc = in_disc & (
            ((y - front - depth / 2) / (depth / 2 * 0.95)) ** 2 + ((x - centre_lr) / (width / 2 * 0.95)) ** 2 <= 1
        )
        label[disc & (label == 0)] = 2
        top = disc_top + disc_h
    canal |= ((y - front - depth - 9) / 7) ** 2 + ((x - centre_lr) / 8) ** 2 <= 1
    image = np.full(shape, 0.25, np.float32)
    image[label == 1] = rng.uniform(0.45, 0.55)
    image[label == 2] = rng.uniform(0.75, 0.85)
    image[canal & (label == 0)] = 0.95
    image = ndimage.gaussian_filter(image, 0.8)
    bias = 1 + 0.3 * np.sin(np.pi * z / shape[0] + rng.uniform(0, np.pi)) * np.cos(np.pi * y / shape[1])
    image = image * bias + rng.normal(0, 0.04, shape).astype(np.float32)
    return np.clip(image * 1000, 0, 4095).astype(np.uint16), instances if vertebra_ids else label


def write_demo(
    out_dir: Path | str,
    list_path: Path | str,
    cases: int = 6,
    seed: int = 0,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    vertebra_ids: bool = False,
) -> Path:
    """Write `cases` phantom NRRD pairs into `out_dir` and an `image,label` list naming them (`vertebra_ids`: one
    label id per vertebral body, see `make_phantom`).

    All or nothing: on any failure (a full disk, Ctrl-C) the files and folders this call created are removed again.
    """
    out_dir, list_path = Path(out_dir), Path(list_path)
    created = _make_folders(out_dir, list_path.parent)
    try:
        labels = "one id per vertebral body, 1 at the top" if vertebra_ids else "classes: " + ",".join(CLASS_NAMES)
        lines = [f"# synthetic lumbar phantom written by spine-phantom; {labels}"]
        for case in range(cases):
            stem = out_dir / f"phantom_{case:02d}"
            image, label = make_phantom(seed * 1000 + case, shape, vertebra_ids)
            for path, array in ((Path(f"{stem}_image.nrrd"), image), (Path(f"{stem}_label.nrrd"), label)):
                with _new_file(path, created):
                    write_volume(Volume(array, **GEOMETRY), path)
            rel = os.path.relpath(stem, list_path.parent.resolve())
            lines.append(f"{rel}_image.nrrd,{rel}_label.nrrd")
        with _new_file(list_path, created), atomic_path(list_path) as tmp:
            tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    except BaseException:
        _remove(created)
        raise
    return list_path


def _make_folders(*folders: Path) -> list[Path]:
    """Create `folders` (with parents); returns the ones that did not exist, parents first."""
    created: list[Path] = []
    for folder in folders:
        missing = [p for p in (folder, *folder.parents) if not p.exists()]
        folder.mkdir(parents=True, exist_ok=True)
        created += [p for p in reversed(missing) if p not in created]
    return created


@contextlib.contextmanager
def _new_file(path: Path, created: list[Path]) -> Iterator[None]:
    """Around writing `path`: a full disk (or the like) becomes a UserError naming it; a new file joins `created`."""
    existed = path.exists()
    with disk_errors(path, "phantom file"):
        yield
    if not existed:
        created.append(path)


def _remove(created: list[Path]) -> None:
    """Delete what a failed call created, files before the folders holding them."""
    for path in reversed(created):
        with contextlib.suppress(OSError):  # a folder someone else wrote into meanwhile stays
            if path.is_dir():
                path.rmdir()
            else:
                path.unlink(missing_ok=True)
