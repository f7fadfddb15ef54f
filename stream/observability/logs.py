"""Logging setup: human-readable lines, or JSON lines for a log collector.

``setup_logging("INFO", json=True)`` writes one JSON object per line to stderr with ``ts``
(ISO 8601, UTC), ``level``, ``logger`` and ``msg``, plus every field passed with ``extra=``
(and ``exc`` when there is a traceback). Field names of counts are the metric names without
the ``feedback_loop_`` prefix (``events_consumed_total``, ``consumer_lag_messages``...), so a
log line and a Prometheus series say the same thing the same way.

>>> import io, logging
>>> handler = logging.StreamHandler(io.StringIO())
>>> handler.setFormatter(JsonFormatter())
>>> log = logging.getLogger("doctest.logs")
>>> log.addHandler(handler); log.propagate = False
>>> log.warning("lag %d", 7, extra={"consumer_lag_messages": 7})
>>> line = orjson.loads(handler.stream.getvalue())
>>> line["level"], line["logger"], line["msg"], line["consumer_lag_messages"]
('WARNING', 'doctest.logs', 'lag 7', 7)
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from stream.learner import Counts

HUMAN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)


def record_extra(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a call passed with ``extra=``."""
    return {k: v for k, v in record.__dict__.items() if k not in _RECORD_ATTRS}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, msg, then the ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record_extra(record).items():
            out.setdefault(key, value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(
            out, default=str, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
        ).decode()


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root handler installed by :func:`setup_logging` (replaced, not stacked, on re-runs).

    It writes to whatever ``sys.stderr`` is when a record is emitted, not when it was made:
    a CLI run inside a test runner that swaps stderr must not leave a handler on a closed
    stream behind.
    """

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass  # always the current sys.stderr


def setup_logging(level: str = "INFO", json: bool = False) -> None:
    """Log to stderr at ``level``: JSON lines when ``json``, else ``HUMAN_FORMAT`` lines.

    The one logging setup of every command. Calling it again replaces the handler it installed
    before; other handlers on the root logger (pytest's, for instance) are left alone.
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    handler = _Handler()
    handler.setFormatter(JsonFormatter() if json else logging.Formatter(HUMAN_FORMAT))
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))


class ProgressLog:
    """The consumer's periodic INFO line: counts since the process started, lag and rate.

    Fields are named after the metrics (``events_consumed_total``, ``events_applied_total``,
    ``events_dead_lettered_total``, ``events_filtered_total``, ``events_duplicate_total``,
    ``consumer_lag_messages``) and hold the same values as this process's ``/metrics``;
    ``events_per_second`` is the consume rate since the previous line.
    """

    def __init__(self, counts: Counts, every_seconds: float = 10.0) -> None:
        self.every_seconds = every_seconds
        self._base = _totals(counts)
        self._last_at = time.monotonic()
        self._last_consumed = counts.consumed

    def due(self) -> bool:
        return time.monotonic() - self._last_at >= self.every_seconds

    def fields(self, counts: Counts, lag: int | None) -> dict[str, Any]:
        now = time.monotonic()
        elapsed = now - self._last_at
        rate = (counts.consumed - self._last_consumed) / elapsed if elapsed > 0 else 0.0
        self._last_at, self._last_consumed = now, counts.consumed
        names = (
            "events_consumed_total",
            "events_applied_total",
            "events_dead_lettered_total",
            "events_filtered_total",
            "events_duplicate_total",
        )
        out: dict[str, Any] = {
            name: value - base
            for name, value, base in zip(names, _totals(counts), self._base, strict=True)
        }
        out["consumer_lag_messages"] = lag
        out["events_per_second"] = round(rate, 1)
        return out

    def log(self, logger: logging.Logger, counts: Counts, lag: int | None) -> dict[str, Any]:
        """Emit the line now; return its fields."""
        f = self.fields(counts, lag)
        logger.info(
            "progress: consumed %d (%.0f/s), applied %d, dead-lettered %d, filtered %d, "
            "duplicates %d, lag %s",
            f["events_consumed_total"],
            f["events_per_second"],
            f["events_applied_total"],
            f["events_dead_lettered_total"],
            f["events_filtered_total"],
            f["events_duplicate_total"],
            "unknown" if lag is None else lag,
            extra=f,
        )
        return f


def _totals(counts: Counts) -> tuple[int, int, int, int, int]:
    return (
        counts.consumed,
        counts.applied,
        counts.dead_lettered,
        counts.filtered,
        counts.duplicates,
    )
