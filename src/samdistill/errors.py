"""Errors that reach the user as one line (CLI exit code 2), as opposed to bugs (tracebacks)."""

from __future__ import annotations


def listing(names: list[str], n: int = 10) -> str:
    """``"a, b, c and 4 more"``: the first ``n`` names of a one-line message, and how many are left out."""
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


class UserError(Exception):
    """Bad input from the user: a path, a name, a config value, a data file. Shown as one line."""


class DataError(UserError):
    """A data file that cannot be used as given (unreadable, size mismatch, non-binary mask...).

    ``path`` names the offending file so that ``--on-error skip`` can count it.
    """

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class CheckpointError(UserError):
    """A missing, truncated or mismatched checkpoint file."""
