"""Command-line front doors: parse flags, call one function, map user errors to exit status 2.

Every command builds its parser with `CliParser` and imports no TensorFlow to do so, so `--help` and a mistyped
flag answer at once, in one line. A command that needs TensorFlow gets `add_verbose_flag` and calls
`quiet_tensorflow` after parsing, before its first TensorFlow or Keras import: TensorFlow's start-up lines then
stay out of the user's way unless `--verbose` asks for them.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import re
import sys
import tempfile
import types
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

from spine_keras.console import captured_stderr, one_line
from spine_keras.errors import UserError

EXIT_USER_ERROR = 2
# What TensorFlow's C++ side writes to stderr: absl-formatted lines ("I0000 00:00:1795310810.955726  7562 port.cc:153]
# ...") and the banners around them, written before absl is initialised, so no log level reaches them.
TF_NOISE = re.compile(
    r"[IWEF]\d{4} [\d:.]+\s+\d+ \S+:\d+\]"
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|To enable the following instructions:"
)


class CliParser(argparse.ArgumentParser):
    """An `ArgumentParser` whose errors are one line plus a usage hint, exit status 2, instead of a usage dump."""

    def error(self, message: str) -> NoReturn:
        """Print `error: MESSAGE` and `usage hint: PROG --help` on stderr, exit 2."""
        self.exit(EXIT_USER_ERROR, f"error: {message}\nusage hint: {self.prog} --help\n")


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    """`--verbose` (read back as `args.tf_verbose`): let TensorFlow print its own start-up and runtime log lines."""
    parser.add_argument(
        "--verbose",
        dest="tf_verbose",
        action="store_true",
        default=False,
        help="show TensorFlow's own start-up and runtime log lines (hidden by default)",
    )


def quiet_tensorflow(verbose: bool = False) -> None:
    """Keep TensorFlow's start-up lines and its INFO/WARNING/ERROR logging off stderr, unless `verbose`.

    Call once, after parsing and before anything imports TensorFlow or Keras; TensorFlow still loads only when a
    command first needs it. TF_CPP_MIN_LOG_LEVEL=3 silences the C++ log once absl is up (e.g. `failed call to cuInit`
    on a CPU machine). The lines TensorFlow writes while loading, before absl starts, ignore it, so stderr is
    captured around that import and everything but those lines is written back: Python warnings and errors stay
    visible. Numerics are untouched (oneDNN stays on). With `verbose`, TensorFlow logs as it would on its own.
    """
    if verbose:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if "tensorflow" in sys.modules:
        _quiet_python_logs()
    elif not any(isinstance(finder, _QuietTensorFlowImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())


def _quiet_python_logs() -> None:
    """TensorFlow's and absl's Python loggers: errors only."""
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """An import hook for the first `import tensorflow`, wherever it happens: found by the usual finders, run with
    its start-up lines filtered out of stderr. It removes itself once used."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        self.loader, spec.loader = spec.loader, self
        return spec

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        module.__spec__.loader = module.__loader__ = self.loader  # the module keeps its own loader
        with _stderr_without(TF_NOISE):
            self.loader.exec_module(module)
        _quiet_python_logs()


@contextlib.contextmanager
def _stderr_without(noise: re.Pattern[str]) -> Iterator[None]:
    """Capture file descriptor 2 (C++ writes bypass `sys.stderr`), then write back the lines `noise` does not match."""
    try:
        with captured_stderr() as captured:
            yield
    finally:
        lines = "".join(captured).splitlines(keepends=True)
        kept = "".join(line for line in lines if not noise.match(line))
        if kept:
            sys.stderr.write(kept)
            sys.stderr.flush()


def write_crash_log(command: str, exc: BaseException) -> str:
    """Write the full traceback of an unexpected error to a log file; returns its path."""
    import time
    import traceback

    handle = tempfile.NamedTemporaryFile(
        "w", prefix=f"{command}-{time.strftime('%Y%m%d-%H%M%S')}-", suffix=".log", delete=False, encoding="utf-8"
    )
    with handle:
        handle.write(f"{command} {' '.join(sys.argv[1:])}\n\n")
        handle.write("".join(traceback.format_exception(exc)))
    return handle.name


def user_errors_exit_2(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a CLI `main`: a `UserError`, or an OS error about the environment (full disk, permissions, missing
    folder), prints one `error: ...` line and exits 2; any other exception is a bug, reported in one line with the
    path of a log file holding its traceback, exit 1. Nothing reaches the user as a traceback."""

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        from spine_keras.destinations import describe_os_error

        command = main.__module__.rsplit(".", 1)[-1].replace("_", "-")
        try:
            code = main(argv)
        except UserError as exc:
            print(f"error: {one_line(str(exc))}", file=sys.stderr)
            return EXIT_USER_ERROR
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except OSError as exc:
            line = describe_os_error(exc)
            if line is None:
                return _report_bug(command, exc)
            print(f"error: {one_line(line)}", file=sys.stderr)
            return EXIT_USER_ERROR
        except Exception as exc:  # noqa: BLE001 - the last resort: a bug, reported with its log, never hidden
            return _report_bug(command, exc)
        return int(code or 0)

    return wrapper


def _report_bug(command: str, exc: BaseException) -> int:
    """One line naming an unexpected error and the log file with its traceback; exit status 1."""
    log = write_crash_log(f"spine-{command}", exc)
    print(
        f"error: unexpected {type(exc).__name__}: {one_line(str(exc))[:300]} (a bug in spine_keras; the full "
        f"traceback is in {log})",
        file=sys.stderr,
    )
    return 1
