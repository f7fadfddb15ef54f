"""Learners of disjoint users share one item model by exchanging deltas (ItemSync).

A seeded simulator stream is split by user (profiles of items by item id, as a keyed topic
would) into parts, one learner per part; the learners take turns processing a round of
events each and then exchange deltas: every learner takes its delta and all the others
apply it.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Sequence

import numpy as np
import pytest

from producers.simulator import SimulatorConfig, split_by_user
from stream.config import Settings
from stream.events import Event
from stream.learner import FeedbackLearner, ItemDelta, ItemSync
from stream.models.factors import FactorTable

CFG = SimulatorConfig(n_users=400, n_items=150, seed=11)


def exchange(syncs: Sequence[ItemSync], reverse: bool = False) -> list[ItemDelta | None]:
    deltas = [s.take() for s in syncs]
    for s in syncs:
        for d in reversed(deltas) if reverse else deltas:
            if d is not None:
                s.apply(d)
    return deltas


def run(
    parts: list[list[Event]], every: int, share: bool = True, reverse: bool = False
) -> list[FeedbackLearner]:
    """One learner per part, ``every`` events each per round, an exchange after each."""
    learners = [FeedbackLearner(Settings()) for _ in parts]
    syncs = [lr.share_items(i, 1.0 / len(parts)) for i, lr in enumerate(learners)] if share else []
    for start in range(0, max(map(len, parts)), every):
        for learner, part in zip(learners, parts, strict=True):
            for e in part[start : start + every]:
                learner.apply(e)
        # Reversed order on odd learners too: deltas of different sources out of order.
        exchange(syncs, reverse)
    return learners


def item_state(learner: FeedbackLearner) -> dict[str, object]:
    """The shared item state, rows in id order (tasks add rows in different orders)."""
    m = learner.models
    out: dict[str, object] = {}
    for name, model in (("rating", m.rating), ("implicit", m.implicit)):
        t = model._items
        ids = sorted(t.ids)
        rows = [t.index[i] for i in ids]
        out[name] = (ids, t.vectors[rows], t.biases[rows], np.asarray(t.counts)[rows])
    out["mean"] = (m.rating.global_mean, m.rating.n_ratings, m.implicit.n_updates)
    out["click"] = (m.engagement.weights, m.engagement.intercept, m.engagement.n_learned)
    out["popularity"] = learner.interactions.popularity
    out["profiles"] = learner.items
    return out


def assert_same_items(a: FeedbackLearner, b: FeedbackLearner) -> None:
    sa, sb = item_state(a), item_state(b)
    for name in ("rating", "implicit"):
        ids_a, va, ba, ca = sa[name]  # type: ignore[misc]
        ids_b, vb, bb, cb = sb[name]  # type: ignore[misc]
        assert ids_a == ids_b
        np.testing.assert_allclose(va, vb, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(ba, bb, rtol=1e-9, atol=1e-12)
        assert np.array_equal(ca, cb)
    mean_a, n_a, imp_a = sa["mean"]  # type: ignore[misc]
    mean_b, n_b, imp_b = sb["mean"]  # type: ignore[misc]
    assert (n_a, imp_a) == (n_b, imp_b) and math.isclose(mean_a, mean_b, rel_tol=1e-12)
    wa, ia, na = sa["click"]  # type: ignore[misc]
    wb, ib, nb = sb["click"]  # type: ignore[misc]
    assert wa.keys() == wb.keys() and na == nb
    np.testing.assert_allclose([wa[k] for k in wa], [wb[k] for k in wa], rtol=1e-9, atol=1e-12)
    assert math.isclose(ia, ib, rel_tol=1e-9, abs_tol=1e-12)
    assert sa["popularity"] == sb["popularity"]
    assert sa["profiles"] == sb["profiles"]


def pooled(learners: Sequence[FeedbackLearner]) -> tuple[float, float]:
    """Click log loss and rating RMSE over all learners' events (weighted by their n)."""
    n = sum(lr.click_score.n for lr in learners)
    logloss = sum((lr.click_score.logloss or 0.0) * lr.click_score.n for lr in learners) / n
    m = sum(lr.rating_score.n for lr in learners)
    sq = sum((lr.rating_score.rmse or 0.0) ** 2 * lr.rating_score.n for lr in learners)
    return logloss, math.sqrt(sq / m)


@pytest.mark.parametrize("parts", [2, 4])
def test_learners_end_with_the_same_item_state(parts: int) -> None:
    learners = run(split_by_user(CFG, 6000, parts), every=250)
    assert learners[0].models.implicit.n_items == len(learners[0].items) == CFG.n_items
    for other in learners[1:]:
        assert_same_items(learners[0], other)
    # The users stay apart: each learner holds only its own.
    held = [set(lr.models.implicit._users.ids) for lr in learners]
    assert sum(map(len, held)) == len(set().union(*held))


def test_deltas_from_several_sources_in_any_order_converge() -> None:
    learners = run(split_by_user(CFG, 4000, 3), every=300, reverse=True)
    for other in learners[1:]:
        assert_same_items(learners[0], other)


def test_a_task_that_starts_an_item_later_takes_the_shared_start() -> None:
    # Both start items (from their own cold-start priors) before any delta arrives.
    parts = split_by_user(CFG, 3000, 2, items_everywhere=True)
    a, b = FeedbackLearner(Settings()), FeedbackLearner(Settings())
    sa, sb = a.share_items(0), b.share_items(1)
    for e in parts[0]:
        a.apply(e)
    for e in parts[1]:
        b.apply(e)
    db, da = sb.take(), sa.take()
    assert da is not None and db is not None
    starts_a = dict(zip(da.implicit.new_ids, da.implicit.new_vectors.tolist(), strict=True))
    starts_b = dict(zip(db.implicit.new_ids, db.implicit.new_vectors.tolist(), strict=True))
    both = starts_a.keys() & starts_b.keys()
    # Both started some items, some of them from different priors: the lower source wins.
    assert any(starts_a[i] != starts_b[i] for i in both)
    sa.apply(db)
    sb.apply(da)
    assert_same_items(a, b)


def test_delta_round_trip() -> None:
    learners = run(split_by_user(CFG, 1500, 2), every=10**9, share=False)
    sync = ItemSync(learners[0], source=3)
    for e in split_by_user(CFG, 3000, 2)[0][-200:]:
        learners[0].apply(e)
    delta = sync.take()
    assert delta is not None and delta.rating.ids and delta.click_weights and delta.popularity
    raw = delta.to_bytes()
    back = ItemDelta.from_bytes(raw)
    assert back.to_bytes() == raw
    assert (back.source, back.seq) == (3, 1)
    for mine, theirs in ((delta.rating, back.rating), (delta.implicit, back.implicit)):
        assert mine.ids == theirs.ids and mine.new_ids == theirs.new_ids
        for f in ("vectors", "biases", "counts", "new_vectors", "new_biases"):
            assert np.array_equal(getattr(mine, f), getattr(theirs, f))
    assert back.click_weights == delta.click_weights
    assert back.popularity == delta.popularity and back.profiles == delta.profiles
    assert back.rating_sum == delta.rating_sum and back.rating_n == delta.rating_n


def test_a_delta_applied_again_changes_nothing() -> None:
    parts = split_by_user(CFG, 3000, 2)
    a, b = FeedbackLearner(Settings()), FeedbackLearner(Settings())
    sa, sb = a.share_items(0), b.share_items(1)
    for e in parts[0]:
        a.apply(e)
    for e in parts[1]:
        b.apply(e)
    delta = sa.take()
    assert delta is not None
    assert sb.apply(delta)
    before = pickle.dumps(b)
    assert not sb.apply(delta)
    assert not sb.apply(ItemDelta.from_bytes(delta.to_bytes()))
    assert not sa.apply(delta)  # its own
    assert pickle.dumps(b) == before
    # Nothing of the applied delta goes back out: b sends only its own changes.
    db = sb.take()
    assert db is not None
    assert db.rating_n == b.rating_score.n
    assert db.click_n == b.click_score.n


def test_pickled_learner_takes_the_same_deltas() -> None:
    parts = split_by_user(CFG, 4000, 2)
    learners = run([p[: len(p) // 2] for p in parts], every=200)
    restored = pickle.loads(pickle.dumps(learners[0]))
    assert restored.item_sync is not None and restored.item_sync.learner is restored
    for learner in (learners[0], restored):
        for e in parts[0][len(parts[0]) // 2 :]:
            learner.apply(e)
    first, second = learners[0].item_sync, restored.item_sync
    assert first is not None
    d1, d2 = first.take(), second.take()
    assert d1 is not None and d2 is not None
    assert d1.to_bytes() == d2.to_bytes()
    assert restored.state_equal(learners[0])


def test_replays_with_sharing_are_bit_identical() -> None:
    parts = split_by_user(CFG, 3000, 2)
    first, second = run(parts, every=200), run(parts, every=200)
    for x, y in zip(first, second, strict=True):
        assert x.state_equal(y)


def test_item_start_vectors_come_from_the_id() -> None:
    t1 = FactorTable(factors=4, init_scale=0.1, seed=5, stream=1, keyed=True)
    t2 = FactorTable(factors=4, init_scale=0.1, seed=5, stream=1, keyed=True)
    for id_ in ("a", "b", "c"):
        t1.add(id_)
    for id_ in ("c", "a"):
        t2.add(id_)
    assert np.array_equal(t1.vectors[t1.index["a"]], t2.vectors[t2.index["a"]])
    assert np.array_equal(t1.vectors[t1.index["c"]], t2.vectors[t2.index["c"]])
    assert not np.array_equal(t1.vectors[0], t1.vectors[1])
    other_seed = FactorTable(factors=4, init_scale=0.1, seed=6, stream=1, keyed=True)
    other_seed.add("a")
    assert not np.array_equal(other_seed.vectors[0], t1.vectors[0])


@pytest.mark.parametrize("keyed", [True, False])
def test_a_row_added_with_a_start_holds_it_and_later_rows_draw_as_usual(keyed: bool) -> None:
    def table() -> FactorTable:
        return FactorTable(factors=4, init_scale=0.1, seed=5, stream=1, keyed=keyed)

    drawn, given = table(), table()
    for id_ in ("a", "b"):
        drawn.add(id_)
    start = np.arange(4.0)
    given.add("a", start)
    given.add("b")
    assert np.array_equal(given.vectors[0], start)
    # The start replaces only its own row: the next row's draw is the one it always was.
    assert np.array_equal(given.vectors[1], drawn.vectors[1])


def test_a_swap_starts_a_new_base() -> None:
    parts = split_by_user(CFG, 2000, 2, items_everywhere=True)
    a = FeedbackLearner(Settings())
    sync = a.share_items(0)
    for e in parts[0]:
        a.apply(e)
    assert sync.take() is not None
    trained = FeedbackLearner(Settings())
    for e in parts[1]:
        trained.apply(e)
    a.swap(trained.models, version=1, catch_up=[])
    assert sync.take() is None  # the swapped-in bundle is not sent as a change
    a.apply(parts[0][-1].model_copy(update={"event_id": "again"}))
    delta = sync.take()
    assert delta is not None and delta.implicit_n + delta.rating_n == 1


@pytest.mark.slow
@pytest.mark.parametrize("parts", [2, 4])
def test_shared_items_score_close_to_one_learner(parts: int) -> None:
    cfg = SimulatorConfig(n_users=3000, n_items=1700, seed=7)
    one = pooled(run(split_by_user(cfg, 60_000, 1), every=10**9, share=False))
    # Apart, each learner still gets every item profile (else it could not learn them).
    alone = pooled(run(split_by_user(cfg, 60_000, parts, True), every=10**9, share=False))
    shared = pooled(run(split_by_user(cfg, 60_000, parts), every=50))
    # Sharing closes most of the gap that learning apart opens, and ends within 1% of one
    # learner over the whole stream.
    for metric in (0, 1):
        assert abs(shared[metric] - one[metric]) < 0.5 * abs(alone[metric] - one[metric])
        assert shared[metric] < one[metric] * 1.01


def test_tasks_that_swap_at_different_times_agree_through_the_generation_of_their_deltas() -> None:
    """Two tasks swap to the same bundle (swap generation 7) at different times: a delta of
    the old models is not applied to the new ones (its events are in the bundle or in its
    sender's catch-up), one of the new models waits (also in a checkpoint) until the
    receiver has swapped, and after the exchange both hold the same item model."""
    parts = split_by_user(CFG, 6000, 2)
    cut = [len(p) // 2 for p in parts]  # the retrain's history ends here in both parts
    a, b = run([p[:c] for p, c in zip(parts, cut, strict=True)], every=250)
    sa, sb = a.item_sync, b.item_sync
    assert sa is not None and sb is not None
    retrained = FeedbackLearner(Settings())
    for p, c in zip(parts, cut, strict=True):
        for e in p[:c]:
            retrained.apply(e)
    bundle = pickle.dumps(retrained.models)
    more = [p[c : c + 500] for p, c in zip(parts, cut, strict=True)]
    for learner, events in ((a, more[0]), (b, more[1])):
        for e in events:
            learner.apply(e)
    old_b = sb.take()  # B, still on the old models, sends its changes
    a.swap(pickle.loads(bundle), version=1, catch_up=more[0], generation=7)
    assert old_b is not None and sa.apply(old_b)  # popularity and profiles only
    new_a = sa.take()  # A's catch-up, on the new models
    assert new_a is not None and new_a.generation == 7
    assert ItemDelta.from_bytes(new_a.to_bytes()).generation == 7
    assert not sb.apply(new_a) and sb.held == (new_a,)
    b = pickle.loads(pickle.dumps(b))  # a checkpoint: the held delta survives it
    sb = b.item_sync
    assert sb is not None and len(sb.held) == 1 and not sb.apply(new_a)  # held once
    b.swap(pickle.loads(bundle), version=1, catch_up=more[1], generation=7)
    assert sb.held == () and sb.applied[0] == new_a.seq
    exchange([sa, sb])
    assert_same_items(a, b)
    assert a.lifecycle.version == b.lifecycle.version == 1
