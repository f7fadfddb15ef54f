"""Shared items through Kafka: one consumer, four partitions, one learner each.

The learners exchange their item deltas on the item-updates topic while the stream flows;
when the consumer stops at the end they hold the same item model, and their pooled scores
are close to one learner over the whole stream (a single partition), far closer than four
learners that share nothing.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from consumers.loop import FeedbackConsumer
from stream.config import Settings, Topics
from stream.kafka.broker import ensure_topics
from stream.learner import FeedbackLearner
from tests.helpers import derived, publish_stream
from tests.test_item_sync import assert_same_items, pooled

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def own(settings: Settings, tmp_path: Path, partitions: int, name: str) -> Settings:
    tag = uuid.uuid4().hex[:10]
    topics = Topics.prefixed(tag).model_copy(update={"events_partitions": partitions})
    s = derived(
        settings, topics=topics.model_dump(), group_id=f"g-{tag}", state_dir=tmp_path / name
    )
    ensure_topics(s.bootstrap_servers or "", s.topics, kafka=s.kafka)
    return s


def run_four(settings: Settings, tmp_path: Path, name: str, every: int) -> list[FeedbackLearner]:
    s = derived(own(settings, tmp_path, 4, name), share_items_every=every)
    sent = publish_stream(s, 30_000, seed=3)
    consumer = FeedbackConsumer(s, s.bootstrap_servers or "")
    consumer.run(stop_at_end=True)
    learners = list(consumer.learners.values())
    assert len(learners) == 4
    assert sum(lr.counts.consumed for lr in learners) == sent["sent"]
    assert all(lr.counts.reconciles() for lr in learners)
    # Users are the partitions' own: no learner holds another's.
    users = [set(lr.models.implicit._users.ids) for lr in learners]
    assert all(not (a & b) for i, a in enumerate(users) for b in users[i + 1 :])
    return learners


def test_partition_learners_share_one_item_model_through_the_topic(
    settings: Settings, tmp_path: Path
) -> None:
    single = own(settings, tmp_path, 1, "single")
    publish_stream(single, 30_000, seed=3)
    one = FeedbackConsumer(single, single.bootstrap_servers or "").run(stop_at_end=True).learner
    shared = run_four(settings, tmp_path, "shared", every=200)
    for other in shared[1:]:
        assert_same_items(shared[0], other)
    apart = run_four(settings, tmp_path, "apart", every=0)

    assert one.click_score.logloss is not None and one.rating_score.rmse is not None
    logloss, rmse = pooled(shared)
    alone_logloss, alone_rmse = pooled(apart)
    # Sharing closes most of the gap that learning apart leaves (which deltas a learner has
    # when it scores an event depends on fetch timing, so the figures vary a little between
    # runs; BENCHMARKS.md has the measured ones).
    assert logloss - one.click_score.logloss < 0.5 * (alone_logloss - one.click_score.logloss)
    assert rmse - one.rating_score.rmse < 0.5 * (alone_rmse - one.rating_score.rmse)
    assert logloss <= one.click_score.logloss * 1.02 and rmse <= one.rating_score.rmse * 1.02
