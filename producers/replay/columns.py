"""Interaction columns (user, item, rating, timestamp) of a delimited dataset file.

Two readers: Arrow's multi-threaded parser for the common well-formed file, and pandas for
anything unusual, which either reads it exactly (blank lines skipped, line numbers kept) or
fails with the file and line. Both give the same :class:`Ratings`.

>>> import csv, tempfile
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = Path(tmp) / "u.data"
...     _ = path.write_text("1\\t10\\t4\\t900\\n\\n2\\t20\\t5\\t800\\n")
...     r = read_columns(path, sep="\\t", header_lines=0, n_fields=4, cols=(0, 1, 2, 3),
...                      names=("user", "item", "rating", "ts"), quoting=csv.QUOTE_NONE)
>>> r.users.to_pylist(), r.ts.tolist(), r.lines.tolist()
(['1', '2'], [900.0, 800.0], [1, 3])
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from producers.replay.files import ReplayError

__all__ = ["Quoting", "Ratings", "parser_message", "read_columns"]

Quoting = Literal[0, 1, 2, 3]  # csv.QUOTE_* as pandas types them

# Arrow-backed strings: ~10 bytes per id instead of ~60 for a Python str, which is what
# keeps a 25M-line ratings.csv within a few GB.
_STR = pd.StringDtype("pyarrow")


@dataclass
class Ratings:
    """Interaction columns of a dataset file, in file order."""

    users: pa.ChunkedArray  # strings, exactly as in the file
    items: pa.ChunkedArray
    ratings: np.ndarray
    ts: np.ndarray
    lines: np.ndarray  # 1-based line numbers, for event ids


def read_columns(
    path: Path,
    *,
    sep: str,
    header_lines: int,
    n_fields: int,
    cols: Sequence[int],
    names: Sequence[str],
    quoting: Quoting,
) -> Ratings:
    """Read user, item, rating, timestamp (at positions ``cols``) of a delimited file with
    ``n_fields`` fields per line, keeping line numbers and failing on any broken line."""
    ratings = _read_columns_arrow(path, sep, header_lines, n_fields, cols, quoting)
    if ratings is None:
        ratings = _read_columns_pandas(path, sep, header_lines, n_fields, cols, names, quoting)
    # "nan"/"inf" parse as floats; a timestamp must be a real time to be sorted and replayed.
    bad = ~np.isfinite(ratings.ts)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ReplayError(
            f"{path}:{ratings.lines[row]}: {names[3]} {ratings.ts[row]} is not a finite number"
        )
    return ratings


def _read_columns_arrow(
    path: Path,
    sep: str,
    header_lines: int,
    n_fields: int,
    cols: Sequence[int],
    quoting: Quoting,
) -> Ratings | None:
    """The fast path (Arrow's multi-threaded parser, ~20x pandas on a 25M-line file) for a
    well-formed file; None when anything is unusual, for the exact pandas path to handle."""
    names = [f"f{c}" for c in range(n_fields)]
    types = {names[c]: pa.string() for c in cols[:2]} | {names[c]: pa.float64() for c in cols[2:]}
    try:
        table = pa_csv.read_csv(
            path,
            read_options=pa_csv.ReadOptions(skip_rows=header_lines, column_names=names),
            parse_options=pa_csv.ParseOptions(
                delimiter=sep,
                quote_char='"' if quoting != csv.QUOTE_NONE else False,
                # A blank line fails to parse (wrong field count) instead of vanishing, so
                # row i is line i + header_lines + 1 whenever this path succeeds.
                ignore_empty_lines=False,
            ),
            convert_options=pa_csv.ConvertOptions(
                column_types=types,
                include_columns=[names[c] for c in cols],
                null_values=[""],
                strings_can_be_null=True,
            ),
        )
    except (pa.ArrowException, OSError):
        return None  # broken, blank lines, odd numbers...: the pandas path says exactly what
    if table.num_rows == 0 or any(col.null_count for col in table.columns):
        return None
    return Ratings(
        users=table.column(0),
        items=table.column(1),
        ratings=table.column(2).to_numpy(),
        ts=table.column(3).to_numpy(),
        lines=np.arange(header_lines + 1, header_lines + 1 + table.num_rows),
    )


def _read_columns_pandas(
    path: Path,
    sep: str,
    header_lines: int,
    n_fields: int,
    cols: Sequence[int],
    names: Sequence[str],
    quoting: Quoting,
) -> Ratings:
    """The exact path: blank lines skipped with line numbers kept, errors with a line."""
    str_cols, num_cols = cols[:2], cols[2:]
    dtype: dict[int, Any] = {c: _STR for c in str_cols} | {c: "float64" for c in num_cols}
    try:
        df = pd.read_csv(
            path,
            sep=sep,
            header=None,
            skiprows=header_lines,
            dtype=dtype,
            quoting=quoting,
            # Blank lines become all-missing rows rather than vanishing, so a row's index
            # still gives its line number.
            skip_blank_lines=False,
            keep_default_na=False,
            na_values=[""],
            engine="c",
        )
    except pd.errors.EmptyDataError:
        df = pd.DataFrame({c: pd.Series([], dtype=dtype[c]) for c in cols})
    except pd.errors.ParserError as err:
        raise ReplayError(parser_message(path, err)) from err
    except ValueError:
        raise ReplayError(
            _first_non_number(path, sep, header_lines, num_cols, names, quoting)
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ReplayError(f"{path}: cannot read: {err}") from err
    if df.shape[1] != n_fields:
        raise ReplayError(
            f"{path}:{header_lines + 1}: expected {n_fields} fields per line, found {df.shape[1]}"
        )
    df = df[list(cols)]
    missing = df.isna()
    blank = missing.all(axis=1).to_numpy()
    partial = missing.any(axis=1).to_numpy() & ~blank
    if partial.any():
        row = int(np.flatnonzero(partial)[0])
        col = names[int(np.flatnonzero(missing.iloc[row].to_numpy())[0])]
        raise ReplayError(f"{path}:{row + header_lines + 1}: missing {col}")
    keep = ~blank
    lines = np.flatnonzero(keep) + header_lines + 1
    if not keep.all():
        df = df[keep]
    return Ratings(
        users=pa.chunked_array([pa.array(df[cols[0]].array)]),
        items=pa.chunked_array([pa.array(df[cols[1]].array)]),
        ratings=df[cols[2]].to_numpy(dtype=np.float64),
        ts=df[cols[3]].to_numpy(dtype=np.float64),
        lines=lines,
    )


def parser_message(path: Path, err: Exception) -> str:
    """``path:line: what`` from a pandas tokenizer error (which counts lines from the top of
    the file, skipped header included)."""
    msg = str(err).replace("Error tokenizing data. C error: ", "").strip()
    match = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", msg)
    if match:
        want, line, saw = match.groups()
        return f"{path}:{line}: expected {want} fields, found {saw}"
    return f"{path}: {msg}"


def _first_non_number(
    path: Path,
    sep: str,
    header_lines: int,
    cols: Sequence[int],
    names: Sequence[str],
    quoting: Quoting,
) -> str:
    """Error message for the first cell of a numeric column that is not a number (pandas
    only says which value failed, not where)."""
    df = pd.read_csv(
        path, sep=sep, header=None, skiprows=header_lines, usecols=list(cols), dtype=str,
        quoting=quoting, skip_blank_lines=False, keep_default_na=False,
    )  # fmt: skip
    for col, name in zip(cols, names[2:], strict=True):
        values = df[col]
        bad = pd.to_numeric(values, errors="coerce").isna() & (values != "")
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            return f"{path}:{row + header_lines + 1}: {name} {values.iloc[row]!r} is not a number"
    return f"{path}: a numeric column holds a value that is not a number"
