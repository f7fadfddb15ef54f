"""MovieLens 100K: ``u.data`` (tab-separated ``user item rating timestamp``) with ``u.user``
and ``u.item`` beside it, and ``u.genre`` when present (the genre flag columns of u.item).

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as tmp:
...     _ = (Path(tmp) / "u.data").write_text("196\\t242\\t3\\t881250949\\n")
...     [r["event_id"] for r in records(Path(tmp) / "u.data", profiles=False)]
['u.data:rating:1']
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from producers.replay.columns import Ratings, read_columns
from producers.replay.dataset import RatingsCheck, dataset_records, item_profile, user_profile
from producers.replay.files import ReplayError, int_or_none, read_lines, year_of
from stream.kafka.publisher import Record

__all__ = ["ML100K_GENRES", "companions", "records"]

# Genre flag columns of u.item when there is no u.genre beside it.
ML100K_GENRES: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip


def companions(path: Path) -> list[tuple[Path, bool]]:
    """(file, required) companions holding the profiles."""
    return [(path.parent / "u.user", True), (path.parent / "u.item", True)]


def records(path: Path, profiles: bool, check: RatingsCheck | None = None) -> Iterator[Record]:
    """Users of u.user, items of u.item (when ``profiles``), then the sorted ratings."""
    return dataset_records(path, _ratings(path), _profiles if profiles else None, check)


def _ratings(path: Path) -> Ratings:
    return read_columns(
        path, sep="\t", header_lines=0, n_fields=4, cols=(0, 1, 2, 3),
        names=("user id", "item id", "rating", "timestamp"), quoting=csv.QUOTE_NONE,
    )  # fmt: skip


def _profiles(path: Path, _ratings: Ratings, ts: float) -> Iterator[dict[str, Any]]:
    yield from _users(path.parent / "u.user", ts)
    yield from _items(path.parent / "u.item", ts)


def _users(path: Path, ts: float) -> Iterator[dict[str, Any]]:
    for n, line in read_lines(path, "latin-1"):
        fields = line.split("|")
        if len(fields) != 5:
            raise ReplayError(
                f"{path}:{n}: expected 5 fields id|age|gender|occupation|zip, found {len(fields)}"
            )
        uid, age, gender, occupation, _zip = fields
        yield user_profile(
            f"{path.name}:user_profile:{n}", ts, uid, int_or_none(age), gender, occupation
        )


def _genres(folder: Path) -> tuple[str, ...]:
    path = folder / "u.genre"
    if not path.is_file():
        return ML100K_GENRES
    names: dict[int, str] = {}
    for n, line in read_lines(path, "latin-1"):
        name, _, index = line.rpartition("|")
        if not name or not index.strip().isdigit():
            raise ReplayError(f"{path}:{n}: expected 'name|index', found {line!r}")
        names[int(index)] = name
    if sorted(names) != list(range(len(names))):
        raise ReplayError(f"{path}: genre indexes are not 0..{len(names) - 1}")
    return tuple(names[i] for i in range(len(names)))


def _items(path: Path, ts: float) -> Iterator[dict[str, Any]]:
    genres = _genres(path.parent)
    n_fields = 5 + len(genres)
    for n, line in read_lines(path, "latin-1"):
        fields = line.split("|")
        if len(fields) != n_fields:
            raise ReplayError(
                f"{path}:{n}: expected {n_fields} fields (id|title|release date|video release "
                f"date|IMDb URL|{len(genres)} genre flags), found {len(fields)}"
            )
        iid, title, date = fields[0], fields[1], fields[2]
        flags = fields[5:]
        names = [g for g, flag in zip(genres, flags, strict=True) if flag.strip() == "1"]
        yield item_profile(
            f"{path.name}:item_profile:{n}", ts, iid, title, names, year_of(date, title)
        )
