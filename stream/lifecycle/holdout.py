"""The champion's side of a retrain: the live models' losses over the last hold-out window.

:class:`HoldoutWindow` observes the learner's outcomes and keeps one slot per interaction
event (a dwell event has no loss but still takes its slot, so the window covers the same
events as the retrainer's hold-out split). Its :meth:`~HoldoutWindow.losses` are compared
with the challenger's on those events.

>>> from stream.evaluation import Dwelled, Engagement, Rated
>>> window = HoldoutWindow(size=2)
>>> window.engagement(Engagement(1, False, True, 0.5, 0.7, None))
>>> window.rating(Rated(2, False, 4.0))
>>> losses = window.losses()
>>> losses.engagement_logloss_sum, losses.engagement_n, losses.rating_se_sum, losses.rating_n
(0.5, 1, 4.0, 1)
>>> losses.engagement_logloss_sq_sum, losses.rating_se_sq_sum  # the spread, for confidence
(0.25, 16.0)
>>> window.dwell(Dwelled(3, False, 10.0))  # pushes the engagement loss out
>>> window.losses().engagement_n
0
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict

from stream.evaluation import Dwelled, Engagement, Rated
from stream.lifecycle.scoring import HoldoutLosses

__all__ = ["NO_LOSS", "HoldoutWindow"]

# Marks a hold-out slot without that kind of loss (a dwell event has neither).
NO_LOSS = -1.0
_NEITHER = (NO_LOSS, NO_LOSS)


class HoldoutWindow:
    """(engagement log loss, rating squared error) of the live models per interaction
    event, NO_LOSS where not applicable, over the last ``size`` events."""

    def __init__(self, size: int) -> None:
        self._slots: deque[tuple[float, float]] = deque(maxlen=size)

    def __len__(self) -> int:
        return len(self._slots)

    # -- OutcomeObserver ------------------------------------------------------------------
    def engagement(self, o: Engagement, /) -> None:
        self._slots.append((o.loss, NO_LOSS))

    def rating(self, o: Rated, /) -> None:
        self._slots.append((NO_LOSS, o.squared_error))

    def dwell(self, _: Dwelled, /) -> None:
        self._slots.append(_NEITHER)

    # -- the champion -----------------------------------------------------------------------
    def losses(self) -> HoldoutLosses:
        """The summed losses over the window (in event order, as the retrainer sums)."""
        ll_sum = se_sum = ll_sq = se_sq = 0.0
        ll_n = se_n = 0
        for ll, se in self._slots:
            if ll != NO_LOSS:
                ll_sum += ll
                ll_sq += ll * ll
                ll_n += 1
            if se != NO_LOSS:
                se_sum += se
                se_sq += se * se
                se_n += 1
        return HoldoutLosses(ll_sum, ll_n, se_sum, se_n, ll_sq, se_sq)

    def champion(self) -> dict[str, float]:
        """:meth:`losses` as the dict a retrain request carries (HoldoutLosses fields)."""
        return asdict(self.losses())
