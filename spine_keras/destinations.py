"""Where a command writes: checked before any work, locked against a second writer, and disk errors named.

Every command that writes a file or a folder calls `check_file` or `check_folder` on it while validating its
inputs, so an unwritable folder, a missing parent, a file where a folder belongs (or the reverse) or an existing
output without `--force` is refused before anything is computed. `writer_lock` keeps two processes from writing
the same output at once, and `disk_errors` turns a full disk or a vanished folder met while writing into a
`UserError` naming the path.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from spine_keras.errors import UserError

# OS errors that describe the machine or the user's paths, not a bug: reported as one line naming the path.
ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "no such file or folder",
    errno.EISDIR: "is a folder, expected a file",
    errno.ENOTDIR: "a parent is not a folder",
    errno.EMFILE: "too many open files",
    errno.ENAMETOOLONG: "file name too long",
}


def _writable_parent(path: Path, what: str) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise UserError(f"{what} '{path}': folder '{parent}' does not exist; create it first")
    if not parent.is_dir():
        raise UserError(f"{what} '{path}': '{parent}' is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{what} '{path}': folder '{parent}' is not writable")


def check_file(path: Path | str, what: str, force: bool = False, flag: str = "--force") -> Path:
    """A file this command will write: its folder exists and is writable, and it is no folder; an existing file
    needs `force`. Returns the path."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} '{path}' is a folder; give a file name")
    if path.exists() and not force:
        raise UserError(f"{what} '{path}' already exists; pass {flag} to replace it or choose another name")
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"{what} '{path}' is not writable")
    _writable_parent(path, what)
    return path


def check_folder(path: Path | str, what: str, empty: bool = False, create_parents: bool = True) -> Path:
    """A folder this command will write into: no file stands there, it (or the nearest existing parent, with
    `create_parents`) is writable, and with `empty` it holds nothing yet. Returns the path."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} '{path}' is a file; give a folder")
    if path.is_dir():
        if empty and any(path.iterdir()):
            raise UserError(f"{what} '{path}' already exists and is not empty; choose another folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise UserError(f"{what} '{path}' is not writable")
        return path
    existing = path.parent
    while create_parents and not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.exists():
        raise UserError(f"{what} '{path}': folder '{existing}' does not exist; create it first")
    if not existing.is_dir():
        raise UserError(f"{what} '{path}': '{existing}' is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{what} '{path}': folder '{existing}' is not writable")
    return path


def process_alive(pid: int) -> bool:
    """Whether process `pid` still runs (one owned by another user counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_path(target: Path) -> Path:
    """The hidden lock file beside `target` that its writers share."""
    return target.parent / f".{target.name}.lock"


@contextlib.contextmanager
def writer_lock(target: Path | str, what: str) -> Iterator[None]:
    """Hold an exclusive lock on `target` for the block; UserError naming the holder's process id if another
    process holds it. The lock dies with its process (flock), so a killed writer never blocks the next one."""
    target = Path(target)
    path = lock_path(target)
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise UserError(
                f"{what} '{target}' is being written by process {holder}; wait for it or choose another output"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        with contextlib.suppress(OSError):  # a full disk fails the pid's flush again on close
            handle.close()
        with contextlib.suppress(OSError):
            _remove_if_unlocked(path)


def _remove_if_unlocked(path: Path) -> None:
    """Delete a lock file nobody holds (a racing writer that grabs it first keeps it)."""
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        path.unlink(missing_ok=True)


def describe_os_error(exc: OSError, path: Path | str | None = None) -> str | None:
    """One line for an OS error that is about the environment (full disk, permissions, missing folder), naming
    the path; None for any other error (a bug to report)."""
    reason = ENVIRONMENT_ERRNOS.get(exc.errno or -1)
    if reason is None:
        return None
    where = exc.filename or path
    return f"{reason}: '{where}'" if where else reason


@contextlib.contextmanager
def disk_errors(path: Path | str, what: str) -> Iterator[None]:
    """Turn an environment OS error raised while writing `path` into a UserError naming it."""
    try:
        yield
    except OSError as exc:
        line = describe_os_error(exc, path)
        if line is None:
            raise
        raise UserError(f"cannot write {what} '{path}': {line}") from exc
