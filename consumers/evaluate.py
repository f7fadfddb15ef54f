"""Offline prequential evaluation: the consumer's learner run directly over records.

Records go through the same bytes -> validate -> de-duplicate -> filter -> learn path as in the
consumer, so a file's scores here equal the scores of replaying it through Kafka.

>>> from stream.config import Settings
>>> learner, _ = evaluate_records(Settings(), [b"not json"])
>>> learner.counts.dead_lettered
1
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

import orjson

from consumers.offline_loop import OfflineLoop, RetrainSchedule
from stream.config import Settings
from stream.events import BaseEvent, encode_event
from stream.learner import FeedbackLearner


def record_bytes(record: BaseEvent | dict[str, Any] | bytes) -> bytes:
    """A replay record as the bytes a consumer would read."""
    if isinstance(record, bytes):
        return record
    if isinstance(record, dict):
        return orjson.dumps(record)
    return encode_event(record)


def evaluate_records(
    settings: Settings,
    records: Iterable[BaseEvent | dict[str, Any] | bytes],
    on_progress: Callable[[FeedbackLearner], None] | None = None,
    dead_letters: Path | None = None,
    schedule: RetrainSchedule | None = None,
    on_retrain: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[FeedbackLearner, float]:
    """Apply every record in order; return the learner and the seconds it took.

    With a ``schedule``, batch retrains run in the loop at the points it names
    (:class:`~consumers.offline_loop.OfflineLoop`); ``on_retrain`` hears each one.
    """
    if schedule is not None:
        loop = OfflineLoop(settings, schedule, on_retrain)
        learner, process = loop.learner, loop.process
    else:
        learner = FeedbackLearner(settings)
        process = learner.process
    sink: IO[bytes] | None = open(dead_letters, "wb") if dead_letters else None  # noqa: SIM115
    started = time.perf_counter()
    try:
        for i, record in enumerate(records, 1):
            raw = record_bytes(record)
            rejection = process(raw)
            if rejection is not None and sink is not None:
                sink.write(
                    orjson.dumps(
                        {
                            "kind": rejection.kind,
                            "reason": rejection.reason,
                            "index": i - 1,
                            "value": raw.decode("utf-8", "replace"),
                        }
                    )
                    + b"\n"
                )
            if on_progress is not None and i % 5000 == 0:
                on_progress(learner)
    finally:
        if sink is not None:
            sink.close()
    return learner, time.perf_counter() - started
