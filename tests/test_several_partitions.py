"""A consumer holding several partitions reports and publishes all of them.

On the embedded broker, with a two-partition events topic: the consumer's ``/metrics``
(scraped over HTTP) count the messages of both partitions' learners, and ``serve``'s state
(the real follower thread reading the model-state topic) knows the users of both, whether
one consumer holds both partitions or two consumers of one group hold one each (the
partitions moving between them on the way).
"""

from __future__ import annotations

import threading
import urllib.request
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from consumers.loop import FeedbackConsumer
from consumers.state_follower import StateFollowerThread
from stream.config import Settings, Topics
from stream.kafka.broker import ensure_topics
from stream.learner import FeedbackLearner
from stream.observability.metrics import PipelineMetrics
from stream.serving.state import ServingState
from tests.helpers import derived, publish_stream, wait_until

pytestmark = pytest.mark.integration


def two_partitions(settings: Settings, tmp_path: Path) -> Settings:
    tag = uuid.uuid4().hex[:10]
    topics = Topics.prefixed(tag).model_copy(update={"events_partitions": 2})
    s = derived(settings, topics=topics.model_dump(), group_id=f"g-{tag}", state_dir=tmp_path)
    ensure_topics(s.bootstrap_servers or "", s.topics, kafka=s.kafka)
    return s


def scrape(port: int) -> dict[str, float]:
    """Each sample of the consumer's ``/metrics``, summed over its labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


def users_of(learner: FeedbackLearner) -> set[str]:
    m = learner.models
    return set(learner.users) | set(m.rating._users.ids) | set(m.implicit._users.ids)


def serving_state(settings: Settings) -> ServingState:
    """What ``serve`` holds once its follower has read the model-state topic to its end."""
    state = ServingState()
    follower = StateFollowerThread(
        settings.bootstrap_servers or "",
        settings.topics.model_state,
        state,
        freeze_gc=False,
        kafka=settings.kafka,
    )
    follower.start()
    try:
        wait_until(follower.ready.is_set, "the follower caught up with the model-state topic")
    finally:
        follower.stop()
    assert follower.error is None
    return state


def assert_serves(state: ServingState, learners: list[FeedbackLearner]) -> None:
    """Every user of every learner, with the learner's own vector."""
    expected = set().union(*(users_of(lr) for lr in learners))
    assert state.n_users == len(expected)
    for learner in learners:
        table = learner.models.implicit._users
        for u in users_of(learner):
            got = state.user(u)
            assert got is not None, u
            row = table.index.get(u)
            assert got.implicit_vector == (None if row is None else tuple(table.vectors[row])), u


def test_one_consumer_of_two_partitions_counts_and_publishes_both(
    settings: Settings, tmp_path: Path
) -> None:
    s = two_partitions(settings, tmp_path)
    sent = publish_stream(s, 6_000, seed=5)
    metrics = PipelineMetrics()
    port = metrics.serve("127.0.0.1", 0)
    consumer = FeedbackConsumer(s, s.bootstrap_servers or "", metrics=metrics)
    consumer.run(stop_at_end=True)

    learners = list(consumer.learners.values())
    assert len(learners) == 2 and all(lr.counts.consumed for lr in learners)
    exported = scrape(port)
    assert exported["feedback_loop_events_consumed_total"] == sent["sent"]
    assert sum(lr.counts.consumed for lr in learners) == sent["sent"]
    for name, count in (
        ("feedback_loop_events_applied_total", lambda lr: lr.counts.applied),
        ("feedback_loop_events_duplicate_total", lambda lr: lr.counts.duplicates),
        ("feedback_loop_events_filtered_total", lambda lr: lr.counts.filtered),
        ("feedback_loop_events_dead_lettered_total", lambda lr: lr.counts.dead_lettered),
        ("feedback_loop_users_held", lambda lr: lr.users_held),
    ):
        assert exported[name] == sum(count(lr) for lr in learners), name

    assert_serves(serving_state(s), learners)


def test_two_consumers_of_one_group_publish_all_users(settings: Settings, tmp_path: Path) -> None:
    s = two_partitions(settings, tmp_path)
    sent = publish_stream(s, 6_000, seed=6)
    metrics = [PipelineMetrics() for _ in range(2)]
    ports = [m.serve("127.0.0.1", 0) for m in metrics]
    consumers = [FeedbackConsumer(s, s.bootstrap_servers or "", metrics=m) for m in metrics]
    threads = [threading.Thread(target=c.run, daemon=True) for c in consumers]
    for t in threads:
        t.start()

    def split_and_done() -> bool:
        try:
            held = [dict(c.learners) for c in consumers]
        except RuntimeError:  # the consumer thread changed its partitions meanwhile
            return False
        consumed = sum(lr.counts.consumed for h in held for lr in h.values())
        return [len(h) for h in held] == [1, 1] and consumed == sent["sent"]

    try:
        wait_until(split_and_done, "each consumer holds one partition, both read to the end")
    finally:
        for c in consumers:
            c.request_stop()
        for t in threads:
            t.join(60)
    assert not any(t.is_alive() for t in threads)
    # Partitions moved between the two (the first to join held both): each message is
    # counted once, by the process that applied it, checkpoints restored on a move excluded.
    consumed = [scrape(port)["feedback_loop_events_consumed_total"] for port in ports]
    assert sum(consumed) == sent["sent"]
    learners = [lr for c in consumers for lr in c.learners.values()]
    assert_serves(serving_state(s), learners)
