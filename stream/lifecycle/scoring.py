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
    "improvement_confidence",
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
    probability), ``rating_*`` rating events (squared error of the predicted rating). The
    sums of squares give the spread of the per-event losses, hence the confidence of a
    comparison (:func:`improvement_confidence`); 0.0 when unknown (older requests).
    """

    engagement_logloss_sum: float
    engagement_n: int
    rating_se_sum: float
    rating_n: int
    engagement_logloss_sq_sum: float = 0.0
    rating_se_sq_sum: float = 0.0

    @classmethod
    def from_dict(cls, champion: Mapping[str, float] | None) -> HoldoutLosses | None:
        """The losses a retrain request carries (None or empty: no champion).

        >>> HoldoutLosses.from_dict({"engagement_logloss_sum": 3.0, "engagement_n": 10,
        ...                          "rating_se_sum": 0.0, "rating_n": 0}).engagement_n
        10
        """
        if not champion:
            return None
        return cls(
            engagement_logloss_sum=float(champion["engagement_logloss_sum"]),
            engagement_n=int(champion["engagement_n"]),
            rating_se_sum=float(champion["rating_se_sum"]),
            rating_n=int(champion["rating_n"]),
            engagement_logloss_sq_sum=float(champion.get("engagement_logloss_sq_sum", 0.0)),
            rating_se_sq_sum=float(champion.get("rating_se_sq_sum", 0.0)),
        )

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


def _quality_variance(losses: HoldoutLosses, refs: References) -> float | None:
    """Variance of ``losses.quality(refs)`` from the spread of the per-event losses (delta
    method for the RMSE term); None when the squared sums are unknown."""
    terms: list[float] = []
    n, total = losses.engagement_n, losses.engagement_logloss_sum
    sq = losses.engagement_logloss_sq_sum
    if n > 0 and refs.logloss:
        if sq <= 0.0:
            return None
        mean = total / n
        terms.append(max(sq / n - mean * mean, 0.0) / n / refs.logloss**2)
    n, total, sq = losses.rating_n, losses.rating_se_sum, losses.rating_se_sq_sum
    if n > 0 and refs.rmse:
        if sq <= 0.0:
            return None
        mse = total / n
        var_mse = max(sq / n - mse * mse, 0.0) / n
        terms.append(var_mse / (4.0 * mse) / refs.rmse**2 if mse > 0 else 0.0)
    if not terms:
        return None
    return sum(terms) / len(terms) ** 2


def improvement_confidence(
    challenger: HoldoutLosses, champion: HoldoutLosses, refs: References
) -> float | None:
    """How sure the hold-out is that the challenger's quality loss is below the champion's.

    A normal approximation of the difference of the two quality losses, whose variances
    come from the spread of each model's per-event losses. The two models are scored on the
    same events, so their losses are positively correlated and the true variance of the
    difference is smaller: treating them as independent makes this confidence conservative
    (it understates a real improvement, never overstates it). None when a side lacks its
    squared sums.

    >>> refs = References(logloss=0.5, rmse=None)
    >>> champ = HoldoutLosses(4000.0, 10_000, 0.0, 0, engagement_logloss_sq_sum=3000.0)
    >>> better = HoldoutLosses(3800.0, 10_000, 0.0, 0, engagement_logloss_sq_sum=2800.0)
    >>> improvement_confidence(better, champ, refs) > 0.999
    True
    >>> round(improvement_confidence(champ, champ, refs), 3)
    0.5
    """
    var_a = _quality_variance(challenger, refs)
    var_b = _quality_variance(champion, refs)
    if var_a is None or var_b is None:
        return None
    diff = champion.quality(refs) - challenger.quality(refs)
    spread = math.sqrt(var_a + var_b)
    if spread == 0.0:
        return 1.0 if diff > 0 else 0.0 if diff < 0 else 0.5
    return 0.5 * (1.0 + math.erf(diff / spread / math.sqrt(2.0)))


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
    ll_sq = se_sq = 0.0
    learn = bundle.learn
    for e in events:
        pred = learn(e, users, items, True)
        if pred is None:
            continue
        if isinstance(e, RatingEvent):
            ratings.update(e.rating, pred)
            se = (e.rating - pred) ** 2
            se_sq += se * se
        else:
            loss = clicks.update(isinstance(e, ClickEvent), pred)
            ll_sq += loss * loss
    return HoldoutLosses(
        clicks.logloss_sum, clicks.n, ratings.squared_error_sum, ratings.n, ll_sq, se_sq
    )
