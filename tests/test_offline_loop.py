"""The retrain in the loop offline: the retrainer's code on exactly the events learned so
far, accepted models swapped in, a frozen model that only scores, and the evaluate CLI."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from consumers.offline_loop import OfflineLoop, RetrainSchedule
from producers.simulator import Simulator, SimulatorConfig
from stream.config import Settings
from stream.events import InteractionEvent, encode_event
from stream.lifecycle import TrainingData, retrain
from tests.test_cli import run_cli


def stream(n: int, seed: int = 5) -> list[bytes]:
    sim = Simulator(SimulatorConfig(n_users=60, n_items=40, seed=seed))
    return [encode_event(e) for e in [*sim.profiles(), *sim.events(n)]]


def small_retrains(trials: int = 2) -> Settings:
    s = Settings()
    update = {"holdout_events": 400, "validation_events": 400, "trials": trials}
    return s.model_copy(update={"retrain": s.retrain.model_copy(update=update)})


def test_periodic_retrains_train_on_exactly_the_events_learned_and_swap_accepted_models() -> None:
    records = stream(4000)
    settings = small_retrains()
    seen: list[tuple[int, int]] = []
    loop = OfflineLoop(settings, RetrainSchedule(every=2000))
    loop.on_retrain = lambda r: seen.append((r["event_index"], len(loop.history)))
    for raw in records:
        loop.process(raw)
    learner = loop.learner
    assert [r["event_index"] for r in loop.retrains] == [2000, 4000]
    assert learner.counts.consumed == len(records) and learner.counts.reconciles()
    # The retrain saw exactly the admitted interaction events learned up to its point: the
    # same call on that prefix gives the same challenger, bit for bit.
    first_at, first_n = seen[0]
    prefix = OfflineLoop(settings, RetrainSchedule())
    for raw in records[:first_at]:
        prefix.process(raw)
    assert len(prefix.history) == first_n and all(
        isinstance(e, InteractionEvent) for e in prefix.history
    )
    again = retrain(
        TrainingData(prefix.history, prefix.learner.users, prefix.learner.items),
        base=settings.model, limits=settings.limits, holdout=400, validation=400,
        n_trials=2, seed=settings.model.seed, champion=None,
    )  # fmt: skip
    assert again.challenger_holdout == loop.retrains[0]["challenger"]
    # Every accepted model was swapped in, in order; a rejected one was not.
    accepted = [r["version"] for r in loop.retrains if r["status"] == "accepted"]
    assert [s.model_version for s in learner.lifecycle.swaps] == accepted
    assert learner.lifecycle.version == (accepted[-1] if accepted else 0)
    statuses = [r["status"] for r in learner.summary()["retrains"]]
    assert statuses == [r["status"] for r in loop.retrains]


def test_a_frozen_model_only_scores_after_its_batch_fit() -> None:
    records = stream(3000)
    loop = OfflineLoop(small_retrains(), RetrainSchedule(freeze_at=2000))
    for raw in records[:2000]:
        loop.process(raw)
    assert loop.frozen and [r["status"] for r in loop.retrains] == ["accepted"]
    frozen = pickle.dumps(loop.learner.models)
    scored = loop.learner.click_score.n + loop.learner.rating_score.n
    for raw in records[2000:]:
        loop.process(raw)
    # Scored every later interaction, learned none, and scoring added no state.
    assert loop.learner.click_score.n + loop.learner.rating_score.n > scored
    assert pickle.dumps(loop.learner.models) == frozen
    assert loop.learner.counts.reconciles()


def test_schedule_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="every must be a positive"):
        RetrainSchedule(every=0)
    assert RetrainSchedule(every=5, on_drift=True).name == "every 5 + on drift"


@pytest.mark.slow
def test_evaluate_with_retrains_reports_them(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(stream(3000)) + b"\n")
    report = tmp_path / "r.json"
    proc = run_cli(
        "evaluate", str(path), "--report", str(report), "--retrain-every", "1500",
        "--holdout-events", "300", "--validation-events", "300", "--trials", "2",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "retrain at message 1,500" in proc.stderr
    r = json.loads(report.read_text())
    assert r["config"]["schedule"] == "every 1500"
    assert [x["start_event_index"] for x in r["retrains"]] == [1500, 3000]
    assert {x["status"] for x in r["retrains"]} <= {"accepted", "rejected"}
    assert len(r["swaps"]) == sum(x["status"] == "accepted" for x in r["retrains"])
