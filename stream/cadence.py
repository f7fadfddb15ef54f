"""A trigger due after N messages or S seconds, whichever comes first.

The consumer checkpoints on one (``consumer.checkpoint_every_*``) and publishes its model
state on another (``serving.publish_every_*``).

>>> cadence = Cadence(every_events=100, every_seconds=60)
>>> cadence.add(99); cadence.due()
False
>>> cadence.add(1); cadence.due()
True
>>> cadence.reset(); cadence.due()
False
"""

from __future__ import annotations

import time

__all__ = ["Cadence"]


class Cadence:
    """Due once ``every_events`` messages were added or ``every_seconds`` have passed
    since the last :meth:`reset` (or since it was made)."""

    def __init__(self, every_events: int, every_seconds: float) -> None:
        self.every_events = every_events
        self.every_seconds = every_seconds
        self.reset()

    def reset(self) -> None:
        self._messages = 0
        self._since = time.monotonic()

    def add(self, messages: int) -> None:
        self._messages += messages

    def due(self) -> bool:
        return (
            self._messages >= self.every_events
            or time.monotonic() - self._since >= self.every_seconds
        )
