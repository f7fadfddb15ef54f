"""MovieLens CSV (ml-latest, ml-25m...): ``ratings.csv`` (``userId,movieId,rating,timestamp``)
with ``movies.csv`` beside it. There is no file of users: a bare profile is made for each
user id in order of first appearance.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = Path(tmp) / "ratings.csv"
...     _ = path.write_text("userId,movieId,rating,timestamp\\n1,31,2.5,1260759144\\n")
...     [r["rating"] for r in records(path, profiles=False)]
[2.5]
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from producers.replay.columns import Ratings, read_columns
from producers.replay.dataset import RatingsCheck, bare_profiles, dataset_records, item_profile
from producers.replay.files import ReplayError, header_fields, year_of
from stream.kafka.publisher import Record

__all__ = ["ML_CSV_HEADER", "companions", "records"]

ML_CSV_HEADER = ("userId", "movieId", "rating", "timestamp")


def companions(path: Path) -> list[tuple[Path, bool]]:
    """(file, required) companions holding the profiles."""
    return [(path.parent / "movies.csv", True)]


def records(path: Path, profiles: bool, check: RatingsCheck | None = None) -> Iterator[Record]:
    """Bare users, items of movies.csv (when ``profiles``), then the sorted ratings."""
    return dataset_records(path, _ratings(path), _profiles if profiles else None, check)


def _ratings(path: Path) -> Ratings:
    header = [h.strip('"') for h in header_fields(path, ",")]
    missing = [c for c in ML_CSV_HEADER if c not in header]
    if missing:
        raise ReplayError(
            f"{path}:1: missing columns {missing}; expected header {','.join(ML_CSV_HEADER)}"
        )
    return read_columns(
        path, sep=",", header_lines=1, n_fields=len(header),
        cols=[header.index(c) for c in ML_CSV_HEADER], names=ML_CSV_HEADER,
        quoting=csv.QUOTE_MINIMAL,
    )  # fmt: skip


def _profiles(path: Path, ratings: Ratings, ts: float) -> Iterator[dict[str, Any]]:
    yield from bare_profiles(ratings.users, "user_profile", path.name, ts)
    yield from _items(path.parent / "movies.csv", ts)


def _items(path: Path, ts: float) -> Iterator[dict[str, Any]]:
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
        yield item_profile(
            f"{path.name}:item_profile:{n}", ts, row[i], title, genres, year_of(None, title)
        )
