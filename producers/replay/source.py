"""Which format a file is in, and the :class:`ReplaySource` that reads it.

:func:`open_source` checks everything it can before anything is published (the file, its
format, the companion files that hold its profiles); :meth:`ReplaySource.records` then
reads the file afresh each time, with the same records and ids.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from producers.replay import archive, events, movielens_100k, movielens_csv, recbole
from producers.replay.dataset import RatingsCheck
from producers.replay.files import ReplayError, check_file, head
from producers.replay.movielens_csv import ML_CSV_HEADER
from producers.replay.scale import FORMAT_SCALES, RatingScale, check_fits
from stream.config import Limits
from stream.kafka.publisher import Record

__all__ = ["FORMATS", "ReplaySource", "guess_format", "open_source"]

FORMATS: tuple[str, ...] = ("movielens-100k", "movielens-csv", "recbole", "events", "archive")


@dataclass(frozen=True)
class _Dataset:
    """A dataset format: how to read a file, and which files beside it hold profiles."""

    records: Callable[[Path, bool, RatingsCheck | None], Iterator[Record]]
    companions: Callable[[Path], list[tuple[Path, bool]]]


_DATASETS: dict[str, _Dataset] = {
    "movielens-100k": _Dataset(movielens_100k.records, movielens_100k.companions),
    "movielens-csv": _Dataset(movielens_csv.records, movielens_csv.companions),
    "recbole": _Dataset(recbole.records, recbole.companions),
}


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
    check_file(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".parquet"):
        return "events"
    if suffix == ".inter":
        return "recbole"
    if path.name == "u.data":
        return "movielens-100k"
    lines = head(path)
    if lines:
        first = lines[0].strip()
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
        if all(_four_ints(line) for line in lines):
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


@dataclass(frozen=True)
class ReplaySource:
    """A file to replay; :meth:`records` reads it afresh each time (same records, same ids).

    With ``limits`` (the consumer's), :meth:`records` first checks that every rating of a
    dataset file fits their scale, raising :class:`~producers.replay.scale.RatingScaleError`
    before anything is yielded (files of our own events are not checked: the consumer
    dead-letters an off-scale rating with its reason).
    """

    path: Path
    format: str
    profiles: bool = True
    limits: Limits | None = None

    @property
    def dataset(self) -> str:
        """The prefix of generated event ids: the file name."""
        return self.path.name

    @property
    def rating_scale(self) -> RatingScale | None:
        """The rating scale the format declares (None: the configured scale stands)."""
        return FORMAT_SCALES.get(self.format)

    def checked_against(self, limits: Limits | None) -> ReplaySource:
        """This source, checking its ratings against ``limits`` (None: no check)."""
        return replace(self, limits=limits)

    def records(self) -> Iterator[Record]:
        """Events as dicts (or raw bytes for unparseable lines of an events file) in replay
        order; see :mod:`producers.replay`. Raises :class:`ReplayError` before the first
        record when the file is structurally broken."""
        if self.format == "events":
            return events.records(self.path)
        if self.format == "archive":
            return archive.records(self.path)
        check = None
        if self.limits is not None:
            check = partial(check_fits, limits=self.limits, declared=self.rating_scale)
        return _DATASETS[self.format].records(self.path, self.profiles, check)

    def __iter__(self) -> Iterator[Record]:
        return self.records()


def open_source(
    path: str | Path,
    fmt: str | None = None,
    *,
    profiles: bool = True,
    limits: Limits | None = None,
) -> ReplaySource:
    """A :class:`ReplaySource` for ``path`` (format guessed when ``fmt`` is None), whose
    ratings are checked against ``limits`` when given (see :class:`ReplaySource`).

    Checks now, before anything is published, that the file and the companion files that
    hold its profiles exist (unless ``profiles=False``). Raises :class:`ReplayError`.
    """
    path = Path(path).expanduser()
    if fmt == "archive" or (fmt is None and path.is_dir()):
        archive.check(path)  # a directory of archived events (stream/kafka/archive.py)
        return ReplaySource(path=path, format="archive", profiles=profiles, limits=limits)
    check_file(path)
    if fmt is None:
        fmt = guess_format(path)
    elif fmt not in FORMATS:
        raise ReplayError(f"unknown replay format {fmt!r}; expected one of {FORMATS}")
    if profiles and fmt in _DATASETS:
        for companion, required in _DATASETS[fmt].companions(path):
            if required and not companion.is_file():
                raise ReplayError(
                    f"{path}: {companion.name} not found beside it ({companion}); it holds "
                    "the profiles that announce users and items to the consumer (replay "
                    "without profiles, profiles=False, to send the interactions alone)"
                )
    return ReplaySource(path=path, format=fmt, profiles=profiles, limits=limits)
