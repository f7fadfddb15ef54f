"""The closed loop: simulated users are shown what the system recommends, and react to it.

A :class:`ClosedLoop` plays the sessions of a :class:`~producers.simulator.Simulator`'s
population (the same users, items, activity, contexts, event clock and drift schedule), but
each session's slate comes from a ``recommend(user_id, k, policy)`` callable (the serving
path) instead of the simulator's popularity draw. Users are split into arms by a seeded hash
of their id, one policy per arm, and react with their hidden tastes:

- **position bias**: a user examines position ``j`` (0-based) with probability
  ``(1 + j) ** -position_decay`` and clicks an examined item with its true click
  probability (:func:`~producers.simulator.sessions.click_probability`);
- **fatigue**: every earlier impression of the same item to the same user multiplies its
  appeal by ``fatigue``; it wears off, each of the user's sessions keeping a share
  ``fatigue_memory`` of the impressions counted so far;
- clicks bring a dwell time and sometimes a rating, as in the open-loop sessions.

Impressions and clicks carry the ``position``, the ``policy`` and the ``propensity`` the
recommender gave, so learning can correct for position and selection bias. Every session is
scored by :class:`~producers.simulator.loop_metrics.LoopMetrics` against the truth.

:meth:`ClosedLoop.records` yields the profiles, waits for the serving state to be ready
(models learn from the events, so nothing can be recommended before the first state), then
sessions paced at ``rate`` events per second, so the consumer's updates reach the server
while the stream goes on.

>>> from producers.simulator import Simulator, SimulatorConfig
>>> sim = Simulator(SimulatorConfig(n_users=30, n_items=20, seed=5))
>>> loop = ClosedLoop(sim, first_k_items(sim.item_ids), LoopConfig(rate=None))
>>> records = list(loop.records(100))
>>> len(records) - 50 >= 100, records[50].policy in POLICIES, records[50].position
(True, True, 0)
>>> loop.metrics.sessions == len({r.context.session_id for r in records[50:]})
True
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from producers.simulator.loop_metrics import LoopMetrics, expected_clicks, oracle_clicks
from producers.simulator.population import DEVICES, ProfileEventType
from producers.simulator.sessions import (
    InteractionEventType,
    click_probability,
    context,
    dwell_seconds,
    rating_value,
)
from producers.simulator.simulator import Simulator
from stream.events import (
    SCHEMA_VERSION,
    ClickEvent,
    Context,
    DwellEvent,
    ImpressionEvent,
    RatingEvent,
)
from stream.serving.recommender import POLICIES, Recommendations, Recommended

__all__ = [
    "BOOTSTRAP",
    "POLICIES",
    "ClosedLoop",
    "LoopConfig",
    "RecommendFn",
    "Waitable",
    "first_k_items",
    "http_ready",
    "http_recommender",
]

#: Policy of the random slates shown while the serving state cannot rank anything yet.
BOOTSTRAP = "bootstrap"
#: The serving path as the loop sees it: (user id, k, policy) -> a slate.
RecommendFn = Callable[[str, int, str], Recommendations]


class Waitable(Protocol):
    """Something to wait on, such as :class:`threading.Event` (the state follower's
    ``ready``)."""

    def wait(self, timeout: float | None = None) -> bool: ...


@dataclass(frozen=True)
class LoopConfig:
    """How the simulated users see slates, and how the loop runs.

    ``rate`` is interaction events per second (None: as fast as possible);
    ``ready_timeout`` bounds the wait for the first serving state (RuntimeError after it).
    """

    policies: tuple[str, ...] = ("random", "popular", "model", "explore")
    position_decay: float = 0.5
    fatigue: float = 0.85
    fatigue_memory: float = 0.9
    window_sessions: int = 400
    rate: float | None = 1500.0
    ready_timeout: float = 120.0

    def __post_init__(self) -> None:
        if not self.policies or len(set(self.policies)) != len(self.policies):
            raise ValueError(f"policies must be distinct and not empty, got {self.policies!r}")
        unknown = set(self.policies) - set(POLICIES)
        if unknown:
            raise ValueError(f"unknown policies {sorted(unknown)}; known: {list(POLICIES)}")
        if not math.isfinite(self.position_decay) or self.position_decay < 0:
            raise ValueError(f"position_decay must be >= 0, got {self.position_decay!r}")
        if not 0.0 < self.fatigue <= 1.0:
            raise ValueError(f"fatigue must be in (0, 1], got {self.fatigue!r}")
        if not 0.0 <= self.fatigue_memory <= 1.0:
            raise ValueError(f"fatigue_memory must be in [0, 1], got {self.fatigue_memory!r}")
        if self.rate is not None and not self.rate > 0:
            raise ValueError(f"rate must be positive (or None), got {self.rate!r}")


def examination(k: int, decay: float) -> np.ndarray:
    """P(a user looks at position j), j = 0..k-1.

    >>> [round(float(x), 3) for x in examination(3, 1.0)]
    [1.0, 0.5, 0.333]
    """
    result: np.ndarray = (1.0 + np.arange(k, dtype=float)) ** -decay
    return result


def arm_of(seed: int, user_id: str, policies: Sequence[str]) -> str:
    """The policy a user's sessions get: a seeded hash of the id, stable across runs.

    >>> arm_of(42, "u00001", ("a", "b")) == arm_of(42, "u00001", ("a", "b"))
    True
    """
    digest = hashlib.blake2b(f"{seed}:{user_id}".encode(), digest_size=8).digest()
    return policies[int.from_bytes(digest, "big") % len(policies)]


def first_k_items(item_ids: Sequence[str]) -> RecommendFn:
    """A stand-in recommender (for examples and tests): the first k items, propensity 1."""

    def recommend(user_id: str, k: int, policy: str) -> Recommendations:
        items = [
            Recommended(item_id=i, score=1.0, reason="popular", position=p, propensity=1.0)
            for p, i in enumerate(item_ids[:k])
        ]
        return Recommendations(
            user_id=user_id, user_kind="warm", policy=policy,  # type: ignore[arg-type]
            items=items, model_version=0, state_age_seconds=0.0, request_id="static",
        )  # fmt: skip

    return recommend


@dataclass
class _Reaction:
    """What a user does with one slate: per position, click, dwell, rating (if rated)."""

    clicked: list[bool]
    dwell: list[float]
    rating: list[float]
    rated: list[bool]
    gaps: Iterator[float]  # event-time gaps, one per event


class _NeverWait:
    def wait(self, timeout: float | None = None) -> bool:
        return True


class ClosedLoop:
    """Sessions whose slates come from ``recommend``; see the module docstring.

    ``ready`` (default: already ready) is waited on after the profiles. :meth:`close` stops
    the stream at the next session, and any wait, from another thread.
    """

    def __init__(
        self,
        simulator: Simulator,
        recommend: RecommendFn,
        config: LoopConfig | None = None,
        ready: Waitable | None = None,
        metrics: LoopMetrics | None = None,
    ) -> None:
        self.sim = simulator
        self.config = config or LoopConfig()
        self.recommend = recommend
        self.ready = ready or _NeverWait()
        pop = simulator.population
        self.metrics = metrics or LoopMetrics(
            self.config.policies, len(pop.item_ids), self.config.window_sessions
        )
        seed = simulator.config.seed
        # A stream of its own (entropy = seed, spawn key 1) so the loop's draws never shift
        # the open-loop simulator's.
        self._rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))
        self._stop = threading.Event()
        self._prefix = f"loop-{seed}-"
        self._arm = [arm_of(seed, u, self.config.policies) for u in pop.user_ids]
        # Impressions of each item to each user (for fatigue; fading), created on first use.
        self._shown: dict[int, np.ndarray] = {}
        self._exam = examination(simulator.config.slate_size, self.config.position_decay)
        self._drift_version = -1
        self.index = 0  # interaction events generated
        self.session = 0
        self.model_versions: set[int] = set()
        self.state_age_max = 0.0
        self._refresh_truth()

    # ------------------------------------------------------------------ public API

    def policy_of(self, user_id: str) -> str:
        return self._arm[self.sim.population.user_index(user_id)]

    def close(self) -> None:
        self._stop.set()

    @property
    def closed(self) -> bool:
        return self._stop.is_set()

    def records(self, n_events: int) -> Iterator[ProfileEventType | InteractionEventType]:
        """The profiles, then (once ready) sessions until at least ``n_events`` interaction
        events: the last session is played to its end, so the loop metrics and the events
        agree."""
        yield from self.sim.profiles()
        if not self.wait_ready():
            return
        yield from self.events(n_events)

    def events(self, n_events: int) -> Iterator[InteractionEventType]:
        """Sessions (paced at ``config.rate``) until at least ``n_events`` more events."""
        rate = self.config.rate
        target = self.index + n_events
        started, first = time.perf_counter(), self.index
        while self.index < target and not self._stop.is_set():
            yield from self._session()
            if rate:
                ahead = started + (self.index - first) / rate - time.perf_counter()
                if ahead > 0 and self._stop.wait(ahead):
                    return

    def true_attraction(self, user: int) -> np.ndarray:
        """Each item's click probability for ``user`` if examined, fatigue included."""
        pop = self.sim.population
        attract = click_probability(pop.item_vec @ pop.user_vec[user])
        shown = self._shown.get(user)
        if shown is not None:
            attract = attract * self.config.fatigue**shown
        return attract

    def report(self) -> dict[str, Any]:
        """The report's ``closed_loop`` section (see :meth:`LoopMetrics.report`)."""
        out = self.metrics.report(self.sim.config.drift_at)
        out["config"] = {
            "policies": list(self.config.policies),
            "position_decay": self.config.position_decay,
            "fatigue": self.config.fatigue,
            "fatigue_memory": self.config.fatigue_memory,
            "rate": self.config.rate,
            "slate_size": self.sim.config.slate_size,
        }
        out["events"] = self.index
        out["model_versions_served"] = sorted(self.model_versions)
        out["state_age_max_seconds"] = round(self.state_age_max, 3)
        return out

    def wait_ready(self) -> bool:
        """Wait for the serving state (True), or until :meth:`close` (False); RuntimeError
        after ``config.ready_timeout``."""
        deadline = time.monotonic() + self.config.ready_timeout
        while not self._stop.is_set():
            if self.ready.wait(0.2):
                return True
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"no serving state after {self.config.ready_timeout:.0f}s: is the "
                    "consumer publishing model state?"
                )
        return False

    # ------------------------------------------------------------------ internals

    def _refresh_truth(self) -> None:
        """Item popularity under the current tastes: mean click probability over the
        normal users (recomputed when the drift moves the vectors)."""
        drift = self.sim.drift_schedule
        if drift.version == self._drift_version:
            return
        self._drift_version = drift.version
        pop = self.sim.population
        users = pop.user_vec[~pop.is_bot]
        total = np.zeros(len(pop.item_ids))
        for start in range(0, len(users), 4096):  # bounded memory for big populations
            total += click_probability(users[start : start + 4096] @ pop.item_vec.T).sum(0)
        self.metrics.set_true_popularity(total / max(1, len(users)))

    def _draw_user(self) -> int:
        pop = self.sim.population
        while True:  # bots do not ask for recommendations
            user = int(np.searchsorted(pop.session_cdf, self._rng.random(), side="right"))
            user = min(user, len(pop.user_ids) - 1)
            if not pop.is_bot[user]:
                return user

    def _session(self) -> Iterator[InteractionEventType]:
        sim, pop, rng = self.sim, self.sim.population, self._rng
        if sim.drift_schedule.due(self.index):
            self._refresh_truth()
        user = self._draw_user()
        uid = pop.user_ids[user]
        device = int(pop.device[user]) if rng.random() < 0.8 else int(rng.integers(0, len(DEVICES)))
        ctx = context(sim.clock.now, device, f"{self._prefix}s{self.session}")
        self.session += 1
        recs = self.recommend(uid, sim.config.slate_size, self._arm[user])
        self.model_versions.add(recs.model_version)
        self.state_age_max = max(self.state_age_max, recs.state_age_seconds)
        if not recs.items:
            # Nothing to rank yet (the models have learned no item, so no content vector
            # either): the system shows a random slate, as a new service would, logged
            # under its own policy and kept out of the per-policy comparison.
            recs = self._bootstrap_slate(uid)
        shown: list[Recommended] = []
        slate: list[int] = []
        for rec in recs.items:
            try:
                slate.append(pop.item_index(rec.item_id))
                shown.append(rec)
            except KeyError:  # not one of ours: nobody reacts to it
                continue
        attract_all = self.true_attraction(user)
        attract = attract_all[np.asarray(slate, dtype=np.intp)]
        k = len(slate)
        exam = self._exam[:k]
        clicked = (rng.random(k) < exam * attract).tolist()
        aff = pop.user_vec[user] @ pop.item_vec[slate].T if k else np.zeros(0)
        react = _Reaction(
            clicked=clicked,
            dwell=dwell_seconds(aff, rng.standard_normal(k)).tolist(),
            rating=rating_value(aff, rng.standard_normal(k)).tolist(),
            rated=(rng.random(k) < sim.config.rating_prob).tolist(),
            gaps=iter(rng.exponential(1.0 / sim.config.events_per_second, 3 * k).tolist()),
        )
        n_events = k + sum(c + (c and r) for c, r in zip(clicked, react.rated, strict=True))
        self.metrics.record(
            recs.policy,
            slate,
            clicked,
            expected=expected_clicks(attract, exam),
            oracle=oracle_clicks(attract_all, self._exam),
            event_index=self.index + n_events,
        )
        # Fatigue counts from the next session on (this slate was seen fresh), and fades.
        counts = self._shown.get(user)
        if counts is None:
            counts = self._shown[user] = np.zeros(len(pop.item_ids))
        counts *= self.config.fatigue_memory
        counts[slate] += 1.0
        yield from self._emit(user, uid, ctx, recs.policy, shown, react)

    def _bootstrap_slate(self, user_id: str) -> Recommendations:
        n, k = len(self.sim.item_ids), self.sim.config.slate_size
        picked = self._rng.choice(n, k, replace=False).tolist()
        items = [
            Recommended(self.sim.item_ids[i], 0.0, "random", pos, 1.0 / n)
            for pos, i in enumerate(picked)
        ]
        return Recommendations(
            user_id=user_id, user_kind="unknown", policy=BOOTSTRAP,  # type: ignore[arg-type]
            items=items, model_version=0, state_age_seconds=0.0, request_id="bootstrap",
        )  # fmt: skip

    def _emit(
        self,
        user: int,
        uid: str,
        ctx: Context,
        policy: str,
        shown: list[Recommended],
        react: _Reaction,
    ) -> Iterator[InteractionEventType]:
        clock, prefix, v = self.sim.clock, self._prefix, SCHEMA_VERSION
        clicked, gap = react.clicked, react.gaps
        for j, rec in enumerate(shown):
            # The recommender's propensity, when it is a probability the schema accepts.
            prop = rec.propensity if 0.0 < rec.propensity <= 1.0 else None
            ts = clock.tick(user, next(gap))
            i, self.index = self.index, self.index + 1
            cls = ClickEvent if clicked[j] else ImpressionEvent
            yield cls.model_construct(
                schema_version=v, type="click" if clicked[j] else "impression",
                event_id=f"{prefix}{i}", ts=ts, context=ctx, user_id=uid, item_id=rec.item_id,
                position=j, policy=policy, propensity=prop,
            )  # fmt: skip
            if not clicked[j]:
                continue
            ts = clock.tick(user, next(gap))
            i, self.index = self.index, self.index + 1
            yield DwellEvent.model_construct(
                schema_version=v, type="dwell", event_id=f"{prefix}{i}", ts=ts, context=ctx,
                user_id=uid, item_id=rec.item_id, seconds=react.dwell[j],
            )  # fmt: skip
            if not react.rated[j]:
                continue
            ts = clock.tick(user, next(gap))
            i, self.index = self.index, self.index + 1
            yield RatingEvent.model_construct(
                schema_version=v, type="rating", event_id=f"{prefix}{i}", ts=ts, context=ctx,
                user_id=uid, item_id=rec.item_id, rating=react.rating[j],
            )  # fmt: skip


def http_recommender(base_url: str, timeout: float = 10.0) -> RecommendFn:
    """``recommend`` over HTTP: ``GET {base_url}/recommendations/{user}?k=&policy=`` of a
    running ``feedback-loop serve``, so the loop closes through the real service.

    A 503 (the server not ready yet) is an empty slate: the loop shows its bootstrap slate.
    """
    import urllib.error
    import urllib.parse
    import urllib.request

    import orjson

    root = base_url.rstrip("/")

    def recommend(user_id: str, k: int, policy: str) -> Recommendations:
        query = urllib.parse.urlencode({"k": k, "policy": policy})
        url = f"{root}/recommendations/{urllib.parse.quote(user_id)}?{query}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as answer:
                body = orjson.loads(answer.read())
        except urllib.error.HTTPError as err:
            if err.code != 503:
                raise
            return Recommendations(
                user_id,
                "unknown",
                policy,  # type: ignore[arg-type]
                [],
                0,
                0.0,
                "not-ready",  # type: ignore[arg-type]
            )
        items = [
            Recommended(i["item_id"], i["score"], i["reason"], i["position"], i["propensity"])
            for i in body["items"]
        ]
        return Recommendations(
            body["user_id"], body["user_kind"], body["policy"], items, body["model_version"],
            body["state_age_seconds"], body["request_id"],
        )  # fmt: skip

    return recommend


class http_ready:  # noqa: N801 - used like a function, as threading.Event is
    """A :class:`Waitable` that is set once ``GET {base_url}/readyz`` answers 200."""

    def __init__(self, base_url: str, poll_seconds: float = 0.1) -> None:
        self.url = base_url.rstrip("/") + "/readyz"
        self.poll_seconds = poll_seconds

    def wait(self, timeout: float | None = None) -> bool:
        import urllib.request

        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.url, timeout=2) as answer:
                    if answer.status == 200:
                        return True
            except OSError:  # refused, 503 (HTTPError), timeout: not yet
                pass
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(self.poll_seconds)
