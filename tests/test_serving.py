"""Serving core: the state built from model-state records, the ANN index, the policies, the
point predictions (equal to the consumer's models on the same numbers) and the follower
thread on the real broker."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from consumers.state_follower import StateFollowerThread
from producers.simulator import Simulator, SimulatorConfig
from stream.config import KafkaConfig, ServingConfig, Settings, Topics
from stream.events import Context, encode_event
from stream.kafka.broker import ensure_topics
from stream.kafka.model_state import ModelStatePublisher
from stream.learner import FeedbackLearner
from stream.models.bundle import _logit
from stream.serving.recommender import NotReady, Recommender, UnknownItem
from stream.serving.records import (
    EngagementState,
    ItemState,
    ModelMeta,
    StateRecord,
    UserState,
    encode_record,
)
from stream.serving.state import ServingState
from tests.helpers import wait_until


def meta(version: int = 0, sequence: int = 1, published_at: float = 0.0) -> ModelMeta:
    return ModelMeta(
        version=version,
        sequence=sequence,
        snapshot=True,
        published_at=published_at,
        consumed=0,
        global_mean=3.5,
        rating_min=1.0,
        rating_max=5.0,
    )


def through_bytes(state: ServingState, records: list[StateRecord]) -> None:
    """Apply records as a follower does: encoded, then decoded from the bytes."""
    for r in records:
        state.apply_raw(*encode_record(r))


def learner_records(learner: FeedbackLearner) -> list[StateRecord]:
    """The learner's models as model-state records, exported by hand from its tables."""
    b = learner.models
    ru, ri = b.rating._users, b.rating._items
    iu, ii = b.implicit._users, b.implicit._items

    def vec(table: Any, id_: str) -> tuple[float, ...] | None:
        row = table.index.get(id_)
        return None if row is None else tuple(table.vectors[row].tolist())

    def bias(table: Any, id_: str) -> float | None:
        row = table.index.get(id_)
        return None if row is None else table.biases.item(row)

    out: list[StateRecord] = []
    for u in {*ru.ids, *iu.ids, *learner.users}:
        out.append(
            UserState(
                u,
                bias(ru, u),
                vec(ru, u),
                vec(iu, u),
                learner.users.get(u),
                learner.interactions.items_of(u),
            )
        )
    for i in {*ri.ids, *ii.ids, *learner.items}:
        out.append(
            ItemState(
                i,
                bias(ri, i),
                vec(ri, i),
                bias(ii, i),
                vec(ii, i),
                learner.items.get(i),
                learner.interactions.popularity.get(i, 0),
            )
        )
    eng = b.engagement
    out.append(EngagementState(eng.weights, eng.intercept))
    out.append(
        ModelMeta(
            version=0,
            sequence=1,
            snapshot=True,
            published_at=1.0,
            consumed=0,
            global_mean=b.rating.global_mean,
            rating_min=learner.limits.rating_min,
            rating_max=learner.limits.rating_max,
        )
    )
    return out


@pytest.fixture(scope="module")
def learned() -> tuple[FeedbackLearner, ServingState]:
    """A real learner after 20k simulated events, and a state built from its records."""
    learner = FeedbackLearner(Settings())
    sim = Simulator(SimulatorConfig(n_users=300, n_items=200, seed=5))
    for e in [*sim.profiles(), *sim.events(20_000)]:
        learner.process(encode_event(e))
    # A user and an item announced by a profile only (cold start, content only).
    for raw in (
        b'{"type":"user_profile","event_id":"pu","user_id":"newbie","ts":1.7e9,"age":25,'
        b'"gender":"F","occupation":"student"}',
        b'{"type":"item_profile","event_id":"pi","item_id":"fresh","ts":1.7e9,'
        b'"genres":["Drama"],"year":1999}',
    ):
        learner.process(raw)
    state = ServingState()
    through_bytes(state, learner_records(learner))
    return learner, state


def make_recommender(state: ServingState, **cfg: Any) -> Recommender:
    return Recommender(state, ServingConfig(**cfg))


# -- equal to the consumer's models ---------------------------------------------------------
def test_predict_equals_the_models(learned: tuple[FeedbackLearner, ServingState]) -> None:
    learner, state = learned
    rec = make_recommender(state)
    b = learner.models
    ctx = Context(device="mobile", hour=21, weekday=6)
    users = sorted(learner.users)[:15] + ["newbie", "nobody"]
    items = sorted(learner.items)[:15] + ["fresh"]
    for u in users:
        for i in items:
            p = rec.predict(u, i, ctx)
            assert p.rating == b.rating.predict(u, i)
            x = b.engagement.features(learner.users.get(u), learner.items.get(i), ctx)
            x["cf_logit"] = _logit(b.implicit.score(u, i))
            assert p.click_probability == pytest.approx(b.engagement.predict_proba(x), rel=1e-12)
    with pytest.raises(UnknownItem):
        rec.predict(users[0], "no-such-item")


def test_warm_top_k_equals_exact_and_the_model(
    learned: tuple[FeedbackLearner, ServingState],
) -> None:
    learner, state = learned
    rec = make_recommender(state, exploration=0.0)
    learned_ids = {i for i in state.item_ids() if not state.is_content_only(state.row_of(i) or 0)}
    checked = 0
    for u in sorted(learner.models.implicit._users.ids)[:40]:
        r = rec.recommend(u, k=10, policy="model")
        ids = [x.item_id for x in r.items]
        assert r.user_kind == "warm"
        assert ids == rec.exact_top_k(u, 10)
        seen = set(learner.interactions.items_of(u))
        assert not seen & set(ids)
        # The model ranks only items it has learned; so does the state, plus "fresh".
        model = learner.models.implicit.top_k(u, 10, exclude=frozenset(seen))
        ours = [i for i in ids if i in learned_ids]
        assert ours == model[: len(ours)]
        assert all(x.reason in ("personalized", "cold_start") for x in r.items)
        assert [x.position for x in r.items] == list(range(len(ids)))
        scores = [x.score for x in r.items]
        assert scores == sorted(scores, reverse=True)
        checked += 1
    assert checked == 40


def test_seen_items_excluded_unless_asked(learned: tuple[FeedbackLearner, ServingState]) -> None:
    learner, state = learned
    rec = make_recommender(state, exploration=0.0)
    u = max(learner.interactions.seen, key=lambda u: len(learner.interactions.seen[u]))
    seen = set(learner.interactions.items_of(u))
    k = state.n_items
    every = [x.item_id for x in rec.recommend(u, k=k, policy="model", exclude_seen=False).items]
    assert len(every) == state.n_items and seen <= set(every)
    unseen = [x.item_id for x in rec.recommend(u, k=k, policy="model").items]
    assert set(unseen) == set(every) - seen
    for policy in ("explore", "popular", "random"):
        got = {x.item_id for x in rec.recommend(u, k=50, policy=policy).items}  # type: ignore[arg-type]
        assert not got & seen, policy


def test_cold_start_and_content_only_in_a_real_state(
    learned: tuple[FeedbackLearner, ServingState],
) -> None:
    _, state = learned
    rec = make_recommender(state, exploration=0.0)
    assert rec.recommend("newbie", k=5, policy="model").user_kind == "cold_start"
    assert rec.recommend("nobody", k=5, policy="model").user_kind == "unknown"
    row = state.row_of("fresh")
    assert row is not None and state.is_content_only(row) and state.rankable[row]
    every = rec.recommend("nobody", k=state.n_items, policy="model").items
    fresh = [x for x in every if x.item_id == "fresh"]
    assert len(fresh) == 1 and fresh[0].reason == "cold_start"


# -- cold start, synthetic -------------------------------------------------------------------
def demographic_state() -> ServingState:
    """Young women like item "a" (direction x), older men item "b" (direction y)."""
    s = ServingState()
    recs: list[StateRecord] = [
        ItemState(i, implicit_vector=v, implicit_bias=0.0, profile={"genres": [g]})
        for i, v, g in (
            ("a", (1.0, 0.0), "Drama"),
            ("b", (0.0, 1.0), "War"),
            ("c", (-1.0, -1.0), "War"),
        )
    ]
    for n in range(5):
        recs.append(
            UserState(
                f"f{n}",
                implicit_vector=(2.0 + n, 0.1),
                profile={"age": 22 + n, "gender": "F", "occupation": "student"},
            )
        )
        recs.append(
            UserState(
                f"m{n}",
                implicit_vector=(0.1, 2.0 + n),
                profile={"age": 51 + n, "gender": "M", "occupation": "retired"},
            )
        )
    recs += [
        UserState("new-f", profile={"age": 24, "gender": "F", "occupation": "student"}),
        UserState("new-m", profile={"age": 57, "gender": "M", "occupation": "retired"}),
        meta(),
    ]
    through_bytes(s, recs)
    return s


def test_cold_start_user_by_segment() -> None:
    rec = make_recommender(demographic_state(), exploration=0.0)
    f = rec.recommend("new-f", k=1, policy="model")
    m = rec.recommend("new-m", k=1, policy="model")
    assert (f.user_kind, f.items[0].item_id, f.items[0].reason) == ("cold_start", "a", "cold_start")
    assert (m.user_kind, m.items[0].item_id) == ("cold_start", "b")
    # A warm user's own taste wins over their segment's.
    assert rec.recommend("f0", k=1, policy="model").items[0].reason == "personalized"
    unknown = rec.recommend("stranger", k=3, policy="model")
    assert unknown.user_kind == "unknown" and unknown.items[-1].item_id == "c"
    assert all(x.reason == "cold_start" for x in unknown.items)


def test_content_only_item_enters_then_becomes_learned() -> None:
    s = demographic_state()
    rec = make_recommender(s, exploration=0.0)
    s.apply(ItemState("new-drama", profile={"genres": ["Drama"]}))
    # Not ranked before the publication is complete (the meta derives its vector).
    assert "new-drama" not in [x.item_id for x in rec.recommend("f1", k=4, policy="model").items]
    s.apply(meta(sequence=2))
    top = rec.recommend("f1", k=2, policy="model").items
    assert {x.item_id for x in top} == {"a", "new-drama"}  # same vector as its genre's items
    assert next(x for x in top if x.item_id == "new-drama").reason == "cold_start"
    through_bytes(
        s,
        [
            ItemState(
                "new-drama",
                implicit_vector=(3.0, 0.0),
                implicit_bias=0.0,
                profile={"genres": ["Drama"]},
            ),
            meta(sequence=3),
        ],
    )
    top = rec.recommend("f1", k=1, policy="model").items
    assert (top[0].item_id, top[0].reason) == ("new-drama", "personalized")


# -- policies --------------------------------------------------------------------------------
def catalogue_state(n_items: int, dim: int = 8, seed: int = 3, **ann: Any) -> ServingState:
    rng = np.random.default_rng(seed)
    s = ServingState(**ann)
    q = rng.standard_normal((n_items, dim)) * rng.lognormal(-1.0, 0.5, (n_items, 1))
    b = rng.standard_normal(n_items)
    pop = rng.integers(0, 50, n_items)
    for i in range(n_items):
        s.apply(
            ItemState(
                f"i{i}",
                implicit_vector=tuple(q[i]),
                implicit_bias=float(b[i]),
                interactions=int(pop[i]),
            )
        )
    for u in range(200):
        s.apply(
            UserState(
                f"u{u}",
                implicit_vector=tuple(rng.standard_normal(dim)),
                seen=tuple(f"i{j}" for j in rng.choice(n_items, 5, replace=False)),
            )
        )
    s.apply(meta())
    return s


def test_exploration_share_and_propensities() -> None:
    s = catalogue_state(500)
    eps = 0.3
    rec = make_recommender(s, exploration=eps, seed=11)
    n_eligible = 500 - 5
    reasons: Counter[str] = Counter()
    for n in range(1000):
        r = rec.recommend(f"u{n % 200}", k=10, policy="explore")
        greedy = rec.recommend(f"u{n % 200}", k=10, policy="model").items
        assert len({x.item_id for x in r.items}) == 10
        for x in r.items:
            reasons[x.reason] += 1
            if x.reason == "exploration":
                assert x.propensity in (
                    pytest.approx(eps / n_eligible),
                    pytest.approx(1 - eps + eps / n_eligible),
                )
            else:
                assert x.propensity == pytest.approx(1 - eps + eps / n_eligible)
        # Greedy slots keep the model's order.
        kept = [x.item_id for x in r.items if x.reason != "exploration"]
        order = [x.item_id for x in greedy] + rec.exact_top_k(f"u{n % 200}", 20)
        assert kept == sorted(kept, key=order.index)
    share = reasons["exploration"] / sum(reasons.values())
    assert abs(share - eps) < 0.02
    # Same seed, same requests: same slates.
    a = make_recommender(s, exploration=eps, seed=5)
    b = make_recommender(s, exploration=eps, seed=5)
    for n in range(20):
        assert a.recommend(f"u{n}").items == b.recommend(f"u{n}").items


def test_popular_and_random() -> None:
    s = catalogue_state(300)
    rec = make_recommender(s, seed=2)
    pop = {i: s.item(i).interactions for i in s.item_ids()}  # type: ignore[union-attr]
    seen = set(s.user("u0").seen)  # type: ignore[union-attr]
    top = rec.recommend("u0", k=20, policy="popular").items
    expected = sorted(
        (i for i in s.item_ids() if i not in seen), key=lambda i: (-pop[i], int(i[1:]))
    )[:20]
    assert [x.item_id for x in top] == expected
    assert all(x.reason == "popular" and x.propensity == 1.0 for x in top)
    counts: Counter[str] = Counter()
    for _ in range(300):
        r = rec.recommend("u0", k=10, policy="random").items
        assert len({x.item_id for x in r}) == 10 and not {x.item_id for x in r} & seen
        assert all(x.reason == "random" and x.propensity == pytest.approx(1 / 295) for x in r)
        counts.update(x.item_id for x in r)
    # 3,000 uniform draws over 295 items: every item drawn, none wildly over-drawn.
    assert len(counts) == 295 and max(counts.values()) < 30


def test_not_ready_and_bad_requests() -> None:
    s = ServingState()
    rec = make_recommender(s)
    with pytest.raises(NotReady):
        rec.recommend("u")
    with pytest.raises(NotReady):
        rec.predict("u", "i")
    assert s.age_seconds() is None
    through_bytes(
        s, [ItemState("i", implicit_vector=(1.0,), implicit_bias=0.0), meta(published_at=100.0)]
    )
    assert s.age_seconds(now=102.5) == 2.5
    for bad in ({"k": 0}, {"k": 10_001}, {"policy": "best"}, {"exploration": 1.5}):
        with pytest.raises(ValueError):
            rec.recommend("u", **bad)
    s.apply_raw(b"i:x", b"{not json")
    s.apply_raw(b"what", b"{}")
    assert s.records_invalid == 2 and s.records_applied == 2


def test_factor_count_change_restarts_vectors() -> None:
    s = ServingState()
    rec = make_recommender(s, exploration=0.0)
    through_bytes(
        s,
        [
            ItemState("i1", implicit_vector=(1.0, 0.0), implicit_bias=0.0),
            ItemState("i2", implicit_vector=(0.0, 1.0), implicit_bias=0.0),
            UserState("u", implicit_vector=(1.0, 0.0)),
            meta(),
        ],
    )
    assert rec.recommend("u", k=1, policy="model").items[0].item_id == "i1"
    # A swap to a model with 3 factors re-sends everything with the new length.
    through_bytes(
        s,
        [
            ItemState("i1", implicit_vector=(0.0, 0.0, 1.0), implicit_bias=0.0),
            ItemState("i2", implicit_vector=(0.0, 1.0, 0.0), implicit_bias=0.0),
            UserState("u", implicit_vector=(0.0, 1.0, 0.0)),
            meta(version=1),
        ],
    )
    r = rec.recommend("u", k=2, policy="model")
    assert s.dim == 3 and r.model_version == 1 and r.items[0].item_id == "i2"


# -- the ANN index ----------------------------------------------------------------------------
def test_ann_recall_at_10_against_exact_and_after_updates() -> None:
    s = catalogue_state(25_000, dim=16, ann_min_items=5_000)
    s.sync_index()
    assert s.index.built and s.index.size == 25_000
    rec = make_recommender(s, exploration=0.0)

    def recall() -> float:
        hits = 0
        for u in range(200):
            got = [x.item_id for x in rec.recommend(f"u{u}", k=10, policy="model").items]
            hits += len(set(got) & set(rec.exact_top_k(f"u{u}", 10)))
        return hits / 2000

    assert recall() >= 0.95
    # Move 1% of the items (and make some of them the best for every user): still found.
    rng = np.random.default_rng(9)
    for i in rng.choice(25_000, 250, replace=False).tolist():
        vec, _ = s.item_vector(s.row_of(f"i{i}") or 0)
        s.apply(
            ItemState(
                f"i{i}",
                implicit_vector=tuple(vec + rng.standard_normal(16)),
                implicit_bias=float(rng.uniform(2, 4)),
            )
        )
    s.apply(meta(sequence=2))
    assert s.index_pending == 250
    assert recall() >= 0.95  # the query synced the index first
    assert s.index_pending == 0


# -- the follower, on the broker ----------------------------------------------------------------
@pytest.mark.integration
def test_follower_thread_applies_published_records(bootstrap: str) -> None:
    tag = uuid.uuid4().hex[:10]
    topics = Topics.prefixed(tag)
    ensure_topics(bootstrap, topics, kafka=KafkaConfig())
    pub = ModelStatePublisher(bootstrap, topics.model_state, kafka=KafkaConfig())
    items = [
        ItemState(
            f"i{n}",
            implicit_vector=(float(n), 1.0),
            implicit_bias=0.0,
            profile={"genres": ["Drama"]},
            interactions=n,
        )
        for n in range(50)
    ]
    first: list[StateRecord] = [*items, UserState("u", implicit_vector=(1.0, 0.0))]
    pub.publish(encode_record(r) for r in first)
    pub.publish([(b"x:junk", b"{}")])  # undecodable: counted and skipped
    pub.publish([encode_record(meta(version=4, sequence=1))])
    assert pub.flush() == 0
    state = ServingState()
    follower = StateFollowerThread(bootstrap, topics.model_state, state, kafka=KafkaConfig())
    follower.start()
    try:
        wait_until(follower.ready.is_set, "the follower is ready", timeout=60)
        assert follower.caught_up and follower.error is None
        assert (state.n_items, state.n_users, state.records_invalid) == (50, 1, 1)
        assert state.meta is not None and state.meta.version == 4
        rec = make_recommender(state, exploration=0.0)
        assert rec.recommend("u", k=1, policy="model").items[0].item_id == "i49"
        # A later publication reaches the state while the thread runs.
        update: list[StateRecord] = [
            ItemState("i0", implicit_vector=(100.0, 0.0), implicit_bias=0.0),
            meta(version=5, sequence=2),
        ]
        pub.publish(encode_record(r) for r in update)
        assert pub.flush() == 0
        wait_until(lambda: state.meta is not None and state.meta.version == 5, "version 5")
        assert rec.recommend("u", k=1, policy="model").items[0].item_id == "i0"
        assert follower.records_applied == 54 and follower.next_offset == 55  # + the junk
    finally:
        follower.stop()
        pub.close()
    assert not follower.is_alive()


def test_requests_while_a_writer_updates_items_and_the_index() -> None:
    s = catalogue_state(3_000, dim=8, ann_min_items=1_000)
    s.auto_sync = False  # the writer thread syncs, as the follower does
    s.sync_index()
    rec = make_recommender(s, exploration=0.2)
    errors: list[BaseException] = []
    done = threading.Event()

    def writer() -> None:
        rng = np.random.default_rng(1)
        try:
            for seq in range(2, 40):
                with s.lock:
                    for i in rng.choice(3_000, 100, replace=False).tolist():
                        s.apply(
                            ItemState(
                                f"i{i}",
                                implicit_vector=tuple(rng.standard_normal(8)),
                                implicit_bias=0.0,
                            )
                        )
                    s.apply(ItemState(f"new{seq}", profile={"genres": ["Drama"]}))
                    s.apply(meta(sequence=seq))
                s.sync_index()
        except BaseException as err:  # reported below
            errors.append(err)
        finally:
            done.set()

    def reader(n: int) -> None:
        try:
            while not done.is_set():
                for policy in ("model", "explore", "popular", "random"):
                    r = rec.recommend(f"u{n}", k=10, policy=policy)  # type: ignore[arg-type]
                    assert len({x.item_id for x in r.items}) == 10
                rec.predict(f"u{n}", "i1")
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=reader, args=(n,)) for n in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert s.index_pending == 0 and s.index.size == s.n_items == 3_038


def test_before_any_vector_profiles_alone_are_served() -> None:
    # A loop that starts from nothing: the consumer has published profiles, no vectors yet.
    s = ServingState()
    through_bytes(
        s,
        [
            *(
                ItemState(f"i{n}", profile={"genres": ["Drama"]}, interactions=n % 3)
                for n in range(30)
            ),
            meta(sequence=1),
        ],
    )
    rec = make_recommender(s, exploration=0.5, seed=1)
    for policy in ("model", "explore", "popular", "random"):
        r = rec.recommend("anyone", k=10, policy=policy)  # type: ignore[arg-type]
        assert len({x.item_id for x in r.items}) == 10, policy
    greedy = rec.recommend("anyone", k=3, policy="model").items
    assert [x.reason for x in greedy] == ["cold_start"] * 3
    # A content-only item that arrives later is ranked from the next meta on (not a snapshot).
    through_bytes(
        s,
        [
            ItemState(
                "i0", implicit_vector=(1.0, 1.0), implicit_bias=1.0, profile={"genres": ["Drama"]}
            ),
            UserState("u", implicit_vector=(1.0, 0.0)),
            replace(meta(sequence=2), snapshot=False),
        ],
    )
    assert s.dim == 2
    assert rec.recommend("u", k=1, policy="model").items[0].item_id == "i0"
    s.apply(ItemState("late", profile={"genres": ["Drama"]}))
    s.apply(replace(meta(sequence=3), snapshot=False))
    vec, bias = s.item_vector(s.row_of("late") or 0)
    assert vec.tolist() == [1.0, 1.0] and bias == 1.0  # the mean of its genre's learned items
