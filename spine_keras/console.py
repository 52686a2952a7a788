"""What reaches the user's terminal: messages folded onto one line, and what C++ libraries print on stderr.

SimpleITK, HDF5 and TensorFlow write to file descriptor 2 directly, past `sys.stderr`; `captured_stderr` catches
that so the caller decides what the user sees (one line, or nothing).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

_SITK_LOCATION = re.compile(r"^(Exception thrown in SimpleITK \w+: )?\S+\.(cxx|h|hxx|cpp):\d+:\s*|^sitk::ERROR:\s*")


def one_line(message: str) -> str:
    """A message on one line: its lines joined by '; ', SimpleITK's source-location prefixes dropped."""
    parts = [_SITK_LOCATION.sub("", part).strip() for part in str(message).splitlines()]
    return "; ".join(part for part in parts if part) or "unknown error"


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Send file descriptor 2 to a temporary file for the block; afterwards (even on error) the yielded list holds
    what was written there. Without a stderr to redirect, nothing is captured."""
    captured: list[str] = []
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        yield captured
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode(errors="replace"))
