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
    quiet_tensorflow(args.tf_verbose)
    from spine_keras.export import export_bundle

    out = export_bundle(args.run_dir, args.out)
    print(f"exported -> {out}")
    return 0
