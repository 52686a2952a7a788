"""User-facing errors: a mistake in the user's input, reported as one clear line and exit status 2."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix (bad path, corrupt file, wrong flag); never shown with a traceback."""


class CaseError(UserError):
    """A problem with one case of an input list; `--skip-bad` can turn it into a warning."""

    def __init__(self, message: str, case_id: str | None = None):
        super().__init__(message)
        self.case_id = case_id
