"""How a retrain is judged: summed prequential losses, naive references, the quality loss.

Quality is the mean of the available terms among ``logloss / naive_logloss`` (click model,
on clicks and impressions) and ``rmse / naive_rmse`` (rating model), the naive predictors
(:class:`~stream.evaluation.NaiveBaselines`) being the running click-through rate and the
running mean rating, seeded with everything before the window. Lower is better; 1.0 is no
better than naive.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stream.evaluation import BinaryScore, NaiveBaselines, RegressionScore
from stream.events import ClickEvent, ImpressionEvent, InteractionEvent, RatingEvent
from stream.models import ModelBundle

__all__ = [
    "HoldoutLosses",
    "References",
    "naive_references",
    "prequential_losses",
    "quality_loss",
]


@dataclass(frozen=True)
class References:
    """Prequential scores of the naive predictors on a window (None: nothing to score)."""

    logloss: float | None
    rmse: float | None

    @property
    def usable(self) -> bool:
        """Whether at least one quality term can be computed against these references."""
        return bool(self.logloss) or bool(self.rmse)


@dataclass(frozen=True)
class HoldoutLosses:
    """Summed prequential losses of one model over a window.

    ``engagement_*`` covers click and impression events (log loss of the click
    probability), ``rating_*`` rating events (squared error of the predicted rating).
    """

    engagement_logloss_sum: float
    engagement_n: int
    rating_se_sum: float
    rating_n: int

    def quality(self, refs: References) -> float:
        """:func:`quality_loss` of these losses against ``refs``."""
        return quality_loss(
            self.engagement_logloss_sum,
            self.engagement_n,
            self.rating_se_sum,
            self.rating_n,
            refs,
        )



def quality_loss(
    engagement_logloss_sum: float,
    engagement_n: int,
    rating_se_sum: float,
    rating_n: int,
    refs: References,
) -> float:
    """Mean of ``logloss / refs.logloss`` and ``rmse / refs.rmse`` over the available terms.

    A term is available when the model scored at least one such event and the reference is
    positive. Lower is better; about 1.0 means no better than the naive predictors.

    >>> refs = References(logloss=0.4, rmse=1.0)
    >>> round(quality_loss(30.0, 100, 64.0, 100, refs), 6)  # (0.3 / 0.4 + 0.8 / 1.0) / 2
    0.775
    >>> round(quality_loss(30.0, 100, 0.0, 0, refs), 6)  # no ratings: the click term only
    0.75
    >>> quality_loss(0.0, 0, 0.0, 0, refs)
    Traceback (most recent call last):
    ...
    ValueError: no quality term available: the window has no scored click/impression or rating
    """
    terms: list[float] = []
    if engagement_n > 0 and refs.logloss:
        terms.append(engagement_logloss_sum / engagement_n / refs.logloss)
    if rating_n > 0 and refs.rmse:
        terms.append(math.sqrt(rating_se_sum / rating_n) / refs.rmse)
    if not terms:
        raise ValueError(
            "no quality term available: the window has no scored click/impression or rating"
        )
    return sum(terms) / len(terms)


def naive_references(
    window: Sequence[InteractionEvent], history: Iterable[InteractionEvent] = ()
) -> References:
    """Prequential scores of the naive predictors over ``window``.

    The predictors are those of :class:`~stream.evaluation.NaiveBaselines`, seeded with
    ``history`` (the events before the window) so that they are meaningful from the
    window's first event, then updated after every event as the learner's own baselines
    are. A rating seen before any other is not scored (there is no mean yet).

    >>> from stream.events import ClickEvent, ImpressionEvent, RatingEvent
    >>> kw = dict(user_id="u", item_id="i", ts=1.7e9)
    >>> history = [ClickEvent(event_id="c", **kw), RatingEvent(event_id="r", rating=4, **kw)]
    >>> window = [ImpressionEvent(event_id="m", **kw), RatingEvent(event_id="s", rating=2, **kw)]
    >>> refs = naive_references(window, history)
    >>> round(refs.logloss, 4), refs.rmse  # P(click) = 1.5 / 2; the mean rating is 4
    (1.3863, 2.0)
    """
    naive = NaiveBaselines()
    for e in history:
        if isinstance(e, RatingEvent):
            naive.observe_rating(e.rating)
        elif isinstance(e, ClickEvent | ImpressionEvent):
            naive.observe_engagement(isinstance(e, ClickEvent))
    for e in window:
        if isinstance(e, RatingEvent):
            naive.score_rating(e.rating)
        elif isinstance(e, ClickEvent | ImpressionEvent):
            naive.score_engagement(isinstance(e, ClickEvent))
    return References(logloss=naive.click_score.logloss, rmse=naive.rating_score.rmse)


def prequential_losses(
    bundle: ModelBundle,
    events: Iterable[InteractionEvent],
    users: Mapping[str, Mapping[str, Any]],
    items: Mapping[str, Mapping[str, Any]],
) -> HoldoutLosses:
    """Score then learn every event with ``bundle`` (which it updates); sum the losses.

    This is what the live learner does per event (with the same score accumulators), so
    the result of a bundle that has run the whole stream is directly comparable to a
    champion's :class:`HoldoutLosses`.
    """
    clicks, ratings = BinaryScore(), RegressionScore()
    learn = bundle.learn
    for e in events:
        pred = learn(e, users, items, True)
        if pred is None:
            continue
        if isinstance(e, RatingEvent):
            ratings.update(e.rating, pred)
        else:
            clicks.update(isinstance(e, ClickEvent), pred)
    return HoldoutLosses(clicks.logloss_sum, clicks.n, ratings.squared_error_sum, ratings.n)
