#!/usr/bin/env python
"""Redraw images/arch_<code>_2d.png: the block diagram of every architecture at its preset, 256x256x1, 2 classes.

The diagrams come from the model factory's own build configuration (spine_keras.models.diagram), so rerun this
after changing an architecture. `spine-models --diagram DIR` draws them for other shapes and settings.
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from spine_keras.models.diagram import draw_architectures  # noqa: E402


def main() -> int:
    """Write the diagrams and list the files written."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "images", help="folder for the PNGs (default images/)")
    args = parser.parse_args()
    for path in draw_architectures(args.out):
        print(f"{path}  {path.stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
