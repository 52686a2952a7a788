#!/usr/bin/env python
"""Seconds per volume to segment one shared-data exam (224x224x77) on the CPU, with peak memory.

Engines, each in its own process (so peak RSS is its own), fixed thread count, untrained weights:
  keras-2d     spine_keras predict, 2D `uad` at its preset (16 filters, depth 4) on 224x224 sagittal slices
  keras-3d     spine_keras predict, 3D `u1` (5 filters, depth 3, ~138k params), 64^3 windows, overlap 0.5, Gaussian
  monai        MONAI sliding_window_inference (roi 64^3, overlap 0.5, gaussian) driving monai UNet
               (channels 8,16,32,64, strides 2, ~122k params): the reference
  ours+torch   spine_keras' sliding window driving that same torch UNet: the window/stitching engines compared alone
A timed run is the whole in-memory segmentation: normalization, windows or slices, model, stitching, argmax.
Wall and process CPU seconds are both reported: on a shared machine CPU seconds are the steadier comparison.
Torch and MONAI are optional (`pip install torch==2.13.0 monai`, CPU wheel); their rows are skipped when absent.

    python bench/bench_predict.py [--case VB3_01] [--threads 2] [--rounds 2] [--repeats 2] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import cpu_name  # bench/common.py: bench/ is on sys.path when a bench runs as a script

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data" / "spine-mri"
ENGINES = ("keras-2d", "keras-3d", "monai", "ours+torch")
ROI, OVERLAP, CLASSES, BATCH_3D, BATCH_2D = 64, 0.5, 2, 4, 8


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--case", default="VB3_01", help="exam id in the shared data (default VB3_01)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for TensorFlow and torch (default 2)")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per engine process after a warm-up (default 2)")
    p.add_argument("--rounds", type=int, default=2, help="processes per engine, engines alternating (default 2)")
    p.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    p.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    p.add_argument("--engine", choices=ENGINES, help=argparse.SUPPRESS)  # child process: run one engine
    return p.parse_args(argv)


def _tf_threads(threads: int) -> None:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def _torch_unet(threads: int):
    import torch
    from monai.networks.nets import UNet

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    net = UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=CLASSES,
        channels=(8, 16, 32, 64),
        strides=(2, 2, 2),
        num_res_units=0,
    ).eval()
    return net, sum(p.numel() for p in net.parameters())


def _keras_segmenter(engine: str):
    """A Segmenter around an untrained Keras model with the metadata training would record."""
    from spine_keras.models import build_model, inference_model
    from spine_keras.predict.model import Segmenter, keras_batch_fn
    from spine_keras.preprocess import PreprocessConfig

    if engine == "keras-2d":
        model = inference_model(build_model("uad", (224, 224, 1), CLASSES))
        meta = {"mode": "2d", "axis": 2, "sampling": {"stride": None}, "preprocess": PreprocessConfig().to_dict()}
        label = "uad 2D, preset 16 filters, depth 4"
    else:
        model = build_model("u1", (ROI, ROI, ROI, 1), CLASSES, filters=5, depth=3)
        meta = {
            "mode": "3d",
            "axis": 2,
            "sampling": {"stride": [ROI // 2] * 3},
            "preprocess": PreprocessConfig(fit="pad").to_dict(),
        }
        label = "u1 3D, 5 filters, depth 3"
    meta.update(input_shape=list(model.input_shape[1:]), n_classes=CLASSES)
    return Segmenter(meta, [keras_batch_fn(model, meta)]), f"{label} ({model.count_params():,} params)"


def _runner(engine: str, image, threads: int):
    """(label, zero-argument function segmenting the volume) for one engine."""
    from spine_keras.predict.volume import predict_volume

    if engine.startswith("keras"):
        _tf_threads(threads)
        segmenter, label = _keras_segmenter(engine)
        batch = BATCH_2D if engine == "keras-2d" else BATCH_3D
        return label, lambda: predict_volume(image, segmenter, OVERLAP, batch)
    import numpy as np
    import torch

    net, params = _torch_unet(threads)
    label = f"monai UNet 8,16,32,64 ({params:,} params)"
    array = np.asarray(image.array, np.float32)
    if engine == "monai":
        from monai.inferers import sliding_window_inference

        def run():
            x = torch.from_numpy((array - array.mean()) / array.std())[None, None]
            with torch.no_grad():
                probs = sliding_window_inference(
                    x, (ROI,) * 3, BATCH_3D, lambda t: torch.softmax(net(t), 1), overlap=OVERLAP, mode="gaussian"
                )
            return probs[0].argmax(0).numpy().astype(np.uint8)

        return label, run
    from spine_keras.predict.window import sliding_window

    def batch_fn(batch):
        with torch.no_grad():
            out = torch.softmax(net(torch.from_numpy(np.ascontiguousarray(np.moveaxis(batch, -1, 1)))), 1)
        return np.moveaxis(out.numpy(), 1, -1)

    def run():
        x = ((array - array.mean()) / array.std())[None, ..., None]
        return sliding_window(x, (ROI,) * 3, batch_fn, CLASSES, OVERLAP, BATCH_3D)[0].argmax(-1).astype(np.uint8)

    return label, run


def child(args: argparse.Namespace) -> None:
    """Run one engine: warm up, time `repeats` runs, print a JSON line."""
    from spine_keras.io import read_volume

    image = read_volume(DATA / f"{args.case}_image.nrrd")
    label, run = _runner(args.engine, image, args.threads)
    run()
    times, cpu = [], []
    for _ in range(args.repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        run()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "engine": args.engine,
                "model": label,
                "shape": list(image.shape),
                "times": times,
                "cpu": cpu,
                "peak_mb": peak_mb,
            }
        )
    )


def _available(engine: str) -> bool:
    if engine.startswith("keras"):
        return True
    try:
        import monai  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _stat(values: list[float]) -> str:
    return f"{min(values):.2f} ({statistics.median(values):.2f})"


def _run_child(engine: str, args: argparse.Namespace, env: dict[str, str]) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--engine",
        engine,
        "--case",
        args.case,
        "--threads",
        str(args.threads),
        "--repeats",
        str(args.repeats),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.engine:
        child(args)
        return 0
    if not (DATA / f"{args.case}_image.nrrd").is_file():
        print(f"error: {DATA / args.case}_image.nrrd not found", file=sys.stderr)
        return 2
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    engines = [e for e in args.engines if _available(e)]
    results: dict[str, dict] = {}
    load = os.getloadavg()[0]
    for _ in range(args.rounds):  # engines alternate, so load from other processes hits them alike
        for engine in engines:
            row = _run_child(engine, args, env)
            kept = results.setdefault(engine, {**row, "times": [], "cpu": [], "peak_mb": 0.0})
            kept["times"] += row.get("times", [])
            kept["cpu"] += row.get("cpu", [])
            kept["peak_mb"] = max(kept["peak_mb"], row.get("peak_mb", 0.0))
    header = (
        f"CPU: {cpu_name()}, {os.cpu_count()} cores visible, {args.threads} threads; load average at start "
        f"{load:.2f}; case {args.case}; min (median) of {args.rounds} x {args.repeats} runs, each process "
        "warmed up once"
    )
    lines = [
        header,
        "",
        "| engine | model | volume | wall s / volume | CPU s / volume | peak RSS MB |",
        "|---|---|---|---|---|---|",
    ]
    for engine in args.engines:
        row = results.get(engine)
        if row is None:
            lines.append(f"| {engine} | skipped: torch/monai not installed | | | | |")
        elif not row["times"]:
            lines.append(f"| {engine} | failed: {row.get('error')} | | | | |")
        else:
            lines.append(
                f"| {engine} | {row['model']} | {'x'.join(map(str, row['shape']))} | "
                f"{_stat(row['times'])} | {_stat(row['cpu'])} | {row['peak_mb']:.0f} |"
            )
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
