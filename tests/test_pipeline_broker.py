"""Producer -> embedded broker -> consumer, with real bytes on a real broker."""

from __future__ import annotations

import urllib.request

import orjson
import pytest

from consumers.loop import FeedbackConsumer
from stream.config import Settings
from stream.observability.metrics import PipelineMetrics
from tests.helpers import (
    BAD_MESSAGES,
    derived,
    partition_checkpoint,
    publish_stream,
    read_topic,
)

pytestmark = pytest.mark.integration


def test_counts_reconcile_and_dead_letters_carry_reasons(settings: Settings) -> None:
    sent = publish_stream(settings, 20_000)
    consumer = FeedbackConsumer(settings, settings.bootstrap_servers or "")
    consumer.stop_at(sent["end_offsets"])
    result = consumer.run()
    c = result.learner.counts

    assert c.consumed == sent["sent"] == result.messages
    assert c.consumed == c.applied + c.dead_lettered + c.filtered + c.duplicates
    assert c.dead_lettered == len(BAD_MESSAGES)
    assert c.dead_letters_by_kind == {
        "malformed_json": 1,
        "unknown_type": 1,
        "invalid_event": 1,
        "unknown_user": 1,
    }
    assert c.duplicates == 50
    assert c.filtered > 0  # the simulator's bots

    letters = read_topic(settings, settings.topics.dead_letters)
    assert sorted(m.value() for m in letters) == sorted(BAD_MESSAGES)
    for m in letters:
        headers = dict(m.headers())
        assert headers["error.reason"]
        assert headers["source.topic"].decode() == settings.topics.events
        assert int(headers["source.offset"]) >= 0
    reasons = {dict(m.headers())["error.reason"].decode() for m in letters}
    assert any("rating 11.0 is outside the scale" in r for r in reasons)
    assert any("unknown event type 'teleport'" in r for r in reasons)
    assert any("unknown user 'nobody'" in r for r in reasons)

    # Offsets are committed only with the checkpoint that covers them.
    ckpt = partition_checkpoint(settings).load()
    assert ckpt is not None
    assert ckpt.offsets == {(settings.topics.events, p): o for p, o in sent["end_offsets"].items()}
    assert ckpt.state.counts == c


def _scrape(port: int) -> dict[str, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    samples: dict[str, float] = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_metrics_endpoint_matches_the_counts(settings: Settings) -> None:
    sent = publish_stream(settings, 8_000, seed=3)
    metrics = PipelineMetrics()
    port = metrics.serve("127.0.0.1", 0)
    consumer = FeedbackConsumer(settings, settings.bootstrap_servers or "", metrics=metrics)
    consumer.stop_at(sent["end_offsets"])
    result = consumer.run()
    c = result.learner.counts
    m = _scrape(port)

    assert m["feedback_loop_events_applied_total"] == c.applied
    assert m["feedback_loop_events_duplicate_total"] == c.duplicates
    consumed = sum(v for k, v in m.items() if k.startswith("feedback_loop_events_consumed_total"))
    assert consumed == c.consumed
    dead = sum(v for k, v in m.items() if k.startswith("feedback_loop_events_dead_lettered_total"))
    assert dead == c.dead_lettered
    assert m['feedback_loop_events_filtered_total{reason="bot"}'] == c.filtered
    assert m["feedback_loop_batch_processing_seconds_count"] >= 1
    assert m['feedback_loop_consumer_lag_messages{partition="0"}'] == 0
    assert m["feedback_loop_checkpoints_total"] >= 1
    scores = result.learner.scores()
    assert m['feedback_loop_prequential_rmse{model="rating_mf"}'] == pytest.approx(scores["rmse"])
    assert m['feedback_loop_prequential_auc{model="engagement"}'] == pytest.approx(scores["auc"])
    assert 'feedback_loop_prequential_recall_at_10{model="implicit_mf"}' in m
    assert m["feedback_loop_model_version"] == 0
    assert m["feedback_loop_retrain_requests_total"] == 0
    life = result.learner.lifecycle
    assert life.monitor is not None
    rows = life.monitor.snapshot()
    assert rows  # every detector is exposed, not just none of them
    for row in rows:
        label = f'{{detector="{row["name"]}"}}'
        assert m["feedback_loop_drift_statistic" + label] == pytest.approx(row["statistic"])
        assert m["feedback_loop_drift_threshold" + label] == pytest.approx(row["threshold"])
        assert m["feedback_loop_drift_state" + label] == float(row["in_drift"])


def test_checkpointed_restart_neither_loses_nor_repeats(settings: Settings) -> None:
    """A consumer stopped half-way and restarted ends where an uninterrupted one does."""
    sent = publish_stream(settings, 12_000, seed=5)
    half = {p: o // 2 for p, o in sent["end_offsets"].items()}
    first = FeedbackConsumer(settings, settings.bootstrap_servers or "")
    first.stop_at(half)
    first.run()
    assert 0 < first.learner.counts.consumed < sent["sent"]

    second = FeedbackConsumer(settings, settings.bootstrap_servers or "")
    assert second.restore()
    second.stop_at(sent["end_offsets"])
    resumed = second.run()

    fresh_settings = derived(
        settings,
        group_id=settings.consumer.group_id + "-ref",
        state_dir=settings.consumer.state_dir.parent / "ref",
    )
    reference = FeedbackConsumer(fresh_settings, settings.bootstrap_servers or "")
    reference.stop_at(sent["end_offsets"])
    ref = reference.run()
    assert resumed.learner.counts.consumed == sent["sent"]
    assert resumed.learner.state_equal(ref.learner)
    assert orjson.dumps(resumed.learner.summary()) == orjson.dumps(ref.learner.summary())
