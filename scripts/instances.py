#!/usr/bin/env python
"""Thin wrapper around spine_keras.cli.instances (also the console script)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from spine_keras.cli.instances import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
