"""The set of models that is learned online, retrained in batch and swapped as one unit.

>>> from stream.config import ModelConfig
>>> from stream.events import RatingEvent
>>> bundle = ModelBundle.fresh(ModelConfig(), rating_min=1.0, rating_max=5.0)
>>> e = RatingEvent(event_id="r1", user_id="u1", item_id="i1", ts=1.7e9, rating=4)
>>> bundle.learn(e, users={}, items={}, score=True)  # before learning, clipped to the scale
1.0
>>> bundle.rating.n_ratings
1
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from stream.config import ModelConfig
from stream.events import (
    ClickEvent,
    DwellEvent,
    ImpressionEvent,
    InteractionEvent,
    RatingEvent,
)
from stream.models.click import EngagementModel
from stream.models.implicit_mf import ImplicitMF
from stream.models.rating_mf import OnlineMF


def _logit(p: float) -> float:
    # A feature clip, not the log-loss clip of stream.evaluation: it bounds the stacked
    # feature to about +-9.2 so one confident implicit score cannot dominate the click model.
    p = min(max(p, 1e-4), 1.0 - 1e-4)
    return math.log(p / (1.0 - p))


@dataclass
class ModelBundle:
    """Rating MF, implicit MF and the River engagement model, plus the config they use."""

    rating: OnlineMF
    implicit: ImplicitMF
    engagement: EngagementModel
    config: ModelConfig
    dwell_scale: float  # dwell_alpha / dwell cap: confidence = 1 + dwell_scale * seconds

    @classmethod
    def fresh(
        cls,
        cfg: ModelConfig,
        rating_min: float | None = None,
        rating_max: float | None = None,
        dwell_cap_seconds: float = 1800.0,
    ) -> ModelBundle:
        return cls(
            rating=OnlineMF.from_config(cfg, rating_min=rating_min, rating_max=rating_max),
            implicit=ImplicitMF.from_config(cfg),
            engagement=EngagementModel.from_config(cfg),
            config=cfg,
            dwell_scale=cfg.dwell_alpha / dwell_cap_seconds,
        )

    # -- one method per interaction type: the caller has dispatched on the type already --
    def learn_rating(
        self,
        e: RatingEvent,
        user: Mapping[str, Any] | None = None,
        item: Mapping[str, Any] | None = None,
    ) -> float:
        """Learn a rating given the user's and item's profiles (None: unknown; they start
        a new user or item from its cold-start prior); return the rating predicted before
        learning."""
        return self.rating.update(
            e.user_id, e.item_id, e.rating, user_profile=user, item_profile=item
        )

    def learn_engagement(
        self,
        e: ClickEvent | ImpressionEvent,
        clicked: bool,
        user: Mapping[str, Any] | None,
        item: Mapping[str, Any] | None,
        score: bool,
    ) -> float | None:
        """Learn a click or impression given the user's and item's profiles (None: unknown).

        With ``score``, return the click probability predicted before learning; without it,
        skip that prediction (batch training and catch-up after a swap).
        """
        # A click is a positive; an impression without click a weak implicit negative.
        target, weight = (1.0, 1.0) if clicked else (0.0, self.config.negative_weight)
        cf = self.implicit.update(
            e.user_id, e.item_id, target, weight, user_profile=user, item_profile=item
        )
        x = self.engagement.features(user, item, e.context)
        # Stacking: the implicit model's pre-learning score is a feature, so the click
        # model combines per-user taste with demographics, content and context.
        # _logit(cf), inlined (the same operations): once per click or impression.
        cf = min(max(cf, 1e-4), 1.0 - 1e-4)
        x["cf_logit"] = math.log(cf / (1.0 - cf))
        return self.engagement.predict_learn(x, clicked, score)

    def predict_rating(
        self, e: RatingEvent, user: Mapping[str, Any] | None, item: Mapping[str, Any] | None
    ) -> float:
        """The rating predicted for ``e`` (nothing learned, no state added)."""
        return self.rating.predict(e.user_id, e.item_id, user_profile=user, item_profile=item)

    def predict_engagement(
        self,
        e: ClickEvent | ImpressionEvent,
        user: Mapping[str, Any] | None,
        item: Mapping[str, Any] | None,
    ) -> float:
        """The click probability predicted for ``e`` (nothing learned, no state added)."""
        cf = self.implicit.score(e.user_id, e.item_id, user_profile=user, item_profile=item)
        x = self.engagement.features(user, item, e.context)
        x["cf_logit"] = _logit(cf)
        return self.engagement.predict_proba(x)

    def learn_dwell(self, e: DwellEvent) -> None:
        # Longer dwell = more confidence that the click was a real positive.
        self.implicit.update(e.user_id, e.item_id, 1.0, 1.0 + self.dwell_scale * e.seconds)

    def learn(
        self,
        event: InteractionEvent,
        users: Mapping[str, Mapping[str, Any]],
        items: Mapping[str, Mapping[str, Any]],
        score: bool = False,
    ) -> float | None:
        """Learn one interaction event of a batch (training, catch-up after a swap).

        With ``score``, return the prediction made before learning: the rating for a rating
        event, the click probability for a click or impression (None for dwell). The live
        learner dispatches on the type itself and calls the methods above directly.
        """
        kind = type(event)
        if kind is RatingEvent:
            r = cast(RatingEvent, event)
            return self.learn_rating(r, users.get(r.user_id), items.get(r.item_id))
        if kind is ClickEvent or kind is ImpressionEvent:
            e = cast(ClickEvent | ImpressionEvent, event)
            user, item = users.get(e.user_id), items.get(e.item_id)
            return self.learn_engagement(e, kind is ClickEvent, user, item, score)
        if kind is DwellEvent:
            self.learn_dwell(cast(DwellEvent, event))
        return None

    def state_equal(self, other: ModelBundle) -> bool:
        return (
            self.rating.state_equal(other.rating)
            and self.implicit.state_equal(other.implicit)
            and self.engagement.state_equal(other.engagement)
        )
