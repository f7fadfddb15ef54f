"""The consumer publishes its model state: what a reader rebuilds equals the learner's state.

Unit tests drive :class:`stream.serving.export.ModelStateExporter` on a learner directly; the
integration tests run :class:`consumers.loop.FeedbackConsumer` on the embedded broker and read
the model-state topic back with :class:`stream.kafka.model_state.ModelStateFollower`.
"""

from __future__ import annotations

import uuid
import zlib
from typing import Any

import orjson
import pytest

from consumers.loop import FeedbackConsumer
from producers.simulator import Simulator, SimulatorConfig
from stream.config import ServingConfig, Settings
from stream.events import ItemProfileEvent, UserProfileEvent, encode_event
from stream.kafka.broker import ensure_topics
from stream.kafka.model_state import ModelStateFollower
from stream.learner import FeedbackLearner
from stream.models import ModelBundle
from stream.serving.export import ModelStateExporter, PartitionExporters
from stream.serving.records import (
    EngagementState,
    ItemState,
    ModelMeta,
    StateRecord,
    UserDeleted,
    UserState,
    decode_record,
    encode_record,
)
from tests.helpers import derived, publish_stream, wait_until

Publication = list[StateRecord]


# -- what a reader rebuilds, and what it must equal ----------------------------------------
class Rebuilt:
    """A reader's view: the last record of each key."""

    def __init__(self) -> None:
        self.users: dict[str, UserState] = {}
        self.items: dict[str, ItemState] = {}
        self.engagement: EngagementState | None = None
        self.meta: ModelMeta | None = None

    def apply(self, records: list[StateRecord]) -> None:
        for r in records:
            if isinstance(r, UserState):
                self.users[r.user_id] = r
            elif isinstance(r, UserDeleted):  # a tombstone: compaction drops the user
                self.users.pop(r.user_id, None)
            elif isinstance(r, ItemState):
                self.items[r.item_id] = r
            elif isinstance(r, EngagementState):
                self.engagement = r
            else:
                self.meta = r


def _json(value: Any) -> Any:
    """As it reads after a trip through the topic (tuples become lists)."""
    return orjson.loads(orjson.dumps(value))


def _row(table: Any, id_: str) -> tuple[tuple[float, ...] | None, float | None]:
    r = table.index.get(id_)
    if r is None:
        return None, None
    return tuple(table.vectors[r].tolist()), table.biases.item(r)


def assert_mirrors(rebuilt: Rebuilt, learner: FeedbackLearner) -> None:
    """Every entity, bit for bit: vectors, biases, profiles, seen items, popularity, meta."""
    m = learner.models
    users = set(learner.users) | set(m.rating._users.ids) | set(m.implicit._users.ids)
    items = set(learner.items) | set(m.rating._items.ids) | set(m.implicit._items.ids)
    assert set(rebuilt.users) == users
    assert set(rebuilt.items) == items
    for u in users:
        got = rebuilt.users[u]
        vector, bias = _row(m.rating._users, u)
        assert (got.rating_vector, got.rating_bias) == (vector, bias), u
        assert got.implicit_vector == _row(m.implicit._users, u)[0], u
        assert _json(got.profile) == _json(learner.users.get(u)), u
        assert got.seen == tuple(sorted(learner.interactions.seen.get(u, ()))), u
    for i in items:
        got_i = rebuilt.items[i]
        vector, bias = _row(m.rating._items, i)
        assert (got_i.rating_vector, got_i.rating_bias) == (vector, bias), i
        assert (got_i.implicit_vector, got_i.implicit_bias) == _row(m.implicit._items, i), i
        assert _json(got_i.profile) == _json(learner.items.get(i)), i
        assert got_i.interactions == learner.interactions.popularity.get(i, 0), i
    assert rebuilt.engagement is not None
    assert rebuilt.engagement.weights == m.engagement.weights
    assert rebuilt.engagement.intercept == m.engagement.intercept
    meta = rebuilt.meta
    assert meta is not None
    assert meta.consumed == learner.counts.consumed
    assert meta.global_mean == m.rating.global_mean
    assert meta.version == learner.lifecycle.version
    assert meta.last_event_ts == learner.last_event_ts


def publications(records: list[StateRecord]) -> list[Publication]:
    """Split a stream of records at each meta (which closes a publication)."""
    out: list[Publication] = [[]]
    for r in records:
        out[-1].append(r)
        if isinstance(r, ModelMeta):
            out.append([])
    assert out[-1] == [], "records after the last meta"
    return out[:-1]


def _simulated(n: int, seed: int = 3) -> list[bytes]:
    sim = Simulator(SimulatorConfig(n_users=200, n_items=120, seed=seed, bot_share=0.0))
    return [encode_event(e) for e in [*sim.profiles(), *sim.events(n)]]


# -- the exporter alone -----------------------------------------------------------------------
def test_changes_rebuild_the_learner_exactly_and_are_smaller_than_a_snapshot() -> None:
    learner = FeedbackLearner(Settings())
    exporter = ModelStateExporter()
    rebuilt = Rebuilt()
    pubs: list[Publication] = []
    for n, raw in enumerate(_simulated(6000), 1):
        learner.process(raw)
        if n % 500 == 0:
            pubs.append(exporter.changes(learner))
            rebuilt.apply(pubs[-1])
            assert_mirrors(rebuilt, learner)
    pubs.append(exporter.changes(learner, snapshot=True))
    rebuilt.apply(pubs[-1])
    assert_mirrors(rebuilt, learner)

    metas = [p[-1] for p in pubs]
    assert all(isinstance(m, ModelMeta) for m in metas)
    assert all(not isinstance(r, ModelMeta) for p in pubs for r in p[:-1])
    assert [m.sequence for m in metas] == list(range(1, len(pubs) + 1))  # type: ignore[union-attr]
    assert [m.snapshot for m in metas] == [True] + [False] * (len(pubs) - 2) + [True]  # type: ignore[union-attr]
    snapshot = len(pubs[-1])
    assert snapshot == 200 + 120 + 2  # every user and item, the click model, the meta
    assert all(len(p) < snapshot for p in pubs[1:-1])
    # Only the entities the last 500 events touched.
    assert min(len(p) for p in pubs[1:-1]) < snapshot / 2


def test_nothing_changed_publishes_only_the_meta_and_a_profile_change_its_entity() -> None:
    learner = FeedbackLearner(Settings())
    for raw in _simulated(2000):
        learner.process(raw)
    exporter = ModelStateExporter()
    exporter.changes(learner)
    assert [type(r) for r in exporter.changes(learner)] == [ModelMeta]

    learner.process(
        encode_event(
            UserProfileEvent(
                event_id="p-new", user_id="u00001", ts=1.7e9, age=99, gender="X", occupation="poet"
            )
        )
    )
    learner.process(
        encode_event(
            ItemProfileEvent(
                event_id="p-new-item", item_id="brand-new", ts=1.7e9, genres=("Documentary",)
            )
        )
    )
    records = exporter.changes(learner)
    assert [type(r) for r in records] == [UserState, ItemState, ModelMeta]
    user, item = records[0], records[1]
    assert isinstance(user, UserState) and isinstance(item, ItemState)
    assert user.user_id == "u00001" and user.profile == learner.users["u00001"]
    assert user.implicit_vector is not None  # a known user keeps its vectors
    # A new item known only by its content: a cold start for serving.
    assert (item.item_id, item.implicit_vector, item.interactions) == ("brand-new", None, 0)


def test_a_swap_publishes_a_snapshot_of_the_new_models() -> None:
    learner = FeedbackLearner(Settings())
    raws = _simulated(3000)
    for raw in raws[:-500]:
        learner.process(raw)
    exporter = ModelStateExporter()
    rebuilt = Rebuilt()
    rebuilt.apply(exporter.changes(learner))

    fresh = ModelBundle.fresh(learner.model_config, rating_min=1.0, rating_max=5.0)
    learner.swap(fresh, version=7, catch_up=[])
    for raw in raws[-500:]:  # the new models learn only these
        learner.process(raw)
    records = exporter.changes(learner)
    rebuilt.apply(records)
    meta = records[-1]
    assert isinstance(meta, ModelMeta) and meta.snapshot and meta.version == 7
    assert_mirrors(rebuilt, learner)
    # Users the new models have not seen yet are served from their profile only.
    cold = [u for u in rebuilt.users.values() if u.implicit_vector is None]
    assert cold and all(u.profile is not None for u in cold)


def test_records_survive_the_bytes() -> None:
    learner = FeedbackLearner(Settings())
    for raw in _simulated(1000):
        learner.process(raw)
    records = ModelStateExporter().changes(learner)
    assert {type(r) for r in records} == {UserState, ItemState, EngagementState, ModelMeta}
    rebuilt = Rebuilt()
    rebuilt.apply([decode_record(*encode_record(r)) for r in records])
    assert_mirrors(rebuilt, learner)


def test_partition_exporters_publish_every_learners_users_and_no_tombstone_on_a_revoke() -> None:
    """Each partition's learner publishes its users, the lowest one the items and the meta;
    a revoked partition's users are left to whoever holds it now, and the next lowest
    partition publishes every item once it leads."""
    raws = _simulated(3000)
    learners = {0: FeedbackLearner(Settings()), 1: FeedbackLearner(Settings())}
    for raw in raws:
        # Users are partitioned, item profiles reach both (as the item exchange shares items).
        user = orjson.loads(raw).get("user_id")
        targets = learners.values() if user is None else [learners[zlib.crc32(user.encode()) % 2]]
        for learner in targets:
            learner.process(raw)
    exporters = PartitionExporters()
    rebuilt = Rebuilt()
    records = exporters.changes(learners)
    rebuilt.apply(records)
    user_records = [r for r in records if isinstance(r, UserState)]
    both = set(learners[0].users) | set(learners[1].users)
    assert {r.user_id for r in user_records} == both
    assert len(user_records) == len(both)  # each user from one learner only
    assert len([r for r in records if isinstance(r, ItemState)]) == len(learners[0].items)
    meta = records[-1]
    assert isinstance(meta, ModelMeta) and meta.snapshot and meta.sequence == 1
    assert meta.consumed == sum(lr.counts.consumed for lr in learners.values())

    del learners[0]  # revoked: another consumer publishes its users from now on
    records = exporters.changes(learners)
    assert not [r for r in records if isinstance(r, UserDeleted)]
    assert {r.item_id for r in records if isinstance(r, ItemState)} == set(learners[1].items)
    rebuilt.apply(records)
    assert set(rebuilt.users) == both
    meta = records[-1]
    assert isinstance(meta, ModelMeta) and meta.sequence == 2


# -- through the consumer and the broker --------------------------------------------------------
def read_state(settings: Settings) -> list[StateRecord]:
    """Every record of the model-state topic, read by a new follower to the end of the topic
    (the consumer flushed its records before returning, so they are all there)."""
    follower = ModelStateFollower(
        settings.bootstrap_servers or "", settings.topics.model_state, kafka=settings.kafka
    )
    out: list[StateRecord] = []

    def at_end() -> bool:
        out.extend(decode_record(k, v) for k, v in follower.poll(0.2))
        return follower.caught_up

    try:
        wait_until(at_end, "read the model-state topic to its end")
    finally:
        follower.close()
    return out


@pytest.mark.integration
def test_the_consumer_publishes_changes_and_snapshots_a_reader_can_rebuild(
    settings: Settings,
) -> None:
    s = derived(
        settings,
        topics={"model_state": f"{uuid.uuid4().hex[:10]}.model-state"},
        # One checkpoint, at the end: the publications in between are the cadence's.
        checkpoint_every_events=1_000_000,
        checkpoint_every_seconds=3600.0,
        batch_size=1000,
    ).model_copy(
        update={
            "serving": ServingConfig(
                publish_every_events=2500,
                publish_every_seconds=3600.0,
            )
        }
    )
    ensure_topics(s.bootstrap_servers or "", s.topics, kafka=s.kafka)
    sent = publish_stream(s, 12_000, seed=11)
    first = FeedbackConsumer(s, s.bootstrap_servers or "")
    first.stop_at(sent["end_offsets"])
    first.run()

    records = read_state(s)
    pubs = publications(records)
    flags = [p[-1].snapshot for p in pubs]  # type: ignore[union-attr]
    # The first publication (a new exporter) and the one after the final checkpoint
    # hold everything; the cadence's in between only what changed.
    assert flags[0] and flags[-1] and len(pubs) >= 4
    assert not any(flags[1:-1])
    snapshot = len(pubs[-1])
    assert all(len(p) < snapshot for p in pubs[1:-1])
    rebuilt = Rebuilt()
    rebuilt.apply(records)
    assert_mirrors(rebuilt, first.learner)

    # More events (with changed profiles: another seed draws other demographics) for a
    # consumer restored from the checkpoint.
    more = publish_stream(s, 6_000, seed=12)
    second = FeedbackConsumer(s, s.bootstrap_servers or "")
    assert second.restore()
    second.stop_at(more["end_offsets"])
    second.run()
    new = publications(read_state(s)[len(records) :])
    metas = [p[-1] for p in new]
    assert [m.sequence for m in metas] == list(range(1, len(new) + 1))  # type: ignore[union-attr]
    assert metas[0].snapshot and metas[-1].snapshot  # type: ignore[union-attr]
    assert all(len(p) < len(new[-1]) for p in new[1:-1])
    for p in new:
        rebuilt.apply(p)
    assert_mirrors(rebuilt, second.learner)
    assert rebuilt.meta is not None
    assert rebuilt.meta.consumed == second.learner.counts.consumed == more["sent"] + sent["sent"]


@pytest.mark.integration
def test_publishing_can_be_turned_off(settings: Settings) -> None:
    s = derived(settings, topics={"model_state": f"{uuid.uuid4().hex[:10]}.model-state"})
    s = s.model_copy(update={"serving": ServingConfig(publish_state=False)})
    ensure_topics(s.bootstrap_servers or "", s.topics, kafka=s.kafka)
    sent = publish_stream(s, 2000, seed=2)
    consumer = FeedbackConsumer(s, s.bootstrap_servers or "")
    consumer.stop_at(sent["end_offsets"])
    consumer.run()
    assert consumer.state_stream is None
    assert read_state(s) == []
