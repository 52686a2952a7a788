"""The iterative network's cross-validation trained on a machine that has a GPU and Keras but no TensorFlow, such as
one with JAX only: the project's own cases, folds, sampler, network, loss and settings, one training loop per fold
on Keras 3's JAX backend, then run folders that `spine-instances predict` reads.

Three steps, the middle one on the GPU machine (it needs numpy, scipy, keras and jax, not SimpleITK or TensorFlow):

    python bench/instances_jax.py pack data_lists/vb3.txt --levels L1-L5 --folds 3 --spacing-mm 1.5 pack
    KERAS_BACKEND=jax python bench/instances_jax.py train pack 0 weights --budget 400 --set filters=24
    python bench/instances_jax.py runs pack weights cv      # cv/run0, cv/run1, ... for spine-instances predict

`pack` stores each case's isotropic view (the image as float16, at most 2e-3 off after z-scoring) and the folds of
`spine-instances train --folds K --fold k`. `train` draws batch b from samples b*batch .. b*batch+batch-1, as
`fit.sample_dataset` does, and stops at the end of the first epoch after which the next would pass `--budget`
seconds; the epochs it ran are the run's `epochs`. Weights travel as .npz files of at most 14 MB.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
import types
from pathlib import Path

import numpy as np

PART_BYTES = 14e6


def pack(args: argparse.Namespace) -> None:
    """Cases and folds, read as spine-instances train reads them, into PACK.npz and PACK.json."""
    from spine_keras.instances.cases import read_labelled, training_view
    from spine_keras.instances.folds import held_out_cases, split_record
    from spine_keras.io import parse_list
    from spine_keras.levels import parse_levels

    levels = parse_levels(args.levels)
    entries = parse_list(args.list, require_label=True)
    views = [training_view(read_labelled(entry, levels), args.spacing_mm) for entry in entries]
    arrays = {}
    for view in views:
        arrays |= {
            f"{view.case_id}__image": view.image.astype(np.float16),
            f"{view.case_id}__ranked": view.ranked.astype(np.uint8),
            f"{view.case_id}__inside": view.inside,
            f"{view.case_id}__centres": view.centres,
        }
    np.savez_compressed(f"{args.out}.npz", **arrays)
    ids = [entry.case_id for entry in entries]
    folds = []
    for fold in range(args.folds):
        held = held_out_cases(ids, args.folds, fold, args.seed)
        folds.append({"train": [c for c in ids if c not in held], "split": split_record(args.folds, fold, held)})
    meta = {"levels": levels, "spacing_mm": args.spacing_mm, "seed": args.seed, "folds": folds}
    Path(f"{args.out}.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    print(f"{len(views)} cases, {args.folds} folds -> {args.out}.npz, {args.out}.json")


def _load_fold(pack_path: str, fold: int, overrides: list[str]):
    """The fold's training cases and its settings (defaults, the pack's spacing and seed, then KEY=VALUE)."""
    from spine_keras.instances.cases import TrainingCase
    from spine_keras.instances.config import InstanceConfig

    meta = json.loads(Path(f"{pack_path}.json").read_text(encoding="utf-8"))
    arrays = np.load(f"{pack_path}.npz")
    cases = [
        TrainingCase(
            cid,
            arrays[f"{cid}__image"].astype(np.float32),
            arrays[f"{cid}__ranked"].astype(np.int16),
            arrays[f"{cid}__inside"],
            arrays[f"{cid}__centres"],
        )
        for cid in meta["folds"][fold]["train"]
    ]
    settings = {"spacing_mm": meta["spacing_mm"], "seed": meta["seed"]}
    settings |= {k: json.loads(v) for k, v in (item.split("=", 1) for item in overrides)}
    return cases, InstanceConfig.from_dict(InstanceConfig().to_dict() | settings)


_CASES: list = []
_CONFIG = None


def _draw_batch(batch: int):
    """Batch `batch` of the run, as fit.sample_dataset builds it."""
    from spine_keras.instances.samples import step_arrays

    first = batch * _CONFIG.batch
    inputs, mask, complete = zip(*(step_arrays(_CASES, _CONFIG, first + j) for j in range(_CONFIG.batch)))
    return np.stack(inputs), {"mask": np.stack(mask), "complete": np.stack(complete)}


def train(args: argparse.Namespace) -> None:
    """One fold: samples drawn by a process pool started before Keras (and JAX) is, one train_on_batch a step."""
    global _CASES, _CONFIG
    sys.modules.setdefault("SimpleITK", types.ModuleType("SimpleITK"))  # imported, never called, by the sampler
    _CASES, _CONFIG = _load_fold(args.pack, args.fold, args.set)
    pool = multiprocessing.get_context("fork").Pool(args.workers)
    import keras

    from spine_keras.instances.network import build_network, compile_network

    keras.utils.set_random_seed(_CONFIG.seed)
    model = compile_network(build_network(_CONFIG), _CONFIG)
    history: dict[str, list] = {}
    started, epochs = time.perf_counter(), 0
    for epoch in range(_CONFIG.epochs):
        first = epoch * _CONFIG.steps
        sums: dict[str, float] = {}
        for inputs, targets in pool.imap(_draw_batch, range(first, first + _CONFIG.steps), chunksize=1):
            for key, value in model.train_on_batch(inputs, targets, return_dict=True).items():
                sums[key] = sums.get(key, 0.0) + float(value)
        for key, value in sums.items():
            history.setdefault(key, []).append(round(value / _CONFIG.steps, 5))
        epochs = epoch + 1
        elapsed = time.perf_counter() - started
        print(f"fold {args.fold} epoch {epochs} {elapsed:.0f} s loss {history['loss'][-1]}", flush=True)
        if elapsed * (epochs + 1) / epochs > args.budget:
            break
    seconds = round(time.perf_counter() - started, 1)
    pool.terminate()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    parts: list[list[np.ndarray]] = [[]]
    for weight in model.get_weights():
        if parts[-1] and sum(w.nbytes for w in parts[-1]) + weight.nbytes > PART_BYTES:
            parts.append([])
        parts[-1].append(weight)
    index = 0
    for number, part in enumerate(parts):
        np.savez(out / f"fold{args.fold}_w{number}.npz", **{f"w{index + i:04d}": w for i, w in enumerate(part)})
        index += len(part)
    history |= {"train_seconds": seconds, "backend": keras.backend.backend()}
    record = {"config": _CONFIG.to_dict() | {"epochs": epochs}, "history": history, "parts": len(parts)}
    (out / f"fold{args.fold}.json").write_text(json.dumps(record) + "\n", encoding="utf-8")
    print(f"fold {args.fold}: {epochs} epochs of {_CONFIG.steps} steps in {seconds} s -> {out}", flush=True)


def runs(args: argparse.Namespace) -> None:
    """Each fold's weights into a spine-instances run folder (model.keras, instances.json), anchored at the bottom."""
    from spine_keras.instances.config import InstanceConfig
    from spine_keras.instances.network import build_network, compile_network
    from spine_keras.instances.runfolder import run_metadata, write_run

    meta = json.loads(Path(f"{args.pack}.json").read_text(encoding="utf-8"))
    weights = Path(args.weights)
    for fold, split in enumerate(meta["folds"]):
        record = json.loads((weights / f"fold{fold}.json").read_text(encoding="utf-8"))
        config = InstanceConfig.from_dict(record["config"])
        arrays: dict[str, np.ndarray] = {}
        for number in range(record["parts"]):
            arrays |= dict(np.load(weights / f"fold{fold}_w{number}.npz"))
        model = compile_network(build_network(config), config)
        model.set_weights([arrays[key] for key in sorted(arrays)])
        metadata = run_metadata(config, meta["levels"], "bottom", split["train"], record["history"], split["split"])
        folder = write_run(Path(args.out) / f"run{fold}", model, metadata)
        print(f"{folder}: {config.epochs * config.steps} steps")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("pack", help="cases and folds of LIST into OUT.npz and OUT.json")
    one.add_argument("list")
    one.add_argument("out")
    one.add_argument("--levels", required=True)
    one.add_argument("--folds", type=int, default=3)
    one.add_argument("--seed", type=int, default=0)
    one.add_argument("--spacing-mm", type=float, default=2.0)
    two = sub.add_parser("train", help="train fold FOLD of PACK; weights into OUT")
    two.add_argument("pack")
    two.add_argument("fold", type=int)
    two.add_argument("out")
    two.add_argument("--set", nargs="+", default=[], metavar="KEY=JSON", help="InstanceConfig fields, e.g. filters=24")
    two.add_argument("--budget", type=float, default=400.0, help="seconds of training")
    two.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS", "5")))
    three = sub.add_parser("runs", help="weights of every fold into OUT/run<k>")
    three.add_argument("pack")
    three.add_argument("weights")
    three.add_argument("out")
    args = parser.parse_args()
    {"pack": pack, "train": train, "runs": runs}[args.command](args)


if __name__ == "__main__":
    main()
