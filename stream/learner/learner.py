"""The user logic of the consumer: admit, score, then learn each event.

:class:`FeedbackLearner` knows nothing about Kafka; the consumer loop feeds it message values
and `feedback-loop evaluate` feeds it the records of a file, so both run the same code.
Each message goes one way:

1. :class:`~stream.events.Admission` decodes, counts, de-duplicates and filters it, and
   stores profiles (so ``consumed == applied + dead_lettered + filtered + duplicates``);
2. one dispatch on the type of an admitted interaction picks its ``_learn_*`` method, which
   scores the event before the models learn it (prequential evaluation), then learns it;
3. each observer of the lifecycle (drift monitor feed, hold-out window) gets the typed
   outcome (:mod:`stream.evaluation.outcome`).

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

from collections.abc import Callable, Iterable
from itertools import islice
from typing import Any

from stream.config import Settings
from stream.evaluation import (
    BinaryScore,
    Dwelled,
    Engagement,
    HitRate,
    NaiveBaselines,
    Rated,
    RegressionScore,
)
from stream.events import (
    Admission,
    ClickEvent,
    Counts,
    DwellEvent,
    Event,
    ImpressionEvent,
    InteractionEvent,
    RatingEvent,
    Rejection,
)
from stream.learner.interactions import Interactions
from stream.learner.item_sync import ItemSync
from stream.learner.users import eviction_trigger
from stream.lifecycle import ModelLifecycle
from stream.models import ModelBundle

# recall@K of the implicit model on positive events, K as in the report key recall_at_10.
RECALL_K = 10
# Messages between two points of the learner's quality timeline (for plots).
TIMELINE_EVERY = 2000
# tuple.__new__(cls, values): a NamedTuple without the Python frame of cls(*values).
_new_tuple: Callable[..., Any] = tuple.__new__


class FeedbackLearner:
    """Applies feedback events to the online models and keeps prequential scores."""

    # Sharing of the item side with the learners of other partitions (None: not shared;
    # a class default, so learners pickled before it existed load unshared).
    item_sync: ItemSync | None = None

    def __init__(self, settings: Settings) -> None:
        self.limits = settings.limits
        cfg = settings.model
        self.model_config = cfg
        self.models = ModelBundle.fresh(
            cfg,
            rating_min=self.limits.rating_min,
            rating_max=self.limits.rating_max,
            dwell_cap_seconds=self.limits.dwell_cap_seconds,
        )
        self.admission = Admission.from_settings(settings)
        self._profiles = self.admission.profiles  # hot path: one attribute, not two
        # Seen items per user and popularity per item, for serving (not used by the models).
        self.interactions = Interactions()
        self._interact = self.interactions.add  # hot path: a bound method, looked up once
        # Event time of the newest admitted interaction (None: none yet), for serving.
        self.last_event_ts: float | None = None
        # Users with learned state, least recently active first (an insertion-ordered dict
        # used as an LRU list: an interaction moves its user to the end).
        self.recency: dict[str, None] = {}
        # Bounded memory: past `evict_at` users, the least recent go down to `max_users`.
        self.max_users = settings.consumer.max_users
        self.evict_at = eviction_trigger(self.max_users)
        self.users_evicted = 0
        self.users_forgotten = 0
        self.rating_score = RegressionScore()
        self.click_score = BinaryScore()
        self.recall = HitRate()
        # Naive references scored the same way; a useful model must beat them.
        self.naive = NaiveBaselines(first_rating=0.0)
        self.lifecycle = ModelLifecycle(settings)
        # Who hears each outcome: the lifecycle's observers (a test may add its own).
        self.observers = list(self.lifecycle.observers)
        # (event index, clicks scored, model log-loss sum, naive log-loss sum, ratings
        # scored, squared-error sum) every TIMELINE_EVERY messages, for plots.
        self.timeline: list[tuple[int, int, float, float, int, float]] = [(0, 0, 0.0, 0.0, 0, 0.0)]
        # The one dispatch on the event type. Profiles have no entry: admission stored them.
        self._learners: dict[type, Callable[[Any, int, bool], None]] = {
            RatingEvent: self._learn_rating,
            ClickEvent: self._learn_click,
            ImpressionEvent: self._learn_impression,
            DwellEvent: self._learn_dwell,
        }

    # -- state other components read ----------------------------------------------------------
    @property
    def counts(self) -> Counts:
        return self.admission.counts

    @property
    def users(self) -> dict[str, dict[str, Any]]:
        return self._profiles.users

    @property
    def items(self) -> dict[str, dict[str, Any]]:
        return self._profiles.items

    def share_items(self, source: int, click_scale: float = 1.0) -> ItemSync:
        """Start sharing the item side (item rows, global statistics, click model,
        popularity, item profiles) with other tasks as deltas, this task named ``source``
        (see :mod:`stream.learner.item_sync`); what it holds now is taken as shared."""
        sync = self.item_sync
        if sync is None or sync.source != source or sync.click_scale != click_scale:
            sync = self.item_sync = ItemSync(self, source, click_scale)
        return sync

    # -- entry points -------------------------------------------------------------------
    def process(self, raw: bytes | None) -> Rejection | None:
        """Decode and apply one message; return a :class:`Rejection` for the dead letters."""
        event = self.admission.admit_raw(raw)
        if event is None or event.__class__ is Rejection:
            return event  # type: ignore[return-value]  # None or a Rejection
        self.learn(event)  # type: ignore[arg-type]  # an admitted event
        return None

    def process_batch(
        self, values: list[bytes | None], admitted: list[int] | None = None
    ) -> list[Rejection | None]:
        """:meth:`process` of each value in order: one result per value (a
        :class:`Rejection` for the dead letters, else None), the same state after.

        With ``admitted``, the positions in ``values`` of the admitted messages (the ones an
        archive keeps) are appended to it; each message counts as consumed, so the k-th
        value is message number ``counts.consumed`` (before the call) ``+ k``. The entry
        point of a consumer that polls in batches: the lookups are done once per batch.
        """
        admit_raw = self.admission.admit_raw
        learn = self.learn
        out: list[Rejection | None] = []
        append = out.append
        for k, raw in enumerate(values):
            event = admit_raw(raw)
            if event is None or event.__class__ is Rejection:
                append(event)  # type: ignore[arg-type]  # None or a Rejection
                continue
            learn(event)  # type: ignore[arg-type]  # an admitted event
            append(None)
            if admitted is not None:
                admitted.append(k)
        return out

    def apply(self, event: Event) -> Rejection | None:
        """Apply one validated event (counted as consumed)."""
        admitted = self.admission.admit(event)
        if admitted is None or admitted.__class__ is Rejection:
            return admitted  # type: ignore[return-value]  # None or a Rejection
        self.learn(admitted)  # type: ignore[arg-type]  # an admitted event
        return None

    def learn(self, event: Event) -> None:
        """Learn an event :attr:`admission` admitted (the ``index``-th message) and tell
        the observers (for a caller that admits messages itself to keep the events)."""
        index = self.admission.counts.consumed
        learn = self._learners.get(event.__class__)
        if learn is not None:
            # Asked before learning: whether the models have seen the user.
            user_id = event.user_id  # type: ignore[union-attr]  # an interaction
            learn(event, index, not self.models.implicit.has_user(user_id))
            self.last_event_ts = event.ts
            recency = self.recency
            recency.pop(user_id, None)  # (re)inserted last: the most recently active
            recency[user_id] = None
            if len(recency) > self.evict_at:
                self.evict()
        if index % TIMELINE_EVERY == 0:
            self._snapshot()

    def freeze(self) -> None:
        """From now on score interaction events without learning them (a frozen batch
        model, the reference a retraining loop is compared with); profiles still count."""
        self._learners.update(
            {
                RatingEvent: self._score_rating,
                ClickEvent: self._score_click,
                ImpressionEvent: self._score_impression,
                DwellEvent: lambda e, index, new_user: None,
            }
        )

    def close_timeline(self) -> None:
        """Add a timeline point for the messages since the last one (before a report)."""
        if self.timeline[-1][0] != self.counts.consumed:
            self._snapshot()

    def _snapshot(self) -> None:
        cs, bs, rs = self.click_score, self.naive.click_score, self.rating_score
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

    # -- per-type learning (score first, then learn, then tell the observers) -----------------
    # Outcomes are built by tuple.__new__: the same NamedTuples as calling the class, without
    # its Python-level __new__ frame (once per event).
    def _learn_rating(self, e: RatingEvent, index: int, new_user: bool) -> None:
        profiles = self._profiles
        user_id, item_id = e.user_id, e.item_id
        predicted = self.models.learn_rating(
            e, profiles.users.get(user_id), profiles.items.get(item_id)
        )
        self._interact(user_id, item_id)
        self._rated(e, index, new_user, predicted)

    def _rated(self, e: RatingEvent, index: int, new_user: bool, predicted: float) -> None:
        rating = e.rating
        self.rating_score.update(rating, predicted)
        self.naive.score_rating(rating)
        out = _new_tuple(Rated, (index, new_user, (rating - predicted) ** 2))
        for observer in self.observers:
            observer.rating(out)

    def _learn_engagement(
        self, e: ClickEvent | ImpressionEvent, clicked: bool, index: int, new_user: bool
    ) -> None:
        profiles = self._profiles
        item = profiles.items.get(e.item_id)
        p = self.models.learn_engagement(e, clicked, profiles.users.get(e.user_id), item, True)
        assert p is not None  # scored
        self._engaged(clicked, index, new_user, p, item)

    def _engaged(
        self, clicked: bool, index: int, new_user: bool, p: float, item: dict[str, Any] | None
    ) -> None:
        loss = self.click_score.update(clicked, p)
        naive_loss = self.naive.score_engagement(clicked)
        genres = item.get("genres") if clicked and item is not None else None
        genre = genres[0] if genres else None
        out = _new_tuple(Engagement, (index, new_user, clicked, loss, naive_loss, genre))
        for observer in self.observers:
            observer.engagement(out)

    def _learn_click(self, e: ClickEvent, index: int, new_user: bool) -> None:
        # _recall(e), inlined.
        hit = self.models.implicit.hit_at_k(e.user_id, e.item_id, RECALL_K)
        if hit is not None:
            self.recall.update(hit)
        self._learn_engagement(e, True, index, new_user)
        self._interact(e.user_id, e.item_id)

    def _recall(self, e: ClickEvent) -> None:
        hit = self.models.implicit.hit_at_k(e.user_id, e.item_id, RECALL_K)
        if hit is not None:
            self.recall.update(hit)

    def _learn_impression(self, e: ImpressionEvent, index: int, new_user: bool) -> None:
        self._learn_engagement(e, False, index, new_user)

    def _learn_dwell(self, e: DwellEvent, index: int, new_user: bool) -> None:
        self.models.learn_dwell(e)
        out = _new_tuple(Dwelled, (index, new_user, e.seconds))
        for observer in self.observers:
            observer.dwell(out)

    # -- scoring only (after freeze) --------------------------------------------------------
    def _score_rating(self, e: RatingEvent, index: int, new_user: bool) -> None:
        profiles = self._profiles
        predicted = self.models.predict_rating(
            e, profiles.users.get(e.user_id), profiles.items.get(e.item_id)
        )
        self._rated(e, index, new_user, predicted)

    def _score_engagement(
        self, e: ClickEvent | ImpressionEvent, clicked: bool, index: int, new_user: bool
    ) -> None:
        item = self._profiles.items.get(e.item_id)
        p = self.models.predict_engagement(e, self._profiles.users.get(e.user_id), item)
        self._engaged(clicked, index, new_user, p, item)

    def _score_click(self, e: ClickEvent, index: int, new_user: bool) -> None:
        self._recall(e)
        self._score_engagement(e, True, index, new_user)

    def _score_impression(self, e: ImpressionEvent, index: int, new_user: bool) -> None:
        self._score_engagement(e, False, index, new_user)

    # -- bounded memory and forgetting ----------------------------------------------------
    def drop_users(self, user_ids: Iterable[str]) -> int:
        """Drop what the learner learned of these users: rows of both factor models (and
        their cold-start memberships), seen items, bot-filter state and recency; return how
        many it held. Profiles stay (see :meth:`forget`). A dropped user who comes back is
        a new user: a cold start from their profile's prior."""
        ids = list(dict.fromkeys(user_ids))
        models, bots, recency = self.models, self.admission.bots, self.recency
        models.rating.remove_users(ids)
        models.implicit.remove_users(ids)
        held = 0
        for user_id in ids:
            self.interactions.drop(user_id)
            bots.drop(user_id)
            if recency.pop(user_id, 0) is None:
                held += 1
        return held

    def evict(self) -> int:
        """Drop the least recently active users down to ``max_users``; how many.

        Called when the count passes ``evict_at`` (5% over the cap), so the cost of a pass
        over the tables is spread over many new users. It depends only on the events, so a
        replay evicts the same users at the same events and rebuilds the same models.
        """
        cap = self.max_users
        if cap is None or len(self.recency) <= cap:
            return 0
        victims = list(islice(self.recency, len(self.recency) - cap))
        n = self.drop_users(victims)
        self.users_evicted += n
        return n

    def forget(self, user_id: str) -> None:
        """Erase a user (a deletion request): everything :meth:`drop_users` drops, plus the
        profile and the de-duplication entries that contain the id; the user's later events
        are filtered (``forgotten_user``). The cold-start means are recomputed without them.
        The models' shared parameters (item vectors, the click model's weights, the global
        mean, popularity counts) keep the user's share until the next retrain, whose history
        leaves the user out."""
        self.drop_users([user_id])
        self.admission.forget(user_id)
        for model in (self.models.rating, self.models.implicit):
            model.recompute_priors()
        self.users_forgotten += 1  # the consumer purges the archive (ModelControl.on_forget)

    def drop_forgotten(self) -> int:
        """Drop forgotten users from the models (after a swap: the bundle may have been
        trained before the forget). One hash per user of the new tables."""
        forgotten = self.admission.forgotten
        if not forgotten:
            return 0
        models = self.models
        ids = [
            u
            for u in dict.fromkeys([*models.rating._users.ids, *models.implicit._users.ids])
            if u in forgotten
        ]
        return self.drop_users(ids)

    def _track_bundle_users(self) -> None:
        """Count a swapped-in bundle's users as held: the ones this learner had not seen
        online come first (least recent), so a cap evicts them first."""
        models, recency = self.models, self.recency
        ids = dict.fromkeys([*models.rating._users.ids, *models.implicit._users.ids])
        missing = {u: None for u in ids if u not in recency}
        if missing:
            missing.update(recency)
            self.recency = missing

    @property
    def users_held(self) -> int:
        """Users with learned state (the ones eviction counts)."""
        return len(self.recency)

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
        naive = self.naive
        return {
            "rmse": naive.rating_score.rmse,
            "mae": naive.rating_score.mae,
            "logloss": naive.click_score.logloss,
        }

    def summary(self) -> dict[str, Any]:
        return {
            **self.counts.as_dict(),
            **self.scores(),
            "baseline": self.baselines(),
            **self.lifecycle.report(),
        }

    def swap(
        self,
        bundle: ModelBundle,
        version: int,
        catch_up: Iterable[InteractionEvent],
        generation: int = 0,
    ) -> int:
        """Replace the models by ``bundle`` after it learns ``catch_up`` (the events that
        arrived since its history ended); return how many it learned. With shared items,
        the bundle is the base of swap ``generation``: the catch-up's item changes go out as
        this task's next delta, then the other tasks' deltas of that generation held so far
        are applied (see :mod:`stream.learner.item_sync`)."""
        self.models = bundle
        sync = self.item_sync
        if sync is not None:
            sync.swapped(generation)
        n = 0
        for event in catch_up:
            bundle.learn(event, self.users, self.items)
            n += 1
        if sync is not None:
            sync.release_held()
        self.drop_forgotten()
        self._track_bundle_users()
        self.evict()
        self.lifecycle.swapped(version, self.counts.consumed, n)
        return n

    def state_equal(self, other: FeedbackLearner) -> bool:
        """Bit-identical models, scores and counts (used to prove crash recovery)."""
        return (
            self.models.state_equal(other.models)
            and self.counts == other.counts
            and self.scores() == other.scores()
            and self.interactions == other.interactions
        )
