"""Several consumers over several partitions: partitions move with their state, exactly once.

Consumers join, leave and are SIGKILLed while the stream flows; each partition's learner is
checkpointed with its offset in the group's shared state dir and follows the partition to its
next owner. At the end every partition's learner must be bit-identical to one learner that
read that partition alone, start to end, once: nothing lost, nothing applied twice.
"""

from __future__ import annotations

import signal
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from producers.simulator import Simulator, SimulatorConfig
from stream.config import Settings, Topics
from stream.kafka.broker import ensure_topics
from stream.kafka.partitions import LEASE_FILE, PartitionStore
from stream.kafka.publisher import EventPublisher
from stream.learner import FeedbackLearner
from tests.helpers import BAD_MESSAGES, consume_command, derived, read_topic, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 4


@pytest.fixture
def group(settings: Settings, tmp_path: Path) -> Settings:
    tag = uuid.uuid4().hex[:10]
    topics = Topics.prefixed(tag).model_copy(update={"events_partitions": PARTITIONS})
    s = derived(
        settings,
        topics=topics.model_dump(),
        group_id=f"g-{tag}",
        state_dir=tmp_path / "state",
        share_items_every=0,  # each partition alone: its learner is then exactly comparable
    )
    ensure_topics(s.bootstrap_servers or "", s.topics, kafka=s.kafka)
    return s


class Waves:
    """One simulated stream published in waves, with bad messages and redeliveries."""

    def __init__(self, settings: Settings, n_events: int, waves: int) -> None:
        sim = Simulator(SimulatorConfig(n_users=400, n_items=150, seed=11, bot_share=0.05))
        self.pub = EventPublisher(
            settings.bootstrap_servers or "", settings.topics.events, kafka=settings.kafka
        )
        events = list(sim.events(n_events))
        size = n_events // waves
        self.waves = [events[i * size : (i + 1) * size] for i in range(waves)]
        self.profiles = list(sim.profiles())
        self.sent_waves = 0

    def send(self) -> dict[int, int]:
        """Publish the next wave (the profiles first); return the end offsets so far."""
        if self.sent_waves == 0:
            for profile in self.profiles:
                self.pub.publish(profile)
        wave = self.waves[self.sent_waves]
        for i, e in enumerate(wave):
            self.pub.publish(e)
            if i % 997 == 13:
                bad = BAD_MESSAGES[i % len(BAD_MESSAGES)]
                self.pub.publish(bad, key=f"u{i:05d}".encode())
        for e in wave[100:130]:
            self.pub.publish(e)  # redelivered
        self.sent_waves += 1
        stats = self.pub.flush()
        assert stats.failed == 0 and stats.delivered == stats.sent
        return dict(stats.end_offsets)


def epochs(settings: Settings) -> dict[int, int]:
    store = PartitionStore(settings.consumer.state_dir, settings.topics.events)
    out = {}
    for p in range(PARTITIONS):
        lease = store.directory(p) / LEASE_FILE
        text = lease.read_text().strip() if lease.exists() else ""
        out[p] = int(text) if text else 0
    return out


def saved_offsets(settings: Settings) -> dict[int, int]:
    store = PartitionStore(settings.consumer.state_dir, settings.topics.events)
    out = {}
    for p in store.partitions():
        ckpt = store.load(p)
        assert ckpt is not None
        out[p] = ckpt.offsets[(settings.topics.events, p)]
    return out


def start(settings: Settings, until_end: bool = False) -> subprocess.Popen[bytes]:
    cmd: dict[str, Any] = consume_command(settings, batch_size=300, checkpoint_every=1500)
    if not until_end:
        cmd["args"].remove("--until-end")
    return subprocess.Popen(
        cmd["args"], env=cmd["env"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def test_consumers_join_leave_and_die_mid_stream_and_every_event_is_applied_once(
    group: Settings,
) -> None:
    s = group
    waves = Waves(s, 24_000, waves=3)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        waves.send()
        a = start(s)
        procs.append(a)
        # A owns all four partitions and has checkpointed each of them.
        wait_until(lambda: len(saved_offsets(s)) == PARTITIONS, "A checkpoints", proc=a)
        b = start(s)  # joins: the partitions are split between A and B
        procs.append(b)
        wait_until(lambda: min(epochs(s).values()) >= 2, "the group rebalanced", proc=b)
        waves.send()
        wait_until(lambda: min(saved_offsets(s).values()) > 0, "checkpoints", proc=b)
        a.send_signal(signal.SIGKILL)  # mid-stream: its state since the last checkpoint dies
        a.wait()
        # Once A's session times out, B takes A's partitions from their checkpoints. (The
        # embedded broker's group can wedge when a member joins while a killed member's
        # session is still open, so C joins after that.)
        wait_until(lambda: min(epochs(s).values()) >= 3, "A's partitions moved", proc=b)
        c = start(s)
        procs.append(c)
        ends = waves.send()
        wait_until(lambda: min(epochs(s).values()) >= 4, "C joined", proc=c)
        b.send_signal(signal.SIGTERM)  # leaves cleanly: C takes everything
        assert b.wait(timeout=120) == 0, b.communicate()[1][-3000:]
        c.send_signal(signal.SIGTERM)
        assert c.wait(timeout=120) == 0, c.communicate()[1][-3000:]
        # A last consumer finishes what is left and stops at the end.
        last = start(s, until_end=True)
        procs.append(last)
        out, err = last.communicate(timeout=600)
        assert last.returncode == 0, err.decode()[-3000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    assert saved_offsets(s) == ends  # every partition read to its end
    store = PartitionStore(s.consumer.state_dir, s.topics.events)
    messages = read_topic(s, s.topics.events)
    total = 0
    for p in range(PARTITIONS):
        ckpt = store.load(p)
        assert ckpt is not None
        learner: FeedbackLearner = ckpt.state
        # The reference: this partition's messages, in order, once, by one learner.
        reference = FeedbackLearner(s)
        for m in (m for m in messages if m.partition() == p):
            reference.process(m.value())
        assert learner.counts.reconciles()
        assert learner.counts == reference.counts, p
        assert learner.state_equal(reference), p
        total += learner.counts.consumed
    assert total == len(messages) == sum(ends.values())
    assert sum(epochs(s).values()) > 2 * PARTITIONS  # partitions did move between owners
