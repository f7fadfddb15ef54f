"""Drift detectors on seeded synthetic streams, with the real River detectors (no mocks)."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from stream.drift import (
    DWELL_BUCKETS,
    EVENT_TYPE_CODES,
    CategoryCodes,
    DistributionDriftDetector,
    DriftMonitor,
    LossDriftDetector,
    Signal,
    dwell_bucket,
    js_divergence,
    psi,
)

# Logit shifts of the true click probability that give a mean log loss of 0.40, 0.48 and
# 0.32 for a model predicting q ~ Beta(3, 17) (see bench/drift.py:logit_shift_for).
SHIFT_040, SHIFT_048, SHIFT_032 = 0.0035892, 0.3655659, -0.4817300
CHANGE = 100_000
METHODS = ("adwin", "page_hinkley", "kswin")


def loglosses(n: int, shifts: list[tuple[int, float]], seed: int) -> list[float]:
    """Bernoulli log losses of a model predicting q ~ Beta(3, 17); ``shifts`` = (start, shift)."""
    rng = np.random.default_rng(seed)
    shift = np.zeros(n)
    for start, value in shifts:
        shift[start:] = value
    q = rng.beta(3, 17, n)
    p_true = 1.0 / (1.0 + np.exp(-(np.log(q / (1 - q)) + shift)))
    clicked = rng.random(n) < p_true
    return np.where(clicked, -np.log(q), -np.log1p(-q)).tolist()


def run(det: LossDriftDetector, losses: list[float], start: int = 0) -> list[Signal]:
    out = []
    for i, loss in enumerate(losses, start):
        s = det.update(loss, i)
        if s is not None:
            out.append(s)
    return out


def test_synthetic_stream_has_the_intended_means() -> None:
    x = np.asarray(loglosses(400_000, [(200_000, SHIFT_048)], seed=0))
    assert x[:200_000].mean() == pytest.approx(0.40, abs=0.005)
    assert x[200_000:].mean() == pytest.approx(0.48, abs=0.005)


# -- concept drift --------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_loss_detector_alarms_soon_after_an_abrupt_increase(method: str) -> None:
    losses = loglosses(2 * CHANGE, [(CHANGE, SHIFT_048)], seed=11)
    det = LossDriftDetector("ll", method, block_size=200)  # type: ignore[arg-type]
    signals = run(det, losses)
    assert signals, "no alarm after a +20 % loss increase"
    first = signals[0]
    assert CHANGE <= first.event_index <= CHANGE + 15_000
    assert (first.detector, first.kind, first.threshold) == ("ll", "concept", det.threshold)
    assert det.in_drift and det.n_alarms == len(signals)


@pytest.mark.parametrize("method", METHODS)
def test_loss_detector_has_no_false_alarm_on_500k_stationary_losses(method: str) -> None:
    det = LossDriftDetector("ll", method, block_size=200)  # type: ignore[arg-type]
    assert run(det, loglosses(500_000, [(0, SHIFT_040)], seed=5)) == []
    assert not det.in_drift and det.n_alarms == 0
    assert det.n_blocks == 2500


@pytest.mark.parametrize("method", METHODS)
def test_loss_detector_ignores_a_decrease(method: str) -> None:
    # 0.40 -> 0.32: the model got better, which is no reason to retrain.
    losses = loglosses(2 * CHANGE, [(CHANGE, SHIFT_032)], seed=13)
    det = LossDriftDetector("ll", method, block_size=200)  # type: ignore[arg-type]
    assert run(det, losses) == []
    assert not det.in_drift
    # Page-Hinkley (mode="up") never even detects it; the others detect and ignore it.
    assert det.n_decreases == 0 if method == "page_hinkley" else det.n_decreases >= 1


@pytest.mark.parametrize("method", ["adwin", "page_hinkley"])
def test_rating_error_detector_alarms_on_a_larger_rmse(method: str) -> None:
    rng = np.random.default_rng(3)
    errors = np.concatenate([rng.normal(0, 0.9, 20_000), rng.normal(0, 1.0, 20_000)])
    det = LossDriftDetector("se", method, block_size=50)  # type: ignore[arg-type]
    signals = run(det, (errors**2).tolist())
    assert signals and 20_000 <= signals[0].event_index <= 25_000


def test_loss_detector_statistic_and_threshold() -> None:
    ph = LossDriftDetector("ph", "page_hinkley", block_size=10, warmup=5)
    assert (ph.statistic, ph.threshold, ph.calibration) == (0.0, 20.0, None)
    ks = LossDriftDetector("ks", "kswin", block_size=10)
    assert ks.threshold == pytest.approx(6.0)
    ad = LossDriftDetector("ad", "adwin", delta=0.01)
    assert ad.threshold == 0.01
    rng = np.random.default_rng(0)
    for det in (ph, ks, ad):
        run(det, rng.normal(1.0, 0.1, 3000).tolist())
    mu, sigma = ph.calibration or (0.0, 0.0)
    assert mu == pytest.approx(1.0, abs=0.02)
    assert sigma == pytest.approx(0.1 / math.sqrt(10), rel=0.5)
    assert 0.0 <= ph.statistic < ph.threshold
    assert 0.0 < ks.statistic < ks.threshold  # -log10(p) of the last KS test
    assert abs(ad.statistic) < 1.0  # the level in sigmas above the warm-up


def test_loss_detector_validates_its_arguments() -> None:
    with pytest.raises(ValueError, match="method"):
        LossDriftDetector("x", "cusum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="block_size"):
        LossDriftDetector("x", "adwin", block_size=0)
    with pytest.raises(TypeError):
        LossDriftDetector("x", "adwin", no_such_param=1)
    assert LossDriftDetector("x", "page_hinkley", mode="both").params["mode"] == "up"


@pytest.mark.parametrize("method", METHODS)
def test_reset_clears_state_and_replays_identically(method: str) -> None:
    losses = loglosses(2 * CHANGE, [(CHANGE, SHIFT_048)], seed=21)
    det = LossDriftDetector("ll", method, block_size=200)  # type: ignore[arg-type]
    first = run(det, losses)
    assert det.in_drift
    det.reset()
    assert (det.in_drift, det.statistic, det.n_blocks, det.calibration) == (False, 0.0, 0, None)
    assert det.n_alarms == len(first)  # lifetime count, kept for the Prometheus counter
    assert run(det, losses) == first


@pytest.mark.parametrize("method", METHODS)
def test_pickle_round_trip_continues_identically(method: str) -> None:
    losses = loglosses(2 * CHANGE, [(CHANGE, SHIFT_048)], seed=23)
    det = LossDriftDetector("ll", method, block_size=200, seed=7)  # type: ignore[arg-type]
    run(det, losses[: CHANGE + 1234])
    copy = pickle.loads(pickle.dumps(det))
    rest = losses[CHANGE + 1234 :]
    a, b = run(det, rest, CHANGE + 1234), run(copy, rest, CHANGE + 1234)
    assert a == b and a
    assert (det.statistic, det.n_blocks, det.in_drift) == (
        copy.statistic,
        copy.n_blocks,
        copy.in_drift,
    )


def test_same_seed_same_alarms() -> None:
    losses = loglosses(2 * CHANGE, [(CHANGE, SHIFT_048)], seed=29)
    a = LossDriftDetector("ks", "kswin", seed=1)
    b = LossDriftDetector("ks", "kswin", seed=1)
    signals = run(a, losses)
    assert signals and signals == run(b, losses)


# -- data drift -----------------------------------------------------------------------------


def direct_psi(ref: np.ndarray, cur: np.ndarray, eps: float = 1e-4) -> float:
    k = ref.size
    p = (ref / ref.sum() + eps) / (1 + k * eps)
    q = (cur / cur.sum() + eps) / (1 + k * eps)
    return float(((q - p) * np.log(q / p)).sum())


def direct_js(ref: np.ndarray, cur: np.ndarray) -> float:
    p, q = ref / ref.sum(), cur / cur.sum()
    m = (p + q) / 2
    kl = lambda a: sum(x * math.log2(x / y) for x, y in zip(a, m, strict=True) if x > 0)  # noqa: E731
    return 0.5 * kl(p) + 0.5 * kl(q)


def categorical(n: int, probs: list[float], seed: int) -> list[int]:
    return np.random.default_rng(seed).choice(len(probs), n, p=probs).tolist()


P0 = [0.4, 0.25, 0.15, 0.1, 0.06, 0.04]
P1 = [0.3, 0.25, 0.15, 0.1, 0.1, 0.1]


@pytest.mark.parametrize("method", ["psi", "js"])
def test_distribution_detector_statistic_matches_numpy(method: str) -> None:
    det = DistributionDriftDetector(
        "mix",
        6,
        method=method,
        window=1000,
        threshold=100.0,  # type: ignore[arg-type]
    )  # never alarms, so the reference stays the first window
    cats = categorical(1000, P0, 1) + categorical(1000, P1, 2) + [5] * 1000  # all in one bin
    for i, c in enumerate(cats[:2000]):
        det.update(c, i)
    ref = np.bincount(cats[:1000], minlength=6).astype(float)
    cur = np.bincount(cats[1000:2000], minlength=6).astype(float)
    direct = direct_psi(ref, cur) if method == "psi" else direct_js(ref, cur)
    assert det.statistic == pytest.approx(direct, rel=1e-12)
    assert det.reference == ref.astype(int).tolist()
    # an empty category on one side stays finite (PSI smoothing; JS needs none)
    for i, c in enumerate(cats[2000:], 2000):
        det.update(c, i)
    last = np.bincount(cats[2000:], minlength=6).astype(float)
    expected = direct_psi(ref, last) if method == "psi" else direct_js(ref, last)
    assert math.isfinite(det.statistic) and det.statistic == pytest.approx(expected, rel=1e-12)


def test_psi_and_js_functions() -> None:
    assert psi([1, 1], [1, 1]) == 0.0
    assert js_divergence([1, 0], [0, 1]) == pytest.approx(1.0)
    a, b = np.array([30.0, 50, 20]), np.array([20.0, 20, 60])
    assert psi(a, b) == pytest.approx(direct_psi(a, b))
    assert js_divergence(a, b) == pytest.approx(direct_js(a, b))


@pytest.mark.parametrize("method", ["psi", "js"])
def test_distribution_detector_alarms_on_a_shift_not_when_stationary(method: str) -> None:
    stationary = DistributionDriftDetector("mix", 6, method=method)  # type: ignore[arg-type]
    assert [
        s for i, c in enumerate(categorical(500_000, P0, 3)) if (s := stationary.update(c, i))
    ] == []
    assert stationary.n_windows == 100 and not stationary.in_drift
    shifted = DistributionDriftDetector("mix", 6, method=method)  # type: ignore[arg-type]
    cats = categorical(50_000, P0, 4) + categorical(50_000, P1, 5)
    signals = [s for i, c in enumerate(cats) if (s := shifted.update(c, i))]
    # one alarm at the end of the first shifted window; it then becomes the reference
    assert [s.event_index for s in signals] == [54_999]
    assert signals[0].statistic > shifted.threshold and shifted.in_drift
    assert signals[0].kind == "data" and shifted.n_alarms == 1


def test_rising_only_alarms_when_the_watched_share_goes_up() -> None:
    det = DistributionDriftDetector("new", 2, window=1000, rising=1)
    fewer = categorical(1000, [0.7, 0.3], 1) + categorical(1000, [0.95, 0.05], 2)
    more = categorical(1000, [0.5, 0.5], 3)
    assert [s for i, c in enumerate(fewer) if (s := det.update(c, i))] == []
    assert det.statistic > det.threshold  # a large shift, but downwards
    assert [s.event_index for i, c in enumerate(more, 2000) if (s := det.update(c, i))] == [2999]


def test_distribution_detector_reset_and_pickle() -> None:
    cats = categorical(20_000, P0, 6) + categorical(20_000, P1, 7)
    det = DistributionDriftDetector("mix", 6, method="js", window=2000)
    for i, c in enumerate(cats[:21_000]):
        det.update(c, i)
    copy = pickle.loads(pickle.dumps(det))
    rest = list(enumerate(cats[21_000:], 21_000))
    after = [det.update(c, i) for i, c in rest]
    assert after == [copy.update(c, i) for i, c in rest]
    assert any(after) and det.in_drift and det.n_alarms >= 1
    det.reset()
    assert (det.in_drift, det.statistic, det.reference, det.n_windows) == (False, 0.0, None, 0)


def test_distribution_detector_rejects_out_of_range_categories() -> None:
    det = DistributionDriftDetector("mix", 3)
    for bad in (-1, 3):
        with pytest.raises(ValueError, match="out of range"):
            det.update(bad, 0)


def test_dwell_buckets_and_category_codes() -> None:
    assert [dwell_bucket(s) for s in (0, 0.5, 1, 2, 3.9, 4, 59.9, 60, 1023, 1024, 1800)] == [
        0,
        0,
        1,
        2,
        2,
        3,
        6,
        6,
        10,
        11,
        11,
    ]
    assert dwell_bucket(1e9) == DWELL_BUCKETS - 1
    codes = CategoryCodes(3)
    assert [codes.code(x) for x in "abcdab"] == [0, 1, 2, 2, 0, 1]
    assert pickle.loads(pickle.dumps(codes)).code("d") == 2


# -- monitor -------------------------------------------------------------------------------


def test_default_monitor_has_the_named_detectors() -> None:
    m = DriftMonitor.default()
    assert list(m.detectors) == [
        "engagement_logloss_adwin",
        "engagement_logloss_page_hinkley",
        "engagement_logloss_kswin",
        "engagement_logloss_cusum",
        "rating_se_adwin",
        "rating_se_page_hinkley",
        "event_type_mix_js",
        "click_genre_mix_psi",
        "dwell_psi",
        "new_user_share_psi",
    ]
    rows = m.snapshot()
    assert [r["kind"] for r in rows] == ["concept"] * 6 + ["data"] * 4
    assert set(rows[0]) == {
        "name",
        "kind",
        "method",
        "statistic",
        "threshold",
        "in_drift",
        "n_alarms",
    }
    assert all(isinstance(r["statistic"], float) and not r["in_drift"] for r in rows)


def test_monitor_routes_observations() -> None:
    m = DriftMonitor.default(block_size=10, rating_block_size=5, window=20)
    d = m.detectors
    for i in range(100):
        m.observe_engagement_loss(0.4, i)
    for i in range(25):
        m.observe_rating_error(0.8, i)
    for i in range(40):
        m.observe_event_type(EVENT_TYPE_CODES["click"], i)
        m.observe_click_genre(m.genre_codes.code("drama"), i)
        m.observe_dwell(60.0, i)
    for i in range(60):
        m.observe_new_user(False, i)
    blocks = {n: det.n_blocks for n, det in d.items() if isinstance(det, LossDriftDetector)}
    assert blocks == {
        "engagement_logloss_adwin": 10,
        "engagement_logloss_page_hinkley": 10,
        "engagement_logloss_kswin": 10,
        "rating_se_adwin": 5,
        "rating_se_page_hinkley": 5,
    }
    windows = {
        n: det.n_windows for n, det in d.items() if isinstance(det, DistributionDriftDetector)
    }
    assert windows == {
        "event_type_mix_js": 2,
        "click_genre_mix_psi": 2,
        "dwell_psi": 2,
        "new_user_share_psi": 3,
    }
    dwell = d["dwell_psi"]
    assert isinstance(dwell, DistributionDriftDetector) and dwell.reference is not None
    assert dwell.reference[dwell_bucket(60.0)] == 20


def test_monitor_collects_drains_and_resets() -> None:
    m = DriftMonitor.default(window=1000)
    losses = loglosses(2 * CHANGE, [(CHANGE, SHIFT_048)], seed=31)
    for i, loss in enumerate(losses):
        m.observe_engagement_loss(loss, i)
        m.observe_new_user(i >= 150_000, i)
    signals = m.drain()
    names = {s.detector for s in signals}
    assert {
        "engagement_logloss_adwin",
        "engagement_logloss_page_hinkley",
        "engagement_logloss_kswin",
        "engagement_logloss_cusum",
        "new_user_share_psi",
    } == names
    assert [s.event_index for s in signals] == sorted(s.event_index for s in signals)
    assert m.drain() == []
    states = {r["name"]: r["in_drift"] for r in m.snapshot()}
    assert states["new_user_share_psi"] and states["engagement_logloss_adwin"]
    m.reset("concept")
    states = {r["name"]: r["in_drift"] for r in m.snapshot()}
    assert not states["engagement_logloss_adwin"] and states["new_user_share_psi"]
    m.reset()
    assert not any(r["in_drift"] for r in m.snapshot())
    assert {r["name"]: r["n_alarms"] for r in m.snapshot()}["new_user_share_psi"] == 1
    with pytest.raises(ValueError, match="kind"):
        m.reset("model")


def test_monitor_pickle_round_trip() -> None:
    m = DriftMonitor.default(window=500)
    losses = loglosses(2 * CHANGE, [(CHANGE, SHIFT_048)], seed=37)
    cats = categorical(2 * CHANGE, P0, 8)

    def feed(mon: DriftMonitor, lo: int, hi: int) -> list[Signal]:
        for i in range(lo, hi):
            mon.observe_engagement_loss(losses[i], i)
            mon.observe_event_type(cats[i], i)
            if i % 7 == 0:
                mon.observe_rating_error(losses[i] * 2, i)
        return mon.drain()

    feed(m, 0, CHANGE + 777)
    copy = pickle.loads(pickle.dumps(m))
    after = feed(m, CHANGE + 777, 2 * CHANGE)
    assert after and after == feed(copy, CHANGE + 777, 2 * CHANGE)
    assert m.snapshot() == copy.snapshot()


def test_monitor_validates_its_detectors() -> None:
    a = LossDriftDetector("same", "adwin")
    with pytest.raises(ValueError, match="duplicate"):
        DriftMonitor(engagement=[a], rating=[LossDriftDetector("same", "adwin")])
    with pytest.raises(ValueError, match="block_size"):
        DriftMonitor(engagement=[a, LossDriftDetector("b", "adwin", block_size=100)])
