"""Read files of user feedback as events, in the order a replay publishes them.

Four formats (see :data:`FORMATS`); :func:`open_source` guesses which from the file:

``movielens-100k``
    ``u.data`` (tab-separated ``user item rating timestamp``) with ``u.user`` and ``u.item``
    (and, when present, ``u.genre``) beside it.
``movielens-csv``
    ``ratings.csv`` (``userId,movieId,rating,timestamp``) with ``movies.csv`` beside it.
``recbole``
    RecBole atomic files ``NAME.inter`` with optional ``NAME.user`` / ``NAME.item``.
``events``
    Our own event schema as JSON lines (``.jsonl``/``.ndjson``), CSV or Parquet.

For the three dataset formats :meth:`ReplaySource.records` yields every ``user_profile``,
then every ``item_profile`` (stamped with the earliest interaction time so they validate and
come before what they announce), then the ratings sorted by time; ties keep file order.
Event ids are ``"{file name}:{kind}:{line number}"``: a second replay of the same file
produces the same ids, which the consumer de-duplicates. When a dataset has no file of user
(or item) profiles -- ``ratings.csv`` never has one, RecBole's are optional -- a bare profile
is made for each id in order of first appearance, because the consumer rejects events of
unannounced users and items. ``profiles=False`` yields the ratings alone (e.g. for
``u1.test`` after ``u1.base`` announced everyone).

Records are not validated here (the consumer does, and dead-letters what fails with a
reason), but a structurally broken file (unreadable, missing columns, wrong number of
fields, a non-number where a number must be) raises :class:`ReplayError` naming the file
and line before anything is yielded.

>>> import shutil, tempfile
>>> tmp = Path(tempfile.mkdtemp())
>>> _ = (tmp / "u.data").write_text("196\\t242\\t3\\t881250949\\n186\\t302\\t3\\t881250000\\n")
>>> source = open_source(tmp / "u.data", profiles=False)
>>> source.format
'movielens-100k'
>>> for record in source.records():
...     print(record)  # doctest: +NORMALIZE_WHITESPACE
{'type': 'rating', 'event_id': 'u.data:rating:2', 'user_id': '186', 'item_id': '302',
 'ts': 881250000.0, 'rating': 3.0}
{'type': 'rating', 'event_id': 'u.data:rating:1', 'user_id': '196', 'item_id': '242',
 'ts': 881250949.0, 'rating': 3.0}
>>> shutil.rmtree(tmp)
"""

from __future__ import annotations

import csv
import math
import mmap
import re
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pa_compute
import pyarrow.csv as pa_csv

from stream.config import Limits

FORMATS: tuple[str, ...] = ("movielens-100k", "movielens-csv", "recbole", "events")

Record = dict[str, Any] | bytes
_Quoting = Literal[0, 1, 2, 3]  # csv.QUOTE_* as pandas types them

# Genre flag columns of u.item when there is no u.genre beside it.
ML100K_GENRES: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
ML_CSV_HEADER = ("userId", "movieId", "rating", "timestamp")

# Arrow-backed strings: ~10 bytes per id instead of ~60 for a Python str, which is what
# keeps a 25M-line ratings.csv within a few GB.
_STR = pd.StringDtype("pyarrow")
# Records are turned into Python objects this many at a time (bounded extra memory).
_CHUNK = 65_536
_YEAR_IN_TITLE = re.compile(r"\((\d{4})\)\s*$")

# Header aliases for RecBole atomic files (field names before ":type"), first match wins.
_RB_USER = ("user_id", "uid", "user", "userid")
_RB_ITEM = ("item_id", "iid", "item", "itemid", "movie_id", "movieid")
_RB_RATING = ("rating", "score", "label", "ratings")
_RB_TS = ("timestamp", "ts", "time", "datetime", "date")
_RB_AGE = ("age",)
_RB_GENDER = ("gender", "sex")
_RB_OCCUPATION = ("occupation", "job")
_RB_TITLE = ("movie_title", "title", "name", "item_name")
_RB_YEAR = ("release_year", "year")
_RB_GENRES = ("class", "genre", "genres", "categories", "category")

# Fields of our schema that are numbers: CSV cells (strings) are converted so sorting and
# validation see numbers (e.g. schema_version "1" would not match Literal[1]).
_NUMERIC = frozenset({"ts", "rating", "seconds", "position", "age", "year", "schema_version"})
_CTX_NUMERIC = frozenset({"hour", "weekday"})
# Id fields: a typed column (Parquet written by pandas) may hold ints; ids are strings.
_IDS = frozenset({"event_id", "user_id", "item_id"})


class ReplayError(ValueError):
    """A file that cannot be replayed; the message names the file (and line, if known)."""


# --------------------------------------------------------------------------- guessing


def _head(path: Path, n: int = 5) -> list[str]:
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


def _check_file(path: Path) -> None:
    if not path.exists():
        raise ReplayError(f"{path}: no such file")
    if not path.is_file():
        raise ReplayError(f"{path}: not a file")


def guess_format(path: str | Path) -> str:
    """The replay format of ``path``, from its name and first lines.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     p = Path(tmp) / "ratings.csv"
    ...     _ = p.write_text("userId,movieId,rating,timestamp\\n1,31,2.5,1260759144\\n")
    ...     guess_format(p)
    'movielens-csv'
    """
    path = Path(path)
    _check_file(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".parquet"):
        return "events"
    if suffix == ".inter":
        return "recbole"
    if path.name == "u.data":
        return "movielens-100k"
    head = _head(path)
    if head:
        first = head[0].strip()
        try:
            header = [h.strip() for h in next(csv.reader([first]))]
        except csv.Error:  # e.g. NUL bytes: not a CSV header anyway
            header = []
        if tuple(header) == ML_CSV_HEADER:
            return "movielens-csv"
        if "type" in header and "event_id" in header:
            return "events"
        if first.startswith("{"):
            return "events"  # JSON lines under another suffix
        if all(_four_ints(line) for line in head):
            return "movielens-100k"
    raise ReplayError(
        f"{path}: cannot guess the replay format: expected u.data (or tab-separated "
        "user/item/rating/timestamp integers), ratings.csv with header "
        f"{','.join(ML_CSV_HEADER)}, a RecBole .inter file, or events as "
        f".jsonl/.ndjson/.parquet/.csv with type and event_id columns; pass one of {FORMATS}"
    )


def _four_ints(line: str) -> bool:
    fields = line.rstrip("\r\n").split("\t")
    return len(fields) == 4 and all(f.strip().isdigit() for f in fields)


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class ReplaySource:
    """A file to replay; :meth:`records` reads it afresh each time (same records, same ids)."""

    path: Path
    format: str
    profiles: bool = True

    @property
    def dataset(self) -> str:
        """The prefix of generated event ids: the file name."""
        return self.path.name

    def records(self) -> Iterator[Record]:
        """Events as dicts (or raw bytes for unparseable lines of an events file) in replay
        order; see the module docstring. Raises :class:`ReplayError` before the first record
        when the file is structurally broken."""
        if self.format == "events":
            return _events(self.path)
        return _dataset(self)

    def __iter__(self) -> Iterator[Record]:
        return self.records()


def _companions(path: Path, fmt: str) -> list[tuple[Path, bool]]:
    """(file, required) companions holding profiles for a dataset file."""
    if fmt == "movielens-100k":
        return [(path.parent / "u.user", True), (path.parent / "u.item", True)]
    if fmt == "movielens-csv":
        return [(path.parent / "movies.csv", True)]
    if fmt == "recbole":
        return [(path.with_suffix(".user"), False), (path.with_suffix(".item"), False)]
    return []


def open_source(path: str | Path, fmt: str | None = None, *, profiles: bool = True) -> ReplaySource:
    """A :class:`ReplaySource` for ``path`` (format guessed when ``fmt`` is None).

    Checks now, before anything is published, that the file and the companion files that
    hold its profiles exist (unless ``profiles=False``). Raises :class:`ReplayError`.
    """
    path = Path(path).expanduser()
    _check_file(path)
    if fmt is None:
        fmt = guess_format(path)
    elif fmt not in FORMATS:
        raise ReplayError(f"unknown replay format {fmt!r}; expected one of {FORMATS}")
    if profiles:
        for companion, required in _companions(path, fmt):
            if required and not companion.is_file():
                raise ReplayError(
                    f"{path}: {companion.name} not found beside it ({companion}); it holds "
                    "the profiles that announce users and items to the consumer (replay "
                    "without profiles, profiles=False, to send the interactions alone)"
                )
    return ReplaySource(path=path, format=fmt, profiles=profiles)


# --------------------------------------------------------------------------- datasets


@dataclass
class _Ratings:
    """Interaction columns of a dataset file, in file order."""

    users: pa.ChunkedArray  # strings, exactly as in the file
    items: pa.ChunkedArray
    ratings: np.ndarray
    ts: np.ndarray
    lines: np.ndarray  # 1-based line numbers, for event ids


def _read_columns(
    path: Path,
    *,
    sep: str,
    header_lines: int,
    n_fields: int,
    cols: Sequence[int],
    names: Sequence[str],
    quoting: _Quoting,
) -> _Ratings:
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
    quoting: _Quoting,
) -> _Ratings | None:
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
    return _Ratings(
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
    quoting: _Quoting,
) -> _Ratings:
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
        raise ReplayError(_parser_message(path, err)) from err
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
    return _Ratings(
        users=pa.chunked_array([pa.array(df[cols[0]].array)]),
        items=pa.chunked_array([pa.array(df[cols[1]].array)]),
        ratings=df[cols[2]].to_numpy(dtype=np.float64),
        ts=df[cols[3]].to_numpy(dtype=np.float64),
        lines=lines,
    )


def _parser_message(path: Path, err: Exception) -> str:
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
    quoting: _Quoting,
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


def _ml100k_ratings(path: Path) -> _Ratings:
    return _read_columns(
        path, sep="\t", header_lines=0, n_fields=4, cols=(0, 1, 2, 3),
        names=("user id", "item id", "rating", "timestamp"), quoting=csv.QUOTE_NONE,
    )  # fmt: skip


def _header_fields(path: Path, sep: str, encoding: str = "utf-8") -> list[str]:
    try:
        with path.open(encoding=encoding, newline="") as fh:
            first = fh.readline()
    except (OSError, UnicodeDecodeError) as err:
        raise ReplayError(f"{path}: cannot read: {err}") from err
    if not first.strip():
        raise ReplayError(f"{path}:1: expected a header line, found an empty line")
    return [f.strip() for f in first.rstrip("\r\n").split(sep)]


def _column(path: Path, header: list[str], aliases: Sequence[str], what: str) -> int:
    lowered = [h.lower() for h in header]
    for alias in aliases:
        if alias in lowered:
            return lowered.index(alias)
    raise ReplayError(
        f"{path}:1: no {what} column in header {header}; expected one of {list(aliases)}"
    )


def _ml_csv_ratings(path: Path) -> _Ratings:
    header = [h.strip('"') for h in _header_fields(path, ",")]
    missing = [c for c in ML_CSV_HEADER if c not in header]
    if missing:
        raise ReplayError(
            f"{path}:1: missing columns {missing}; expected header {','.join(ML_CSV_HEADER)}"
        )
    return _read_columns(
        path, sep=",", header_lines=1, n_fields=len(header),
        cols=[header.index(c) for c in ML_CSV_HEADER], names=ML_CSV_HEADER,
        quoting=csv.QUOTE_MINIMAL,
    )  # fmt: skip


def _recbole_header(path: Path) -> list[str]:
    # "user_id:token" -> "user_id": RecBole puts the field type after a colon.
    return [f.split(":", 1)[0].strip() for f in _header_fields(path, "\t")]


def _recbole_ratings(path: Path) -> _Ratings:
    header = _recbole_header(path)
    cols = [
        _column(path, header, _RB_USER, "user id"),
        _column(path, header, _RB_ITEM, "item id"),
        _column(path, header, _RB_RATING, "rating"),
        _column(path, header, _RB_TS, "timestamp"),
    ]
    return _read_columns(
        path, sep="\t", header_lines=1, n_fields=len(header), cols=cols,
        names=[header[c] for c in cols], quoting=csv.QUOTE_NONE,
    )  # fmt: skip


def _read_lines(path: Path, encoding: str) -> list[tuple[int, str]]:
    """(line number, text) of the non-blank lines of a small companion file."""
    try:
        text = path.read_text(encoding=encoding)
    except (OSError, UnicodeDecodeError) as err:
        raise ReplayError(f"{path}: cannot read: {err}") from err
    return [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _int_or_none(value: str | None) -> int | None:
    # Unparseable optional fields (RecBole writes "V" or "unkonwn" as a year) are unknown.
    try:
        return int(value.strip()) if value is not None else None
    except ValueError:
        return None


def _year(date: str | None, title: str | None) -> int | None:
    """The year of a release date such as "01-Jan-1995", else of a title ending "(1995)"."""
    if date and len(date) >= 4 and date[-4:].isdigit():
        return int(date[-4:])
    match = _YEAR_IN_TITLE.search(title or "")
    return int(match.group(1)) if match else None


def _user_profile(
    event_id: str, ts: float, user_id: str, age: int | None = None,
    gender: str | None = None, occupation: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    event: dict[str, Any] = {"type": "user_profile", "event_id": event_id, "ts": ts}
    extra = {"user_id": user_id, "age": age, "gender": gender, "occupation": occupation}
    event.update((k, v) for k, v in extra.items() if v is not None and v != "")
    return event


def _item_profile(
    event_id: str, ts: float, item_id: str, title: str | None = None,
    genres: Sequence[str] = (), year: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    event: dict[str, Any] = {"type": "item_profile", "event_id": event_id, "ts": ts}
    event["item_id"] = item_id
    if title:
        event["title"] = title
    event["genres"] = list(genres)
    if year is not None:
        event["year"] = year
    return event


def _ml100k_users(path: Path, ts: float) -> Iterator[dict[str, Any]]:
    for n, line in _read_lines(path, "latin-1"):
        fields = line.split("|")
        if len(fields) != 5:
            raise ReplayError(
                f"{path}:{n}: expected 5 fields id|age|gender|occupation|zip, found {len(fields)}"
            )
        uid, age, gender, occupation, _zip = fields
        yield _user_profile(
            f"{path.name}:user_profile:{n}", ts, uid, _int_or_none(age), gender, occupation
        )


def _ml100k_genres(folder: Path) -> tuple[str, ...]:
    path = folder / "u.genre"
    if not path.is_file():
        return ML100K_GENRES
    names: dict[int, str] = {}
    for n, line in _read_lines(path, "latin-1"):
        name, _, index = line.rpartition("|")
        if not name or not index.strip().isdigit():
            raise ReplayError(f"{path}:{n}: expected 'name|index', found {line!r}")
        names[int(index)] = name
    if sorted(names) != list(range(len(names))):
        raise ReplayError(f"{path}: genre indexes are not 0..{len(names) - 1}")
    return tuple(names[i] for i in range(len(names)))


def _ml100k_items(path: Path, ts: float) -> Iterator[dict[str, Any]]:
    genres = _ml100k_genres(path.parent)
    n_fields = 5 + len(genres)
    for n, line in _read_lines(path, "latin-1"):
        fields = line.split("|")
        if len(fields) != n_fields:
            raise ReplayError(
                f"{path}:{n}: expected {n_fields} fields (id|title|release date|video release "
                f"date|IMDb URL|{len(genres)} genre flags), found {len(fields)}"
            )
        iid, title, date = fields[0], fields[1], fields[2]
        flags = fields[5:]
        names = [g for g, flag in zip(genres, flags, strict=True) if flag.strip() == "1"]
        yield _item_profile(
            f"{path.name}:item_profile:{n}", ts, iid, title, names, _year(date, title)
        )


def _ml_csv_items(path: Path, ts: float) -> Iterator[dict[str, Any]]:
    rows: list[tuple[int, list[str]]] = []
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader, [])]
            missing = [c for c in ("movieId", "title", "genres") if c not in header]
            if missing:
                raise ReplayError(
                    f"{path}:1: missing columns {missing}; expected movieId,title,genres"
                )
            # line_num after a row is its last line (titles may be quoted, even multi-line).
            rows = [(reader.line_num, row) for row in reader if row]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ReplayError(f"{path}: cannot read: {err}") from err
    i, t, g = (header.index(c) for c in ("movieId", "title", "genres"))
    for n, row in rows:
        if len(row) != len(header):
            raise ReplayError(f"{path}:{n}: expected {len(header)} fields, found {len(row)}")
    for n, row in rows:
        title = row[t].strip()
        genres = [x for x in row[g].split("|") if x and x != "(no genres listed)"]
        yield _item_profile(
            f"{path.name}:item_profile:{n}", ts, row[i], title, genres, _year(None, title)
        )


def _recbole_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    header = _recbole_header(path)
    rows = []
    for n, line in _read_lines(path, "utf-8")[1:]:
        fields = line.split("\t")
        if len(fields) != len(header):
            raise ReplayError(
                f"{path}:{n}: expected {len(header)} tab-separated fields, found {len(fields)}"
            )
        rows.append((n, fields))
    return header, rows


def _optional(header: list[str], aliases: Sequence[str]) -> int | None:
    lowered = [h.lower() for h in header]
    return next((lowered.index(a) for a in aliases if a in lowered), None)


def _recbole_users(path: Path, ts: float) -> Iterator[dict[str, Any]]:
    header, rows = _recbole_rows(path)
    u = _column(path, header, _RB_USER, "user id")
    a, g, o = (_optional(header, x) for x in (_RB_AGE, _RB_GENDER, _RB_OCCUPATION))
    for n, f in rows:
        yield _user_profile(
            f"{path.name}:user_profile:{n}", ts, f[u],
            _int_or_none(f[a]) if a is not None else None,
            f[g] if g is not None else None,
            f[o] if o is not None else None,
        )  # fmt: skip


def _recbole_items(path: Path, ts: float) -> Iterator[dict[str, Any]]:
    header, rows = _recbole_rows(path)
    i = _column(path, header, _RB_ITEM, "item id")
    t, y, g = (_optional(header, x) for x in (_RB_TITLE, _RB_YEAR, _RB_GENRES))
    for n, f in rows:
        title = f[t].strip() if t is not None else None
        year = _int_or_none(f[y]) if y is not None else None
        # token_seq fields are space-separated (genre names have no spaces).
        genres = f[g].split() if g is not None else []
        yield _item_profile(
            f"{path.name}:item_profile:{n}", ts, f[i], title, genres,
            year if year is not None else _year(None, title),
        )  # fmt: skip


def _bare_profiles(
    ids: pa.ChunkedArray, kind: str, dataset: str, ts: float
) -> Iterator[dict[str, Any]]:
    """One profile per distinct id, in order of first appearance (no companion file)."""
    field = "user_id" if kind == "user_profile" else "item_id"
    # Arrow's unique keeps first-appearance order (a test checks it).
    for n, value in enumerate(pa_compute.unique(ids).to_pylist(), 1):
        yield {"type": kind, "event_id": f"{dataset}:{kind}:{n}", "ts": ts, field: value}


def _dataset(source: ReplaySource) -> Iterator[Record]:
    path, fmt = source.path, source.format
    readers = {
        "movielens-100k": _ml100k_ratings,
        "movielens-csv": _ml_csv_ratings,
        "recbole": _recbole_ratings,
    }
    ratings = readers[fmt](path)
    # Profiles carry the first interaction's time: early enough to precede everything they
    # announce, and a real time (not 0), so they pass the ts sanity check.
    ts0 = float(ratings.ts.min()) if len(ratings.ts) else Limits().ts_min
    profiles: list[Record] = []
    if source.profiles:
        users: Iterable[dict[str, Any]]
        items: Iterable[dict[str, Any]]
        if fmt == "movielens-100k":
            users = _ml100k_users(path.parent / "u.user", ts0)
            items = _ml100k_items(path.parent / "u.item", ts0)
        elif fmt == "movielens-csv":
            users = _bare_profiles(ratings.users, "user_profile", path.name, ts0)
            items = _ml_csv_items(path.parent / "movies.csv", ts0)
        else:
            user_file, item_file = path.with_suffix(".user"), path.with_suffix(".item")
            users = (
                _recbole_users(user_file, ts0)
                if user_file.is_file()
                else _bare_profiles(ratings.users, "user_profile", path.name, ts0)
            )
            items = (
                _recbole_items(item_file, ts0)
                if item_file.is_file()
                else _bare_profiles(ratings.items, "item_profile", path.name, ts0)
            )
        # Materialised before the first yield so a broken companion fails the replay
        # before anything was published.
        profiles = [*users, *items]
    return _chain(profiles, _sorted_ratings(ratings, path.name))


def _chain(first: list[Record], rest: Iterator[Record]) -> Iterator[Record]:
    yield from first
    yield from rest


def _sorted_ratings(r: _Ratings, dataset: str) -> Iterator[Record]:
    # Stable, so equal timestamps keep file order (a replay is deterministic).
    order = np.argsort(r.ts, kind="stable")
    for start in range(0, len(order), _CHUNK):
        idx = order[start : start + _CHUNK]
        users = r.users.take(idx).to_pylist()
        items = r.items.take(idx).to_pylist()
        ratings = r.ratings[idx].tolist()
        ts = r.ts[idx].tolist()
        lines = r.lines[idx].tolist()
        for u, i, rating, t, line in zip(users, items, ratings, ts, lines, strict=True):
            yield {
                "type": "rating",
                "event_id": f"{dataset}:rating:{line}",
                "user_id": u,
                "item_id": i,
                "ts": t,
                "rating": rating,
            }


# --------------------------------------------------------------------------- events


def record_ts(record: Record) -> float | None:
    """The event time of a record: a finite numeric ``ts`` of a dict, else None.

    >>> record_ts({"ts": 1.7e9}), record_ts({"ts": "soon"}), record_ts(b"{broken")
    (1700000000.0, None, None)
    """
    if isinstance(record, dict):
        ts = record.get("ts")
        if isinstance(ts, int | float) and not isinstance(ts, bool) and math.isfinite(ts):
            return float(ts)
    return None


def _events(path: Path) -> Iterator[Record]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return _jsonl_events(path)
    if suffix == ".parquet":
        return _parquet_events(path)
    if suffix == ".csv":
        return _csv_events(path)
    head = _head(path, 1)
    return _jsonl_events(path) if head and head[0].lstrip().startswith("{") else _csv_events(path)


def _parse_line(line: bytes) -> Record:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return line
    # Valid JSON but not an object (e.g. a list) is no event either: raw, for dead-lettering.
    return obj if isinstance(obj, dict) else line


def _jsonl_events(path: Path) -> Iterator[Record]:
    """JSON lines. The first pass keeps only each line's offset, length and sort key (not
    the parsed object), so even tens of millions of events sort in little memory.

    Sort key: a record's own ``ts`` when it has a finite numeric one, else the key of the
    line before it (``-inf`` at the start). An unparseable line or a record without a usable
    ts thus stays right after the line it followed in the file (stable sort)."""
    offsets, lengths, keys = array("q"), array("q"), array("d")
    last = -math.inf
    try:
        with path.open("rb") as fh:
            pos = 0
            for raw in fh:
                line = raw.rstrip(b"\r\n")
                if line.strip():  # blank lines separate nothing and carry no event
                    ts = record_ts(_parse_line(line))
                    last = ts if ts is not None else last
                    offsets.append(pos)
                    lengths.append(len(line))
                    keys.append(last)
                pos += len(raw)
    except OSError as err:
        raise ReplayError(f"{path}: cannot read: {err.strerror or err}") from err
    return _jsonl_in_order(path, offsets, lengths, np.frombuffer(keys, dtype=np.float64))


def _jsonl_in_order(
    path: Path, offsets: array[int], lengths: array[int], keys: np.ndarray
) -> Iterator[Record]:
    if not offsets:
        return
    # Event logs are usually in time order already: then no sort (and no index list).
    in_order = bool(np.all(keys[1:] >= keys[:-1]))
    order: Iterable[int] = (
        range(len(offsets)) if in_order else np.argsort(keys, kind="stable").tolist()
    )
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        for i in order:
            start = offsets[i]
            yield _parse_line(mm[start : start + lengths[i]])


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA or (isinstance(value, str) and value == ""):
        return True
    return isinstance(value, float) and math.isnan(value)


def _number(value: Any) -> Any:
    """A numeric cell as int or float; anything else unchanged (validation reports it)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return value
    return number if math.isfinite(number) else value


def _clean_context(value: Any) -> Any:
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return value  # not JSON: left for validation to reject with a reason
    if isinstance(value, dict):
        return {
            k: _number(v) if k in _CTX_NUMERIC else v for k, v in value.items() if not _missing(v)
        }
    return value


def _clean_row(row: Mapping[Any, Any]) -> dict[str, Any]:
    """A CSV/Parquet row as an event dict: missing cells dropped, ``context.x`` columns
    nested, numbers parsed, integer ids as strings, genres from "A|B" or a JSON list."""
    out: dict[str, Any] = {}
    context: dict[str, Any] = {}
    for name, value in row.items():
        if _missing(value):
            continue
        key = str(name)
        if key.startswith("context."):
            sub = key[len("context.") :]
            context[sub] = _number(value) if sub in _CTX_NUMERIC else value
        elif key == "context":
            out[key] = _clean_context(value)
        elif key in _NUMERIC:
            out[key] = _number(value)
        elif key in _IDS and isinstance(value, int) and not isinstance(value, bool):
            out[key] = str(value)
        elif key == "genres" and isinstance(value, str):
            out[key] = _genres(value)
        else:
            out[key] = value
    if context:
        base = out.get("context")
        out["context"] = {**base, **context} if isinstance(base, dict) else context
    if isinstance(out.get("context"), dict) and not out["context"]:
        del out["context"]
    return out


def _genres(value: str) -> Any:
    if value.lstrip().startswith("["):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return [g for g in value.split("|") if g]


def _require_columns(path: Path, columns: Sequence[str]) -> None:
    missing = [c for c in ("type", "event_id") if c not in columns]
    if missing:
        raise ReplayError(
            f"{path}:1: missing required columns {missing} (columns: {list(columns)})"
        )


def _column_keys(ts: pd.Series | None, n: int) -> np.ndarray:
    if ts is None:
        return np.full(n, -math.inf)
    values = pd.to_numeric(ts, errors="coerce").astype("float64")
    values[~np.isfinite(values)] = np.nan
    return values.ffill().fillna(-math.inf).to_numpy()


def _csv_events(path: Path) -> Iterator[Record]:
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            header = next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ReplayError(f"{path}: cannot read: {err}") from err
    _require_columns(path, header)
    try:
        df = pd.read_csv(
            path, header=None, skiprows=1, dtype=str, keep_default_na=False, na_filter=False,
            skip_blank_lines=False, encoding="utf-8",
        )  # fmt: skip
    except pd.errors.EmptyDataError:
        return iter(())
    except pd.errors.ParserError as err:
        raise ReplayError(_parser_message(path, err)) from err
    except (OSError, UnicodeDecodeError) as err:
        raise ReplayError(f"{path}: cannot read: {err}") from err
    if df.shape[1] > len(header):
        extra = (df.iloc[:, len(header) :] != "").any(axis=1).to_numpy()
        row = int(np.flatnonzero(extra)[0]) if extra.any() else 0
        raise ReplayError(
            f"{path}:{row + 2}: more fields than the {len(header)} columns of the header"
        )
    df.columns = header[: df.shape[1]]
    df = df[(df != "").any(axis=1)]  # blank lines
    keys = _column_keys(df["ts"] if "ts" in df.columns else None, len(df))
    order = np.argsort(keys, kind="stable")
    return _rows_in_order(df, order)


def _rows_in_order(df: pd.DataFrame, order: np.ndarray) -> Iterator[Record]:
    for start in range(0, len(order), _CHUNK):
        for row in df.iloc[order[start : start + _CHUNK]].to_dict("records"):
            yield _clean_row(row)


def _parquet_events(path: Path) -> Iterator[Record]:
    import pyarrow.parquet as pq  # imported here: only events files need it

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as err:
        raise ReplayError(f"{path}: cannot read as Parquet: {err}") from err
    _require_columns(path, table.column_names)
    ts = table.column("ts").to_pandas() if "ts" in table.column_names else None
    order = np.argsort(_column_keys(ts, table.num_rows), kind="stable")
    return _table_in_order(table, order)


def _table_in_order(table: Any, order: np.ndarray) -> Iterator[Record]:
    for start in range(0, len(order), _CHUNK):
        for row in table.take(order[start : start + _CHUNK]).to_pylist():
            yield _clean_row(row)


# --------------------------------------------------------------------------- pacing


def paced(
    records: Iterable[Record],
    speed: float | None,
    *,
    max_sleep: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Record]:
    """Pass records through, sleeping so event-time gaps last ``1/speed`` as long.

    ``speed`` None or 0 means as fast as possible. Times are kept against the first timed
    record (not gap by gap), so sleep overshoot does not accumulate over a long replay.
    ``max_sleep`` caps one wait in wall-clock seconds (idle nights of a dataset); after a
    capped wait the schedule restarts from that record. Records without a ts (raw lines)
    pass without waiting.

    >>> slept = []
    >>> recs = [{"ts": 100.0}, b"raw", {"ts": 110.0}, {"ts": 130.0}]
    >>> out = list(paced(recs, 10, clock=lambda: 0.0, sleep=slept.append))
    >>> out == recs, slept
    (True, [1.0, 3.0])
    """
    if not speed:
        yield from records
        return
    if speed < 0:
        raise ValueError(f"speed must be positive, got {speed}")
    wall0: float | None = None
    event0 = 0.0
    for record in records:
        ts = record_ts(record)
        if ts is not None:
            if wall0 is None:
                wall0, event0 = clock(), ts
            else:
                wait = wall0 + (ts - event0) / speed - clock()
                if max_sleep is not None and wait > max_sleep:
                    sleep(max_sleep)
                    wall0, event0 = clock(), ts
                elif wait > 0:
                    sleep(wait)
        yield record
