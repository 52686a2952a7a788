#!/usr/bin/env python
"""Parameters, forward and train-step time of every architecture at the paper's sizes, as a Markdown table.

    python bench/bench_models.py [--quick] [--dims 2 3] [--reps 3] [--threads 2] [--no-write]

Each arch is built with its preset (filters, activation, optimizer, lr), compiled with sparse categorical
cross-entropy on every output (deep-supervision weights halving per coarser level), warmed up once (tracing),
then timed `--reps` times; the table reports the median seconds per batch. --quick: 2D only, 128x128, batch 2,
2 repetitions. No peer here, so nothing takes turns; the table goes to the `models` section of
docs/performance.md with the load average it ran under.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import common  # first: sets OMP_WAIT_POLICY before any library loads (bench/ is on sys.path as a script's folder)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's command line."""
    from spine_keras.models import ARCHS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2D only, 128x128, batch 2, 2 repetitions")
    p.add_argument("--no-write", action="store_true", help="print the table only; leave the performance page alone")
    p.add_argument("--archs", nargs="+", default=list(ARCHS), metavar="CODE")
    p.add_argument("--dims", nargs="+", type=int, choices=(2, 3), help="default 2 3 (--quick: 2)")
    p.add_argument("--reps", type=int, help="timed repetitions per measure (default 3, --quick 2)")
    p.add_argument("--reps-3d", type=int, help="timed repetitions in 3D (default: --reps)")
    p.add_argument("--shape2d", nargs=3, type=int, metavar=("H", "W", "C"), help="default 256 256 1 (--quick 128)")
    p.add_argument("--batch2d", type=int, help="default 8 (--quick 2)")
    p.add_argument("--shape3d", nargs=4, type=int, default=(64, 128, 128, 1), metavar=("D", "H", "W", "C"))
    p.add_argument("--batch3d", type=int, default=1)
    p.add_argument("--classes", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="TensorFlow intra-op threads (0: TF's default)")
    p.add_argument(
        "--mixed-precision", action="store_true", help="spine-train's mixed policy (float16 on GPUs, bfloat16 on CPUs)"
    )
    p.add_argument("--jit", action="store_true", help="XLA jit_compile (keep off on CPU: far slower there)")
    args = p.parse_args(argv)
    args.dims = args.dims or ([2] if args.quick else [2, 3])
    args.reps = args.reps or (2 if args.quick else 3)
    args.shape2d = args.shape2d or ((128, 128, 1) if args.quick else (256, 256, 1))
    args.batch2d = args.batch2d or (2 if args.quick else 8)
    return args


def timed(fn, reps: int) -> float:
    """Median wall seconds of `reps` calls of `fn`."""
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_one(arch: str, shape: tuple[int, ...], batch: int, reps: int, args: argparse.Namespace) -> dict:
    """Build, compile and time one arch: parameters, forward and train-step seconds per batch."""
    import keras
    import numpy as np

    from spine_keras.models import build_model, preset
    from spine_keras.train.strategy import dtype_policy

    conf = preset(arch)
    with dtype_policy(args.policy):  # per model: clear_session() below resets Keras' global policy
        model = build_model(arch, shape, args.classes)
    optimizer = type(keras.optimizers.get(conf["optimizer"]))(learning_rate=conf["lr"])
    n_out = len(model.outputs)
    model.compile(
        optimizer=optimizer,
        loss=["sparse_categorical_crossentropy"] * n_out,
        loss_weights=[1.0] + [0.5**k for k in range(1, n_out)],
        jit_compile=args.jit,
    )
    rng = np.random.default_rng(0)
    x = rng.random((batch, *shape), dtype=np.float32)
    y = [rng.integers(0, args.classes, (batch, *shape[:-1])).astype("int32")] * n_out
    model.predict_on_batch(x)
    forward = timed(lambda: model.predict_on_batch(x), reps)
    model.train_on_batch(x, y)
    train = timed(lambda: model.train_on_batch(x, y), reps)
    keras.backend.clear_session()
    return {"params": model.count_params(), "outputs": n_out, "forward": forward, "train": train}


def rows(args: argparse.Namespace) -> list[str]:
    """One table row per arch and dimension, printed as it is measured."""
    command, lines = f"`{common.command_line()}`", []
    for dims in args.dims:
        shape = tuple(args.shape2d if dims == 2 else args.shape3d)
        batch = args.batch2d if dims == 2 else args.batch3d
        reps = args.reps if dims == 2 or args.reps_3d is None else args.reps_3d
        for arch in args.archs:
            r = bench_one(arch, shape, batch, reps, args)
            lines.append(
                f"| {arch} | {'x'.join(map(str, shape))} | {batch} | {r['params']:,} | {r['outputs']} | "
                f"{r['forward']:.3g} | {r['train']:.3g} | {reps} | {command} |"
            )
            common.note(lines[-1])
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run the requested measures and print (and write) the table."""
    args = parse_args(argv)
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    from spine_keras.train.strategy import precision_policy

    args.policy = precision_policy(bool(args.mixed_precision))
    gpus = tf.config.list_physical_devices("GPU")
    before = os.getloadavg()[0]
    lines = [
        "| arch | input | batch | params | outputs | forward s/batch | train step s/batch | reps | command |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
        *rows(args),
    ]
    conditions = common.conditions(args.threads, (before, os.getloadavg()[0]), ["numpy", "tensorflow", "keras"])
    device = f"on GPU {gpus[0].name}; " if gpus else ""
    body = (
        f"**Models, seconds per batch** {device}(median of the repetitions after one warm-up call; dtype policy "
        f"{args.policy}, XLA {'on' if args.jit else 'off'}).\n{conditions}\n\n" + "\n".join(lines)
    )
    common.publish(args, "models-gpu" if gpus else "models-cpu", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
