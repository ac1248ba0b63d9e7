"""Exceptions that mean "the user gave us something wrong" (not a bug).

The command line prints these as one line and exits with status 2, without a traceback.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["ConfigError", "UserError", "one_line"]


def one_line(text: str) -> str:
    """Collapse ``text`` onto a single line (newlines and runs of blanks become one space)."""
    return " ".join(str(text).split())


class UserError(Exception):
    """A mistake in user input (a file, a flag, a value); its message is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


class ConfigError(ValueError, UserError):
    """A config file or override is unusable: unknown key, bad value, bad YAML, missing file.

    ``str(err)`` is one line naming the file (or ``overrides``), the key when there is one,
    and the problem. ``path`` and ``key`` keep the parts for programs.
    """

    def __init__(self, message: str, *, path: str | Path | None = None, key: str | None = None) -> None:
        self.path = None if path is None else str(path)
        self.key = key
        parts = [p for p in (self.path, key) if p]
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)
