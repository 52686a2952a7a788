"""`spine-export RUN_DIR [-o DIR]`: write a TensorFlow SavedModel (`serve` signature), the inference `.keras`
and `spine_keras.json` for teams without spine_keras."""

from __future__ import annotations

import argparse

from spine_keras.cli import user_errors_exit_2
from spine_keras.export import DEFAULT_DIR, export_bundle


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spine-export", description=__doc__)
    p.add_argument("run_dir", help="training run folder (best.keras + spine_keras.json), or a k-fold run's root")
    p.add_argument("-o", "--out", default=None, help=f"export folder (default RUN_DIR/{DEFAULT_DIR})")
    return p


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    out = export_bundle(args.run_dir, args.out)
    print(f"exported -> {out}")
    return 0
