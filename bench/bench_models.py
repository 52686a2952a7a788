#!/usr/bin/env python
"""Parameters, forward and train-step time of every architecture at the paper's sizes, as a Markdown table.

Each arch is built with its preset (filters, activation, optimizer, lr), compiled with sparse categorical
cross-entropy on every output (deep-supervision weights halving per coarser level), warmed up once (tracing),
then timed `--reps` times; the table reports the median seconds per batch.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from common import cpu_name  # bench/common.py: bench/ is on sys.path when a bench runs as a script

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's command line."""
    from spine_keras.models import ARCHS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", nargs="+", default=list(ARCHS), metavar="CODE")
    p.add_argument("--dims", nargs="+", type=int, choices=(2, 3), default=[2, 3])
    p.add_argument("--reps", type=int, default=3, help="timed repetitions per measure (default 3)")
    p.add_argument("--reps-3d", type=int, help="timed repetitions in 3D (default: --reps)")
    p.add_argument("--shape2d", nargs=3, type=int, default=(256, 256, 1), metavar=("H", "W", "C"))
    p.add_argument("--batch2d", type=int, default=8)
    p.add_argument("--shape3d", nargs=4, type=int, default=(64, 128, 128, 1), metavar=("D", "H", "W", "C"))
    p.add_argument("--batch3d", type=int, default=1)
    p.add_argument("--classes", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="TensorFlow intra-op threads (0: TF's default)")
    p.add_argument("--mixed-precision", action="store_true", help="mixed_float16 policy (for GPUs)")
    p.add_argument("--jit", action="store_true", help="XLA jit_compile (keep off on CPU: far slower there)")
    p.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    return p.parse_args(argv)


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

    conf = preset(arch)
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


def main(argv: list[str] | None = None) -> int:
    """Run the requested measures and print (and optionally save) the table."""
    args = parse_args(argv)
    import keras
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    if args.mixed_precision:
        keras.mixed_precision.set_dtype_policy("mixed_float16")
    gpus = tf.config.list_physical_devices("GPU")
    device = f"GPU: {gpus[0].name}" if gpus else f"CPU: {cpu_name()}, {os.cpu_count()} cores"
    header = (
        f"device: {device}; TF {tf.__version__}, Keras {keras.__version__}; threads {args.threads or 'default'}; "
        f"mixed precision {'on' if args.mixed_precision else 'off'}; XLA {'on' if args.jit else 'off'}"
    )
    lines = [
        header,
        "",
        "| arch | input | batch | params | outputs | forward s/batch | train step s/batch | reps |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    print("\n".join(lines), flush=True)
    for dims in args.dims:
        shape = tuple(args.shape2d if dims == 2 else args.shape3d)
        batch = args.batch2d if dims == 2 else args.batch3d
        reps = args.reps if dims == 2 or args.reps_3d is None else args.reps_3d
        for arch in args.archs:
            r = bench_one(arch, shape, batch, reps, args)
            line = (
                f"| {arch} | {'x'.join(map(str, shape))} | {batch} | {r['params']:,} | {r['outputs']} | "
                f"{r['forward']:.2f} | {r['train']:.2f} | {reps} |"
            )
            print(line, flush=True)
            lines.append(line)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
