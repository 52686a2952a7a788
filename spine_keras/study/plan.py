"""The steps of a study, their dependencies and cache keys, and the folds every variant shares.

Steps, in the order they are numbered (1-based, as `--list-steps` prints them and `--step K` takes them):
- `cube-<key>`: one cube per distinct cube settings (variants with the same mode, shape and cube settings share it);
- `train-<variant>-fold<k>`: one per variant and fold, after its cube;
- `predict-<variant>-fold<k>`: that fold's validation cases predicted in their original geometry, after its training;
- `test-<variant>`: the test list predicted by the variant's fold ensemble, after all its folds (with a test list).

Each step has a key, a hash of everything its output depends on (its settings and its dependencies' keys): a step
is done when `OUT/steps/<id>.done` records the same key, so a changed setting reruns exactly the steps it touches.
The folds are made once per study from the training case ids and the seed (each case counts once, whatever the
number of samples a cube cuts from it), so every variant, 2D or 3D, validates on the same cases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spine_keras.errors import UserError
from spine_keras.study.config import StudyConfig, Variant, short_hash

KINDS = ("cube", "train", "predict", "test")


@dataclass(frozen=True)
class Step:
    """One unit of work: its number, id, kind, cache key, the ids it needs, and what it works on."""

    number: int
    id: str
    kind: str
    key: str
    deps: tuple[str, ...] = ()
    variant: str = ""
    fold: int | None = None
    cube: str = ""  # the cube key this step builds or trains on


@dataclass
class StudyPlan:
    """Every step of a study, and the validation cases of each fold (shared by every variant)."""

    config: StudyConfig
    steps: list[Step]
    fold_cases: list[list[str]]

    def step(self, ref: str) -> Step:
        """The step numbered `ref` (1-based) or with id `ref`; UserError naming the valid range otherwise."""
        ref = str(ref).strip()
        for step in self.steps:
            if ref == step.id or (ref.isdigit() and int(ref) == step.number):
                return step
        raise UserError(f"--step {ref}: no such step; give a number from 1 to {len(self.steps)} or a step id")

    def variant(self, name: str) -> Variant:
        """The variant called `name`."""
        return next(v for v in self.config.variants if v.name == name)

    def by_id(self) -> dict[str, Step]:
        return {step.id: step for step in self.steps}


def training_cases(config: StudyConfig) -> list[str]:
    """The case ids of every training list, in list order."""
    from spine_keras.io import parse_list

    return [entry.case_id for source in config.train_lists for entry in parse_list(source.list)]


def study_folds(cases: list[str], folds: int, seed: int) -> list[list[str]]:
    """The validation cases of each fold: whole cases, each counted once, assigned from the seed."""
    from spine_keras.data import case_folds

    return case_folds(np.asarray(sorted(cases), dtype=object), folds, seed)


def make_plan(config: StudyConfig) -> StudyPlan:
    """Every step of the study in execution order, numbered from 1, with dependencies and keys."""
    fold_cases = study_folds(training_cases(config), config.folds, config.seed)
    steps: list[dict[str, Any]] = []
    cube_ids: dict[str, str] = {}
    for variant in config.variants:
        key = config.cube_key(variant)
        if key not in cube_ids:
            cube_ids[key] = f"cube-{key}"
            steps.append({"id": cube_ids[key], "kind": "cube", "key": key, "cube": key})
    for variant in config.variants:
        steps.extend(_variant_steps(config, variant, fold_cases, cube_ids[config.cube_key(variant)]))
    return StudyPlan(config, [Step(number=i, **s) for i, s in enumerate(steps, start=1)], fold_cases)


def _variant_steps(
    config: StudyConfig, variant: Variant, fold_cases: list[list[str]], cube_id: str
) -> list[dict[str, Any]]:
    """The train and predict steps of one variant (and its test step when the study has a test list)."""
    cube_key = cube_id.removeprefix("cube-")
    name = variant.name
    settings = config.train_settings(variant, 0, "cube.h5", "run").to_dict()
    for unrelated in ("fold", "cube", "out", "verbose"):  # set per step, or not changing the model
        settings.pop(unrelated)
    trains, steps = [], []
    for k, cases in enumerate(fold_cases):
        train_key = short_hash({"cube": cube_key, "train": settings, "fold": k, "val_cases": cases})
        trains.append((f"train-{name}-fold{k}", train_key))
        steps.append({"id": trains[-1][0], "kind": "train", "key": train_key, "deps": (cube_id,), "cube": cube_key})
    lists = [d.to_dict() for d in config.train_lists]
    for k, (train_id, train_key) in enumerate(trains):
        key = short_hash({"train": train_key, "lists": lists})
        steps.append({"id": f"predict-{name}-fold{k}", "kind": "predict", "key": key, "deps": (train_id,)})
    if config.test is not None:
        key = short_hash({"train": [t[1] for t in trains], "test": config.test.to_dict()})
        steps.append({"id": f"test-{name}", "kind": "test", "key": key, "deps": tuple(t[0] for t in trains)})
    for step in steps:
        step.update(variant=name, fold=_fold_of(step["id"]))
    return steps


def _fold_of(step_id: str) -> int | None:
    """The fold number at the end of a step id (`...-fold2` -> 2), None for a test step."""
    head, _, tail = step_id.rpartition("-fold")
    return int(tail) if head and tail.isdigit() else None


def format_steps(plan: StudyPlan, done: set[str]) -> str:
    """The numbered step table `--list-steps` prints: number, id, state, what it needs."""
    numbers = {step.id: step.number for step in plan.steps}
    width = max(len(step.id) for step in plan.steps)
    lines = [f"{'#':>3}  {'step':<{width}}  {'state':<7}  needs"]
    for step in plan.steps:
        needs = ",".join(str(numbers[d]) for d in step.deps) or "-"
        state = "done" if step.id in done else "pending"
        lines.append(f"{step.number:>3}  {step.id:<{width}}  {state:<7}  {needs}")
    return "\n".join(lines)
