"""Retrain requests through the real control topic: answered once per id, served after the
retrainer was down, given up on when unanswered."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from consumers.model_control import ModelControl
from consumers.retrainer import RetrainWorker
from stream.config import RetrainConfig, Settings
from stream.events import (
    ModelPublished,
    RetrainFailed,
    RetrainRequest,
    RetrainTrigger,
    decode_control,
)
from stream.kafka.control import publish_control
from stream.learner import FeedbackLearner
from stream.lifecycle import ModelRegistry
from stream.models import ModelBundle
from tests.helpers import read_topic

pytestmark = [pytest.mark.integration]


def answers(s: Settings) -> Counter[str]:
    """How many answers each request id got on the control topic."""
    msgs = [decode_control(m.value() or b"") for m in read_topic(s, s.topics.control)]
    return Counter(m.request_id for m in msgs if isinstance(m, ModelPublished | RetrainFailed))


def request(request_id: str) -> RetrainRequest:
    # An empty history: the retrain fails at once, which is an answer all the same.
    return RetrainRequest(request_id=request_id, event_index=0, offsets={0: 0}, reason="test")


def test_requests_are_answered_once_per_id_and_queued_while_no_retrainer_runs(
    settings: Settings, tmp_path: Path
) -> None:
    s = settings.model_copy(update={"retrain": RetrainConfig(
        registry_dir=tmp_path / "registry", group_id=settings.consumer.group_id + "-r1",
    )})  # fmt: skip
    bootstrap = s.bootstrap_servers or ""
    # A version stored for request C before a crash, its announcement never published.
    registry = ModelRegistry(s.retrain.registry_dir)
    stored = registry.publish(
        ModelBundle.fresh(s.model), {"request_id": "C", "event_index": 0, "accepted": True}
    )
    # No retrainer runs: A, A again (a restarted consumer repeating its decision), B, C.
    for request_id in ("A", "A", "B", "C"):
        publish_control(bootstrap, s.topics.control, request(request_id), kafka=s.kafka)
    worker = RetrainWorker(s, bootstrap)
    worker.run(max_requests=4)  # started later: serves what is queued on the topic
    assert answers(s) == {"A": 1, "B": 1, "C": 1}
    assert worker.repeated == 1
    announced = [
        m for m in (decode_control(x.value() or b"") for x in read_topic(s, s.topics.control))
        if isinstance(m, ModelPublished)
    ]  # fmt: skip
    assert [(m.request_id, m.version, m.accepted) for m in announced] == [
        ("C", stored.version, True)
    ]
    assert [v.version for v in registry.versions()] == [stored.version]  # not retrained

    # A retrainer whose group lost its offsets reads every request again: none re-answered.
    again = s.model_copy(update={"retrain": s.retrain.model_copy(
        update={"group_id": s.retrain.group_id + "-again"})})  # fmt: skip
    second = RetrainWorker(again, bootstrap)
    second.run(max_requests=4)
    assert second.repeated == 4
    assert answers(s) == {"A": 1, "B": 1, "C": 1}


def test_an_unanswered_request_expires_and_the_consumer_may_ask_again(
    settings: Settings, tmp_path: Path
) -> None:
    s = settings.model_copy(update={"retrain": RetrainConfig(
        registry_dir=tmp_path / "registry", timeout_seconds=0.2, answer_margin_seconds=0.3,
    )})  # fmt: skip
    bootstrap = s.bootstrap_servers or ""
    learner = FeedbackLearner(s)
    learner.counts.consumed = 500  # as if 500 events had been applied
    life = learner.lifecycle
    control = ModelControl(s, bootstrap, learner)

    def poll_until(done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 30
        while not done():
            assert time.monotonic() < deadline, "not reached"
            control.between_batches({})
            time.sleep(0.05)

    version = (
        ModelRegistry(s.retrain.registry_dir)
        .publish(ModelBundle.fresh(s.model), {"event_index": 0})
        .version
    )
    try:
        publish_control(bootstrap, s.topics.control, RetrainTrigger(reason="ops"), kafka=s.kafka)
        poll_until(lambda: life.state.busy)
        first = life.retrains[0].request_id
        poll_until(lambda: not life.state.busy)  # no retrainer runs: it expires
        assert life.requests_expired == 1 and life.retrains[0].status == "timed_out"
        publish_control(bootstrap, s.topics.control, RetrainTrigger(reason="again"), kafka=s.kafka)
        poll_until(lambda: len(life.retrains) == 2)
        # The late answer to the expired request: ignored, nothing swapped.
        publish_control(bootstrap, s.topics.control, ModelPublished(
            request_id=first, version=version, accepted=True, offsets={}, event_index=0,
            outcome={},
        ), kafka=s.kafka)  # fmt: skip
        # Read past the late answer: a trigger after it becomes the third request.
        publish_control(bootstrap, s.topics.control, RetrainTrigger(reason="marker"), kafka=s.kafka)
        poll_until(lambda: len(life.retrains) == 3)
    finally:
        control.close()
    assert life.swaps == [] and life.version == 0
    assert life.retrains[0].status == "timed_out" and life.retrains[0].answer is None
    requests = [
        m for m in (decode_control(x.value() or b"") for x in read_topic(s, s.topics.control))
        if isinstance(m, RetrainRequest)
    ]  # fmt: skip
    assert [r.reason for r in requests] == ["ops", "again", "marker"]
