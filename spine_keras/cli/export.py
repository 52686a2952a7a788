"""`spine-export RUN_DIR [-o DIR]`: write a TensorFlow SavedModel (`serve` signature), the inference `.keras`
and `spine_keras.json` for teams without spine_keras."""

from __future__ import annotations

import argparse

from spine_keras.cli import CliParser, add_verbose_flag, quiet_tensorflow, user_errors_exit_2


def parser() -> argparse.ArgumentParser:
    p = CliParser(prog="spine-export", description=__doc__)
    p.add_argument("run_dir", help="training run folder (best.keras + spine_keras.json), or a k-fold run's root")
    p.add_argument("-o", "--out", default=None, help="export folder (default RUN_DIR/export)")
    add_verbose_flag(p)
    return p


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from spine_keras.export import plan_export, write_export

    plan = plan_export(args.run_dir, args.out)  # run folder, every bundle and the destination, before TensorFlow
    quiet_tensorflow(args.tf_verbose)
    out = write_export(plan)
    print(f"exported -> {out}")
    return 0
