#!/usr/bin/env python
"""Print/plot every architecture (see spine_keras.cli.models)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from spine_keras.cli.models import main

if __name__ == "__main__":
    sys.exit(main())
