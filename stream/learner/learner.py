"""The user logic of the consumer: validate, de-duplicate, filter, score, then learn.

:class:`FeedbackLearner` knows nothing about Kafka; the consumer loop feeds it message values
and `feedback-loop evaluate` feeds it the records of a file, so both run the same code.
Every event is scored before it is learned (prequential evaluation), and every message ends in
exactly one bucket, so ``consumed == applied + dead_lettered + filtered + duplicates``.

>>> from stream.config import Settings
>>> learner = FeedbackLearner(Settings())
>>> learner.process(b'{"type": "user_profile", "event_id": "p1", "user_id": "u1", "ts": 1.7e9}')
>>> learner.process(b'{"type": "item_profile", "event_id": "p2", "item_id": "i1", "ts": 1.7e9}')
>>> raw = b'{"type":"rating","event_id":"r1","user_id":"u1","item_id":"i1","ts":1.7e9,"rating":4}'
>>> learner.process(raw), learner.process(raw)
(None, None)
>>> learner.process(b'{"type": "rating"').kind
'malformed_json'
>>> c = learner.counts
>>> (c.consumed, c.applied, c.duplicates, c.dead_lettered, c.reconciles())
(5, 3, 1, 1, True)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from stream.config import Settings
from stream.drift import EVENT_TYPE_CODES
from stream.evaluation import BinaryScore, HitRate, RegressionScore
from stream.events import (
    ClickEvent,
    DwellEvent,
    Event,
    ImpressionEvent,
    InteractionEvent,
    InvalidEvent,
    ItemProfileEvent,
    RatingEvent,
    UserProfileEvent,
    decode_event,
)
from stream.lifecycle import NO_LOSS, ModelLifecycle
from stream.models import ModelBundle

INTERACTION_TYPES = frozenset({"impression", "click", "dwell", "rating"})
# recall@K of the implicit model on positive events, K as in the report key recall_at_10.
RECALL_K = 10
# Weight of each new click-model regret in its slow moving average (~20k events memory).
REGRET_TREND_RATE = 5e-5
# How long (event time) a user who looked like a bot stays filtered.
BOT_BLOCK_SECONDS = 86400
# Messages between two points of the learner's quality timeline (for plots).
TIMELINE_EVERY = 2000


class Rejection(NamedTuple):
    """Why a message goes to the dead-letter topic; ``kind`` is a bounded metric label."""

    kind: str
    reason: str
    event_type: str = "invalid"


@dataclass
class Counts:
    """Where every consumed message ended up."""

    consumed: int = 0
    applied: int = 0
    dead_lettered: int = 0
    filtered: int = 0
    duplicates: int = 0
    consumed_by_type: dict[str, int] = field(default_factory=dict)
    dead_letters_by_kind: dict[str, int] = field(default_factory=dict)
    filtered_by_reason: dict[str, int] = field(default_factory=dict)

    def reconciles(self) -> bool:
        total = self.applied + self.dead_lettered + self.filtered + self.duplicates
        return self.consumed == total

    def as_dict(self) -> dict[str, Any]:
        return {
            "consumed": self.consumed,
            "applied": self.applied,
            "dead_lettered": self.dead_lettered,
            "filtered": self.filtered,
            "duplicates": self.duplicates,
            "consumed_by_type": dict(self.consumed_by_type),
            "dead_letters_by_kind": dict(self.dead_letters_by_kind),
            "filtered_by_reason": dict(self.filtered_by_reason),
        }


class SeenEvents:
    """A sliding window of the last ``size`` event ids, for de-duplication."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._ids: set[str] = set()
        self._order: deque[str] = deque()

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._ids

    def add(self, event_id: str) -> None:
        if self.size == 0:
            return
        self._ids.add(event_id)
        self._order.append(event_id)
        if len(self._order) > self.size:
            self._ids.discard(self._order.popleft())

    def __len__(self) -> int:
        return len(self._ids)


class FeedbackLearner:
    """Applies feedback events to the online models and keeps prequential scores."""

    def __init__(self, settings: Settings) -> None:
        self.limits = settings.limits
        cfg = settings.model
        self.model_config = cfg
        self.bot_limit = settings.consumer.bot_events_per_minute
        self.models = ModelBundle.fresh(
            cfg,
            rating_min=self.limits.rating_min,
            rating_max=self.limits.rating_max,
            dwell_cap_seconds=self.limits.dwell_cap_seconds,
        )
        self.rating_score = RegressionScore()
        self.click_score = BinaryScore()
        self.recall = HitRate()
        # Naive references scored the same way: the running global mean rating and the
        # running click-through rate. A useful model must beat them.
        self.baseline_rating_score = RegressionScore()
        self.baseline_click_score = BinaryScore()
        self._rating_sum = 0.0
        self._clicks = 0
        self._regret_trend = 0.0
        self._regret_n = 0
        self.counts = Counts()
        self.seen = SeenEvents(settings.consumer.dedup_window)
        self.users: dict[str, dict[str, Any]] = {}
        self.items: dict[str, dict[str, Any]] = {}
        # user -> [minute bucket of event time, events in it, flagged until], for the bot
        # filter.
        self._activity: dict[str, list[int]] = {}
        self.lifecycle = ModelLifecycle(settings)
        # Direct references for the hot path (both live as long as the learner).
        self._drift = self.lifecycle.monitor
        self._holdout = self.lifecycle.holdout
        # (event index, clicks scored, model log-loss sum, naive log-loss sum, ratings
        # scored, squared-error sum) every TIMELINE_EVERY messages, for plots.
        self.timeline: list[tuple[int, int, float, float, int, float]] = [(0, 0, 0.0, 0.0, 0, 0.0)]
        self._handlers = {
            RatingEvent: self._learn_rating,
            ClickEvent: self._learn_click,
            ImpressionEvent: self._learn_impression,
            DwellEvent: self._learn_dwell,
            UserProfileEvent: self._learn_user,
            ItemProfileEvent: self._learn_item,
        }

    # -- entry points -------------------------------------------------------------------
    def process(self, raw: bytes | None) -> Rejection | None:
        """Decode and apply one message; return a :class:`Rejection` for the dead letters."""
        try:
            if not raw:
                raise InvalidEvent("empty message")
            event = decode_event(raw, self.limits)
        except InvalidEvent as err:
            c = self.counts
            c.consumed += 1
            c.consumed_by_type[err.event_type] = c.consumed_by_type.get(err.event_type, 0) + 1
            return self._reject(Rejection(err.kind, err.reason, err.event_type))
        return self.apply(event)

    def apply(self, event: Event) -> Rejection | None:
        """Apply one validated event (counted as consumed)."""
        c = self.counts
        c.consumed += 1
        etype = event.type
        c.consumed_by_type[etype] = c.consumed_by_type.get(etype, 0) + 1
        if event.event_id in self.seen:
            c.duplicates += 1
            return None
        if etype in INTERACTION_TYPES:
            assert isinstance(event, InteractionEvent)  # for the type checker (cheap)
            if self.limits.require_known_users and event.user_id not in self.users:
                return self._reject(
                    Rejection("unknown_user", f"unknown user {event.user_id!r}", etype)
                )
            if self.limits.require_known_items and event.item_id not in self.items:
                return self._reject(
                    Rejection("unknown_item", f"unknown item {event.item_id!r}", etype)
                )
            if self._is_bot(event.user_id, event.ts):
                self.seen.add(event.event_id)
                c.filtered += 1
                c.filtered_by_reason["bot"] = c.filtered_by_reason.get("bot", 0) + 1
                return None
            drift = self._drift
            if drift is not None:
                idx = c.consumed
                drift.observe_event_type(EVENT_TYPE_CODES[etype], idx)
                drift.observe_new_user(not self.models.implicit.has_user(event.user_id), idx)
        self.seen.add(event.event_id)
        self._handlers[type(event)](event)  # type: ignore[operator]
        c.applied += 1
        if c.consumed % TIMELINE_EVERY == 0:
            self._snapshot()
        return None

    def close_timeline(self) -> None:
        """Add a timeline point for the messages since the last one (before a report)."""
        if self.timeline[-1][0] != self.counts.consumed:
            self._snapshot()

    def _snapshot(self) -> None:
        cs, bs, rs = self.click_score, self.baseline_click_score, self.rating_score
        self.timeline.append(
            (
                self.counts.consumed,
                cs.n,
                (cs.logloss or 0.0) * cs.n,
                (bs.logloss or 0.0) * bs.n,
                rs.n,
                (rs.rmse or 0.0) ** 2 * rs.n,
            )
        )

    def _reject(self, rejection: Rejection) -> Rejection:
        c = self.counts
        c.dead_lettered += 1
        c.dead_letters_by_kind[rejection.kind] = c.dead_letters_by_kind.get(rejection.kind, 0) + 1
        return rejection

    def _is_bot(self, user_id: str, ts: float) -> bool:
        """Over ``bot_limit`` events in a minute of event time flags a user as a bot for a
        day of event time, so a bot's next bursts are filtered from their first event."""
        bucket = int(ts // 60)
        act = self._activity.get(user_id)
        if act is None:
            self._activity[user_id] = [bucket, 1, 0]
            return False
        if ts < act[2]:  # flagged
            return True
        if act[0] != bucket:
            act[0], act[1] = bucket, 1
            return False
        act[1] += 1
        if act[1] > self.bot_limit:
            act[2] = int(ts) + BOT_BLOCK_SECONDS
            return True
        return False

    # -- per-type learning (score first, then learn) ---------------------------------------
    def _learn_rating(self, e: RatingEvent) -> None:
        predicted = self.models.learn(e, self.users, self.items, True)
        assert predicted is not None
        self.rating_score.update(e.rating, predicted)
        n = self.baseline_rating_score.n
        self.baseline_rating_score.update(e.rating, self._rating_sum / n if n else 0.0)
        self._rating_sum += e.rating
        se = (e.rating - predicted) ** 2
        self._holdout.append((NO_LOSS, se))
        if self._drift is not None:
            self._drift.observe_rating_error(se, self.counts.consumed)

    def _learn_engagement(self, e: ClickEvent | ImpressionEvent, clicked: bool) -> float:
        p = self.models.learn(e, self.users, self.items, True)
        assert p is not None
        loss = self.click_score.update(clicked, p)
        n = self.baseline_click_score.n
        naive = (self._clicks + 0.5) / (n + 1.0)
        naive_loss = self.baseline_click_score.update(clicked, naive)
        self._clicks += clicked
        self._holdout.append((loss, NO_LOSS))
        if self._drift is not None:
            # The loss relative to the naive click-through rate: a change in the base rate
            # alone moves both, a model that lost its edge moves only one.
            regret = loss - naive_loss
            # Detrended: against its own slow moving average, so the learning curve (a
            # steady fall) does not hide a later rise.
            # (A plain running mean until it has seen 1 / rate events: no start-up bias.)
            trend = self._regret_trend
            self._drift.observe_engagement_loss(regret - trend, self.counts.consumed)
            self._regret_n += 1
            self._regret_trend = trend + (regret - trend) * max(
                REGRET_TREND_RATE, 1.0 / self._regret_n
            )
        return p

    def _learn_click(self, e: ClickEvent) -> None:
        hit = self.models.implicit.hit_at_k(e.user_id, e.item_id, RECALL_K)
        if hit is not None:
            self.recall.update(hit)
        self._learn_engagement(e, True)
        if self._drift is not None:
            genres = self.items.get(e.item_id, {}).get("genres")
            if genres:
                self._drift.observe_click_genre(
                    self._drift.genre_codes.code(genres[0]), self.counts.consumed
                )

    def _learn_impression(self, e: ImpressionEvent) -> None:
        self._learn_engagement(e, False)

    def _learn_dwell(self, e: DwellEvent) -> None:
        self.models.learn(e, self.users, self.items)
        self._holdout.append((NO_LOSS, NO_LOSS))
        if self._drift is not None:
            self._drift.observe_dwell(e.seconds, self.counts.consumed)

    def _learn_user(self, e: UserProfileEvent) -> None:
        self.users[e.user_id] = {"age": e.age, "gender": e.gender, "occupation": e.occupation}

    def _learn_item(self, e: ItemProfileEvent) -> None:
        self.items[e.item_id] = {"genres": e.genres, "year": e.year}

    # -- reporting ------------------------------------------------------------------------
    def scores(self) -> dict[str, float | None]:
        return {
            "rmse": self.rating_score.rmse,
            "mae": self.rating_score.mae,
            "logloss": self.click_score.logloss,
            "auc": self.click_score.auc,
            "recall_at_10": self.recall.value,
        }

    def baselines(self) -> dict[str, float | None]:
        return {
            "rmse": self.baseline_rating_score.rmse,
            "mae": self.baseline_rating_score.mae,
            "logloss": self.baseline_click_score.logloss,
        }

    def summary(self) -> dict[str, Any]:
        return {
            **self.counts.as_dict(),
            **self.scores(),
            "baseline": self.baselines(),
            **self.lifecycle.report(),
        }

    def swap(
        self, bundle: ModelBundle, version: int, catch_up: Iterable[InteractionEvent]
    ) -> int:
        """Replace the models by ``bundle`` after it learns ``catch_up`` (the events that
        arrived since its history ended); return how many it learned."""
        n = 0
        for event in catch_up:
            bundle.learn(event, self.users, self.items)
            n += 1
        self.models = bundle
        self.lifecycle.swapped(version, self.counts.consumed, n)
        return n

    def state_equal(self, other: FeedbackLearner) -> bool:
        """Bit-identical models, scores and counts (used to prove crash recovery)."""
        return (
            self.models.state_equal(other.models)
            and self.counts == other.counts
            and self.scores() == other.scores()
        )
