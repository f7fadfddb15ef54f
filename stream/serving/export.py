"""What changed in a learner since the last publication, as model-state records.

:class:`ModelStateExporter` is the consumer's side of the model-state topic (the records
are in :mod:`stream.serving.records`). The hot path does no bookkeeping for it: at
publication time the exporter compares each factor table's used rows with its copy of the
rows it published last (rows beyond the old count are new), so a user or item is published
when its row changed in either model, or its profile changed. A changed seen set or
popularity needs no test of its own: the click or rating that changed it also moved the
user's and the item's vectors (every SGD step decays them by the L2 penalty, so only a model
with zero regularization and a saturated score could leave a row bit-identical).

A snapshot publishes every entity: on the first call, when asked (at every checkpoint), and
when the learner holds another model bundle (a swap: rows and ids start over). Entities the
previous publications named but the new bundle does not know are published with no vectors,
so a reader ends with exactly the learner's state; a user the learner no longer has at all
(forgotten) is published as a tombstone (:class:`~stream.serving.records.UserDeleted`). Rows
removed from a table (a forget, an eviction) also make the next publication a snapshot, since
the remaining rows moved. The ``meta`` record is always last.

>>> from stream.config import Settings
>>> from stream.learner import FeedbackLearner
>>> learner = FeedbackLearner(Settings())
>>> for raw in (
...     b'{"type":"user_profile","event_id":"p1","user_id":"u1","ts":1.7e9}',
...     b'{"type":"item_profile","event_id":"p2","item_id":"i1","ts":1.7e9,"genres":["Drama"]}',
...     b'{"type":"item_profile","event_id":"p3","item_id":"i2","ts":1.7e9,"genres":[]}',
...     b'{"type":"click","event_id":"c1","user_id":"u1","item_id":"i1","ts":1.7e9}',
... ):
...     learner.process(raw)
>>> exporter = ModelStateExporter()
>>> [type(r).__name__ for r in exporter.changes(learner)]  # the first call: a snapshot
['UserState', 'ItemState', 'ItemState', 'EngagementState', 'ModelMeta']
>>> exporter.changes(learner)  # nothing changed: only the meta  # doctest: +ELLIPSIS
[ModelMeta(version=0, sequence=2, snapshot=False, ...)]
>>> _ = learner.process(b'{"type":"rating","event_id":"r1","user_id":"u1","item_id":"i2",'
...                     b'"ts":1.7e9,"rating":5}')
>>> [(type(r).__name__, getattr(r, "user_id", getattr(r, "item_id", None)))
...  for r in exporter.changes(learner)]
[('UserState', 'u1'), ('ItemState', 'i2'), ('ModelMeta', None)]
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import replace

import numpy as np

from stream.learner import FeedbackLearner
from stream.models import ModelBundle
from stream.models.factors import FactorTable
from stream.serving.records import (
    EngagementState,
    ItemState,
    ModelMeta,
    StateRecord,
    UserDeleted,
    UserState,
)

__all__ = ["ModelStateExporter", "PartitionExporters", "TableMirror"]


class TableMirror:
    """The rows of a :class:`FactorTable` as last published, to find the ones that changed.

    >>> t = FactorTable(factors=2, init_scale=0.1, seed=1, stream=0)
    >>> mirror = TableMirror(t)
    >>> _ = t.add("a"), t.add("b")
    >>> mirror.changed_rows().tolist()  # new rows
    [0, 1]
    >>> mirror.changed_rows().tolist()
    []
    >>> t.biases[1] = 0.5
    >>> mirror.changed_rows().tolist()
    [1]
    """

    def __init__(self, table: FactorTable) -> None:
        self.table = table
        self.removed = table.removed  # rows removed from the table when mirrored
        self.n = 0
        self.vectors = np.zeros((0, table.factors))
        self.biases = np.zeros(0)

    def changed_rows(self) -> np.ndarray:
        """Rows changed or added since the last call (ascending); the copy catches up."""
        t, m = self.table, self.n
        n = t.n
        changed = np.flatnonzero(
            (t.vectors[:m] != self.vectors[:m]).any(axis=1) | (t.biases[:m] != self.biases[:m])
        )
        if changed.size:
            self.vectors[changed] = t.vectors[changed]
            self.biases[changed] = t.biases[changed]
        if n > m:
            if n > len(self.biases):  # grow by doubling, as the table does
                capacity = max(n, 2 * len(self.biases))
                vectors = np.zeros((capacity, t.factors))
                vectors[:m] = self.vectors[:m]
                biases = np.zeros(capacity)
                biases[:m] = self.biases[:m]
                self.vectors, self.biases = vectors, biases
            self.vectors[m:n] = t.vectors[m:n]
            self.biases[m:n] = t.biases[m:n]
            self.n = n
            changed = np.concatenate([changed, np.arange(m, n)])
        return changed


class ModelStateExporter:
    """Turns a learner's changes into model-state records (see the module docstring).

    Not thread-safe, and it must see the same learner between two swaps' snapshots; the
    consumer calls it between batches.
    """

    def __init__(self) -> None:
        self.sequence = 0
        self._bundle: ModelBundle | None = None
        self._mirrors: tuple[TableMirror, TableMirror, TableMirror, TableMirror] | None = None
        self._engagement_learned = -1
        # Ids published so far (so a snapshot can blank the ones a new bundle forgot).
        self._users: set[str] = set()
        self._items: set[str] = set()
        self.snapshot = False  # whether the last call was a snapshot

    def changes(
        self, learner: FeedbackLearner, snapshot: bool = False, *, users_only: bool = False
    ) -> list[StateRecord]:
        """Records of every user and item changed since the previous call (every one with
        ``snapshot``, on the first call and after a swap), the click model if it learned,
        and the :class:`ModelMeta` last. With ``users_only``, the users' records alone (items,
        click model and meta are another learner's to publish, see :class:`PartitionExporters`);
        ``self.snapshot`` tells whether the call was a snapshot."""
        models = learner.models
        mirrors = self._mirrors
        snapshot = (
            snapshot
            or models is not self._bundle
            or mirrors is None
            or any(m.removed != m.table.removed for m in mirrors)  # rows moved
        )
        changed_users, changed_items = learner.admission.profiles.drain_changed()
        if snapshot or mirrors is None:
            self._bundle = models
            mirrors = self._mirrors = (
                TableMirror(models.rating._users),
                TableMirror(models.rating._items),
                TableMirror(models.implicit._users),
                TableMirror(models.implicit._items),
            )
        self.snapshot = snapshot
        rating_users, rating_items, implicit_users, implicit_items = mirrors
        # Always run the comparisons: they bring the copies up to date. Items are skipped
        # when another learner publishes them (the copies go stale: becoming the one that
        # publishes them takes a snapshot, see PartitionExporters).
        users = _ids(rating_users, changed_users) | _ids(implicit_users, set())
        items = set()
        if not users_only:
            items = _ids(rating_items, changed_items) | _ids(implicit_items, set())
        records: list[StateRecord] = []
        if snapshot:
            current_users = set(learner.users).union(
                models.rating._users.ids, models.implicit._users.ids
            )
            current_items = set(learner.items).union(
                models.rating._items.ids, models.implicit._items.ids
            )
            # Known before, unknown now (a swapped-in bundle without them): no state left.
            records.extend(UserDeleted(u) for u in sorted(self._users - current_users))
            if not users_only:
                records.extend(ItemState(i) for i in sorted(self._items - current_items))
            self._users, self._items = current_users, current_items
            users, items = current_users, current_items
        else:
            self._users |= users
            self._items |= items
        records.extend(self._user_records(learner, sorted(users)))
        if users_only:
            return records
        records.extend(self._item_records(learner, sorted(items)))
        engagement = models.engagement
        if snapshot or engagement.n_learned != self._engagement_learned:
            self._engagement_learned = engagement.n_learned
            records.append(EngagementState(engagement.weights, engagement.intercept))
        self.sequence += 1
        records.append(
            ModelMeta(
                version=learner.lifecycle.version,
                sequence=self.sequence,
                snapshot=snapshot,
                published_at=time.time(),
                consumed=learner.counts.consumed,
                global_mean=models.rating.global_mean,
                rating_min=learner.limits.rating_min,
                rating_max=learner.limits.rating_max,
                last_event_ts=learner.last_event_ts,
            )
        )
        return records

    @staticmethod
    def _user_records(learner: FeedbackLearner, ids: Iterable[str]) -> Iterable[UserState]:
        rating, implicit = learner.models.rating._users, learner.models.implicit._users
        profiles, interactions = learner.users, learner.interactions
        for u in ids:
            r = rating.index.get(u)
            i = implicit.index.get(u)
            yield UserState(
                u,
                rating_bias=None if r is None else rating.biases.item(r),
                rating_vector=None if r is None else tuple(rating.vectors[r].tolist()),
                implicit_vector=None if i is None else tuple(implicit.vectors[i].tolist()),
                profile=profiles.get(u),
                seen=interactions.items_of(u),
            )

    @staticmethod
    def _item_records(learner: FeedbackLearner, ids: Iterable[str]) -> Iterable[ItemState]:
        rating, implicit = learner.models.rating._items, learner.models.implicit._items
        profiles, popularity = learner.items, learner.interactions.popularity
        for it in ids:
            r = rating.index.get(it)
            i = implicit.index.get(it)
            yield ItemState(
                it,
                rating_bias=None if r is None else rating.biases.item(r),
                rating_vector=None if r is None else tuple(rating.vectors[r].tolist()),
                implicit_bias=None if i is None else implicit.biases.item(i),
                implicit_vector=None if i is None else tuple(implicit.vectors[i].tolist()),
                profile=profiles.get(it),
                interactions=popularity.get(it, 0),
            )


def _ids(mirror: TableMirror, extra: set[str]) -> set[str]:
    """Ids of the mirror's changed rows, plus ``extra`` (which it extends)."""
    ids = mirror.table.ids
    extra.update(ids[r] for r in mirror.changed_rows().tolist())
    return extra


class PartitionExporters:
    """The model state of a consumer's learners, one per assigned partition, as one
    publication: every learner's users (users are partitioned, so each learner publishes its
    own), then the lowest partition's items and click model (shared by the learners through
    the item exchange: published once), then one :class:`ModelMeta`.

    Each partition has its own :class:`ModelStateExporter`, dropped when the partition leaves:
    the consumer that gets it publishes its users from then on, and no tombstone goes out
    from here for users another consumer now holds. The meta's ``sequence`` counts this
    process's publications, its ``consumed`` every learner's messages, and ``snapshot`` is
    True when every partition's records were a snapshot.

    >>> from stream.config import Settings
    >>> from stream.learner import FeedbackLearner
    >>> learners = {0: FeedbackLearner(Settings()), 1: FeedbackLearner(Settings())}
    >>> _ = learners[1].process(b'{"type":"user_profile","event_id":"p","user_id":"u9","ts":1.7e9}')
    >>> exporters = PartitionExporters()
    >>> [type(r).__name__ for r in exporters.changes(learners)]
    ['UserState', 'EngagementState', 'ModelMeta']
    """

    def __init__(self) -> None:
        self.sequence = 0
        self._exporters: dict[int, tuple[FeedbackLearner, ModelStateExporter]] = {}
        self._lead: int | None = None

    def changes(
        self, learners: Mapping[int, FeedbackLearner], snapshot: bool = False
    ) -> list[StateRecord]:
        """Records of what changed in ``learners`` (by partition; every entity with
        ``snapshot``), the meta last; nothing without learners."""
        if not learners:
            return []
        held = self._exporters
        for p in [p for p, (learner, _) in held.items() if learners.get(p) is not learner]:
            del held[p]  # revoked, or restored anew: a new exporter starts with a snapshot
        lead = min(learners)
        # A new lowest partition publishes items from now on: all of them, once.
        lead_snapshot = snapshot or lead != self._lead
        self._lead = lead
        records: list[StateRecord] = []
        snapshots = []
        for p in sorted(learners, key=lambda p: p == lead):  # the lead (and its meta) last
            learner = learners[p]
            _, exporter = held.setdefault(p, (learner, ModelStateExporter()))
            if p == lead:
                records.extend(exporter.changes(learner, lead_snapshot))
            else:
                records.extend(exporter.changes(learner, snapshot, users_only=True))
            snapshots.append(exporter.snapshot)
        meta = records.pop()
        assert isinstance(meta, ModelMeta)
        self.sequence += 1
        records.append(
            replace(
                meta,
                sequence=self.sequence,
                snapshot=all(snapshots),
                consumed=sum(lr.counts.consumed for lr in learners.values()),
            )
        )
        return records
