"""RecBole atomic files: ``NAME.inter`` with optional ``NAME.user`` / ``NAME.item``.

Headers name each field and its type (``user_id:token``); the columns are found by name,
under the aliases below. Without a ``.user`` (or ``.item``) file a bare profile is made for
each id in order of first appearance.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = Path(tmp) / "ml.inter"
...     _ = path.write_text("user_id:token\\titem_id:token\\trating:float\\ttimestamp:float\\n"
...                         "1\\t2\\t4\\t900\\n")
...     [r["type"] for r in records(path, profiles=True)]
['user_profile', 'item_profile', 'rating']
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from producers.replay.columns import Ratings, read_columns
from producers.replay.dataset import (
    RatingsCheck,
    bare_profiles,
    dataset_records,
    item_profile,
    user_profile,
)
from producers.replay.files import (
    ReplayError,
    column,
    header_fields,
    int_or_none,
    optional_column,
    read_lines,
    year_of,
)
from stream.kafka.publisher import Record

__all__ = ["companions", "records"]

# Header aliases for RecBole atomic files (field names before ":type"), first match wins.
_USER = ("user_id", "uid", "user", "userid")
_ITEM = ("item_id", "iid", "item", "itemid", "movie_id", "movieid")
_RATING = ("rating", "score", "label", "ratings")
_TS = ("timestamp", "ts", "time", "datetime", "date")
_AGE = ("age",)
_GENDER = ("gender", "sex")
_OCCUPATION = ("occupation", "job")
_TITLE = ("movie_title", "title", "name", "item_name")
_YEAR = ("release_year", "year")
_GENRES = ("class", "genre", "genres", "categories", "category")


def companions(path: Path) -> list[tuple[Path, bool]]:
    """(file, required) companions holding the profiles: both optional."""
    return [(path.with_suffix(".user"), False), (path.with_suffix(".item"), False)]


def records(path: Path, profiles: bool, check: RatingsCheck | None = None) -> Iterator[Record]:
    """Users and items (when ``profiles``), then the sorted interactions."""
    return dataset_records(path, _ratings(path), _profiles if profiles else None, check)


def _header(path: Path) -> list[str]:
    # "user_id:token" -> "user_id": RecBole puts the field type after a colon.
    return [f.split(":", 1)[0].strip() for f in header_fields(path, "\t")]


def _ratings(path: Path) -> Ratings:
    header = _header(path)
    cols = [
        column(path, header, _USER, "user id"),
        column(path, header, _ITEM, "item id"),
        column(path, header, _RATING, "rating"),
        column(path, header, _TS, "timestamp"),
    ]
    return read_columns(
        path, sep="\t", header_lines=1, n_fields=len(header), cols=cols,
        names=[header[c] for c in cols], quoting=csv.QUOTE_NONE,
    )  # fmt: skip


def _profiles(path: Path, ratings: Ratings, ts: float) -> Iterator[dict[str, Any]]:
    user_file, item_file = path.with_suffix(".user"), path.with_suffix(".item")
    if user_file.is_file():
        yield from _users(user_file, ts)
    else:
        yield from bare_profiles(ratings.users, "user_profile", path.name, ts)
    if item_file.is_file():
        yield from _items(item_file, ts)
    else:
        yield from bare_profiles(ratings.items, "item_profile", path.name, ts)


def _rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    header = _header(path)
    rows = []
    for n, line in read_lines(path, "utf-8")[1:]:
        fields = line.split("\t")
        if len(fields) != len(header):
            raise ReplayError(
                f"{path}:{n}: expected {len(header)} tab-separated fields, found {len(fields)}"
            )
        rows.append((n, fields))
    return header, rows


def _users(path: Path, ts: float) -> Iterator[dict[str, Any]]:
    header, rows = _rows(path)
    u = column(path, header, _USER, "user id")
    a, g, o = (optional_column(header, x) for x in (_AGE, _GENDER, _OCCUPATION))
    for n, f in rows:
        yield user_profile(
            f"{path.name}:user_profile:{n}", ts, f[u],
            int_or_none(f[a]) if a is not None else None,
            f[g] if g is not None else None,
            f[o] if o is not None else None,
        )  # fmt: skip


def _items(path: Path, ts: float) -> Iterator[dict[str, Any]]:
    header, rows = _rows(path)
    i = column(path, header, _ITEM, "item id")
    t, y, g = (optional_column(header, x) for x in (_TITLE, _YEAR, _GENRES))
    for n, f in rows:
        title = f[t].strip() if t is not None else None
        year = int_or_none(f[y]) if y is not None else None
        # token_seq fields are space-separated (genre names have no spaces).
        genres = f[g].split() if g is not None else []
        yield item_profile(
            f"{path.name}:item_profile:{n}", ts, f[i], title, genres,
            year if year is not None else year_of(None, title),
        )  # fmt: skip
