"""What a retrain learns from and how a fresh bundle learns it.

:class:`TrainingData` is the admitted history in the learner's formats; :func:`train_window`
learns it the way a search point says (see :func:`stream.lifecycle.search.suggest_params`):
SGD passes as the live model learns, then the batch refits: the rating model's
(:func:`refit_ratings`) and the implicit model's (:func:`refit_implicit`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from stream.events import Event, InteractionEvent, Profiles, RatingEvent
from stream.models import EngagementModel, ModelBundle
from stream.models.implicit_batch import fit_implicit
from stream.models.rating_batch import fit_biased_als

__all__ = ["TrainingData", "refit_implicit", "refit_ratings", "train_window"]


@dataclass
class TrainingData:
    """What a retrain learns from, in the learner's formats.

    ``events`` are admitted interaction events (impression, click, dwell, rating) in stream
    order, already de-duplicated and filtered; ``users`` and ``items`` are the profiles as
    :class:`stream.events.Profiles` keeps them for the learner; ``first_index`` is the
    learner's event index of ``events[0]`` (only used to report data ranges).
    """

    events: list[InteractionEvent]
    users: dict[str, dict[str, Any]]
    items: dict[str, dict[str, Any]]
    first_index: int = 0

    @classmethod
    def from_events(cls, events: Iterable[Event], first_index: int = 0) -> TrainingData:
        """Split a validated stream into profiles (last one wins) and interaction events.

        >>> from stream.events import RatingEvent, UserProfileEvent
        >>> d = TrainingData.from_events([
        ...     UserProfileEvent(event_id="p", user_id="u", ts=1.7e9, age=30),
        ...     RatingEvent(event_id="r", user_id="u", item_id="i", ts=1.7e9, rating=3),
        ... ])
        >>> d.users, len(d.events), d.items
        ({'u': {'age': 30, 'gender': None, 'occupation': None}}, 1, {})
        """
        profiles = Profiles()
        interactions: list[InteractionEvent] = []
        for e in events:
            if isinstance(e, InteractionEvent):
                interactions.append(e)
            else:
                profiles.add(e)
        return cls(interactions, profiles.users, profiles.items, first_index)


def _window_start(n: int, share: float) -> int:
    """Index of the first of the most recent ``share`` of ``n`` events (at least one)."""
    return n - max(1, min(n, math.ceil(share * n)))


class _FrozenEngagement:
    """Stands in for ``bundle.engagement`` during extra passes: it builds features and
    predicts like the real click model but does not learn."""

    def __init__(self, model: EngagementModel) -> None:
        self._model = model

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def learn(self, x: dict[str, float], clicked: bool) -> None:
        pass

    def predict_learn(self, x: dict[str, float], clicked: bool, score: bool = True) -> float | None:
        # Every way the bundle makes the click model learn is stopped here.
        return self._model.predict_proba(x) if score else None


def train_window(
    bundle: ModelBundle,
    history: Sequence[InteractionEvent],
    users: Mapping[str, Mapping[str, Any]],
    items: Mapping[str, Mapping[str, Any]],
    window: float,
    epochs: int,
    older: str = "skip",
    *,
    als_iterations: int = 0,
    als_reg_factors: float = 1.0,
    als_reg_bias: float = 1.0,
    implicit_iterations: int = 0,
) -> int:
    """Learn the last ``window`` share of ``history`` ``epochs`` times; return its start.

    ``older`` says what to learn once first from the events before the window (see
    :func:`~stream.lifecycle.search.suggest_params`). The click model learns in the first
    pass only: it takes the implicit model's score as a feature, and after a pass that score
    has seen the event, so later passes would teach the click model to over-trust it (a
    stacking leak). The extra passes refine the rating and implicit factor models. Then,
    with ``als_iterations``, the rating model is refit in batch on every rating it learned
    (:func:`refit_ratings`), warm-started from where the passes left it; with
    ``implicit_iterations``, the implicit model likewise (:func:`refit_implicit`).
    """
    start = _window_start(len(history), window)
    part = history[start:]
    learn = bundle.learn
    if older == "once":
        for e in history[:start]:
            learn(e, users, items, False)
    elif older == "ratings":
        for e in history[:start]:
            if isinstance(e, RatingEvent):
                learn(e, users, items, False)
    for e in part:
        learn(e, users, items, False)
    if epochs > 1:
        engagement = bundle.engagement
        bundle.engagement = cast(EngagementModel, _FrozenEngagement(engagement))
        try:
            for _ in range(epochs - 1):
                for e in part:
                    learn(e, users, items, False)
        finally:
            bundle.engagement = engagement
    learned = part if older == "skip" else history
    if als_iterations:
        refit_ratings(bundle, learned, als_iterations, als_reg_factors, als_reg_bias)
    if implicit_iterations:
        refit_implicit(bundle, learned, users, items, implicit_iterations)
    return start


def refit_ratings(
    bundle: ModelBundle,
    events: Iterable[InteractionEvent],
    iterations: int,
    reg_factors: float,
    reg_bias: float,
) -> int:
    """Refit the rating model on the rating events among ``events`` by alternating least
    squares (:func:`~stream.models.rating_batch.fit_biased_als`); return how many."""
    ratings = [e for e in events if isinstance(e, RatingEvent)]
    fit_biased_als(
        bundle.rating,
        [e.user_id for e in ratings],
        [e.item_id for e in ratings],
        [e.rating for e in ratings],
        iterations=iterations,
        reg_factors=reg_factors,
        reg_bias=reg_bias,
    )
    return len(ratings)


def refit_implicit(
    bundle: ModelBundle,
    events: Sequence[InteractionEvent],
    users: Mapping[str, Mapping[str, Any]],
    items: Mapping[str, Mapping[str, Any]],
    iterations: int,
) -> None:
    """Refit the implicit model on the clicks, dwells and impressions among ``events`` by
    alternating Newton steps on its weighted log loss
    (:func:`~stream.models.implicit_batch.fit_implicit`)."""
    fit_implicit(bundle, events, iterations=iterations, users=users, items=items)
