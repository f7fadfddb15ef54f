"""Feeds the drift monitor from the learner's outcomes.

:class:`DriftObserver` turns each outcome into the monitor's observations: the event-type
mix and new-user share of admitted interactions, the click model's detrended regret, the
rating model's squared errors, the first genre of clicked items and the dwell times, in
the order the learner used to feed them (the order of simultaneous alarms depends on it).

>>> from stream.evaluation import Engagement
>>> observer = DriftObserver(DriftMonitor.default())
>>> observer.engagement(Engagement(1, True, True, loss=0.4, naive_loss=0.7, genre="Drama"))
>>> round(observer.regret_trend, 2)  # the first regret is its own average
-0.3
"""

from __future__ import annotations

from stream.drift.monitor import DriftMonitor
from stream.drift.stats import EVENT_TYPE_CODES
from stream.evaluation import Dwelled, Engagement, Rated

__all__ = ["REGRET_TREND_RATE", "DriftObserver"]

_RATING = EVENT_TYPE_CODES["rating"]
_CLICK = EVENT_TYPE_CODES["click"]
_IMPRESSION = EVENT_TYPE_CODES["impression"]
_DWELL = EVENT_TYPE_CODES["dwell"]

# Weight of each new click-model regret in its slow moving average (~20k events memory).
REGRET_TREND_RATE = 5e-5


class DriftObserver:
    """An outcome observer that feeds one :class:`DriftMonitor`."""

    def __init__(self, monitor: DriftMonitor) -> None:
        self.monitor = monitor
        self.regret_trend = 0.0
        self._regret_n = 0

    # Each method observes the input mix first (as the event arrived), then what scoring it
    # showed; inlined rather than a shared helper, as this runs once per event.
    def engagement(self, o: Engagement, /) -> None:
        monitor, index = self.monitor, o.event_index
        if monitor.__class__ is DriftMonitor:  # both observations in one call
            monitor.observe_arrival(_CLICK if o.clicked else _IMPRESSION, o.new_user, index)
        else:
            monitor.observe_event_type(_CLICK if o.clicked else _IMPRESSION, index)
            monitor.observe_new_user(o.new_user, index)
        # The loss relative to the naive click-through rate: a change in the base rate
        # alone moves both, a model that lost its edge moves only one.
        regret = o.loss - o.naive_loss
        # Detrended: against its own slow moving average, so the learning curve (a
        # steady fall) does not hide a later rise.
        # (A plain running mean until it has seen 1 / rate events: no start-up bias.)
        trend = self.regret_trend
        monitor.observe_engagement_loss(regret - trend, index)
        self._regret_n += 1
        self.regret_trend = trend + (regret - trend) * max(REGRET_TREND_RATE, 1.0 / self._regret_n)
        if o.genre is not None:
            monitor.observe_click_genre(monitor.genre_codes.code(o.genre), index)

    def rating(self, o: Rated, /) -> None:
        monitor, index = self.monitor, o.event_index
        if monitor.__class__ is DriftMonitor:
            monitor.observe_arrival(_RATING, o.new_user, index)
        else:
            monitor.observe_event_type(_RATING, index)
            monitor.observe_new_user(o.new_user, index)
        monitor.observe_rating_error(o.squared_error, index)

    def dwell(self, o: Dwelled, /) -> None:
        monitor, index = self.monitor, o.event_index
        if monitor.__class__ is DriftMonitor:
            monitor.observe_arrival(_DWELL, o.new_user, index)
        else:
            monitor.observe_event_type(_DWELL, index)
            monitor.observe_new_user(o.new_user, index)
        monitor.observe_dwell(o.seconds, index)
