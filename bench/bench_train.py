#!/usr/bin/env python
"""Training throughput: the tf.data pipeline alone vs the train step, and a plain U-Net vs MONAI's BasicUNet.

Part `pipeline` (2D and 3D): samples/s delivered by the cube pipeline alone (without and with online
augmentation), consumed by the train step fed from the cube, and by the same step on one batch already in
memory; target on the CPU: pipeline >= 5x the step. Part `peer`: seconds per train step of `u1` (plain U-Net,
filters 16..256, depth 4, batch 8, 128x128, Adam, cross-entropy) vs MONAI's BasicUNet with the same features
and loss, each in a fresh subprocess of this run with the same thread count (in one process, the idle
thread pools of one framework slow the other down several-fold); target: no slower. Part `archs` (meant for GPUs):
samples/s of the train step of every arch (presets, batch in memory), mixed precision off and on.
Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common import cpu_name  # bench/common.py: bench/ is on sys.path when a bench runs as a script

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="pipeline,peer", help="comma list of: pipeline, peer, archs")
    p.add_argument("--arch", default="uamd", help="arch of the pipeline part's train step (preset filters)")
    p.add_argument("--shape2d", default="256,256")
    p.add_argument("--batch2d", type=int, default=8)
    p.add_argument("--shape3d", default="64,128,128")
    p.add_argument("--batch3d", type=int, default=1)
    p.add_argument("--steps", type=int, default=3, help="timed train steps per measure (after one warm-up)")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads for TensorFlow and torch")
    p.add_argument("--out", type=Path, help="also write the tables to this Markdown file")
    p.add_argument("--peer-side", choices=("keras", "monai"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def per_call(fn: Callable[[], object], reps: int, best: bool = False) -> float:
    """Median (or best) wall seconds of `reps` calls of `fn`, after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) if best else statistics.median(times)


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


def pipeline_rows(arch: str, shape: tuple[int, ...], batch: int, steps: int, folder: Path) -> list[dict]:
    """Pipeline alone (plain, augmented), step from the cube, step in memory: samples/s each."""
    import numpy as np
    import tensorflow as tf

    from spine_keras.augment import AugmentConfig
    from spine_keras.data import CubeReader, train_dataset
    from spine_keras.losses import make_loss
    from spine_keras.models import build_model, preset
    from spine_keras.train.job import make_optimizer
    from spine_keras.train.step import Steps

    n = max(4 * batch, 16)
    cube = make_cube(folder / f"cube{len(shape)}d.h5", shape, n)
    indices, rows = np.arange(n), []
    for name, augment in (("pipeline alone", None), ("pipeline alone, online augmentation", AugmentConfig())):
        reader = CubeReader(cube, augment)
        iterator = iter(train_dataset(reader, indices, batch, batch, n // batch, 0, (0, 10**6)))
        seconds = per_call(lambda it=iterator: [next(it) for _ in range(n // batch)], 3) / (n // batch)
        rows.append({"measure": name, "samples/s": batch / seconds})
    settings = preset(arch)
    model = build_model(arch, (*shape, 1), 2)
    model.compile(optimizer=make_optimizer(settings["optimizer"], settings["lr"]))
    step = Steps(tf.distribute.get_strategy(), model, make_loss("ce+dice", len(model.outputs)), batch, 2)
    from_cube = iter(train_dataset(CubeReader(cube), indices, batch, batch, n // batch, 0, (0, 10**6)))
    in_memory = iter(tf.data.Dataset.from_tensors(next(from_cube)).repeat())
    for name, iterator in (("train step fed from the cube", from_cube), ("train step, batch in memory", in_memory)):
        seconds = per_call(lambda it=iterator: float(step.train(it)), steps)
        rows.append({"measure": name, "samples/s": batch / seconds})
    step_rate = rows[2]["samples/s"]
    for row in rows:
        row["x step"] = row["samples/s"] / step_rate
    return rows


def arch_rows(shape: tuple[int, ...], batch: int, steps: int) -> list[dict]:
    """Train-step samples/s of every arch (preset filters, batch in memory), float32 and mixed precision."""
    import numpy as np
    import tensorflow as tf

    from spine_keras.losses import make_loss
    from spine_keras.models import ARCHS, build_model, preset
    from spine_keras.train.job import make_optimizer
    from spine_keras.train.step import Steps
    from spine_keras.train.strategy import dtype_policy, precision_policy

    x = np.random.default_rng(0).normal(size=(batch, *shape, 1)).astype(np.float32)
    iterator = iter(tf.data.Dataset.from_tensors((x, (x[..., 0] > 0).astype(np.uint8))).repeat())
    rows = []
    for arch in ARCHS:
        row = {"arch": arch}
        for mixed in (False, True):
            with dtype_policy(precision_policy(mixed)):
                model = build_model(arch, (*shape, 1), 2)
                model.compile(optimizer=make_optimizer(preset(arch)["optimizer"], preset(arch)["lr"]))
                step = Steps(tf.distribute.get_strategy(), model, make_loss("ce+dice", len(model.outputs)), batch, 2)
                row[precision_policy(mixed)] = batch / per_call(lambda s=step: float(s.train(iterator)), steps)
        rows.append(row)
    return rows


def keras_unet_step(batch: int, side: int, steps: int) -> float:
    """Best seconds per train step of u1 (filters 16, depth 4: 16..256), Adam, cross-entropy, data in memory."""
    import numpy as np
    import tensorflow as tf

    from spine_keras.losses import make_loss
    from spine_keras.models import build_model
    from spine_keras.train.job import make_optimizer
    from spine_keras.train.step import Steps

    model = build_model("u1", (side, side, 1), 2, filters=16, depth=4)
    model.compile(optimizer=make_optimizer("adam", 1e-3))
    step = Steps(tf.distribute.get_strategy(), model, make_loss("ce", 1), batch, 2)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, side, side, 1)).astype(np.float32)
    iterator = iter(tf.data.Dataset.from_tensors((x, (x[..., 0] > 0).astype(np.uint8))).repeat())
    return per_call(lambda: float(step.train(iterator)), steps, best=True)


def monai_step(batch: int, side: int, steps: int, threads: int) -> float:
    """Best seconds per train step of MONAI's BasicUNet (features 16..256), Adam, cross-entropy."""
    import torch
    from monai.networks.nets import BasicUNet

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = BasicUNet(spatial_dims=2, in_channels=1, out_channels=2, features=(16, 32, 64, 128, 256, 16))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.randn(batch, 1, side, side)
    y = (x[:, 0] > 0).long()

    def step() -> float:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    return per_call(step, steps, best=True)


def peer_seconds(side: str, steps: int, threads: int) -> float | None:
    """Run one side of the peer comparison in a fresh process; None when it cannot run (MONAI not installed)."""
    import subprocess

    done = subprocess.run(
        [sys.executable, __file__, "--peer-side", side, "--steps", str(steps), "--threads", str(threads)],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    return float(lines[-1]) if done.returncode == 0 and lines else None


def table(rows: list[dict], columns: list[str]) -> str:
    """Rows as a Markdown table (floats with 3 significant digits)."""

    def cell(value: object) -> str:
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(cell(r[c]) for c in columns) + " |" for r in rows])


def main(argv: list[str] | None = None) -> int:
    """Run the chosen parts and print (and optionally write) the tables."""
    args = parse_args(argv)
    if args.peer_side == "monai":
        print(monai_step(8, 128, args.steps, args.threads))
        return 0
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    if args.peer_side == "keras":
        print(keras_unet_step(8, 128, args.steps))
        return 0
    parts = set(args.parts.split(","))
    out = [f"CPU: {cpu_name()}, {os.cpu_count()} cores visible, {args.threads} threads; TensorFlow {tf.__version__}"]
    if "pipeline" in parts:
        with tempfile.TemporaryDirectory() as tmp:
            for shape, batch in ((args.shape2d, args.batch2d), (args.shape3d, args.batch3d)):
                dims = tuple(int(v) for v in shape.split(","))
                rows = pipeline_rows(args.arch, dims, batch, args.steps, Path(tmp))
                out += [
                    f"\n{args.arch} {'x'.join(map(str, dims))}, batch {batch}:\n",
                    table(rows, ["measure", "samples/s", "x step"]),
                ]
                print("\n".join(out[-2:]), flush=True)
    if "peer" in parts:
        ours = peer_seconds("keras", args.steps, args.threads)
        peer = peer_seconds("monai", args.steps, args.threads)
        rows = [{"model": "spine_keras u1 (filters 16, depth 4)", "s/step": ours if ours is not None else "failed"}]
        rows.append({"model": "MONAI BasicUNet (16..256)", "s/step": peer if peer is not None else "not installed"})
        out += [
            f"\nTrain step, 2D 128x128, batch 8, Adam, cross-entropy, best of {args.steps} steps:\n",
            table(rows, ["model", "s/step"]),
        ]
        print("\n".join(out[-2:]), flush=True)
    if "archs" in parts:
        for shape, batch in ((args.shape2d, args.batch2d), (args.shape3d, args.batch3d)):
            dims = tuple(int(v) for v in shape.split(","))
            rows = arch_rows(dims, batch, args.steps)
            out += [f"\nTrain step samples/s, {'x'.join(map(str, dims))}, batch {batch}:\n", table(rows, list(rows[0]))]
            print("\n".join(out[-2:]), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(out) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
