"""Small reading helpers shared by the formats, and the one error they raise.

Every failure is a :class:`ReplayError` whose message starts with the file (and the line,
when known), so a user can go straight to the problem.

>>> year_of("01-Jan-1995", None), year_of(None, "Heat (1995)"), year_of("", "Heat")
(1995, 1995, None)
>>> int_or_none(" 42 "), int_or_none("unknown"), int_or_none(None)
(42, None, None)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "ReplayError",
    "check_file",
    "column",
    "head",
    "header_fields",
    "int_or_none",
    "optional_column",
    "read_lines",
    "year_of",
]

_YEAR_IN_TITLE = re.compile(r"\((\d{4})\)\s*$")


class ReplayError(ValueError):
    """A file that cannot be replayed; the message names the file (and line, if known)."""


def check_file(path: Path) -> None:
    if not path.exists():
        raise ReplayError(f"{path}: no such file")
    if not path.is_file():
        raise ReplayError(f"{path}: not a file")


def head(path: Path, n: int = 5) -> list[str]:
    """Up to ``n`` non-empty first lines (latin-1 never fails to decode, so any file works)."""
    try:
        with path.open("rb") as fh:
            blob = fh.read(65_536)
    except OSError as err:
        raise ReplayError(f"{path}: cannot read: {err.strerror or err}") from err
    lines = blob.decode("latin-1").splitlines()
    if len(blob) == 65_536:
        lines = lines[:-1]  # the last one may be cut
    return [line for line in lines if line.strip()][:n]


def read_lines(path: Path, encoding: str) -> list[tuple[int, str]]:
    """(line number, text) of the non-blank lines of a small companion file."""
    try:
        text = path.read_text(encoding=encoding)
    except (OSError, UnicodeDecodeError) as err:
        raise ReplayError(f"{path}: cannot read: {err}") from err
    return [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def header_fields(path: Path, sep: str, encoding: str = "utf-8") -> list[str]:
    """The stripped fields of the first line, which must not be blank."""
    try:
        with path.open(encoding=encoding, newline="") as fh:
            first = fh.readline()
    except (OSError, UnicodeDecodeError) as err:
        raise ReplayError(f"{path}: cannot read: {err}") from err
    if not first.strip():
        raise ReplayError(f"{path}:1: expected a header line, found an empty line")
    return [f.strip() for f in first.rstrip("\r\n").split(sep)]


def optional_column(header: list[str], aliases: Sequence[str]) -> int | None:
    """Index of the first alias found in ``header`` (case-insensitive), else None."""
    lowered = [h.lower() for h in header]
    return next((lowered.index(a) for a in aliases if a in lowered), None)


def column(path: Path, header: list[str], aliases: Sequence[str], what: str) -> int:
    """Like :func:`optional_column`, but a missing column is an error naming ``what``."""
    index = optional_column(header, aliases)
    if index is None:
        raise ReplayError(
            f"{path}:1: no {what} column in header {header}; expected one of {list(aliases)}"
        )
    return index


def int_or_none(value: str | None) -> int | None:
    # Unparseable optional fields (RecBole writes "V" or "unkonwn" as a year) are unknown.
    try:
        return int(value.strip()) if value is not None else None
    except ValueError:
        return None


def year_of(date: str | None, title: str | None) -> int | None:
    """The year of a release date such as "01-Jan-1995", else of a title ending "(1995)"."""
    if date and len(date) >= 4 and date[-4:].isdigit():
        return int(date[-4:])
    match = _YEAR_IN_TITLE.search(title or "")
    return int(match.group(1)) if match else None
