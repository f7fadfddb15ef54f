"""Behaviour of the online models (no broker): they learn, replay bit for bit, never grow
state when only asked for predictions, and survive a pickle round trip."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from stream.config import ModelConfig
from stream.evaluation import BinaryScore, HitRate, RegressionScore
from stream.events import Context
from stream.models import EngagementModel, ImplicitMF, OnlineMF
from stream.models.rating_mf import CHUNK

# --------------------------------------------------------------------------------------
# synthetic data


def low_rank_ratings(
    seed: int = 7, n_users: int = 300, n_items: int = 200, n: int = 60_000
) -> list[tuple[str, str, float]]:
    """Ratings from a rank-3 model with biases and a little noise, clipped to [1, 5]."""
    rng = np.random.default_rng(seed)
    rank = 3
    u_f = rng.normal(0, 0.8, (n_users, rank))
    i_f = rng.normal(0, 0.8, (n_items, rank))
    u_b = rng.normal(0, 0.4, n_users)
    i_b = rng.normal(0, 0.4, n_items)
    us = rng.integers(0, n_users, n)
    its = rng.integers(0, n_items, n)
    y = 3.5 + u_b[us] + i_b[its] + np.einsum("ij,ij->i", u_f[us], i_f[its])
    y = np.clip(y + rng.normal(0, 0.3, n), 1.0, 5.0)
    triples = zip(us.tolist(), its.tolist(), y.tolist(), strict=True)
    return [(f"u{u}", f"i{i}", r) for u, i, r in triples]


def prequential_rmse(model: OnlineMF, stream: list[tuple[str, str, float]]) -> float:
    """RMSE of the predictions made before learning, over the second half of the stream."""
    score = RegressionScore()
    half = len(stream) // 2
    for k, (u, i, r) in enumerate(stream):
        p = model.update(u, i, r)
        if k >= half:
            score.update(r, p)
    assert score.rmse is not None
    return score.rmse


def running_mean_rmse(stream: list[tuple[str, str, float]]) -> float:
    score = RegressionScore()
    half = len(stream) // 2
    mean = 0.0
    for k, (_, _, r) in enumerate(stream):
        if k >= half:
            score.update(r, mean)
        mean += (r - mean) / (k + 1)
    assert score.rmse is not None
    return score.rmse


# --------------------------------------------------------------------------------------
# OnlineMF


@pytest.fixture(scope="module")
def ratings() -> list[tuple[str, str, float]]:
    return low_rank_ratings()


def test_online_mf_beats_global_mean_and_biases_on_low_rank_data(ratings):
    baseline = running_mean_rmse(ratings)
    mf = prequential_rmse(OnlineMF(factors=8, learning_rate=0.05, bias_learning_rate=0.05), ratings)
    # init_scale=0 keeps every factor at zero: a biases-only model.
    biases_only = prequential_rmse(
        OnlineMF(factors=8, learning_rate=0.05, bias_learning_rate=0.05, init_scale=0.0), ratings
    )
    assert mf < 0.8 * baseline, (mf, baseline)
    assert mf < 0.9 * biases_only, (mf, biases_only)
    # Default hyperparameters learn more slowly, but still clearly beat the mean.
    assert prequential_rmse(OnlineMF(factors=8), ratings) < 0.95 * baseline


def test_online_mf_update_returns_prediction_made_before_learning(ratings):
    model = OnlineMF(factors=4, seed=1)
    for u, i, r in ratings[:3000]:
        before = model.predict(u, i)
        assert model.update(u, i, r) == before
    u, i, r = ratings[0]
    p0 = model.predict(u, i)
    model.update(u, i, 5.0)
    assert model.predict(u, i) > p0  # moved towards the target


def test_online_mf_global_mean_is_running_mean(ratings):
    model = OnlineMF()
    assert model.predict("nobody", "nothing") == 0.0
    values = [r for _, _, r in ratings[:500]]
    for u, i, r in ratings[:500]:
        model.update(u, i, r)
    assert model.global_mean == pytest.approx(float(np.mean(values)), rel=1e-12)
    assert model.n_ratings == 500


def test_online_mf_predict_never_adds_state(ratings):
    model = OnlineMF(factors=4)
    for u, i, r in ratings[:1000]:
        model.update(u, i, r)
    n_users, n_items = model.n_users, model.n_items
    snapshot = pickle.loads(pickle.dumps(model))
    known_user, known_item, _ = ratings[0]
    # Unknown ids mean zero bias and zero factors.
    assert model.predict("ghost", "phantom") == model.global_mean
    only_item = model.predict("ghost", known_item)
    only_user = model.predict(known_user, "phantom")
    b_i = model._items.biases[model._items.index[known_item]]
    b_u = model._users.biases[model._users.index[known_user]]
    assert only_item == pytest.approx(model.global_mean + b_i, abs=1e-12)
    assert only_user == pytest.approx(model.global_mean + b_u, abs=1e-12)
    assert (model.n_users, model.n_items) == (n_users, n_items)
    assert not model.has_user("ghost") and not model.has_item("phantom")
    assert model.state_equal(snapshot)


def test_online_mf_clips_returned_prediction_not_learning():
    clipped = OnlineMF(factors=2, seed=5, rating_min=1.0, rating_max=5.0)
    raw = OnlineMF(factors=2, seed=5)
    # Before any rating the raw prediction is ~0, below the scale.
    assert clipped.update("u", "i", 5.0) == 1.0
    assert raw.update("u", "i", 5.0) < 1.0
    for _ in range(300):
        clipped.update("u", "i", 5.0)
        raw.update("u", "i", 5.0)
    assert clipped.predict("u", "i") == raw.predict("u", "i")  # inside the scale now
    # Same learning, only the reported prediction differs.
    assert clipped._users.state_equal(raw._users) and clipped._items.state_equal(raw._items)
    low_max = OnlineMF(factors=2, seed=5, rating_max=2.0)
    for _ in range(300):
        low_max.update("u", "i", 5.0)
    assert low_max.predict("u", "i") == 2.0


def test_online_mf_replay_is_bit_identical_and_other_streams_differ(ratings):
    stream = ratings[:5000]
    a, b = OnlineMF(seed=3), OnlineMF(seed=3)
    for u, i, r in stream:
        a.update(u, i, r)
        b.update(u, i, r)
    assert a.state_equal(b) and a == b

    c = OnlineMF(seed=3)
    for u, i, r in stream[:-1]:
        c.update(u, i, r)
    u, i, r = stream[-1]
    c.update(u, i, r + 0.5 if r < 4.5 else r - 0.5)
    assert not a.state_equal(c)

    d = OnlineMF(seed=4)
    for u, i, r in stream:
        d.update(u, i, r)
    assert not a.state_equal(d)


def test_online_mf_initial_vectors_depend_only_on_seed_and_order():
    a, b = OnlineMF(factors=3, seed=9), OnlineMF(factors=3, seed=9)
    a.update("alice", "x", 3.0)
    b.update("zed", "x", 3.0)
    # Different users learned in the same order: different models, same numbers.
    assert not a.state_equal(b)
    n = CHUNK
    assert np.array_equal(a._users.vectors[:n], b._users.vectors[:n])
    assert np.array_equal(a._items.vectors[:n], b._items.vectors[:n])
    # The start vector of the second user (row 1, drawn but untouched) does not depend on
    # how many items were learned before it arrives.
    c, d = OnlineMF(factors=3, seed=9), OnlineMF(factors=3, seed=9)
    for k in range(50):
        c.update("first", f"item{k}", 3.0)
    d.update("first", "item0", 3.0)
    assert np.array_equal(c._users.vectors[1], d._users.vectors[1])
    c.update("second", "item0", 3.0)
    assert c._users.index["second"] == 1
    # Items start from their id, whatever the order (learners of several partitions share
    # them): item7 is row 7 of c and row 0 of e, with the same start vector.
    e = OnlineMF(factors=3, seed=9)
    e._items.add("item7")
    assert np.array_equal(e._items.vectors[0], c._items.keyed_draw("item7"))
    assert not np.array_equal(e._items.vectors[0], e._items.keyed_draw("item8"))
    # Users and items draw from different streams; another seed draws other numbers.
    assert not np.array_equal(a._users.vectors[5], a._items.keyed_draw("x"))
    e = OnlineMF(factors=3, seed=10)
    e.update("alice", "x", 3.0)
    assert not np.array_equal(a._users.vectors[5], e._users.vectors[5])


def test_online_mf_pickle_round_trip_and_restart_is_bit_identical():
    # More than 2 * CHUNK users so the tables grow and the snapshot cuts a chunk mid-way.
    rng = np.random.default_rng(0)
    stream = [
        (f"user{u}", f"item{i}", float(r))
        for u, i, r in zip(
            rng.integers(0, 3 * CHUNK, 20_000).tolist(),
            rng.integers(0, 500, 20_000).tolist(),
            rng.integers(1, 6, 20_000).tolist(),
            strict=True,
        )
    ]
    uninterrupted = OnlineMF(seed=11)
    crashed = OnlineMF(seed=11)
    for u, i, r in stream[:7000]:
        uninterrupted.update(u, i, r)
        crashed.update(u, i, r)
    assert crashed.n_users % CHUNK != 0 and crashed.n_users > CHUNK
    blob = pickle.dumps(crashed)
    del crashed
    restored = pickle.loads(blob)
    assert restored == uninterrupted
    # Only used rows are stored (factors + bias, 8 bytes each, plus the id strings).
    rows = restored.n_users + restored.n_items
    assert len(blob) < rows * (17 * 8 + 32)
    assert len(blob) < (len(restored._users.biases) + len(restored._items.biases)) * 17 * 8
    for u, i, r in stream[7000:]:
        assert restored.update(u, i, r) == uninterrupted.update(u, i, r)
    assert restored.n_users > 2 * CHUNK
    assert restored.state_equal(uninterrupted)


def test_online_mf_from_config():
    cfg = ModelConfig(factors=7, learning_rate=0.1, regularization=0.3, seed=5)
    model = OnlineMF.from_config(cfg, rating_min=1.0, rating_max=5.0)
    assert (model.factors, model.learning_rate, model.regularization, model.seed) == (
        7,
        0.1,
        0.3,
        5,
    )
    model.update("u", "i", 4.0)
    assert model._users.vectors.shape[1] == 7


# --------------------------------------------------------------------------------------
# ImplicitMF


def implicit_stream(
    events_seed: int = 3, n: int = 40_000, n_users: int = 200, n_items: int = 300
) -> list[tuple[str, str, bool]]:
    """Each user likes one group of items: clicks come from it, impressions from elsewhere."""
    n_groups = 5
    user_group = np.random.default_rng(0).integers(0, n_groups, n_users)
    rng = np.random.default_rng(events_seed)
    item_group = np.arange(n_items) % n_groups
    by_group = [np.flatnonzero(item_group == g) for g in range(n_groups)]
    others = [np.flatnonzero(item_group != g) for g in range(n_groups)]
    out = []
    for u in rng.integers(0, n_users, n).tolist():
        g = user_group[u]
        if rng.random() < 0.4:
            out.append((f"u{u}", f"i{rng.choice(by_group[g])}", True))
        else:
            out.append((f"u{u}", f"i{rng.choice(others[g])}", False))
    return out


@pytest.fixture(scope="module")
def implicit_events() -> list[tuple[str, str, bool]]:
    return implicit_stream()


def test_implicit_mf_recall_beats_random_and_positives_outscore_negatives(implicit_events):
    # ~200 events per user: the default step (0.05) only starts to separate the groups
    # by the end of this stream, 0.2 learns them within the first half.
    model = ImplicitMF(factors=8, learning_rate=0.2)
    recall = HitRate()
    half = len(implicit_events) // 2
    for k, (u, i, clicked) in enumerate(implicit_events):
        if clicked:
            hit = model.hit_at_k(u, i, 10)
            if k >= half and hit is not None:
                recall.update(hit)
            model.update(u, i, 1.0, 1.0)
        else:
            model.update(u, i, 0.0, 0.3)
    assert model.n_items == 300
    # A random top-10 out of 300 items hits 3.3% of the time; a user's group has 60 items,
    # so a perfect group ranking hits ~10/60 = 17%.
    assert recall.value is not None and recall.value > 0.12, recall.value
    held_out = implicit_stream(events_seed=99, n=4000)  # same users and groups, new events
    clicks = BinaryScore()
    for u, i, clicked in held_out:
        clicks.update(clicked, model.score(u, i))
    assert clicks.auc is not None and clicks.auc > 0.9, clicks.auc


def test_implicit_mf_update_returns_score_before_learning_and_respects_weight():
    a, b = ImplicitMF(factors=4, seed=1), ImplicitMF(factors=4, seed=1)
    assert a.update("u", "i", 1.0) == b.update("u", "i", 1.0)
    before = a.score("u", "i")
    assert a.update("u", "i", 1.0, weight=1.0) == before
    b.update("u", "i", 1.0, weight=3.0)
    assert b.score("u", "i") > a.score("u", "i") > before
    down = ImplicitMF(factors=4, seed=1)
    down.update("u", "i", 0.0)
    assert down.score("u", "i") < 0.5


def test_implicit_mf_scoring_never_adds_state(implicit_events):
    model = ImplicitMF(factors=4)
    for u, i, clicked in implicit_events[:2000]:
        model.update(u, i, float(clicked))
    snapshot = pickle.loads(pickle.dumps(model))
    n_users, n_items = model.n_users, model.n_items
    assert model.score("ghost", "phantom") == 0.5
    assert model.hit_at_k("ghost", "phantom", 10) is None
    assert model.hit_at_k("ghost", implicit_events[0][1], 10) is not None
    assert len(model.top_k("ghost", 10)) == 10
    assert model.hit_at_k(implicit_events[0][0], "phantom", 10) is None
    assert (model.n_users, model.n_items) == (n_users, n_items)
    assert not model.has_user("ghost") and not model.has_item("phantom")
    assert model.state_equal(snapshot)


def test_implicit_mf_unknown_user_ranks_by_popularity():
    model = ImplicitMF(factors=4, seed=2)
    # Popularity: item p{k} gets k clicks from assorted users and no negatives.
    for k in range(1, 8):
        for j in range(k):
            model.update(f"u{j}", f"p{k}", 1.0)
    model.update("u0", "never", 0.0)
    assert model.top_k("newcomer", 3) == ["p7", "p6", "p5"]
    assert model.top_k("newcomer", 100)[-1] == "never"


def test_implicit_mf_top_k_and_hit_at_k_agree(implicit_events):
    model = ImplicitMF(factors=8)
    for u, i, clicked in implicit_events[:10_000]:
        model.update(u, i, float(clicked), 1.0 if clicked else 0.3)
    user = implicit_events[0][0]
    top = model.top_k(user, 10)
    assert len(top) == len(set(top)) == 10
    scores = [model.score(user, i) for i in top]
    assert scores == sorted(scores, reverse=True)
    every = model.top_k(user, 10_000)
    assert len(every) == model.n_items
    assert every[:10] == top
    for item in every[:15]:
        assert model.hit_at_k(user, item, 10) == (item in top)
    excluded = frozenset(top[:3]) | {"not-an-item"}
    top_ex = model.top_k(user, 10, exclude=excluded)
    assert top_ex[:7] == top[3:] and not excluded & set(top_ex)
    assert model.top_k(user, 0) == [] and ImplicitMF().top_k(user, 5) == []
    assert model.top_k(user, 10, exclude=frozenset(every)) == []


def test_implicit_mf_top_k_ties_break_by_learning_order():
    model = ImplicitMF(factors=2, init_scale=0.0)  # every score stays at sigmoid(bias)
    for item in ["c", "a", "b"]:
        model.update("u", item, 1.0)
    assert model.top_k("u", 2) == ["c", "a"]
    assert model.hit_at_k("u", "b", 1) is True  # nothing strictly higher


def test_implicit_mf_replay_pickle_and_differences(implicit_events):
    stream = implicit_events[:3000]
    a, b, c = ImplicitMF(seed=8), ImplicitMF(seed=8), ImplicitMF(seed=8)
    for u, i, clicked in stream:
        a.update(u, i, float(clicked), 1.0 if clicked else 0.3)
        b.update(u, i, float(clicked), 1.0 if clicked else 0.3)
        c.update(u, i, float(clicked), 1.0 if clicked else 0.4)
    assert a.state_equal(b) and a == b
    assert not a.state_equal(c)
    restored = pickle.loads(pickle.dumps(a))
    assert restored == a
    for u, i, clicked in implicit_events[3000:4000]:
        assert restored.update(u, i, float(clicked)) == a.update(u, i, float(clicked))
    assert restored == a


def test_implicit_mf_from_config():
    cfg = ModelConfig(implicit_factors=5, implicit_learning_rate=0.2, implicit_regularization=0.1)
    model = ImplicitMF.from_config(cfg)
    assert (model.factors, model.learning_rate, model.regularization) == (5, 0.2, 0.1)


# --------------------------------------------------------------------------------------
# EngagementModel

_GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance")


def engagement_data(
    seed: int, n: int
) -> list[tuple[dict[str, object], dict[str, object], Context, bool]]:
    """Clicks with planted effects: women like comedies, mobile clicks more, 50s click less."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        age = int(rng.integers(15, 70))
        gender = str(rng.choice(["F", "M"]))
        user = {
            "age": age,
            "gender": gender,
            "occupation": str(rng.choice(["student", "engineer", "artist"])),
        }
        genres = tuple(rng.choice(_GENRES, size=int(rng.integers(1, 3)), replace=False).tolist())
        item = {"genres": genres, "year": int(rng.integers(1960, 2000))}
        mobile = bool(rng.random() < 0.5)
        ctx = Context(device="mobile" if mobile else "desktop", hour=int(rng.integers(24)))
        logit = -1.0
        logit += 2.5 * (gender == "F" and "Comedy" in genres)
        logit += 1.0 * mobile
        logit -= 1.5 * (50 <= age < 60)
        out.append((user, item, ctx, bool(rng.random() < 1 / (1 + math.exp(-logit)))))
    return out


def test_engagement_model_learns_planted_effects():
    model = EngagementModel()
    for user, item, ctx, clicked in engagement_data(seed=1, n=20_000):
        model.learn(model.features(user, item, ctx), clicked)
    held_out = BinaryScore()
    for user, item, ctx, clicked in engagement_data(seed=2, n=5_000):
        held_out.update(clicked, model.predict_proba(model.features(user, item, ctx)))
    assert held_out.auc is not None and held_out.auc > 0.7, held_out.auc
    w = model.weights
    assert w["gender=F|genre=Comedy"] > 0.5
    assert w["device=mobile"] > w["device=desktop"]
    assert w["age=50s"] < 0


def test_engagement_features():
    f = EngagementModel.features
    assert f(None, None, None) == {}
    x = f(
        {"age": 17, "gender": "M", "occupation": None},
        {"genres": ("Action", "Drama", "Horror", "War"), "year": 1987},
        Context(device="tv", hour=3, weekday=6),
    )
    assert x["age=under18"] == 1.0 and x["gender=M"] == 1.0
    assert not any(k.startswith("occ=") for k in x)
    assert x["genre=War"] == 0.5 and x["age=under18|genre=Action"] == 0.5
    assert x["gender=M|genre=Horror"] == 0.5
    assert x["decade=1980s"] == 1.0
    assert x["device=tv"] == x["hour=night"] == x["day=weekend"] == 1.0
    assert f({"age": 75}, {"genres": ()}, Context(hour=12))["age=60+"] == 1.0
    assert "hour=afternoon" in f(None, None, Context(hour=12))
    assert "hour=evening" in f(None, None, Context(hour=23))
    assert "day=weekday" in f(None, None, Context(weekday=0))


def test_engagement_prediction_is_pure_and_replay_is_identical():
    data = engagement_data(seed=5, n=2000)
    a, b, c = EngagementModel(), EngagementModel(), EngagementModel(learning_rate=0.1)
    for user, item, ctx, clicked in data:
        x = EngagementModel.features(user, item, ctx)
        p = a.predict_proba(x)
        assert p == b.predict_proba(x) and 0.0 < p < 1.0
        for m in (a, b, c):
            m.learn(x, clicked)
    assert a.state_equal(b) and a == b
    assert not a.state_equal(c)
    restored = pickle.loads(pickle.dumps(a))
    assert restored == a
    n_weights = len(a.weights)
    a.predict_proba({"brand-new-feature": 1.0})
    assert len(a.weights) == n_weights and restored == a
    cfg = ModelConfig(engagement_learning_rate=0.3)
    assert EngagementModel.from_config(cfg).learning_rate == 0.3


def test_engagement_predict_learn_matches_river_step_for_step():
    """The fast path takes River's own step: bit-identical probabilities, weights and
    intercept to predict_proba_one then learn_one, including brand-new features and large
    logits (learning rate 5 drives |w . x| past River's sigmoid and gradient cut-offs)."""
    for lr in (0.05, 5.0):
        fast, river = EngagementModel(learning_rate=lr), EngagementModel(learning_rate=lr)
        extremes = 0
        for k, (user, item, ctx, clicked) in enumerate(engagement_data(seed=9, n=3000)):
            x = EngagementModel.features(user, item, ctx)
            x["cf_logit"] = (k % 17 - 8) * 1.1  # a dense real-valued feature, as stacked
            expected = river.predict_proba(x)
            river.learn(x, clicked)
            assert fast.predict_learn(dict(x), clicked, score=k % 5 != 0) == (
                expected if k % 5 != 0 else None
            )
            extremes += abs(river.model._raw_dot_one(x)) > 18.0
        assert fast.state_equal(river) and fast.n_learned == river.n_learned == 3000
        assert lr < 1.0 or extremes > 0  # the large-logit branches were exercised


def test_engagement_predict_learn_falls_back_for_other_configurations():
    from river import optim

    fast, river = EngagementModel(), EngagementModel()
    for m in (fast, river):
        m.model.optimizer = optim.Adam(0.05)
    for user, item, ctx, clicked in engagement_data(seed=3, n=300):
        x = EngagementModel.features(user, item, ctx)
        expected = river.predict_proba(x)
        river.learn(x, clicked)
        assert fast.predict_learn(x, clicked) == expected
    assert fast.state_equal(river)


def test_compiled_factor_steps_match_the_numpy_reference():
    """The compiled steps are the numpy code they replaced, operation for operation: the
    same tables after a stream of updates (sigmoid saturation and both signs included),
    with step_pair as the reference vector update."""
    from stream.models.factors import step_pair
    from stream.models.kernels import implicit_step, rating_step

    rng = np.random.default_rng(11)
    p, q = rng.normal(0.0, 2.0, (5, 8)), rng.normal(0.0, 2.0, (7, 8))
    ub, ib = rng.normal(0.0, 1.0, 5), rng.normal(0.0, 1.0, 7)
    rp, rq, rub, rib = p.copy(), q.copy(), ub.copy(), ib.copy()
    start = p.copy()
    mean = 0.0
    for n in range(1, 2001):
        u, i = int(rng.integers(5)), int(rng.integers(7))
        if n % 2:
            target, weight = float(rng.integers(2)), float(rng.uniform(0.1, 3.0))
            s = implicit_step(p, q, ib, u, i, target, weight, 0.3, 0.01)
            x = rib[i] + float(rp[u].dot(rq[i]))
            expected = 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))
            assert s == pytest.approx(expected, rel=1e-12, abs=1e-300)
            g = (expected - target) * weight
            rib[i] = rib[i] - 0.3 * (g + 0.01 * rib[i])
            step_pair(rp[u], rq[i], -0.3 * g, 1.0 - 0.3 * 0.01)
        else:
            rating = float(rng.integers(1, 6))
            predicted, new_mean = rating_step(
                p, q, ub, ib, u, i, rating, mean, n // 2, n % 4 == 0, 0.02, 0.01, 0.05
            )
            bu, bi, dot = rub[u], rib[i], float(rp[u].dot(rq[i]))
            expected = mean + bu + bi + (dot if n % 4 == 0 else 0.0)
            assert predicted == pytest.approx(expected, rel=1e-12)
            mean = mean + (rating - mean) / (n // 2)
            assert new_mean == mean
            err = rating - (mean + bu + bi + dot)
            rub[u] = bu + 0.01 * (err - 0.05 * bu)
            rib[i] = bi + 0.01 * (err - 0.05 * bi)
            step_pair(rp[u], rq[i], 0.02 * err, 1.0 - 0.02 * 0.05)
    for mine, ref in ((p, rp), (q, rq), (ub, rub), (ib, rib)):
        np.testing.assert_allclose(mine, ref, rtol=1e-9, atol=1e-12)
    assert np.abs(p - start).max() > 0.1  # the steps moved the vectors


def test_engagement_features_cache_is_invisible():
    """Profile features are cached by value: a hit gives what a miss computed, the caller
    may change the dict it got, and equal values of other types (33 and 33.0, genres in a
    list) are not confused."""
    from stream.models import click

    f = EngagementModel.features
    user = {"age": 33, "gender": "F", "occupation": "artist"}
    item = {"genres": ("Comedy", "Drama"), "year": 1990}
    ctx = Context(device="tv", hour=20, weekday=6)
    click._USER_PARTS.clear()
    click._GENRE_PARTS.clear()
    click._PARTS.clear()
    miss = f(user, item, ctx)
    miss["cf_logit"] = 3.0  # as learn_engagement adds to it
    hit = f(dict(user), dict(item), ctx)
    assert "cf_logit" not in hit and hit == {k: v for k, v in miss.items() if k != "cf_logit"}
    assert list(hit) == [k for k in miss if k != "cf_logit"]  # same order: same sums
    assert "decade=1990.0s" in f(user, {**item, "year": 1990.0}, None)
    assert f(user, {**item, "genres": ["Comedy", "Drama"]}, ctx) == hit
    assert "device=tv" not in f(user, item, None)
    with pytest.raises(TypeError):  # a bad profile fails as it did, cached or not
        f({"age": "33"}, None, None)
    with pytest.raises(TypeError):
        f({**user, "age": 33.0}, item, ctx)  # a float is no index of the age bands


def test_count_above_counts_the_item_logits_above_a_row_up_to_k():
    from stream.models.kernels import count_above, item_logits

    rng = np.random.default_rng(5)
    q, b, pu = rng.normal(size=(300, 8)), rng.normal(size=300), rng.normal(size=8)
    q[7], b[7] = q[3], b[3]  # a tie: not above
    logits = item_logits(q, b, 250, pu)
    np.testing.assert_allclose(logits, q[:250] @ pu + b[:250], rtol=1e-12, atol=1e-12)
    for j in (0, 3, 7, 100, 249):
        above = int(np.count_nonzero(logits > logits[j]))
        for k in (1, 10, 1000):
            assert count_above(q, b, 250, pu, j, k) == min(above, k)
