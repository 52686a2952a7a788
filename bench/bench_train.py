#!/usr/bin/env python
"""Train-step time of a plain U-Net vs MONAI's BasicUNet, and the tf.data pipeline's rate vs the train step.

    python bench/bench_train.py [--quick] [--parts peer,pipeline] [--rounds 10] [--threads 2] [--no-write]

Part `peer` (section `train-step`): seconds per train step of spine_keras `u1` (filters 16, depth 4: 16..256,
BatchNorm, ReLU) and MONAI's BasicUNet with the same features, 2D 128x128 (--quick 64x64), batch 8 (--quick 4),
2 classes, Adam, cross-entropy, data in memory; each in its own worker process, taking turns step by step.
Part `pipeline` (section `train-pipeline`): per batch, the cube pipeline alone (plain and with online
augmentation, 32 batches per round) and the `uamd` train step fed from the cube and from a batch held in
memory, 2D and 3D, taking turns in this process; the target is a pipeline at least 5x as fast as the step.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import common  # first: sets OMP_WAIT_POLICY before any library loads (bench/ is on sys.path as a script's folder)
from common import LocalSide, Side, Unavailable, Worker

KEPT: list = []  # the pipeline part's sides and cube folder, alive until the process ends
PIPELINE_BATCHES = 32  # batches a pipeline round reads: far more than its prefetch buffer, which fills between rounds
KERAS, MONAI = "spine_keras u1", "MONAI BasicUNet"
PACKAGES = ["numpy", "tensorflow", "keras", "torch", "monai"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(p, rounds=10, quick_rounds=4)
    p.add_argument("--parts", default="peer,pipeline", help="comma list of: peer, pipeline (default both)")
    p.add_argument("--arch", default="uamd", help="arch of the pipeline part's train step (preset filters)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per side first (default 2)")
    args = p.parse_args(argv)
    args.side, args.batch = (64, 4) if args.quick else (128, 8)
    args.shapes = [((128, 128), 4), ((32, 64, 64), 1)] if args.quick else [((256, 256), 8), ((64, 128, 128), 1)]
    return args


def tf_threads(threads: int) -> None:
    """TensorFlow's intra-op pool at `threads`, one inter-op thread, as torch is set."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def steps_of(model, loss: str, batch: int):
    """spine_keras's compiled train step (`train.step.Steps`) for a compiled model and batches of `batch` samples."""
    import tensorflow as tf

    from spine_keras.losses import make_loss
    from spine_keras.train.step import Steps

    n_classes = int(model.outputs[0].shape[-1])
    return Steps(tf.distribute.get_strategy(), model, make_loss(loss, len(model.outputs)), batch, n_classes)


def in_memory(batch: tuple):
    """An endless iterator over one batch held in memory."""
    import tensorflow as tf

    return iter(tf.data.Dataset.from_tensors(batch).repeat())


def keras_side(args: argparse.Namespace) -> tuple[dict, Callable[[], float]]:
    """u1 at filters 16, depth 4, Adam 1e-3, cross-entropy."""
    import numpy as np

    from spine_keras.models import build_model
    from spine_keras.train.job import make_optimizer

    tf_threads(args.threads)
    model = build_model("u1", (args.side, args.side, 1), 2, filters=16, depth=4)
    model.compile(optimizer=make_optimizer("adam", 1e-3))
    x = np.random.default_rng(0).normal(size=(args.batch, args.side, args.side, 1)).astype(np.float32)
    steps, batch = steps_of(model, "ce", args.batch), in_memory((x, (x[..., 0] > 0).astype(np.uint8)))
    return {"params": model.count_params()}, lambda: float(steps.train(batch))


def monai_side(args: argparse.Namespace) -> tuple[dict, Callable[[], float]]:
    """MONAI's BasicUNet, features 16..256, Adam 1e-3, cross-entropy."""
    try:
        import torch
        from monai.networks.nets import BasicUNet
    except ImportError:
        raise Unavailable("not installed (pip install torch==2.13.0 monai)") from None
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    net = BasicUNet(spatial_dims=2, in_channels=1, out_channels=2, features=(16, 32, 64, 128, 256, 16))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.randn(args.batch, 1, args.side, args.side)
    y = (x[:, 0] > 0).long()

    def step() -> float:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    return {"params": sum(p.numel() for p in net.parameters())}, step


def peer_section(args: argparse.Namespace) -> str:
    """Both sides in workers, one step per round each, then the `train-step` section."""
    sides = [
        Worker(KERAS, "filters 16..256, depth 4, BatchNorm, ReLU", argv=sys.argv[1:]),
        Worker(MONAI, "features 16..256, InstanceNorm, LeakyReLU", KERAS, argv=sys.argv[1:]),
    ]
    load = common.interleave(sides, common.rounds_of(args))
    params = {"params": lambda s: f"{s.info.get('params', 0):,}"}
    return (
        f"**Train step, seconds per step**: 2D {args.side}x{args.side}, batch {args.batch}, 2 classes, Adam, "
        f"cross-entropy, data in memory; one step per round, {args.warmup} warm-up steps per worker.\n"
        f"{common.conditions(args.threads, load, PACKAGES)}\n\n{common.comparison_table(sides, params)}"
    )


def make_cube(path: Path, shape: tuple[int, ...], n: int) -> Path:
    """A cube of `n` smooth random samples with two classes, one chunk per sample as the builder writes."""
    import numpy as np
    from scipy.ndimage import gaussian_filter

    from spine_keras.cube import write_cube_arrays

    rng = np.random.default_rng(0)
    images = np.stack([gaussian_filter(rng.normal(size=shape), 2).astype(np.float32) for _ in range(n)])
    labels = (images > 0).astype(np.uint8)
    cases = [f"case{i % max(2, n // 4)}" for i in range(n)]
    return write_cube_arrays(path, images, labels, cases)


def pipeline_sides(arch: str, shape: tuple[int, ...], batch: int, folder: Path) -> list[Side]:
    """Pipeline alone (plain, augmented; 32 batches per round) and the arch's step from the cube and in memory."""
    import numpy as np

    from spine_keras.augment import AugmentConfig
    from spine_keras.data import CubeReader, train_dataset
    from spine_keras.models import build_model, preset
    from spine_keras.train.job import make_optimizer

    n = max(4 * batch, 16)
    cube, indices, per_epoch = make_cube(folder / f"cube{len(shape)}d.h5", shape, n), np.arange(n), n // batch
    step_name, sides = "train step fed from the cube", []

    def batches(augment: AugmentConfig | None):
        return iter(train_dataset(CubeReader(cube, augment), indices, batch, batch, per_epoch, 0, (0, 10**6)))

    for name, augment in (("pipeline alone", None), ("pipeline alone, online augmentation", AugmentConfig())):
        read = batches(augment)
        runs = f"cube -> tf.data, {PIPELINE_BATCHES} batches per round"
        sides.append(LocalSide(name, runs, step_name, PIPELINE_BATCHES, step=lambda i=read: _take(i, PIPELINE_BATCHES)))
    settings, model = preset(arch), build_model(arch, (*shape, 1), 2)
    model.compile(optimizer=make_optimizer(settings["optimizer"], settings["lr"]))
    steps, from_cube = steps_of(model, "ce+dice", batch), batches(None)
    held = in_memory(next(from_cube))
    sides.append(LocalSide(step_name, f"{arch}, CE + Dice", step=lambda: float(steps.train(from_cube))))
    sides.append(
        LocalSide("train step, batch in memory", f"{arch}, CE + Dice", step_name, step=lambda: float(steps.train(held)))
    )
    for side in sides:
        side.info["batch"] = batch
        if side.name.startswith("train"):
            side.step()  # trace the step (and warm the pipeline) before timing it
        common.note(f"{len(shape)}D {side.name}: ready")
    return sides


def _take(iterator, n_batches: int) -> None:
    for _ in range(n_batches):
        next(iterator)


def pipeline_section(args: argparse.Namespace) -> str:
    """Both dimensions, the four sides taking turns in this process, then the `train-pipeline` section."""
    tf_threads(args.threads)
    rate = {"samples/s": lambda s: f"{s.info['batch'] / statistics.median(s.seconds()):.3g}"}
    parts = [
        f"**Input pipeline vs train step, seconds per batch** (`{args.arch}` at its preset, Adam, CE + Dice); the "
        f"pipeline's rounds read {PIPELINE_BATCHES} batches from a cube of smooth random samples, the steps' one; "
        "target: the pipeline at least 5x as fast as the step fed from the cube (time / reference at most 0.2x)."
    ]
    tmp = tempfile.mkdtemp(prefix="bench_train_")  # removed at exit (see main)
    for shape, batch in args.shapes:
        sides = pipeline_sides(args.arch, shape, batch, Path(tmp))
        KEPT.extend(sides)  # freeing a traced step and its live pipelines stalls for many seconds: keep them
        load = common.interleave(sides, common.rounds_of(args))
        parts += [
            f"{len(shape)}D {'x'.join(map(str, shape))}, batch {batch}. "
            f"{common.conditions(args.threads, load, PACKAGES)}",
            common.comparison_table(sides, rate, unit="median s / batch"),
        ]
    KEPT.append(tmp)
    return "\n\n".join(parts)


def main(args: argparse.Namespace) -> int:
    """A worker runs one peer side; otherwise run the chosen parts and write their sections."""
    if args.worker:
        return common.serve(lambda: (keras_side if args.worker == KERAS else monai_side)(args), args.warmup)
    parts = set(args.parts.split(","))
    if "peer" in parts:
        common.publish(args, "train-step", peer_section(args))
    if "pipeline" in parts:
        common.publish(args, "train-pipeline", pipeline_section(args))
        shutil.rmtree(KEPT[-1], ignore_errors=True)
        sys.stdout.flush()
        os._exit(0)  # skip tearing down the kept steps and pipelines: it stalls as freeing them does, and times nothing
    return 0


if __name__ == "__main__":
    ARGS = parse_args()
    common.set_threads(ARGS.threads)
    sys.exit(main(ARGS))
