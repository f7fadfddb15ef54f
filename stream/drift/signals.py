"""The alarm every drift detector raises: one :class:`Signal` per detection.

Apart from the detectors and the monitor because both produce it and the retrain policy
consumes it.

>>> s = Signal("dwell_psi", "data", 12_000, 0.08, 0.05)
>>> s.detector, s.kind, s.statistic > s.threshold
('dwell_psi', 'data', True)
"""

from __future__ import annotations

from typing import Literal, NamedTuple

__all__ = ["Kind", "Signal"]

Kind = Literal["concept", "data"]


class Signal(NamedTuple):
    """One alarm of one detector.

    ``statistic`` and ``threshold`` are the detector's values when it fired (see each
    detector's ``statistic`` for what they measure); ``event_index`` is the caller's event
    counter at the observation that completed the block or window.
    """

    detector: str
    kind: str
    event_index: int
    statistic: float
    threshold: float
