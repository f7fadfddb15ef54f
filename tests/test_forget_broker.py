"""`feedback-loop forget USER_ID` end to end: a consumer on the embedded broker erases the user.

The consumer learns the first half of a simulator stream; the CLI publishes the deletion; the
consumer applies it between batches and checkpoints; the second half (with more events of the
user) follows. No trace of the id is left in the learner, the checkpoint, the state dir or the
user's last model-state record, and none of the user's later events is learned. A consumer
restarted from a checkpoint older than the forget reads the request again.
"""

from __future__ import annotations

import pickle
import shutil
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from cli.app import app
from consumers.loop import FeedbackConsumer
from producers.simulator import Simulator, SimulatorConfig
from stream.config import Settings, settings_env
from stream.events import Event
from stream.kafka.publisher import EventPublisher
from stream.serving.state import ServingState
from tests.helpers import derived, read_topic, wait_until

pytestmark = pytest.mark.integration


def publish(settings: Settings, events: Sequence[Event]) -> dict[int, int]:
    pub = EventPublisher(
        settings.bootstrap_servers or "", settings.topics.events, kafka=settings.kafka
    )
    for e in events:
        pub.publish(e)
    stats = pub.flush()
    assert stats.failed == 0
    return dict(stats.end_offsets)


def no_trace(path: Path, user_id: str) -> None:
    for f in path.rglob("*"):
        if f.is_file():
            assert user_id.encode() not in f.read_bytes(), f


def archived_users(state_dir: Path) -> set[str]:
    """The user ids in the consumer's archive of admitted events (its default place)."""
    return set(pd.read_parquet(state_dir / "archive")["user_id"].dropna())


def test_forget_cli_erases_the_user_everywhere(settings: Settings, tmp_path: Path) -> None:
    settings = derived(settings, batch_size=300)
    sim = Simulator(SimulatorConfig(n_users=300, n_items=200, seed=11, bot_share=0.0))
    first = [*sim.profiles(), *sim.events(6000)]
    second = list(sim.events(6000))
    per_user = Counter(getattr(e, "user_id", None) for e in first + second)
    per_user.pop(None, None)
    user = str(per_user.most_common(1)[0][0])
    later = sum(1 for e in second if getattr(e, "user_id", None) == user)
    assert later > 10

    publish(settings, first)
    FeedbackConsumer(settings, settings.bootstrap_servers or "").run(stop_at_end=True)
    assert user in archived_users(settings.consumer.state_dir)
    before_forget = tmp_path / "old-state"
    shutil.copytree(settings.consumer.state_dir, before_forget)

    consumer = FeedbackConsumer(settings, settings.bootstrap_servers or "")
    runner = threading.Thread(target=consumer.run)
    runner.start()
    try:
        wait_until(lambda: consumer.restored and consumer._assigned != set(), "consumer assigned")
        assert pickle.dumps(consumer.learner).count(user.encode()) > 0
        result = CliRunner().invoke(app, ["forget", user], env=settings_env(settings))
        assert result.exit_code == 0, result.output
        wait_until(lambda: consumer.learner.users_forgotten == 1, "forget applied")
        consumer.stop_at(publish(settings, second))
    finally:
        runner.join(120)
    assert not runner.is_alive()

    learner = consumer.learner
    c = learner.counts
    assert c.filtered_by_reason.get("forgotten_user") == later  # not one later event learned
    assert c.reconciles()
    assert user.encode() not in pickle.dumps(learner)
    no_trace(settings.consumer.state_dir, user)
    no_trace(settings.retrain.registry_dir, user)
    archive = pd.read_parquet(settings.consumer.state_dir / "archive")
    assert len(archive) > 0 and user not in set(archive["user_id"].dropna())
    assert not any(user.encode() in raw for raw in archive["raw"])

    records = read_topic(settings, settings.topics.model_state)
    key = b"u:" + user.encode()
    mine = [m for m in records if m.key() == key]
    assert mine and mine[-1].value() is None  # a tombstone: compaction drops the user
    tombstone = max(i for i, m in enumerate(records) if m.key() == key)
    assert all(user.encode() not in (m.value() or b"") for m in records[tombstone:])
    serving = ServingState()
    for m in records:
        serving.apply_raw(m.key(), m.value())
    assert serving.user(user) is None

    # Restarted from the checkpoint before the forget: the request is read again.
    restarted_dir = tmp_path / "restarted"
    shutil.copytree(before_forget, restarted_dir)
    restarted = derived(settings, state_dir=restarted_dir, group_id="g-restarted")
    restarted = restarted.model_copy(
        update={"serving": restarted.serving.model_copy(update={"publish_state": False})}
    )
    again = FeedbackConsumer(restarted, settings.bootstrap_servers or "")
    again.run(stop_at_end=True)
    assert again.learner.users_forgotten == 1
    assert user.encode() not in pickle.dumps(again.learner)
    no_trace(restarted_dir, user)
    assert user not in archived_users(restarted_dir)
    assert again.learner.counts.reconciles()
