"""`spine-study STUDY.yaml`: build the cubes, train every variant on every fold, predict in the original geometry,
and report; resumable, and addressable step by step (`--list-steps`, `--step K`) for schedulers."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spine_keras.cli import CliParser, add_verbose_flag, quiet_tensorflow, user_errors_exit_2
from spine_keras.cli.flags import in_range
from spine_keras.destinations import check_folder
from spine_keras.errors import UserError

MAX_JOBS = 256


def parser() -> argparse.ArgumentParser:
    p = CliParser(prog="spine-study", description=__doc__)
    p.add_argument("study", help="study file (YAML): data lists and label maps, classes, cube, variants, folds, train")
    p.add_argument("-o", "--output", default=None, help="results folder (default: the study file's `output`)")
    p.add_argument(
        "--list-steps", action="store_true", help="print the numbered steps, their state and needs, and stop"
    )
    p.add_argument(
        "--step", default=None, metavar="K", help="run only step K (a number from --list-steps, or a step id)"
    )
    p.add_argument(
        "--jobs",
        type=in_range(int, 1, MAX_JOBS),
        default=1,
        metavar="N",
        help="run up to N independent steps at once, each in its own process (1: in order, in this process)",
    )
    p.add_argument("--report", action="store_true", help="only (re)write the report from the results folder")
    add_verbose_flag(p)
    return p


def _write_report(out: Path, required: bool) -> None:
    """The report of the results folder; without the report module, a UserError when asked for, else a warning."""
    try:
        from spine_keras.study.report import write_report
    except ModuleNotFoundError as exc:
        if exc.name != "spine_keras.study.report":
            raise
        if required:
            raise UserError("--report is not available in this installation (no spine_keras.study.report)") from exc
        print("warning: no report written (spine_keras.study.report is missing)", file=sys.stderr)
        return
    print(f"report: {write_report(out)}")


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    """Check the study file and its data (before TensorFlow loads or anything is written), then do what was asked."""
    args = parser().parse_args(argv)
    if sum([args.list_steps, args.step is not None, args.report]) > 1:
        raise UserError("give at most one of --list-steps, --step and --report")
    from spine_keras.study.run import config_and_plan, done_steps, run_one, run_study

    plan = config_and_plan(Path(args.study))
    out = check_folder(Path(args.output) if args.output else plan.config.output, "study folder")
    if args.list_steps:
        print(_steps_table(plan, out))
        return 0
    if args.report:
        if not (out / "study.json").is_file():
            raise UserError(f"'{out}' holds no study results (no study.json); run the study first")
        _write_report(out, required=True)
        return 0
    step = plan.step(args.step) if args.step is not None else None
    quiet_tensorflow(args.tf_verbose)
    if step is not None:
        ran = run_one(plan, out, step)
        print(f"step {step.number} ({step.id}): {'done' if ran else 'already done'}")
        return 0
    ran = run_study(plan, out, args.jobs, args.tf_verbose)
    remaining = len(plan.steps) - len(done_steps(plan, out))
    print(f"study folder: {out} ({len(ran)} step(s) run, {len(plan.steps) - len(ran)} already done)")
    if remaining == 0:
        _write_report(out, required=False)
    return 0


def _steps_table(plan, out: Path) -> str:
    from spine_keras.study.plan import format_steps
    from spine_keras.study.run import done_steps

    return format_steps(plan, done_steps(plan, out))


if __name__ == "__main__":
    sys.exit(main())
