"""Command-line front doors: parse flags, call one function, map user errors to exit status 2."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable

from spine_keras.errors import UserError

EXIT_USER_ERROR = 2
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter hides the tool's own lines


def user_errors_exit_2(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a CLI `main` so a `UserError` prints `error: ...` on stderr and exits 2, without a traceback."""

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        try:
            code = main(argv)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USER_ERROR
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        return int(code or 0)

    return wrapper
