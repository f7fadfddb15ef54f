"""Whether a client can reach its brokers, from librdkafka's error callbacks.

librdkafka reports a broker that went away many times a second (one line per connection
attempt, per client): :class:`BrokerHealth` logs the first error of a kind and then at most
one summary line per ``log_every_seconds``, counts every error, and remembers since when no
broker has been reachable (``_ALL_BROKERS_DOWN``, transport errors) until :meth:`reachable`
is called after a successful request.

>>> from confluent_kafka import KafkaError
>>> h = BrokerHealth(log_every_seconds=60)
>>> h.up, h.errors
(True, 0)
>>> h.on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN))
>>> h.up, h.errors, h.down_for() >= 0
(False, 1, True)
>>> h.reachable()
>>> h.up, h.down_for()
(True, 0.0)
"""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import KafkaError

log = logging.getLogger(__name__)

# Errors that mean no broker answers (as opposed to a refused request).
_UNREACHABLE = frozenset({KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT})


class BrokerHealth:
    """The ``error_cb`` of a client (or of several): rate-limited logs, counts, broker loss."""

    def __init__(self, log_every_seconds: float = 10.0) -> None:
        self.log_every_seconds = log_every_seconds
        self.errors = 0
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._logged_at: dict[int, float] = {}
        self._suppressed: dict[int, int] = {}

    @property
    def up(self) -> bool:
        return self._down_since is None

    def down_for(self) -> float:
        """Seconds since no broker has been reachable (0 while one is)."""
        since = self._down_since
        return 0.0 if since is None else time.monotonic() - since

    def reachable(self) -> None:
        """A request succeeded: a broker answers again."""
        if self._down_since is not None:
            log.info("Kafka broker reachable again after %.1fs", self.down_for())
        self._down_since = None

    def on_error(self, err: KafkaError) -> None:
        """librdkafka's ``error_cb`` (called on the client's poll thread)."""
        now = time.monotonic()
        with self._lock:
            self.errors += 1
            code = err.code()
            if code in _UNREACHABLE and self._down_since is None:
                self._down_since = now
            last = self._logged_at.get(code)
            if last is not None and now - last < self.log_every_seconds:
                self._suppressed[code] = self._suppressed.get(code, 0) + 1
                return
            self._logged_at[code] = now
            again = self._suppressed.pop(code, 0)
        more = f" ({again} more like it since the last line)" if again else ""
        log.error("Kafka client error: %s%s", err.str(), more)
