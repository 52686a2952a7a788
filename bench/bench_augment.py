"""Per-sample time of spine_keras's fused augmentation vs volumentations-3D and TorchIO, taking turns.

    python bench/bench_augment.py [--quick] [--rounds 30] [--threads 2] [--shape 128,128,64] [--no-write]

Each pipeline runs in its own worker process and turns the same numpy image/label pair into one float32/uint8
numpy pair per round, conversions included; the workers take turns round by round. volumentations-3D is compared
with spine_keras running the full set, TorchIO with spine_keras running TorchIO's three transforms. The table goes
to the `augment` section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Callable

import common  # first: sets OMP_WAIT_POLICY before any library loads (bench/ is on sys.path as a script's folder)
from common import Unavailable, Worker

Step = Callable[[], object]
FULL_SET = "rotate, zoom, flip, shift, noise, blur, intensity"
TORCHIO_SET = "rotate, zoom, flip, shift, noise (p=1)"
SIDES = {  # name -> (transforms, reference side)
    "spine_keras, full set": (FULL_SET, None),
    "volumentations-3D": (FULL_SET, "spine_keras, full set"),
    "spine_keras, TorchIO's set": (TORCHIO_SET, None),
    "TorchIO": (TORCHIO_SET, "spine_keras, TorchIO's set"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line; parsed before numpy is imported so the thread count reaches every library."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_args(p, rounds=30, quick_rounds=10)
    p.add_argument("--shape", help="volume shape (default 128,128,64; --quick 96,96,48)")
    p.add_argument("--warmup", type=int, default=3, help="untimed samples per worker first (default 3)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.shape = tuple(int(v) for v in (args.shape or ("96,96,48" if args.quick else "128,128,64")).split(","))
    return args


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:
    common.set_threads(ARGS.threads)

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from spine_keras import augment as aug  # noqa: E402

FULL = aug.AugmentConfig()  # the paper's set plus noise, blur, intensity: defaults
TORCHIO_LIKE = aug.AugmentConfig(noise_prob=1.0, blur_prob=0.0, intensity_prob=0.0)  # TorchIO's 3 transforms


def phantom(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A z-scored float32 volume with a few ellipsoids labelled 1 and 2 (uint8), like a small spine patch."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape, dtype=np.float32)
    label = np.zeros(shape, np.uint8)
    for k, centre in enumerate(np.linspace(0.2, 0.8, 5)):
        c = np.array([centre, 0.5, 0.5]) * np.array(shape)
        r = np.array([0.08, 0.25, 0.3]) * np.array(shape)
        inside = sum(((g - ci) / ri) ** 2 for g, ci, ri in zip(grid, c, r)) <= 1
        label[inside] = 1 + k % 2
    image = ndimage.gaussian_filter(label.astype(np.float32) * 3 + rng.normal(0, 0.5, shape).astype(np.float32), 1)
    return ((image - image.mean()) / image.std()).astype(np.float32), label


def spine_keras_step(image: np.ndarray, label: np.ndarray, config: aug.AugmentConfig, seed: int) -> Step:
    """spine_keras: one draw and one fused pass."""
    rng = np.random.default_rng(seed)
    return lambda: aug.augment(image, label, config, rng)


def volumentations_step(image: np.ndarray, label: np.ndarray, seed: int) -> Step:
    """volumentations-3D Compose of the same transforms, made like for like (docs/performance.md says how)."""
    try:
        import volumentations as V
    except ImportError:
        raise Unavailable("not installed (pip install volumentations-3D==1.0.4)") from None
    shape, fill = image.shape, float(image.min())

    class Shift(V.DualTransform):
        """Whole-voxel translation by pad/crop (volumentations has none; no interpolation: cheaper than ours)."""

        def get_params(self, **data):
            return {"offset": [round(random.uniform(-0.1, 0.1) * n) for n in shape]}

        def _shift(self, img: np.ndarray, offset: list[int], value: float) -> np.ndarray:
            out = np.full_like(img, value)
            dst = tuple(slice(max(o, 0), n + min(o, 0)) for o, n in zip(offset, shape))
            src = tuple(slice(max(-o, 0), n + min(-o, 0)) for o, n in zip(offset, shape))
            out[dst] = img[src]
            return out

        def apply(self, img, offset):
            return self._shift(img, offset, fill)

        def apply_to_mask(self, mask, offset):
            return self._shift(mask, offset, 0)

    class GaussianBlur(V.ImageOnlyTransform):
        """Gaussian blur (volumentations' Blur is broken in 1.0.4: NameError), the same scipy filter as ours."""

        def get_params(self, **data):
            return {"sigma": random.uniform(*FULL.blur_sigma)}

        def apply(self, img, sigma):
            return ndimage.gaussian_filter(img, (sigma, sigma, sigma, 0), output=np.float32)

    class Intensity(V.ImageOnlyTransform):
        """image * a + b (volumentations' RandomBrightnessContrast clips float images to [0, 1]: unusable here)."""

        def get_params(self, **data):
            return {"scale": random.uniform(*FULL.intensity_scale), "shift": random.uniform(*FULL.intensity_shift)}

        def apply(self, img, scale, shift):
            return img * scale + shift

    random.seed(seed)
    np.random.seed(seed)
    r, (lo, hi) = FULL.rotation, FULL.noise_std
    compose = V.Compose(
        [
            V.Rotate((-r, r), (-r, r), (-r, r), interpolation=1, border_mode="constant", value=fill, p=1),
            V.RandomScale(scale_limit=list(FULL.zoom), interpolation=1, p=1),
            V.PadIfNeeded(shape, border_mode="constant", value=fill, mask_value=0, p=1),
            V.CenterCrop(shape, p=1),
            Shift(p=1),
            V.Flip(axis=(2,), p=FULL.flip_prob),
            GaussianBlur(p=FULL.blur_prob),
            V.GaussianNoise(var_limit=(lo**2, hi**2), p=FULL.noise_prob),
            Intensity(p=FULL.intensity_prob),
        ]
    )
    image4, label4 = image[..., None], label[..., None]

    def step():
        out = compose(image=image4, mask=label4)
        return out["image"][..., 0].astype(np.float32, copy=False), out["mask"][..., 0].astype(np.uint8)

    return step


def torchio_step(image: np.ndarray, label: np.ndarray, seed: int, threads: int) -> Step:
    """TorchIO RandomAffine + RandomFlip + RandomNoise with the same ranges (its resampling is SimpleITK's)."""
    try:
        import torch
        import torchio as tio
    except ImportError:
        raise Unavailable("not installed (pip install torch==2.13.0 torchio)") from None
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    cfg = TORCHIO_LIKE
    transform = tio.Compose(
        [
            tio.RandomAffine(
                scales=cfg.zoom,
                degrees=cfg.rotation,
                isotropic=True,
                default_pad_value="minimum",
                translation=tuple(cfg.shift * n for n in image.shape),
            ),
            tio.RandomFlip(axes=(2,), flip_probability=cfg.flip_prob),
            tio.RandomNoise(std=cfg.noise_std),
        ]
    )
    image_t, label_t = torch.from_numpy(image[None]), torch.from_numpy(label[None])

    def step():
        out = transform(tio.Subject(image=tio.ScalarImage(tensor=image_t), label=tio.LabelMap(tensor=label_t)))
        return out["image"].data.numpy()[0], out["label"].data.numpy()[0].astype(np.uint8)

    return step


def worker_setup(args: argparse.Namespace) -> tuple[dict, Step]:
    """The step of the side this worker runs, on the same phantom as every other worker."""
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    image, label = phantom(args.shape, args.seed)
    if args.worker == "volumentations-3D":
        return {}, volumentations_step(image, label, args.seed)
    if args.worker == "TorchIO":
        return {}, torchio_step(image, label, args.seed, args.threads)
    config = FULL if args.worker == "spine_keras, full set" else TORCHIO_LIKE
    return {}, spine_keras_step(image, label, config, args.seed)


def main(args: argparse.Namespace) -> int:
    """Start one worker per pipeline, let them take turns, write the table."""
    if args.worker:
        return common.serve(lambda: worker_setup(args), args.warmup)
    sides = [Worker(name, runs, reference, argv=sys.argv[1:]) for name, (runs, reference) in SIDES.items()]
    rounds = common.rounds_of(args)
    load = common.interleave(sides, rounds)
    shape = "x".join(map(str, args.shape))
    body = (
        f"**Augmentation, seconds per sample**: {shape} float32 volume + uint8 mask, one sample per round, "
        f"{args.warmup} warm-up samples per worker.\n"
        f"{common.conditions(args.threads, load, PACKAGES)}\n\n{common.comparison_table(sides)}"
    )
    common.publish(args, "augment", body)
    return 0


PACKAGES = ["numpy", "scipy", "SimpleITK", "volumentations-3D", "torch", "torchio"]

if __name__ == "__main__":
    sys.exit(main(ARGS))
