"""The retrain state machine, the lifecycle's bookkeeping around it and its typed records."""

from __future__ import annotations

import pickle

import pytest

from stream.config import DriftConfig, Settings
from stream.drift import Signal
from stream.events import ModelPublished, RetrainFailed, RetrainRequest
from stream.lifecycle import (
    AlarmRecord,
    InvalidTransition,
    ModelLifecycle,
    RetrainState,
    SwapRecord,
)


def req(request_id: str = "r1") -> RetrainRequest:
    return RetrainRequest(request_id=request_id, event_index=10, offsets={0: 10}, reason="x")


# -- the state machine ------------------------------------------------------------------------


def test_request_accept_swap() -> None:
    state = RetrainState()
    assert (state.phase, state.busy, state.outstanding) == ("idle", False, None)
    r = req()
    state.request(r)
    assert (state.phase, state.busy, state.outstanding) == ("requested", True, r)
    assert state.awaits("r1") and not state.awaits("r2")
    state.accept("r1", version=4)
    assert (state.phase, state.busy, state.version, state.outstanding) == ("swapping", True, 4, r)
    assert not state.awaits("r1")  # answered already
    state.swapped()
    assert (state.phase, state.busy, state.version, state.outstanding) == (
        "idle",
        False,
        None,
        None,
    )


@pytest.mark.parametrize("verb", ["reject", "fail"])
def test_a_rejected_or_failed_retrain_ends_idle(verb: str) -> None:
    state = RetrainState()
    state.request(req())
    getattr(state, verb)("r1")
    assert (state.phase, state.outstanding, state.version) == ("idle", None, None)
    state.request(req("r2"))  # and another may start
    assert state.awaits("r2")


def test_a_swap_ends_any_phase() -> None:
    """A rollback or another consumer's version can land whatever the phase."""
    for prepare in ([], ["request"], ["request", "accept"]):
        state = RetrainState()
        if "request" in prepare:
            state.request(req())
        if "accept" in prepare:
            state.accept("r1", 2)
        state.swapped()
        assert (state.phase, state.outstanding, state.version) == ("idle", None, None)


def test_abandon_an_accepted_version_that_cannot_be_loaded() -> None:
    state = RetrainState()
    state.request(req())
    state.accept("r1", 3)
    with pytest.raises(InvalidTransition, match="version 4 while swapping to version 3"):
        state.abandon(4)
    state.abandon(3)
    assert state.phase == "idle"
    with pytest.raises(InvalidTransition, match="abandon the swap of version 3 while idle"):
        state.abandon(3)


def test_invalid_transitions_raise_and_leave_the_state_alone() -> None:
    state = RetrainState()
    for verb in ("accept", "reject", "fail"):
        args = ("r1", 1) if verb == "accept" else ("r1",)
        with pytest.raises(InvalidTransition, match=f"cannot {verb} retrain r1 while idle"):
            getattr(state, verb)(*args)
    assert state.phase == "idle"

    state.request(req())
    with pytest.raises(InvalidTransition, match="request retrain r2 while requested .r1."):
        state.request(req("r2"))
    with pytest.raises(InvalidTransition, match="accept retrain r2: the outstanding one is r1"):
        state.accept("r2", 1)
    assert state.awaits("r1")

    state.accept("r1", 1)
    for verb in ("reject", "fail"):
        with pytest.raises(InvalidTransition, match="while swapping"):
            getattr(state, verb)("r1")
    with pytest.raises(InvalidTransition, match="while swapping"):
        state.request(req("r3"))
    assert (state.phase, state.version) == ("swapping", 1)


def test_state_survives_pickle() -> None:
    state = RetrainState()
    state.request(req())
    copy = pickle.loads(pickle.dumps(state))
    assert copy == state and copy.awaits("r1")


# -- the lifecycle around it ------------------------------------------------------------------


def lifecycle(after_drift_events: int = 0, **drift: object) -> ModelLifecycle:
    s = Settings()
    config = DriftConfig(**{"warmup_events": 0, **drift})  # type: ignore[arg-type]
    retrain = s.retrain.model_copy(update={"after_drift_events": after_drift_events})
    return ModelLifecycle(s.model_copy(update={"drift": config, "retrain": retrain}))


def signal(name: str, at: int, kind: str = "data") -> Signal:
    return Signal(name, kind, at, 0.2, 0.1)


def raise_alarms(life: ModelLifecycle, *signals: Signal) -> None:
    """Alarms as the monitor would have collected them since the last review."""
    assert life.monitor is not None
    life.monitor._signals.extend(signals)


def published(request_id: str, version: int, accepted: bool) -> ModelPublished:
    outcome = {
        "trials": 6,
        "best_validation": 0.93,
        "challenger_holdout": 0.9,
        "champion_holdout": 0.95,
        "params": {"factors": 16},
        "seconds": 12.5,
    }
    return ModelPublished(
        request_id=request_id,
        version=version,
        accepted=accepted,
        offsets={0: 100},
        event_index=100,
        outcome=outcome,
    )


def test_a_drift_decision_waits_for_the_new_regime_and_a_manual_trigger_does_not() -> None:
    life = lifecycle(after_drift_events=5000)
    raise_alarms(life, signal("dwell_psi", 100))
    assert life.review(120) is None  # decided, waiting for 5000 more events
    assert life.waiting is not None and life.waiting.event_index == 100
    raise_alarms(life, signal("click_genre_mix_psi", 3000))
    assert life.review(3000) is None
    assert life.policy.outcomes[("click_genre_mix_psi", "retrain_in_progress")] == 1
    assert life.review(5099) is None
    decision = life.review(5100)
    assert decision is not None and decision.signals == ("dwell_psi",)
    assert life.waiting is None
    request = life.request(decision, {0: 5100}, 5100)
    assert (life.retrains[0].decided_at_event_index, life.retrains[0].start_event_index) == (
        100,
        5100,
    )
    life.failed(RetrainFailed(request_id=request.request_id, error="x"), 6000)
    # A manual trigger is not delayed, and it covers a drift decision that is waiting.
    raise_alarms(life, signal("dwell_psi", 40_000))
    assert life.review(40_000) is None and life.waiting is not None
    life.trigger("manual")
    manual = life.review(40_100)
    assert manual is not None and manual.signals == ("manual",)
    assert life.waiting is None


def test_signals_while_busy_are_counted_as_retrain_in_progress() -> None:
    life = lifecycle()
    raise_alarms(life, signal("dwell_psi", 100), signal("event_type_mix_js", 110))
    decision = life.review(120)
    assert decision is not None and decision.signals == ("dwell_psi",)
    # The second signal of the same review came after the decision: already in progress.
    assert life.policy.outcomes[("event_type_mix_js", "retrain_in_progress")] == 1
    request = life.request(decision, {0: 120}, 120)
    assert life.state.phase == "requested"

    raise_alarms(life, signal("dwell_psi", 60_000))
    assert life.review(60_000) is None  # (a manual trigger is queued instead: see below)
    assert life.policy.outcomes[("dwell_psi", "retrain_in_progress")] == 1

    assert life.published(published(request.request_id, 2, accepted=True), 60_500)
    assert (life.state.phase, life.state.version) == ("swapping", 2)
    raise_alarms(life, signal("dwell_psi", 61_000))
    assert life.review(61_000) is None
    assert life.policy.outcomes[("dwell_psi", "retrain_in_progress")] == 2

    life.swapped(2, 61_500, caught_up=1500)
    assert not life.state.busy and life.version == 2
    raise_alarms(life, signal("dwell_psi", 100_000))
    assert life.review(100_000) is not None  # free again
    assert life.report()["policy_outcomes"] == {
        "dwell_psi:decided": 2,
        "event_type_mix_js:retrain_in_progress": 1,
        "dwell_psi:retrain_in_progress": 2,
    }


def test_answers_to_other_requests_do_not_move_the_state() -> None:
    life = lifecycle()
    life.trigger("manual")
    decision = life.review(50)
    assert decision is not None
    mine = life.request(decision, {0: 50}, 50)
    # Another consumer's (or a pre-restore) request: not ours, nothing recorded.
    assert life.published(published("someone-else", 7, accepted=True), 60)
    assert not life.published(published("someone-else", 8, accepted=False), 60)
    life.failed(RetrainFailed(request_id="someone-else", error="boom"), 60)
    assert life.state.awaits(mine.request_id)
    assert [r.status for r in life.retrains] == ["requested"]
    # A failure of our own ends the retrain.
    life.failed(RetrainFailed(request_id=mine.request_id, error="OSError: disk full"), 70)
    assert not life.state.busy
    assert life.report()["retrains"][0]["error"] == "OSError: disk full"


def test_a_rollback_ends_the_retrain_and_its_late_answer_is_still_swapped() -> None:
    life = lifecycle()
    life.trigger("manual")
    decision = life.review(50)
    assert decision is not None
    mine = life.request(decision, {0: 50}, 50)
    life.swapped(1, 60, caught_up=10)  # a rollback landed meanwhile
    assert not life.state.busy
    assert life.published(published(mine.request_id, 3, accepted=True), 70)
    assert not life.state.busy  # nothing waits: the caller swaps it in as any other version
    assert life.report()["retrains"][0]["status"] == "accepted"


def test_a_swap_that_fails_ends_the_retrain_as_failed() -> None:
    life = lifecycle()
    life.trigger("manual")
    decision = life.review(50)
    assert decision is not None
    mine = life.request(decision, {0: 50}, 50)
    life.swap_failed(9, 55, "RegistryError: not ours")  # not the awaited version: ignored
    assert life.published(published(mine.request_id, 3, accepted=True), 60)
    life.swap_failed(3, 65, "RegistryError: model version 3 not found")
    assert not life.state.busy
    row = life.report()["retrains"][0]
    assert (row["status"], row["accepted"], row["version"]) == ("failed", True, 3)
    assert row["end_event_index"] == 65
    assert row["error"] == "RegistryError: model version 3 not found"


# -- the records' report output ---------------------------------------------------------------


def test_report_rows_keep_their_keys_and_values() -> None:
    life = lifecycle()
    raise_alarms(life, Signal("new_user_share_psi", "data", 900, 0.07, 0.05))
    decision = life.review(1000)
    assert decision is not None
    first = life.request(decision, {0: 1000}, 1000)
    base = {
        "request_id": first.request_id,
        "start_event_index": 1000,
        "decided_at_event_index": 900,
        "reason": "confirmed by new_user_share_psi",
        "signals": ["new_user_share_psi"],
        "end_event_index": None,
        "status": "requested",
    }
    assert life.report()["retrains"] == [base]
    assert list(life.report()["retrains"][0]) == list(base)  # same order too

    life.published(published(first.request_id, 2, accepted=False), 1400)
    answer = {
        "accepted": False,
        "version": 2,
        "trials": 6,
        "validation_score": 0.93,
        "challenger_holdout": 0.9,
        "champion_holdout": 0.95,
        "params": {"factors": 16},
        "seconds": 12.5,
    }
    rejected = {**base, "end_event_index": 1400, "status": "rejected", **answer}
    assert life.report()["retrains"] == [rejected]
    assert list(life.report()["retrains"][0]) == list(rejected)

    life.trigger("again")
    decision = life.review(50_000)
    assert decision is not None
    second = life.request(decision, {0: 50_000}, 50_000)
    life.failed(RetrainFailed(request_id=second.request_id, error="ValueError: x"), 50_100)
    life.swapped(1, 50_200, caught_up=0)
    report = life.report()
    assert report["retrains"][1] == {
        "request_id": second.request_id,
        "start_event_index": 50_000,
        "decided_at_event_index": 50_000,
        "reason": "again",
        "signals": ["manual"],
        "end_event_index": 50_100,
        "status": "failed",
        "error": "ValueError: x",
    }
    assert report["drift_alarms"] == [
        {
            "event_index": 900,
            "detector": "new_user_share_psi",
            "kind": "data",
            "statistic": 0.07,
            "threshold": 0.05,
        }
    ]
    assert report["swaps"] == [{"event_index": 50_200, "model_version": 1, "caught_up_events": 0}]
    assert report["model_version"] == 1
    assert set(report) == {"drift_alarms", "retrains", "swaps", "model_version", "policy_outcomes"}
    # The lifecycle keeps typed records; the report is plain data (JSON-ready, a copy).
    assert isinstance(life.alarms[0], AlarmRecord) and isinstance(life.swaps[0], SwapRecord)
    report["retrains"][0]["status"] = "edited"
    assert life.retrains[0].status == "rejected"


def test_missing_scores_are_reported_as_none() -> None:
    life = lifecycle()
    life.trigger("manual")
    decision = life.review(10)
    assert decision is not None
    r = life.request(decision, {0: 10}, 10)
    msg = ModelPublished(
        request_id=r.request_id,
        version=1,
        accepted=True,
        offsets={0: 10},
        event_index=10,
        outcome={"trials": 2},
    )
    life.published(msg, 20)
    row = life.report()["retrains"][0]
    assert row["champion_holdout"] is None and row["validation_score"] is None
    assert row["trials"] == 2 and "error" not in row


def test_a_repeated_decision_repeats_its_request_id() -> None:
    """A consumer restored from a checkpoint before its request replays the events and decides
    again: the request carries the same id, whatever batch boundary it lands on."""
    ids = []
    for review_at in (120, 170):
        life = lifecycle()
        raise_alarms(life, signal("dwell_psi", 100))
        decision = life.review(review_at)
        assert decision is not None
        ids.append(life.request(decision, {0: review_at}, review_at).request_id)
    assert ids[0] == ids[1] == "v0-drift100-p0"
    manual = lifecycle()
    manual.trigger("ops", control_offset=17)
    decision = manual.review(5_000)
    assert decision is not None
    assert manual.request(decision, {1: 9, 0: 8}, 17).request_id == "v0-manual17-p0.1"


def test_a_manual_trigger_while_busy_is_queued_not_dropped() -> None:
    life = lifecycle()
    life.trigger("first", control_offset=1)
    first = life.review(100)
    assert first is not None
    life.request(first, {0: 100}, 100)
    life.trigger("second", control_offset=2)  # e.g. while the retrainer is down
    assert life.review(200) is None and life.state.awaits(life.retrains[0].request_id)
    life.failed(RetrainFailed(request_id=life.retrains[0].request_id, error="x"), 300)
    second = life.review(400)
    assert second is not None and second.reason == "second"


def test_an_unanswered_request_times_out_and_its_late_answer_is_ignored() -> None:
    life = lifecycle()
    life.trigger("manual", control_offset=3)
    decision = life.review(100)
    assert decision is not None
    request = life.request(decision, {0: 100}, 100)
    asked = life.state.requested_at
    assert asked is not None
    assert life.expire(asked + 10, 60, 150) is None and life.state.busy
    expired = life.expire(asked + 61, 60, 200)
    assert expired is not None and expired.status == "timed_out"
    assert not life.state.busy
    row = life.report()["retrains"][0]
    assert (row["status"], row["end_event_index"]) == ("timed_out", 200)
    assert "no answer within 60s" in row["error"]
    # The late answer swaps nothing and does not disturb a request made since.
    life.trigger("again", control_offset=4)
    again = life.review(300)
    assert again is not None
    newer = life.request(again, {0: 300}, 300)
    assert not life.published(published(request.request_id, 5, accepted=True), 310)
    assert life.state.awaits(newer.request_id)
    assert life.published(published(newer.request_id, 6, accepted=True), 320)
    # A repeated answer to the same request is not swapped twice.
    assert not life.published(published(newer.request_id, 6, accepted=True), 330)


def test_a_request_made_again_after_a_restore_takes_the_answer_already_given() -> None:
    """Crash after the request, restore from the checkpoint before it: the answer is read
    before the decision is made again; the repeated request is answered, not re-awaited."""
    before = lifecycle()
    raise_alarms(before, signal("dwell_psi", 100))
    decision = before.review(120)
    assert decision is not None
    request = before.request(decision, {0: 120}, 120)
    restored = lifecycle()  # the checkpoint from before the request
    assert restored.published(published(request.request_id, 3, accepted=True), 130)
    raise_alarms(restored, signal("dwell_psi", 100))
    again = restored.review(125)
    assert again is not None
    repeated = restored.request(again, {0: 125}, 125)
    assert repeated.request_id == request.request_id
    assert not restored.state.busy  # nothing to wait for: the swap was queued at the answer
    assert [(r.status, r.answer.version if r.answer else None) for r in restored.retrains] == [
        ("accepted", 3)
    ]
