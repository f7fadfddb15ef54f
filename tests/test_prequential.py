"""The prequential accumulators agree with direct computations over the whole sample."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from stream.evaluation import BinaryScore, HitRate, RegressionScore


def brute_force_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """P(positive scores above negative) over all pairs, ties half."""
    pos = scores[labels]
    neg = scores[~labels]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def test_regression_score_matches_numpy():
    rng = np.random.default_rng(0)
    y = rng.uniform(1, 5, 5000)
    p = y + rng.normal(0, 0.7, 5000)
    s = RegressionScore()
    assert s.n == 0 and s.rmse is None and s.mae is None
    for a, b in zip(y.tolist(), p.tolist(), strict=True):
        s.update(a, b)
    assert s.n == 5000
    assert s.rmse == pytest.approx(float(np.sqrt(np.mean((y - p) ** 2))), rel=1e-12)
    assert s.mae == pytest.approx(float(np.mean(np.abs(y - p))), rel=1e-12)
    assert s.as_dict() == {"n": 5000, "rmse": s.rmse, "mae": s.mae}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_score_auc_matches_pairwise_auc(seed):
    rng = np.random.default_rng(seed)
    n = 3000
    labels = rng.random(n) < 0.3
    # Informative but noisy scores in (0, 1), some far in the tails.
    scores = 1 / (1 + np.exp(-(1.2 * labels + rng.normal(0, 1.5, n))))
    s = BinaryScore()
    for c, p in zip(labels.tolist(), scores.tolist(), strict=True):
        s.update(c, p)
    exact = brute_force_auc(labels, scores)
    assert 0.6 < exact < 0.9
    assert s.auc == pytest.approx(exact, abs=0.01)


def test_binary_score_auc_is_exact_when_bins_separate_scores():
    rng = np.random.default_rng(5)
    labels = rng.random(400) < 0.5
    scores = (rng.integers(0, 1000, 400) + 0.5) / 1000  # one score per bin centre
    s = BinaryScore(bins=1000)
    for c, p in zip(labels.tolist(), scores.tolist(), strict=True):
        s.update(c, p)
    assert s.auc == pytest.approx(brute_force_auc(labels, scores), abs=1e-12)


def test_binary_score_auc_edge_cases():
    s = BinaryScore()
    assert s.auc is None and s.logloss is None
    for _ in range(5):
        s.update(True, 0.7)
    assert s.auc is None  # one class only
    for _ in range(5):
        s.update(False, 0.7)
    assert s.auc == 0.5  # all tied
    perfect, inverted = BinaryScore(), BinaryScore()
    for p in np.linspace(0, 1, 101).tolist():
        perfect.update(p >= 0.5, p)
        inverted.update(p < 0.5, p)
    assert perfect.auc == 1.0 and inverted.auc == 0.0


def test_binary_score_logloss_matches_formula_with_clipping():
    rng = np.random.default_rng(3)
    labels = rng.random(2000) < 0.4
    p = rng.random(2000)
    p[:5] = 0.0  # clipped to 1e-15
    p[5:10] = 1.0  # clipped to 1 - 1e-15
    p[10:12] = -0.2  # out of range predictions are clipped too
    p[12:14] = 1.3
    s = BinaryScore()
    for c, q in zip(labels.tolist(), p.tolist(), strict=True):
        s.update(c, q)
    pc = np.clip(p, 1e-15, 1 - 1e-15)
    expected = -np.mean(np.where(labels, np.log(pc), np.log(1 - pc)))
    assert s.logloss == pytest.approx(float(expected), rel=1e-9)
    assert s.logloss is not None and math.isfinite(s.logloss)
    assert s.n == 2000 and s.n_positive == int(labels.sum())
    assert set(s.as_dict()) == {"n", "logloss", "auc"}


def test_hit_rate():
    h = HitRate()
    assert h.value is None and h.as_dict() == {"n": 0, "value": None}
    hits = np.random.default_rng(1).random(1000) < 0.23
    for hit in hits.tolist():
        h.update(hit)
    assert h.n == 1000 and h.value == pytest.approx(float(hits.mean()), rel=1e-12)


def test_accumulators_pickle_and_continue():
    r, b, h = RegressionScore(), BinaryScore(), HitRate()
    rng = np.random.default_rng(9)
    data = rng.random((200, 2)).tolist()
    for x, y in data[:100]:
        r.update(x, y)
        b.update(x > 0.5, y)
        h.update(x > y)
    r2, b2, h2 = pickle.loads(pickle.dumps((r, b, h)))
    for x, y in data[100:]:
        for rr, bb, hh in ((r, b, h), (r2, b2, h2)):
            rr.update(x, y)
            bb.update(x > 0.5, y)
            hh.update(x > y)
    assert r.as_dict() == r2.as_dict() and b.as_dict() == b2.as_dict()
    assert h.as_dict() == h2.as_dict()


def test_binary_score_rejects_no_bins():
    with pytest.raises(ValueError):
        BinaryScore(bins=0)
