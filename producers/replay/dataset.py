"""What the three dataset formats share: profile records, and the order of a replay.

A dataset replay yields every user profile, then every item profile (stamped with the
earliest interaction time so they validate and come before what they announce), then the
ratings sorted by time; ties keep file order. Event ids are ``"{file name}:{kind}:{line}"``.

>>> user_profile("u.user:user_profile:1", 1.0, "7", age=24, gender="", occupation=None)
{'type': 'user_profile', 'event_id': 'u.user:user_profile:1', 'ts': 1.0, 'user_id': '7', 'age': 24}
>>> item_profile("movies.csv:item_profile:2", 1.0, "31", "Heat (1995)", ["Crime"], 1995)["genres"]
['Crime']
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pa_compute

from producers.replay.columns import Ratings
from stream.config import Limits
from stream.kafka.publisher import Record

__all__ = [
    "CHUNK",
    "ProfileReader",
    "RatingsCheck",
    "bare_profiles",
    "dataset_records",
    "item_profile",
    "user_profile",
]

# Records are turned into Python objects this many at a time (bounded extra memory).
CHUNK = 65_536

# Profiles of a dataset file: (dataset file, its ratings, profile ts) -> users then items.
ProfileReader = Callable[[Path, Ratings, float], Iterable[dict[str, Any]]]
# A check of a dataset file's ratings that raises ReplayError (e.g. against the consumer's
# rating scale) before anything is yielded.
RatingsCheck = Callable[[Path, Ratings], None]


def user_profile(
    event_id: str, ts: float, user_id: str, age: int | None = None,
    gender: str | None = None, occupation: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A ``user_profile`` record; unknown (None or empty) fields are left out."""
    event: dict[str, Any] = {"type": "user_profile", "event_id": event_id, "ts": ts}
    extra = {"user_id": user_id, "age": age, "gender": gender, "occupation": occupation}
    event.update((k, v) for k, v in extra.items() if v is not None and v != "")
    return event


def item_profile(
    event_id: str, ts: float, item_id: str, title: str | None = None,
    genres: Sequence[str] = (), year: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """An ``item_profile`` record; genres always present, title and year when known."""
    event: dict[str, Any] = {"type": "item_profile", "event_id": event_id, "ts": ts}
    event["item_id"] = item_id
    if title:
        event["title"] = title
    event["genres"] = list(genres)
    if year is not None:
        event["year"] = year
    return event


def bare_profiles(
    ids: pa.ChunkedArray, kind: str, dataset: str, ts: float
) -> Iterator[dict[str, Any]]:
    """One profile per distinct id, in order of first appearance (no companion file)."""
    field = "user_id" if kind == "user_profile" else "item_id"
    # Arrow's unique keeps first-appearance order (a test checks it).
    for n, value in enumerate(pa_compute.unique(ids).to_pylist(), 1):
        yield {"type": kind, "event_id": f"{dataset}:{kind}:{n}", "ts": ts, field: value}


def dataset_records(
    path: Path, ratings: Ratings, profiles: ProfileReader | None, check: RatingsCheck | None = None
) -> Iterator[Record]:
    """The replay of a dataset file: its profiles (unless None), then its sorted ratings;
    ``check`` runs on the ratings first."""
    if check is not None:
        check(path, ratings)
    # Profiles carry the first interaction's time: early enough to precede everything they
    # announce, and a real time (not 0), so they pass the ts sanity check.
    ts0 = float(ratings.ts.min()) if len(ratings.ts) else Limits().ts_min
    # Materialised before the first yield so a broken companion fails the replay before
    # anything was published.
    first: list[Record] = [*profiles(path, ratings, ts0)] if profiles is not None else []
    return _chain(first, _sorted_ratings(ratings, path.name))


def _chain(first: list[Record], rest: Iterator[Record]) -> Iterator[Record]:
    yield from first
    yield from rest


def _sorted_ratings(r: Ratings, dataset: str) -> Iterator[Record]:
    # Stable, so equal timestamps keep file order (a replay is deterministic).
    order = np.argsort(r.ts, kind="stable")
    for start in range(0, len(order), CHUNK):
        idx = order[start : start + CHUNK]
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
