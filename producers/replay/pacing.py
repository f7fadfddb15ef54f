"""Replaying at the pace of event time: :func:`paced`, and :func:`record_ts` it keys on."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator

from stream.kafka.publisher import Record

__all__ = ["paced", "record_ts"]


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
