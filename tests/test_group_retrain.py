"""A retrain of a consumer group: two partitions, one request, one answer, one version for all.

One consumer holds both partitions of the events topic (a learner each, sharing items). A
manual trigger reaches every partition's learner; only partition 0's decides, so exactly one
request is published, covering both partitions' history. The real retrainer answers it once;
each learner swaps the version in, learning its own partition's events since the history
ended, keeps its own users only, and after the exchange both hold the same item model. A
restart from the checkpoints keeps all of it.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest

from consumers.loop import FeedbackConsumer
from consumers.retrainer import RetrainWorker
from stream.config import RetrainConfig, Settings, Topics
from stream.events import (
    ModelPublished,
    RetrainFailed,
    RetrainRequest,
    RetrainTrigger,
    decode_control,
)
from stream.kafka.broker import ensure_topics
from stream.kafka.control import publish_control
from stream.learner import FeedbackLearner
from stream.lifecycle import ModelRegistry
from tests.helpers import derived, publish_stream, read_topic
from tests.test_item_sync import assert_same_items

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class AcceptingRetrainer(RetrainWorker):
    """The real retrainer, told of no champion: its challenger is accepted (the test is
    about the swap, not about which model wins)."""

    def handle(self, request: RetrainRequest) -> ModelPublished | RetrainFailed:
        return super().handle(request.model_copy(update={"champion": None}))


@pytest.fixture
def group(settings: Settings, tmp_path: Path) -> Settings:
    tag = uuid.uuid4().hex[:10]
    topics = Topics.prefixed(tag).model_copy(update={"events_partitions": 2})
    s = derived(
        settings,
        topics=topics.model_dump(),
        group_id=f"g-{tag}",
        state_dir=tmp_path / "state",
        share_items_every=200,
    )
    s = s.model_copy(update={"retrain": RetrainConfig(
        registry_dir=tmp_path / "registry", group_id=f"r-{tag}", holdout_events=300,
        validation_events=300, trials=1, timeout_seconds=120,
    )})  # fmt: skip
    ensure_topics(s.bootstrap_servers or "", s.topics, kafka=s.kafka)
    return s


def run_to(settings: Settings, ends: dict[int, int], wait: bool = False) -> FeedbackConsumer:
    consumer = FeedbackConsumer(settings, settings.bootstrap_servers or "")
    consumer.wait_for_retrains = wait
    consumer.stop_at(ends)
    consumer.run()
    return consumer


def users(learner: FeedbackLearner) -> set[str]:
    models = learner.models
    return set(models.rating._users.ids) | set(models.implicit._users.ids)


def test_one_request_one_answer_and_every_partition_swaps_the_same_version(
    group: Settings,
) -> None:
    s, bootstrap = group, group.bootstrap_servers or ""
    first = publish_stream(s, 8000, seed=3)
    run_to(s, first["end_offsets"])
    publish_control(bootstrap, s.topics.control, RetrainTrigger(reason="ops"), kafka=s.kafka)
    second = publish_stream(s, 3000, seed=4)
    worker = AcceptingRetrainer(s, bootstrap)
    thread = threading.Thread(target=worker.run, kwargs={"max_requests": 1}, daemon=True)
    thread.start()
    try:
        consumer = run_to(s, second["end_offsets"], wait=True)
    finally:
        worker.request_stop()
        thread.join(60)
    learners = consumer.learners
    assert sorted(learners) == [0, 1]

    control = [decode_control(m.value() or b"") for m in read_topic(s, s.topics.control)]
    requests = [m for m in control if isinstance(m, RetrainRequest)]
    answers = [m for m in control if isinstance(m, ModelPublished | RetrainFailed)]
    assert len(requests) == 1 and len(answers) == 1
    request, answer = requests[0], answers[0]
    assert sorted(request.offsets) == [0, 1]
    ends = second["end_offsets"]
    assert all(0 < request.offsets[p] <= ends[p] for p in (0, 1))
    assert isinstance(answer, ModelPublished) and answer.accepted
    assert answer.request_id == request.request_id and answer.offsets == request.offsets

    # Every partition swapped the one version, learning its own events since the history.
    version = answer.version
    for learner in learners.values():
        life = learner.lifecycle
        assert life.version == version and [w.model_version for w in life.swaps] == [version]
        assert life.swaps[0].caught_up_events > 0
        assert learner.item_sync is not None and learner.item_sync.held == ()
    assert learners[0].lifecycle.retrains[0].request_id == request.request_id
    assert not learners[1].lifecycle.retrains  # the decider's alone
    generations = {lr.item_sync.generation for lr in learners.values() if lr.item_sync}
    assert len(generations) == 1 and generations.pop() > 0

    # Counts reconcile per partition and sum to the topic.
    assert all(lr.counts.reconciles() for lr in learners.values())
    assert sum(lr.counts.consumed for lr in learners.values()) == first["sent"] + second["sent"]
    # Each partition keeps its own users, not the bundle's everyone.
    bundle_users = set(ModelRegistry(s.retrain.registry_dir).load(version).implicit._users.ids)
    held = [users(learners[0]), users(learners[1])]
    assert held[0] and held[1] and not held[0] & held[1]
    assert len(held[0]) < len(bundle_users) and len(held[1]) < len(bundle_users)
    # After the exchange at the end, one item model.
    assert_same_items(learners[0], learners[1])

    # A restart from the checkpoints keeps the version, the generation and the agreement.
    third = publish_stream(s, 2000, seed=5)
    again = run_to(s, third["end_offsets"]).learners
    for learner in again.values():
        assert learner.lifecycle.version == version and len(learner.lifecycle.swaps) == 1
        assert learner.item_sync is not None and learner.item_sync.generation == answer_gen(s)
    total = first["sent"] + second["sent"] + third["sent"]
    assert sum(lr.counts.consumed for lr in again.values()) == total
    assert_same_items(again[0], again[1])


def answer_gen(s: Settings) -> int:
    """The swap generation of the answer: its control-topic position (offset + 1)."""
    for m in read_topic(s, s.topics.control):
        if isinstance(decode_control(m.value() or b""), ModelPublished):
            return (m.offset() or 0) + 1
    raise AssertionError("no answer on the control topic")
