"""The archive of admitted events: exactly once across crashes, readable by pandas, and the
history (archive + topic tail) the same as the whole topic's, also after the broker lost it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from consumers.loop import FeedbackConsumer
from producers.replay import open_source
from stream.config import ArchiveConfig, Settings
from stream.events import Admission
from stream.kafka.archive import EventArchive, archive_directory
from stream.kafka.broker import EmbeddedBroker, ensure_topics
from stream.kafka.checkpoint import CommitStep, Crash, CrashAt
from stream.kafka.history import read_history
from stream.kafka.publisher import EventPublisher
from tests.helpers import derived, isolated_settings, publish_stream, read_topic

pytestmark = pytest.mark.integration

N_EVENTS = 6000


def admitted_offsets(settings: Settings) -> list[int]:
    """The offsets of the messages the live gate admits, from the whole topic."""
    gate = Admission.from_settings(settings)
    out = []
    for msg in read_topic(settings, settings.topics.events):
        applied = gate.counts.applied
        gate.admit_raw(msg.value())
        if gate.counts.applied != applied:
            out.append(msg.offset())
    return out


def archived_offsets(settings: Settings) -> list[int]:
    frame = pd.read_parquet(archive_directory(settings))
    assert set(frame.columns) >= {"partition", "offset", "timestamp", "type", "user_id", "raw"}
    return sorted(frame["offset"].tolist())


@pytest.fixture(scope="module")
def published(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    s = isolated_settings(
        bootstrap, tmp_path_factory.mktemp("unused"), checkpoint_every_events=1500, batch_size=500
    )
    ensure_topics(bootstrap, s.topics, kafka=s.kafka)
    publish_stream(s, N_EVENTS)
    return s


def own_state(published: Settings, tmp_path: Path) -> Settings:
    s = derived(published, state_dir=tmp_path / "state", group_id=f"g-{tmp_path.name}")
    return s.model_copy(update={"serving": s.serving.model_copy(update={"publish_state": False})})


def end_offsets(settings: Settings) -> dict[int, int]:
    msgs = read_topic(settings, settings.topics.events)
    ends: dict[int, int] = {}
    for m in msgs:
        ends[m.partition() or 0] = max(ends.get(m.partition() or 0, 0), (m.offset() or 0) + 1)
    return ends


@pytest.mark.parametrize("step", list(CommitStep), ids=[s.value for s in CommitStep])
def test_every_admitted_event_is_archived_once_across_a_crash(
    published: Settings, tmp_path: Path, step: CommitStep
) -> None:
    settings, ends = own_state(published, tmp_path), end_offsets(published)
    first = FeedbackConsumer(
        settings, settings.bootstrap_servers or "", faults=CrashAt(step=step, commit=2)
    )
    first.stop_at(ends)
    with pytest.raises(Crash):
        first.run()
    # Other batches and checkpoint boundaries after the restart (as timing may give them):
    # the ranges written before the crash are not the ones written again.
    other = derived(settings, checkpoint_every_events=1000, batch_size=300)
    second = FeedbackConsumer(other, settings.bootstrap_servers or "")
    second.stop_at(ends)
    second.run()
    assert archived_offsets(settings) == admitted_offsets(settings)
    # Files tile the offsets: each range starts where the previous one ended.
    files = EventArchive(archive_directory(settings)).files()
    assert all(a.last + 1 == b.first for a, b in zip(files, files[1:], strict=False))
    assert files[-1].last + 1 == ends[0]


def test_history_from_archive_and_tail_equals_the_whole_topic(
    published: Settings, tmp_path: Path
) -> None:
    settings, ends = own_state(published, tmp_path), end_offsets(published)
    half = {0: ends[0] // 2}
    consumer = FeedbackConsumer(settings, settings.bootstrap_servers or "")
    consumer.stop_at(half)
    consumer.run()
    done = {p: o for (_t, p), o in consumer.offsets.items()}
    archive = EventArchive(archive_directory(settings))
    assert archive.ends() == done and done[0] < ends[0]  # the rest is the topic's tail

    bootstrap = settings.bootstrap_servers or ""
    no_archive = settings.model_copy(update={"archive": ArchiveConfig(enabled=False)})
    for end in (ends, done, {0: ends[0] // 3}):  # tail, archive's end, inside the archive
        whole = read_history(bootstrap, no_archive, end)
        mixed = read_history(bootstrap, settings, end)
        assert mixed.events == whole.events
        assert mixed.indexes == whole.indexes
        assert (mixed.users, mixed.items) == (whole.users, whole.items)
        assert mixed.counts.consumed == whole.counts.consumed
        assert mixed.counts.applied == whole.counts.applied
        assert mixed.counts.reconciles()
    assert read_history(bootstrap, settings, done).counts == consumer.learner.counts


def test_history_outlives_the_broker(tmp_path: Path) -> None:
    """The broker's memory log is gone after a restart: the archive still has it all."""
    with EmbeddedBroker(log_file=tmp_path / "tansu-1.log") as broker:
        settings = isolated_settings(
            broker.bootstrap_servers, tmp_path / "state", checkpoint_every_events=1500
        )
        settings = settings.model_copy(
            update={"serving": settings.serving.model_copy(update={"publish_state": False})}
        )
        ensure_topics(broker.bootstrap_servers, settings.topics, kafka=settings.kafka)
        publish_stream(settings, 3000)
        ends = end_offsets(settings)
        consumer = FeedbackConsumer(settings, broker.bootstrap_servers)
        consumer.stop_at(ends)
        consumer.run()
        before = read_history(broker.bootstrap_servers, settings, ends)
    with EmbeddedBroker(log_file=tmp_path / "tansu-2.log") as broker:
        moved = settings.model_copy(update={"bootstrap_servers": broker.bootstrap_servers})
        ensure_topics(broker.bootstrap_servers, moved.topics, kafka=moved.kafka)
        assert read_topic(moved, moved.topics.events) == []  # the broker lost it all
        after = read_history(broker.bootstrap_servers, moved, ends)
    assert len(after.events) == len(before.events) > 0
    assert after.events == before.events and after.indexes == before.indexes
    assert after.counts == before.counts == consumer.learner.counts


def test_purge_user_rewrites_the_files_without_them(published: Settings, tmp_path: Path) -> None:
    settings, ends = own_state(published, tmp_path), end_offsets(published)
    consumer = FeedbackConsumer(settings, settings.bootstrap_servers or "")
    consumer.stop_at(ends)
    consumer.run()
    archive = EventArchive(archive_directory(settings))
    names = [f.name for f in archive.files()]
    frame = pd.read_parquet(archive.directory)
    user = frame["user_id"].value_counts().index[0]
    theirs = int((frame["user_id"] == user).sum())
    assert archive.purge_user(user) == theirs > 0
    after = pd.read_parquet(archive.directory)
    assert user not in set(after["user_id"]) and len(after) == len(frame) - theirs
    assert [f.name for f in archive.files()] == names
    assert archive.purge_user(user) == 0


def test_replay_of_the_archive_gives_the_same_history(published: Settings, tmp_path: Path) -> None:
    settings, ends = own_state(published, tmp_path), end_offsets(published)
    consumer = FeedbackConsumer(settings, settings.bootstrap_servers or "")
    consumer.stop_at(ends)
    consumer.run()
    source = open_source(archive_directory(settings))  # a directory: the archive format
    assert source.format == "archive"
    bootstrap = settings.bootstrap_servers or ""
    fresh = isolated_settings(bootstrap, tmp_path / "replayed")
    fresh = fresh.model_copy(update={"archive": ArchiveConfig(enabled=False)})
    ensure_topics(bootstrap, fresh.topics, kafka=fresh.kafka)
    pub = EventPublisher(bootstrap, fresh.topics.events, kafka=fresh.kafka)
    for record in source.records():
        pub.publish(record)
    stats = pub.flush()
    original = read_history(bootstrap, settings, ends)
    replayed = read_history(bootstrap, fresh, stats.end_offsets)
    assert replayed.events == original.events and len(replayed.events) > 0
    assert (replayed.users, replayed.items) == (original.users, original.items)
    assert replayed.counts.consumed == original.counts.applied  # only admitted ones archived


def test_archive_started_on_a_checkpointed_consumer_reads_the_start_from_the_topic(
    published: Settings, tmp_path: Path
) -> None:
    settings, ends = own_state(published, tmp_path), end_offsets(published)
    no_archive = settings.model_copy(update={"archive": ArchiveConfig(enabled=False)})
    before = FeedbackConsumer(no_archive, settings.bootstrap_servers or "")
    before.stop_at({0: ends[0] // 2})
    before.run()
    after = FeedbackConsumer(settings, settings.bootstrap_servers or "")
    after.stop_at(ends)
    after.run()
    assert EventArchive(archive_directory(settings)).firsts()[0] >= ends[0] // 2
    bootstrap = settings.bootstrap_servers or ""
    whole = read_history(bootstrap, no_archive, ends)
    mixed = read_history(bootstrap, settings, ends)
    assert mixed.events == whole.events and mixed.indexes == whole.indexes
    assert mixed.counts == whole.counts == after.learner.counts
