#!/usr/bin/env python
"""Seconds per volume of sliding-window segmentation: spine_keras's window engine vs MONAI's, taking turns.

    python bench/bench_predict.py [--quick] [--case VB3_01] [--rounds 5] [--threads 2] [--no-write]

Sides, each in its own worker process (so peak memory is its own), untrained weights, one exam of the shared data
(--quick: its central 128x128x64 block):
  spine_keras window, MONAI UNet   spine_keras's sliding window (64^3, overlap 0.5, Gaussian, batch 4) driving
                                   monai's UNet (channels 8,16,32,64, strides 2): the reference
  MONAI sliding_window_inference   the same UNet, roi 64^3, overlap 0.5, gaussian, batch 4: the window engines alone
  spine_keras window, Keras u1 3D  spine_keras's window driving a Keras 3D `u1` of a similar size (5 filters, depth 3)
A round is one whole in-memory segmentation: normalization, windows, model, stitching, argmax. The table goes to
the `predict` section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import common  # first: sets OMP_WAIT_POLICY before any library loads (bench/ is on sys.path as a script's folder)
from common import Unavailable, Worker

ROI, OVERLAP, CLASSES, BATCH = 64, 0.5, 2, 4
OURS_TORCH, MONAI, OURS_KERAS = (
    "spine_keras window, MONAI UNet",
    "MONAI sliding_window_inference",
    "spine_keras window, Keras u1 3D",
)
PACKAGES = ["numpy", "tensorflow", "keras", "torch", "monai"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(p, rounds=5, quick_rounds=3)
    p.add_argument("--case", default="VB3_01", help="exam id in the shared data (default VB3_01)")
    p.add_argument("--warmup", type=int, default=1, help="untimed volumes per worker first (default 1)")
    return p.parse_args(argv)


def load_volume(args: argparse.Namespace):
    """The exam's image as float32, cut to its central 128x128x64 block with --quick."""
    import numpy as np

    from spine_keras.io import read_volume

    path = common.DATA / f"{args.case}_image.nrrd"
    if not path.is_file():
        raise SystemExit(f"error: {path} not found (the shared data is needed)")
    array = np.asarray(read_volume(path).array, np.float32)
    if args.quick:
        box = tuple(slice(max(0, (n - m) // 2), max(0, (n - m) // 2) + m) for n, m in zip(array.shape, (128, 128, 64)))
        array = np.ascontiguousarray(array[box])
    return array


def torch_unet(threads: int):
    """monai's UNet (8,16,32,64, strides 2, no residual units) in eval mode, and its parameter count."""
    try:
        import torch
        from monai.networks.nets import UNet
    except ImportError:
        raise Unavailable("not installed (pip install torch==2.13.0 monai)") from None
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    net = UNet(spatial_dims=3, in_channels=1, out_channels=CLASSES, channels=(8, 16, 32, 64), strides=(2, 2, 2))
    return net.eval(), sum(p.numel() for p in net.parameters())


def ours(array, batch_fn: Callable) -> Callable[[], object]:
    """spine_keras's sliding window over the z-scored volume, then argmax."""
    import numpy as np

    from spine_keras.predict.window import sliding_window

    def run():
        x = ((array - array.mean()) / array.std())[None, ..., None]
        return sliding_window(x, (ROI,) * 3, batch_fn, CLASSES, OVERLAP, BATCH)[0].argmax(-1).astype(np.uint8)

    return run


def torch_sides(args: argparse.Namespace, array) -> tuple[dict, Callable[[], object]]:
    """The MONAI UNet under MONAI's window engine or under spine_keras's."""
    import numpy as np

    net, params = torch_unet(args.threads)
    import torch
    from monai.inferers import sliding_window_inference

    if args.worker == MONAI:

        def run():
            x = torch.from_numpy((array - array.mean()) / array.std())[None, None]
            with torch.no_grad():
                probs = sliding_window_inference(
                    x, (ROI,) * 3, BATCH, lambda t: torch.softmax(net(t), 1), overlap=OVERLAP, mode="gaussian"
                )
            return probs[0].argmax(0).numpy().astype(np.uint8)

        return {"params": params}, run

    def batch_fn(batch):
        with torch.no_grad():
            out = torch.softmax(net(torch.from_numpy(np.ascontiguousarray(np.moveaxis(batch, -1, 1)))), 1)
        return np.moveaxis(out.numpy(), 1, -1)

    return {"params": params}, ours(array, batch_fn)


def keras_side(args: argparse.Namespace, array) -> tuple[dict, Callable[[], object]]:
    """A Keras 3D u1 (5 filters, depth 3) as one traced batch function under spine_keras's window."""
    import tensorflow as tf

    from spine_keras.models import build_model

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    model = build_model("u1", (ROI, ROI, ROI, 1), CLASSES, filters=5, depth=3)  # softmax output
    call = tf.function(lambda t: model(t, training=False), input_signature=[tf.TensorSpec([None, ROI, ROI, ROI, 1])])
    return {"params": model.count_params()}, ours(array, lambda batch: call(tf.constant(batch)).numpy())


def worker_setup(args: argparse.Namespace) -> tuple[dict, Callable[[], object]]:
    """The side this worker runs, on the exam every worker reads."""
    array = load_volume(args)
    info, run = keras_side(args, array) if args.worker == OURS_KERAS else torch_sides(args, array)
    return {**info, "shape": "x".join(map(str, array.shape))}, run


def main(args: argparse.Namespace) -> int:
    """Start the three workers, let them take turns, write the table."""
    if args.worker:
        return common.serve(lambda: worker_setup(args), args.warmup)
    load_volume(args)  # fail early, with one line, when the shared data is missing
    runs = f"64^3 windows, overlap {OVERLAP}, Gaussian, batch {BATCH}"
    sides = [
        Worker(OURS_TORCH, f"monai UNet 8,16,32,64; {runs}", argv=sys.argv[1:]),
        Worker(MONAI, f"the same UNet; {runs}", OURS_TORCH, argv=sys.argv[1:]),
        Worker(OURS_KERAS, f"Keras u1 3D, 5 filters, depth 3; {runs}", MONAI, argv=sys.argv[1:]),
    ]
    load = common.interleave(sides, common.rounds_of(args))
    extra = {
        "params": lambda s: f"{s.info['params']:,}",
        "CPU s": lambda s: f"{sorted(r['cpu'] for r in s.rounds)[len(s.rounds) // 2]:.3g}",
        "peak RSS MB": lambda s: f"{max(r['peak_mb'] for r in s.rounds):.0f}",
    }
    shape = next((s.info["shape"] for s in sides if s.info), "?")
    body = (
        f"**Sliding-window segmentation, seconds per volume**: exam {args.case}, {shape} voxels, untrained weights, "
        f"one volume per round, {args.warmup} warm-up volume per worker; CPU s is the worker's median process time.\n"
        f"{common.conditions(args.threads, load, PACKAGES)}\n\n{common.comparison_table(sides, extra)}"
    )
    common.publish(args, "predict", body)
    return 0


if __name__ == "__main__":
    ARGS = parse_args()
    common.set_threads(ARGS.threads)
    sys.exit(main(ARGS))
