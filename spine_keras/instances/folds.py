"""Patient-grouped cross-validation for the instance path: which cases a fold holds out, and which run predicts a
held-out case.

The folds are the project's own (`spine_keras.data.case_folds`, as `spine-study` calls it: every case counted once,
assigned from the seed), so the iterative network, the baseline and the semantic studies hold out the same
patients when they share a list and a seed. No TensorFlow here: commands check folds before TensorFlow starts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from spine_keras.errors import UserError
from spine_keras.io import ListEntry


def held_out_cases(case_ids: Sequence[str], folds: int, fold: int, seed: int) -> list[str]:
    """The case ids fold `fold` of `folds` holds out (sorted); UserError for a fold out of range or more folds than
    cases."""
    unique = sorted(set(case_ids))
    if folds < 2:
        raise UserError(f"--folds must be at least 2, got {folds}")
    if folds > len(unique):
        raise UserError(f"--folds {folds} would leave a fold with no case: the list has {len(unique)} case(s)")
    if not 0 <= fold < folds:
        raise UserError(f"--fold {fold} is out of range for --folds {folds} (0..{folds - 1})")
    from spine_keras.data import case_folds

    return case_folds(np.asarray(unique, dtype=object), folds, seed)[fold]


def split_record(folds: int | None, fold: int | None, held_out: Sequence[str]) -> dict:
    """What a run folder records of its split (`folds` and `fold` None, nothing held out, for a run on all cases)."""
    return {"folds": folds, "fold": fold, "held_out": sorted(held_out)}


def route_held_out(entries: Sequence[ListEntry], runs: Sequence[tuple[str, dict]]) -> list[int]:
    """For each entry, the index of the one run (name, metadata) that held its case out; UserError naming the case
    when no run or several runs held it out, or a run that was trained on every case."""
    for name, metadata in runs:
        if not metadata.get("held_out"):
            raise UserError(f"run '{name}' held no case out; --held-out needs runs trained with --folds K --fold k")
    routes = []
    for entry in entries:
        owners = [i for i, (_, metadata) in enumerate(runs) if entry.case_id in metadata["held_out"]]
        if len(owners) != 1:
            owned = f"{len(owners)} runs ({', '.join(runs[i][0] for i in owners)})" if owners else "none of the runs"
            raise UserError(
                f"{entry.source}: case {entry.case_id} is held out by {owned}; with --held-out every case must be "
                "held out by exactly one run (give one run per fold, trained with the same --folds and --seed)"
            )
        routes.append(owners[0])
    return routes
