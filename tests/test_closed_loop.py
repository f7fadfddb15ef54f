"""The closed loop: ground-truth metrics, how simulated users react to slates, and a short run
of the whole loop (simulated users -> Kafka -> consumer -> model state -> recommender)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from producers.simulator import ClosedLoop, LoopConfig, LoopMetrics, Simulator, SimulatorConfig
from producers.simulator.closed_loop import arm_of, examination, first_k_items
from producers.simulator.loop_metrics import (
    coverage,
    drift_recovery,
    expected_clicks,
    gini,
    oracle_clicks,
)
from stream.events import ClickEvent, ImpressionEvent, decode_event, encode_event
from stream.serving.recommender import Recommendations, Recommended

SMALL = SimulatorConfig(n_users=120, n_items=60, seed=11)


def shuffled_slates(item_ids: tuple[str, ...], seed: int = 0) -> Any:
    """A recommender of uniformly random slates (propensity k / n per slot)."""
    rng = np.random.default_rng(seed)

    def recommend(user_id: str, k: int, policy: str) -> Recommendations:
        picked = rng.choice(len(item_ids), k, replace=False).tolist()
        items = [
            Recommended(item_ids[i], 0.5, "random", p, k / len(item_ids))
            for p, i in enumerate(picked)
        ]
        return Recommendations(user_id, "warm", policy, items, 3, 0.25, "r")  # type: ignore[arg-type]

    return recommend


def interactions(loop: ClosedLoop, n: int) -> list[Any]:
    return [r for r in loop.records(n) if r.type not in ("user_profile", "item_profile")]


# --- metrics on hand-made cases ---------------------------------------------------------------


def test_gini_and_coverage() -> None:
    assert gini(np.array([3, 3, 3])) == 0.0
    assert gini(np.array([0, 0, 0, 0, 10])) == pytest.approx(0.8)
    assert gini(np.array([1, 3])) == pytest.approx(0.25)  # (2*1-3)*1 + (2*2-3)*3 = 2; 2/(2*4)
    assert gini(np.zeros(5)) == 0.0
    assert coverage(np.array([0, 2, 0, 0, 1])) == pytest.approx(0.4)
    assert coverage(np.zeros(0, dtype=int)) == 0.0


def test_regret_against_the_oracle() -> None:
    exam = np.array([1.0, 0.5, 0.25])
    attract = np.array([0.1, 0.9, 0.3, 0.6, 0.2])
    # Best slate: 0.9, 0.6, 0.3 in that order.
    assert oracle_clicks(attract, exam) == pytest.approx(0.9 + 0.3 + 0.075)
    # The same items in the worst order, and a slate of the worst items.
    assert expected_clicks(np.array([0.3, 0.6, 0.9]), exam) == pytest.approx(0.3 + 0.3 + 0.225)
    assert expected_clicks(np.array([0.9, 0.6, 0.3]), exam) == oracle_clicks(attract, exam)
    m = LoopMetrics(("model",), n_items=5, window_sessions=10)
    m.record("model", [3, 2, 1], [False, False, True], expected=0.825, oracle=1.275,
             event_index=5)  # fmt: skip
    assert m.report()["policies"]["model"]["regret"] == pytest.approx(0.45)
    # An oracle slate has no regret; regret is never negative.
    m.record("model", [1, 3, 2], [True, False, False], expected=1.275, oracle=1.275,
             event_index=9)  # fmt: skip
    assert m.report()["policies"]["model"]["regret"] == pytest.approx(0.225)


def test_popularity_bias_windows_and_prometheus() -> None:
    registry = CollectorRegistry()
    m = LoopMetrics(("popular", "random"), n_items=4, window_sessions=2, registry=registry)
    m.set_true_popularity(np.array([0.4, 0.3, 0.2, 0.1]))  # catalogue mean 0.25
    m.record("popular", [0, 1], [True, True], expected=0.7, oracle=0.7, event_index=4)
    m.record("random", [2, 3], [False, False], expected=0.3, oracle=0.7, event_index=6)
    m.record("popular", [0, 1], [True, False], expected=0.7, oracle=0.7, event_index=9)
    r = m.report()
    pop = r["policies"]["popular"]
    assert pop["popularity_bias"] == pytest.approx(0.35 / 0.25)
    assert pop["ctr"] == pytest.approx(0.75) and pop["coverage"] == 0.5
    assert pop["exposure_gini"] == pytest.approx(0.5)
    assert r["policies"]["random"]["popularity_bias"] == pytest.approx(0.15 / 0.25)
    assert len(r["timeline"]) == 1 and r["timeline"][0]["event_index"] == 6
    assert m.window_ctr() == {"popular": 1.0, "random": 0.0}
    text = generate_latest(registry).decode()
    assert 'feedback_loop_loop_ctr{policy="popular"} 1.0' in text
    assert 'feedback_loop_loop_impressions_total{policy="popular"} 4.0' in text
    assert 'feedback_loop_loop_clicks_total{policy="popular"} 3.0' in text
    for name in ("regret", "coverage", "exposure_gini", "popularity_bias"):
        assert f'feedback_loop_loop_{name}{{policy="random"}}' in text


def test_drift_recovery_when_the_ctr_never_comes_back() -> None:
    tl = [{"event_index": i, "policies": {"m": {"ctr": c}}} for i, c in
          enumerate([0.3, 0.3, 0.1, 0.1, 0.12])]  # fmt: skip
    r = drift_recovery(tl, "m", drift_at=1, smooth=1)
    assert r["before"] == pytest.approx(0.3) and r["at"] == 0.1
    assert r["recovered_at"] is None and r["events_to_recover"] is None
    assert drift_recovery([], "m", drift_at=1)["before"] is None


# --- how users react ----------------------------------------------------------------------------


def test_users_react_with_position_bias() -> None:
    sim = Simulator(SMALL)
    loop = ClosedLoop(sim, shuffled_slates(sim.item_ids), LoopConfig(rate=None, fatigue=1.0))
    shown: Counter[int] = Counter()
    clicks: Counter[int] = Counter()
    for e in interactions(loop, 40_000):
        if isinstance(e, ImpressionEvent | ClickEvent):
            assert e.position is not None
            shown[e.position] += 1
            clicks[e.position] += isinstance(e, ClickEvent)
    ctr = [clicks[p] / shown[p] for p in range(10)]
    # Random slates: every position sees the same items, so the CTR follows the examination
    # curve (1 + j) ** -0.5: position 9 about 0.32 of position 0.
    assert ctr[0] > ctr[4] > ctr[9]
    assert ctr[9] / ctr[0] == pytest.approx(examination(10, 0.5)[9], rel=0.25)


def test_users_tire_of_items_shown_again() -> None:
    sim = Simulator(SMALL)
    same = first_k_items(sim.item_ids)  # always the same slate for everyone
    loop = ClosedLoop(
        sim, same, LoopConfig(rate=None, fatigue=0.5, fatigue_memory=1.0, window_sessions=200)
    )
    fresh = [loop.true_attraction(u) for u in range(SMALL.n_users)]
    events = interactions(loop, 30_000)
    shown = Counter((e.user_id, e.item_id) for e in events if e.type in ("impression", "click"))
    uid, iid = max(shown, key=lambda ui: shown[ui])  # the most repeated impression
    user = sim.population.user_index(uid)
    tired = loop.true_attraction(user)
    times = shown[(uid, iid)]
    assert times > 3
    assert np.allclose(tired[:10], fresh[user][:10] * 0.5**times)  # all ten shown as often
    assert np.allclose(tired[10:], fresh[user][10:])  # never shown: as appealing as ever

    def ctr(window: dict[str, Any]) -> float:
        stats = window["policies"].values()
        return sum(s["clicks"] for s in stats) / sum(s["impressions"] for s in stats)

    timeline = loop.metrics.timeline
    # The same slate over and over: users stop clicking.
    assert ctr(timeline[-1]) < 0.6 * ctr(timeline[0])


def test_fatigue_wears_off() -> None:
    sim = Simulator(SMALL)
    cfg = LoopConfig(rate=None, fatigue=0.5, fatigue_memory=0.5)
    loop = ClosedLoop(sim, first_k_items(sim.item_ids), cfg)
    fresh = [loop.true_attraction(u) for u in range(SMALL.n_users)]
    interactions(loop, 30_000)
    for user in range(SMALL.n_users):
        tired = loop.true_attraction(user)[:10]
        # At most 1 + 1/2 + 1/4 + ... <= 2 impressions are remembered: appeal stays >= 1/4.
        assert np.all(tired >= fresh[user][:10] * 0.25 * (1 - 1e-9))


def test_events_carry_position_policy_and_propensity_and_validate() -> None:
    sim = Simulator(SMALL)
    loop = ClosedLoop(sim, shuffled_slates(sim.item_ids), LoopConfig(rate=None))
    records = list(loop.records(3000))
    profiles = SMALL.n_users + SMALL.n_items
    assert [r.type for r in records[:profiles]].count("user_profile") == SMALL.n_users
    events = records[profiles:]
    assert len(events) >= 3000 and loop.index == len(events)
    for e in events:
        assert decode_event(encode_event(e)) == e  # what the consumer will accept
    shown = [e for e in events if isinstance(e, ImpressionEvent | ClickEvent)]
    assert all(e.propensity == pytest.approx(10 / 60) for e in shown)
    assert {e.policy for e in shown} == set(LoopConfig().policies)
    for e in shown:  # each user always gets the policy of their arm
        assert (
            e.policy
            == loop.policy_of(e.user_id)
            == arm_of(SMALL.seed, e.user_id, LoopConfig().policies)
        )
    # Every impression and click is in the metrics, and vice versa.
    totals = loop.metrics.report()["policies"]
    assert sum(t["impressions"] for t in totals.values()) == len(shown)
    assert sum(t["clicks"] for t in totals.values()) == sum(e.type == "click" for e in shown)
    assert all(a.ts <= b.ts for a, b in zip(events, events[1:], strict=False))


def test_same_seed_same_loop() -> None:
    def run() -> list[bytes]:
        sim = Simulator(SMALL)
        loop = ClosedLoop(sim, shuffled_slates(sim.item_ids, 1), LoopConfig(rate=None))
        return [encode_event(e) for e in loop.records(2000)]

    assert run() == run()


def test_arms_split_users_about_evenly() -> None:
    users = [f"u{i:05d}" for i in range(4000)]
    arms = Counter(arm_of(42, u, ("random", "popular", "model", "explore")) for u in users)
    assert len(arms) == 4 and min(arms.values()) > 900
    # Another seed, another split.
    assert [arm_of(43, u, ("a", "b")) for u in users] != [arm_of(42, u, ("a", "b")) for u in users]


def test_waits_for_the_serving_state_and_close_stops_the_wait() -> None:
    sim = Simulator(SMALL)
    ready = threading.Event()
    loop = ClosedLoop(sim, first_k_items(sim.item_ids), LoopConfig(rate=None), ready=ready)
    records = loop.records(100)
    for _ in range(SMALL.n_users + SMALL.n_items):
        next(records)  # the profiles need no state
    threading.Timer(0.3, loop.close).start()
    assert list(records) == []  # closed while waiting: nothing recommended, nothing sent
    loop2 = ClosedLoop(sim, first_k_items(sim.item_ids), LoopConfig(rate=None), ready=ready)
    ready.set()
    assert len(interactions(loop2, 50)) >= 50


def test_no_state_in_time_is_an_error() -> None:
    sim = Simulator(SMALL)
    loop = ClosedLoop(sim, first_k_items(sim.item_ids), LoopConfig(ready_timeout=0.5),
                      ready=threading.Event())  # fmt: skip
    with pytest.raises(RuntimeError, match="no serving state"):
        list(loop.records(10))


def test_pacing_holds_the_rate() -> None:
    sim = Simulator(SMALL)
    loop = ClosedLoop(sim, first_k_items(sim.item_ids), LoopConfig(rate=2000.0))
    stop = threading.Timer(0.5, loop.close)
    stop.start()
    n = len(interactions(loop, 1_000_000))
    # At 2000 events/s, half a second of stream is about a thousand events, never the million.
    assert 0 < n < 5000


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"policies": ()}, "policies"),
        ({"policies": ("model", "model")}, "policies"),
        ({"policies": ("oracle",)}, "unknown policies"),
        ({"fatigue": 0.0}, "fatigue"),
        ({"fatigue_memory": 1.5}, "fatigue_memory"),
        ({"position_decay": -1.0}, "position_decay"),
        ({"rate": 0.0}, "rate"),
    ],
)
def test_bad_loop_config(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LoopConfig(**kwargs)


def test_drift_moves_the_truth_and_the_report_has_the_recovery() -> None:
    cfg = SimulatorConfig(n_users=120, n_items=60, seed=11, drift_at=5000, drift_item_share=1.0)
    sim = Simulator(cfg)
    loop = ClosedLoop(sim, shuffled_slates(sim.item_ids), LoopConfig(rate=None, window_sessions=50))
    before = loop.metrics.true_popularity.copy()
    interactions(loop, 12_000)
    assert not np.allclose(before, loop.metrics.true_popularity)  # recomputed at the drift
    r = loop.report()
    assert set(r["drift"]) == set(LoopConfig().policies)
    for d in r["drift"].values():
        for metric in ("ctr", "oracle_share"):
            assert d[metric]["before"] is not None and d[metric]["at"] is not None


# --- the whole loop -----------------------------------------------------------------------------


def load_report(path: Path) -> dict[str, Any]:
    report: dict[str, Any] = orjson.loads(path.read_bytes())
    return report


@pytest.mark.integration
@pytest.mark.slow
def test_closed_loop_demo_runs_through_kafka_and_the_served_state(tmp_path: Path) -> None:
    """`demo --closed-loop`: slates from the in-process server, events through Kafka to the
    consumer, whose published state reaches the recommender while the loop runs."""
    report_path = tmp_path / "loop.json"
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    proc = subprocess.run(
        [sys.executable, "-m", "cli.app", "demo", "--closed-loop", "--events", "20000",
         "--rate", "3000", "--window", "50", "--no-retrainer", "--metrics-port", "0",
         "--seed", "5", "--report", str(report_path)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = load_report(report_path)
    assert r["reconciles"] and r["dead_lettered"] == 0 and r["filtered"] == 0
    loop = r["closed_loop"]
    profiles = 1000 + 500
    assert loop["events"] >= 20000
    assert r["consumed"] == profiles + loop["events"]  # every event the users made, applied
    by_type = r["consumed_by_type"]
    policies = loop["policies"]
    # The random slates shown before the served state could rank anything are counted apart.
    everyone = [*policies.values(), *loop["other_policies"].values()]
    assert set(loop["other_policies"]) <= {"bootstrap"}
    shown = by_type["impression"] + by_type["click"]
    assert sum(p["impressions"] for p in everyone) == shown
    assert sum(p["clicks"] for p in everyone) == by_type["click"]
    assert set(policies) == {"random", "popular", "model", "explore"}
    assert all(p["sessions"] > 0 and 0 < p["ctr"] < 1 for p in policies.values())
    # The consumer published state more than once while the users asked: it reached the
    # server (sequence > 1) and covered every user and item announced.
    state = loop["serving_state"]
    assert state["sequence"] is not None and state["sequence"] > 1
    assert state["users"] == 1000 and state["items"] == 500
    assert loop["model_versions_served"] == [0]
    assert len(loop["timeline"]) >= 5
    assert "closed loop: ground truth per policy" in proc.stderr + proc.stdout
    assert report_path.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
