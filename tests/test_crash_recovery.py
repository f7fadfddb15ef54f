"""Crash the consumer at every point that matters, restart it, compare with an uninterrupted run.

In-process crashes are injected deterministically with ``CrashAt`` (after N messages, or at
each step of a checkpoint commit); a crash behaves like process death: nothing is saved on
the way out. One test SIGKILLs a real consumer process; one checks SIGTERM's graceful stop.
"""

from __future__ import annotations

import signal
import subprocess
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

from consumers.loop import FeedbackConsumer
from stream.config import Settings
from stream.kafka.broker import ensure_topics
from stream.kafka.checkpoint import (
    CheckpointError,
    CommitStep,
    Crash,
    CrashAt,
    SavedCheckpoint,
)
from stream.learner import FeedbackLearner
from tests.helpers import (
    BAD_MESSAGES,
    consume_command,
    derived,
    isolated_settings,
    partition_checkpoint,
    publish_stream,
    read_topic,
    wait_until,
)

pytestmark = pytest.mark.integration


@dataclass
class Stream:
    settings: Settings
    sent: int
    end_offsets: dict[int, int]
    reference: FeedbackLearner  # the learner of an uninterrupted run over the whole stream


@pytest.fixture(scope="module")
def stream(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Stream:
    """One published stream and its uninterrupted reference run, shared by the crash tests."""
    # Small batches and frequent checkpoints: several commits per run to crash in.
    settings = isolated_settings(
        bootstrap,
        tmp_path_factory.mktemp("reference"),
        batch_size=1000,
        checkpoint_every_events=3000,
    )
    ensure_topics(bootstrap, settings.topics, kafka=settings.kafka)
    sent = publish_stream(settings, 15_000, seed=11)
    ref = FeedbackConsumer(settings, bootstrap)
    ref.stop_at(sent["end_offsets"])
    return Stream(settings, sent["sent"], sent["end_offsets"], ref.run().learner)


def own_run(stream: Stream, tmp_path: Path) -> Settings:
    """The stream's settings with a state dir, a group and a dead-letter topic of this test."""
    tag = tmp_path.name
    s = derived(
        stream.settings,
        topics={"dead_letters": f"{stream.settings.topics.dead_letters}.{tag}"},
        state_dir=tmp_path / "state",
        group_id=f"{stream.settings.consumer.group_id}-{tag}",
    )
    ensure_topics(s.bootstrap_servers or "", s.topics, kafka=s.kafka)
    return s


def crash_then_restart(
    stream: Stream, settings: Settings, crash: CrashAt
) -> SavedCheckpoint | None:
    """Run until ``crash``, check what it left on disk, restart, check the final state.

    Return the checkpoint the crash left behind.
    """
    store = partition_checkpoint(settings)
    first = FeedbackConsumer(settings, settings.bootstrap_servers or "", faults=crash)
    first.stop_at(stream.end_offsets)
    with pytest.raises(Crash):
        first.run()
    assert crash.crashed
    with pytest.raises(RuntimeError, match="failed"):  # its learner is ahead of the disk
        first.run()

    left = store.load()
    if left is not None:  # a checkpoint is never ahead (or behind) the offsets it holds
        assert left.state.counts.consumed == sum(left.offsets.values()) < stream.sent

    second = FeedbackConsumer(settings, settings.bootstrap_servers or "")
    assert second.restore() is (left is not None)
    second.stop_at(stream.end_offsets)
    learner = second.run().learner

    assert learner.counts.consumed == stream.sent
    assert learner.counts.reconciles()
    assert learner.state_equal(stream.reference)
    final = store.load()
    assert final is not None
    topic = settings.topics.events
    assert final.offsets == {(topic, p): o for p, o in stream.end_offsets.items()}
    # Dead letters are at-least-once: every rejected message, each from one source offset.
    letters = read_topic(settings, settings.topics.dead_letters)
    sources: dict[bytes | None, set[str | bytes | None]] = defaultdict(set)
    for m in letters:
        sources[m.value()].add(dict(m.headers() or [])["source.offset"])
    assert set(sources) == set(BAD_MESSAGES)
    assert all(len(offsets) == 1 for offsets in sources.values()), sources
    return left


@pytest.mark.parametrize("fraction", [0.0, 0.45, 1.0], ids=["first", "middle", "last"])
def test_crash_after_n_messages(stream: Stream, tmp_path: Path, fraction: float) -> None:
    # After the first message, mid-stream between two checkpoints, before the last message.
    n = min(max(int(stream.sent * fraction), 1), stream.sent - 1)
    left = crash_then_restart(stream, own_run(stream, tmp_path), CrashAt(messages=n))
    if fraction == 0.0:
        assert left is None
    else:
        assert left is not None and left.state.counts.consumed < n


@pytest.mark.parametrize("step", list(CommitStep), ids=[s.value for s in CommitStep])
def test_crash_at_each_commit_step(stream: Stream, tmp_path: Path, step: CommitStep) -> None:
    # The second commit: a first checkpoint exists, so the restart restores one.
    left = crash_then_restart(stream, own_run(stream, tmp_path), CrashAt(step=step, commit=2))
    assert left is not None


def test_crash_before_the_first_save_leaves_no_checkpoint(stream: Stream, tmp_path: Path) -> None:
    left = crash_then_restart(
        stream, own_run(stream, tmp_path), CrashAt(step=CommitStep.AFTER_FLUSH, commit=1)
    )
    assert left is None  # the restart started from the beginning of the topic


def consume_cli(settings: Settings) -> subprocess.Popen[bytes]:
    # Small batches and frequent checkpoints, so the kill lands between two of them.
    return subprocess.Popen(
        **consume_command(settings, batch_size=300, checkpoint_every=2000),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


@pytest.mark.slow
def test_sigkill_mid_stream_then_restart_gives_identical_models(
    settings: Settings, tmp_path: Path
) -> None:
    sent = publish_stream(settings, 60_000, seed=11)
    killed = derived(settings, state_dir=tmp_path / "killed")
    store = partition_checkpoint(killed)

    proc = consume_cli(killed)
    # Ready to kill: a first checkpoint is on disk (written atomically, so whole).
    wait_until(store.path.exists, "a checkpoint written", proc=proc)
    proc.kill()
    proc.wait()
    killed_at = store.load()
    assert killed_at is not None
    assert 0 < killed_at.state.counts.consumed < sent["sent"], "kill did not land mid-stream"

    proc = consume_cli(killed)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out.decode()
    after_restart = store.load()
    assert after_restart is not None

    ref = FeedbackConsumer(
        derived(
            settings, group_id=settings.consumer.group_id + "-ref", state_dir=tmp_path / "reference"
        ),
        settings.bootstrap_servers or "",
    )
    ref.stop_at(sent["end_offsets"])
    reference = ref.run().learner

    restarted = after_restart.state
    assert restarted.counts.consumed == sent["sent"]
    assert restarted.counts.reconciles()
    assert restarted.state_equal(reference)
    assert after_restart.offsets == {
        (settings.topics.events, p): o for p, o in sent["end_offsets"].items()
    }


def test_sigterm_finishes_the_batch_checkpoints_and_exits(
    settings: Settings, tmp_path: Path
) -> None:
    sent = publish_stream(settings, 60_000, seed=13)
    graceful = derived(settings, state_dir=tmp_path / "graceful")
    store = partition_checkpoint(graceful)
    proc = consume_cli(graceful)
    wait_until(store.path.exists, "a checkpoint written", proc=proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out.decode()
    assert b"SIGTERM" in out
    final = store.load()
    assert final is not None
    c = final.state.counts
    assert 0 < c.consumed < sent["sent"] and c.reconciles()
    # The saved offsets are exactly where the applied events end: nothing in flight was lost.
    assert sum(final.offsets.values()) == c.consumed


def test_the_constructor_does_no_io(tmp_path: Path) -> None:
    """Nothing is read before run() or restore(): not even an unreadable checkpoint."""
    state = tmp_path / "state"
    state.mkdir()
    settings = isolated_settings("127.0.0.1:1", state)  # no broker there either
    path = partition_checkpoint(settings).path
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a pickle")
    consumer = FeedbackConsumer(settings, "127.0.0.1:1", faults=CrashAt(messages=1))
    assert not consumer.restored and consumer.learner.counts.consumed == 0
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        consumer.restore()


def test_an_error_of_the_learner_mid_batch_writes_nothing_ahead(
    stream: Stream, tmp_path: Path
) -> None:
    """A plain exception (not a crash) on message 1,911, in the middle of a batch, three runs
    in a row: no run checkpoints the state of the events it applied before the error (counts
    stay at what the offsets cover instead of growing 1,911 -> 3,822 -> 5,733), and the run
    after the fix ends in the state of an uninterrupted run."""
    settings = own_run(stream, tmp_path)
    store = partition_checkpoint(settings)
    for _attempt in range(3):
        consumer = FeedbackConsumer(settings, settings.bootstrap_servers or "")
        consumer.restore()
        batch, seen = consumer.learner.process_batch, [0]

        def poisoned(values, admitted=None, batch=batch, seen=seen):  # type: ignore[no-untyped-def]
            out = []
            for k, raw in enumerate(values):
                seen[0] += 1
                if seen[0] == 1911:  # batch_size is 1000: mid-batch
                    raise ValueError("bad model input")
                one: list[int] = []
                out += batch([raw], one)
                if admitted is not None and one:
                    admitted.append(k)
            return out

        consumer.learner.process_batch = poisoned  # type: ignore[method-assign]
        consumer.stop_at(stream.end_offsets)
        with pytest.raises(ValueError, match="bad model input"):
            consumer.run()
        left = store.load()
        if left is not None:
            assert left.state.counts.consumed == sum(left.offsets.values()) < 1911
    final = FeedbackConsumer(settings, settings.bootstrap_servers or "")
    final.stop_at(stream.end_offsets)
    learner = final.run().learner
    assert learner.counts.consumed == stream.sent and learner.counts.reconciles()
    assert learner.state_equal(stream.reference)
