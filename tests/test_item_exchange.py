"""Shared items through Kafka: one consumer, four partitions, one learner each.

The learners exchange their item deltas on the item-updates topic while the stream flows;
when the consumer stops at the end they hold the same item model, and their pooled scores
are close to one learner over the whole stream (a single partition).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from consumers.loop import FeedbackConsumer
from stream.config import Settings, Topics
from stream.kafka.broker import ensure_topics
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


def test_partition_learners_share_one_item_model_through_the_topic(
    settings: Settings, tmp_path: Path
) -> None:
    single = own(settings, tmp_path, 1, "single")
    publish_stream(single, 30_000, seed=3)
    one = FeedbackConsumer(single, single.bootstrap_servers or "").run(stop_at_end=True)

    four = own(settings, tmp_path, 4, "four")
    sent = publish_stream(four, 30_000, seed=3)
    consumer = FeedbackConsumer(four, four.bootstrap_servers or "")
    consumer.run(stop_at_end=True)
    learners = list(consumer.learners.values())
    assert len(learners) == 4
    for other in learners[1:]:
        assert_same_items(learners[0], other)
    assert sum(lr.counts.consumed for lr in learners) == sent["sent"]
    assert all(lr.counts.reconciles() for lr in learners)
    # Users are the partitions' own: no learner holds another's.
    users = [set(lr.models.implicit._users.ids) for lr in learners]
    assert all(not (a & b) for i, a in enumerate(users) for b in users[i + 1 :])

    logloss, rmse = pooled(learners)
    assert one.learner.click_score.logloss is not None and one.learner.rating_score.rmse
    assert logloss <= one.learner.click_score.logloss * 1.01
    assert rmse <= one.learner.rating_score.rmse * 1.01
