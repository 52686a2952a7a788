"""Per-sample time of spine_keras's fused augmentation vs volumentations-3D and TorchIO, in one run, same threads.

    python bench/bench_augment.py [--samples 30] [--threads 2] [--out FILE]

Peers are optional (`pip install -e .[bench]`); a missing one is reported as not installed. Each pipeline turns the
same numpy image/label pair into one float32/uint8 numpy pair per call, conversions included; the pipelines take turns
sample by sample, so a change of machine load hits all of them alike.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from common import cpu_name  # bench/common.py: bench/ is on sys.path when a bench runs as a script

Step = Callable[[], object]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line; parsed before numpy is imported so the thread count reaches every library."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=30, help="timed samples per pipeline (default 30)")
    p.add_argument("--warmup", type=int, default=3, help="untimed samples first (default 3)")
    p.add_argument("--threads", type=int, default=2, help="threads for every library (default 2)")
    p.add_argument("--shape", default="128,128,64", help="volume shape (default 128,128,64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="also write the Markdown table to this file")
    return p.parse_args(argv)


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
        os.environ[_var] = str(ARGS.threads)

import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from scipy import ndimage  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
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


def volumentations_step(image: np.ndarray, label: np.ndarray, seed: int) -> Step | str:
    """volumentations-3D Compose of the same transforms, made like-for-like (see the README's notes)."""
    try:
        import volumentations as V
    except ImportError:
        return "not installed (pip install volumentations-3D==1.0.4)"
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


def torchio_step(image: np.ndarray, label: np.ndarray, seed: int, threads: int) -> Step | str:
    """TorchIO RandomAffine + RandomFlip + RandomNoise with the same ranges (its resampling is SimpleITK's)."""
    try:
        import torch
        import torchio as tio
    except ImportError:
        return "not installed (pip install torch==2.13.0 torchio)"
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


def run(steps: dict[str, Step], samples: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per sample for each pipeline, taking turns sample by sample."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(warmup + samples):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def versions() -> str:
    """Versions of the libraries involved."""
    names = ["numpy", "scipy", "SimpleITK", "volumentations-3D", "torch", "torchio"]
    found = []
    for name in names:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            pass
    return ", ".join(found)


def table(
    args: argparse.Namespace,
    times: dict[str, list[float]],
    missing: dict[str, str],
    peers: dict[str, tuple[str, str]],
    load: tuple[float, float],
) -> str:
    """The Markdown report: setup, then one row per pipeline with its ratio to its spine_keras counterpart."""
    medians = {name: statistics.median(t) for name, t in times.items()}
    lines = [
        f"Per-sample augmentation time, {args.shape.replace(',', 'x')} float32 volume + uint8 mask, "
        f"{args.samples} samples after {args.warmup} warm-up, {args.threads} threads each.",
        f"CPU: {cpu_name()}, {os.cpu_count()} cores; load average {load[0]:.2f} before, {load[1]:.2f} after. "
        f"{versions()}.",
        "",
        "| pipeline | transforms | median s | mean s | time vs spine_keras |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for name, (transforms, ours) in peers.items():
        if name in missing:
            lines.append(f"| {name} | {transforms} | - | - | {missing[name]} |")
            continue
        ratio = "1.00x" if name == ours else f"{medians[name] / medians[ours]:.2f}x"
        lines.append(f"| {name} | {transforms} | {medians[name]:.4f} | {statistics.fmean(times[name]):.4f} | {ratio} |")
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> int:
    """Build the inputs and pipelines, time them, print (and save) the table."""
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    shape = tuple(int(v) for v in args.shape.split(","))
    image, label = phantom(shape, args.seed)
    full = "rotate, zoom, flip, shift, noise, blur, intensity"
    affine = "rotate, zoom, flip, shift, noise (p=1)"
    peers = {
        "spine_keras (fused, full set)": (full, "spine_keras (fused, full set)"),
        "volumentations-3D": (full, "spine_keras (fused, full set)"),
        "spine_keras (fused, TorchIO's set)": (affine, "spine_keras (fused, TorchIO's set)"),
        "TorchIO": (affine, "spine_keras (fused, TorchIO's set)"),
    }
    built = {
        "spine_keras (fused, full set)": spine_keras_step(image, label, FULL, args.seed),
        "volumentations-3D": volumentations_step(image, label, args.seed),
        "spine_keras (fused, TorchIO's set)": spine_keras_step(image, label, TORCHIO_LIKE, args.seed),
        "TorchIO": torchio_step(image, label, args.seed, args.threads),
    }
    steps = {name: step for name, step in built.items() if callable(step)}
    missing = {name: step for name, step in built.items() if isinstance(step, str)}
    before = os.getloadavg()[0]
    times = run(steps, args.samples, args.warmup)
    report = table(args, times, missing, peers, (before, os.getloadavg()[0]))
    print(report)
    if args.out:
        args.out.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))
