"""One item model shared by the learners of several partitions, merged as deltas.

Events are keyed by user, so each partition's learner (a task) holds its own users, but all
tasks learn the same items. :class:`ItemSync` lets them share the item side: :meth:`ItemSync.take`
returns an :class:`ItemDelta`, what changed in this learner's shared state since its last
exchange (measured against a base snapshot by a vectorized diff, so learning pays nothing per
event), and :meth:`ItemSync.apply` adds another task's delta into both the state and the base
(so it is not sent back out). Shared state: the item rows of both factor models (vectors,
biases, update counts, new items), the rating model's global mean (as a sum and a count) and
the update counts, the click model's weights, intercept and count, item popularity and item
profiles (an item's profile arrives on the partition its key hashes to; every task needs it).

Every task applying every other task's deltas ends with the same item state, up to the
order of float additions, because every item starts from the same row everywhere: item
tables draw start vectors from the id (:meth:`~stream.models.factors.FactorTable.keyed_draw`),
and a row started from a cold-start prior, which depends on the task's own table, goes out
with its start; when two tasks started the same item, the start of the lower source id wins
in every task (the loser shifts its row, base included). A delta is ignored unless its
sequence number is above the last one applied from its source, so a redelivery changes
nothing. A row whose start has not arrived yet (deltas of different sources delivered out of
order) starts from its keyed draw until the creator's start replaces it.

>>> from stream.config import Settings
>>> from stream.learner import FeedbackLearner
>>> a, b = FeedbackLearner(Settings()), FeedbackLearner(Settings())
>>> sa, sb = a.share_items(source=0), b.share_items(source=1)
>>> for raw in (
...     b'{"type": "user_profile", "event_id": "p1", "user_id": "u1", "ts": 1.7e9}',
...     b'{"type": "item_profile", "event_id": "p2", "item_id": "i1", "ts": 1.7e9}',
...     b'{"type":"rating","event_id":"r1","user_id":"u1","item_id":"i1","ts":1.7e9,"rating":4}',
... ):
...     a.process(raw)
>>> delta = ItemDelta.from_bytes(sa.take().to_bytes())
>>> sb.apply(delta), sb.apply(delta)  # the second time: already applied
(True, False)
>>> b.models.rating.global_mean, "i1" in b.items, b.models.rating.has_item("i1")
(4.0, True, True)
>>> sa.take() is None, sb.take() is None  # nothing new on either side
(True, True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from stream.models.cold_start import item_keys
from stream.models.factors import FactorModel

if TYPE_CHECKING:  # the learner imports this module
    from stream.learner.learner import FeedbackLearner

__all__ = ["ItemDelta", "ItemSync", "TableDelta"]

# Owner of a start the task did not get from a delta: rows the task held when sharing began
# (shared already, say a bundle every task loaded: they always win) and rows whose
# creator's start has not arrived yet (they always lose).
PRESHARED = -1
UNKNOWN = 2**62


def _floats(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a, dtype="<f8").tobytes()


def _ints(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a, dtype="<i8").tobytes()


@dataclass
class TableDelta:
    """Changes of one item table: per changed row its id and the differences of its vector,
    bias and update count; per row the source started since its last take, the start
    (bias, vector) it gave the row."""

    ids: list[str]
    vectors: np.ndarray  # (len(ids), factors) float64
    biases: np.ndarray  # (len(ids),) float64
    counts: np.ndarray  # (len(ids),) int64
    new_ids: list[str]
    new_vectors: np.ndarray  # (len(new_ids), factors) float64
    new_biases: np.ndarray  # (len(new_ids),) float64

    def empty(self) -> bool:
        return not self.ids and not self.new_ids

    def _encode(self) -> dict[str, Any]:
        return {
            "ids": self.ids,
            "v": _floats(self.vectors),
            "b": _floats(self.biases),
            "c": _ints(self.counts),
            "new": self.new_ids,
            "nv": _floats(self.new_vectors),
            "nb": _floats(self.new_biases),
        }

    @classmethod
    def _decode(cls, d: dict[str, Any], factors: int) -> TableDelta:
        def floats(raw: bytes, rows: int) -> np.ndarray:
            return np.frombuffer(raw, dtype="<f8").reshape(rows, factors).astype(np.float64)

        ids, new_ids = list(d["ids"]), list(d["new"])
        return cls(
            ids=ids,
            vectors=floats(d["v"], len(ids)),
            biases=np.frombuffer(d["b"], dtype="<f8").astype(np.float64),
            counts=np.frombuffer(d["c"], dtype="<i8").astype(np.int64),
            new_ids=new_ids,
            new_vectors=floats(d["nv"], len(new_ids)),
            new_biases=np.frombuffer(d["nb"], dtype="<f8").astype(np.float64),
        )


@dataclass
class ItemDelta:
    """What changed in one task's shared item state between two takes.

    ``rating_sum`` and ``rating_n`` are the differences of the rating model's sum and count
    of ratings (its global mean is sum / count); the other numbers are differences too.
    ``profiles`` are the item profiles new or changed since the last take, whole.
    """

    source: int
    seq: int
    factors: tuple[int, int]  # (rating, implicit) vector lengths, to decode the buffers
    rating: TableDelta
    implicit: TableDelta
    rating_sum: float = 0.0
    rating_n: int = 0
    implicit_n: int = 0
    click_weights: dict[str, float] = field(default_factory=dict)
    click_intercept: float = 0.0
    click_n: int = 0
    popularity: dict[str, int] = field(default_factory=dict)
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The swap its sender's models started from (see ItemSync.generation; 0: none yet).
    generation: int = 0

    def empty(self) -> bool:
        return (
            self.rating.empty()
            and self.implicit.empty()
            and not (self.rating_n or self.implicit_n or self.click_n)
            and not (self.click_weights or self.click_intercept)
            and not (self.popularity or self.profiles)
        )

    def to_bytes(self) -> bytes:
        """MessagePack, arrays as little-endian float64 / int64 buffers (exact)."""
        return msgspec.msgpack.encode(
            {
                "source": self.source,
                "seq": self.seq,
                "factors": list(self.factors),
                "rating": self.rating._encode(),
                "implicit": self.implicit._encode(),
                "rating_sum": self.rating_sum,
                "rating_n": self.rating_n,
                "implicit_n": self.implicit_n,
                "click_weights": self.click_weights,
                "click_intercept": self.click_intercept,
                "click_n": self.click_n,
                "popularity": self.popularity,
                "profiles": self.profiles,
                "generation": self.generation,
            }
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> ItemDelta:
        d = msgspec.msgpack.decode(raw)
        fr, fi = d["factors"]
        # Profiles hold tuples (genres); MessagePack gives lists back.
        profiles = {
            k: {f: tuple(v) if isinstance(v, list) else v for f, v in p.items()}
            for k, p in d["profiles"].items()
        }
        return cls(
            source=d["source"],
            seq=d["seq"],
            factors=(fr, fi),
            rating=TableDelta._decode(d["rating"], fr),
            implicit=TableDelta._decode(d["implicit"], fi),
            rating_sum=float(d["rating_sum"]),
            rating_n=d["rating_n"],
            implicit_n=d["implicit_n"],
            click_weights={k: float(v) for k, v in d["click_weights"].items()},
            click_intercept=float(d["click_intercept"]),
            click_n=d["click_n"],
            popularity=d["popularity"],
            profiles=profiles,
            generation=d.get("generation", 0),  # absent: sent before any swap was shared
        )


class _TableBase:
    """The base snapshot of one model's item table: the rows as of the last exchange, the
    start of every row and who gave it, and the rows this task started since its last take.

    The table records each row it starts (``FactorTable.started``) while a base listens, so
    a new row's base is its start and its first delta is what learning changed.
    """

    def __init__(self, model: FactorModel, source: int) -> None:
        self.model = model
        self.source = source
        t = model._items
        t.started = []
        n = t.n
        self.n = n
        self.vectors = t.vectors[:n].copy()
        self.biases = t.biases[:n].copy()
        self.counts = np.asarray(t.counts, dtype=np.int64).copy()
        # id -> (owner source, start bias, start vector).
        self.starts: dict[str, tuple[int, float, np.ndarray]] = {
            id_: (PRESHARED, 0.0, np.zeros(0)) for id_ in t.ids
        }
        self.new: list[str] = []  # started here since the last take, in row order

    def _reserve(self, n: int) -> None:
        if n > len(self.biases):
            capacity = max(n, 2 * len(self.biases), 64)
            for name in ("vectors", "biases", "counts"):
                old = getattr(self, name)
                grown = np.zeros((capacity, *old.shape[1:]), dtype=old.dtype)
                grown[: len(old)] = old
                setattr(self, name, grown)

    def catch_up(self) -> None:
        """Give the rows the table started since the last call their start as base."""
        t = self.model._items
        started = t.started
        assert started is not None
        n = t.n
        if n > self.n:
            self._reserve(n)
            log = {row: (bias, vector) for row, bias, vector in started}
            for row in range(self.n, n):
                id_ = t.ids[row]
                bias, vector = log.get(row) or (t.biases.item(row), t.vectors[row].copy())
                self.vectors[row] = vector
                self.biases[row] = bias
                self.counts[row] = 0
                self.starts[id_] = (self.source, bias, vector)
                self.new.append(id_)
            self.n = n
        started.clear()

    def take(self) -> TableDelta:
        self.catch_up()
        t, n = self.model._items, self.n
        cur_v, cur_b = t.vectors[:n], t.biases[:n]
        cur_c = np.asarray(t.counts, dtype=np.int64)
        dv = cur_v - self.vectors[:n]
        db = cur_b - self.biases[:n]
        dc = cur_c - self.counts[:n]
        rows = np.flatnonzero((dv != 0.0).any(axis=1) | (db != 0.0) | (dc != 0))
        self.vectors[rows] = cur_v[rows]
        self.biases[rows] = cur_b[rows]
        self.counts[rows] = cur_c[rows]
        ids = t.ids
        new, self.new = self.new, []
        starts = [self.starts[id_] for id_ in new]
        f = t.factors
        return TableDelta(
            ids=[ids[r] for r in rows.tolist()],
            vectors=dv[rows],
            biases=db[rows],
            counts=dc[rows],
            new_ids=new,
            new_vectors=np.array([s[2] for s in starts]).reshape(len(new), f),
            new_biases=np.array([s[1] for s in starts], dtype=np.float64),
        )

    def _add_row(self, id_: str, bias: float, vector: np.ndarray, profile: Any) -> int:
        t = self.model._items
        row = t.add(id_, vector)
        t.biases[row] = bias
        self._reserve(row + 1)
        self.vectors[row] = vector
        self.biases[row] = bias
        self.counts[row] = 0
        self.n = row + 1
        priors = self.model._item_priors
        if priors is not None:  # the row enters its genres' cold-start means once warm
            priors.add_row(row, item_keys(profile))
        return row

    def _shift(self, row: int, bias: float, vector: np.ndarray) -> None:
        """Move a row and its base by the same amount, keeping the unsent change exact
        (zero stays zero, so the row is not sent back out)."""
        t = self.model._items
        unsent_v = t.vectors[row] - self.vectors[row]
        unsent_b = t.biases.item(row) - self.biases.item(row)
        self.vectors[row] += vector
        self.biases[row] += bias
        t.vectors[row] = self.vectors[row] + unsent_v
        t.biases[row] = self.biases.item(row) + unsent_b

    def apply(self, d: TableDelta, source: int, profiles: dict[str, dict[str, Any]]) -> None:
        self.catch_up()
        t = self.model._items
        index = t.index
        for id_, bias, vector in zip(d.new_ids, d.new_biases.tolist(), d.new_vectors, strict=True):
            vector = vector.copy()
            row = index.get(id_)
            if row is None:
                self._add_row(id_, bias, vector, profiles.get(id_))
                self.starts[id_] = (source, bias, vector)
                continue
            owner, own_bias, own_vector = self.starts[id_]
            if source < owner:  # the lower source's start wins, in every task
                if owner != PRESHARED:
                    self._shift(row, bias - own_bias, vector - own_vector)
                self.starts[id_] = (source, bias, vector)
        if not d.ids:
            return
        for id_ in d.ids:
            if id_ not in index:  # its start has not arrived: the keyed draw until it does
                vector = t.keyed_draw(id_)
                self._add_row(id_, 0.0, vector, profiles.get(id_))
                self.starts[id_] = (UNKNOWN, 0.0, vector)
        rows = np.fromiter((index[id_] for id_ in d.ids), dtype=np.int64, count=len(d.ids))
        unsent_v = t.vectors[rows] - self.vectors[rows]
        unsent_b = t.biases[rows] - self.biases[rows]
        base_v = self.vectors[rows] + d.vectors
        base_b = self.biases[rows] + d.biases
        self.vectors[rows] = base_v
        self.biases[rows] = base_b
        t.vectors[rows] = base_v + unsent_v
        t.biases[rows] = base_b + unsent_b
        self.counts[rows] += d.counts
        counts = t.counts
        for row, dc in zip(rows.tolist(), d.counts.tolist(), strict=True):
            counts[row] += dc


def _follow_schedule(model: FactorModel, updates: int) -> None:
    """Move the cold-start refresh point by the updates a delta added to the model's count,
    so priors are still recomputed every so many *local* updates (not k times as often)."""
    for priors in (model._user_priors, model._item_priors):
        if priors is not None:
            priors.next_refresh += updates


class ItemSync:
    """Takes this learner's item-side changes as deltas and applies other tasks' deltas.

    Kept on the learner (``learner.item_sync``), so a checkpoint holds it with the state it
    describes. ``source`` names this task in its deltas (a partition number: unique among
    the tasks that share, and the lower one's start wins when two start the same item).
    """

    # Where the consumer's reading of the exchanged deltas stood at this learner's last
    # exchange (the next offset): a restored learner reads on from there.
    position: int = 0
    # The swap the models started from: the control-topic position (offset + 1) of the
    # message that named the version, the same in every task (0: no swap yet). Deltas of
    # another generation change other models: an older one's model part is covered by its
    # sender's catch-up after the swap (skipped), a newer one's waits in ``held`` until this
    # task swaps too. Class defaults: a learner pickled before they existed loads at 0.
    generation: int = 0
    held: tuple[ItemDelta, ...] = ()

    def __init__(self, learner: FeedbackLearner, source: int, click_scale: float = 1.0) -> None:
        if not 0 <= source < UNKNOWN:
            raise ValueError(f"source must be in [0, 2**62), got {source}")
        if not 0.0 < click_scale <= 1.0:
            raise ValueError(f"click_scale must be in (0, 1], got {click_scale}")
        self.learner = learner
        self.source = source
        # Share of its own click-model change a task keeps and sends: every event moves the
        # same few weights (the intercept, cf_logit), so k tasks' changes summed step k
        # times too far and diverge with long intervals; 1/k averages them instead.
        self.click_scale = click_scale
        self.seq = 0
        # Per source, the sequence number of the last delta applied.
        self.applied: dict[int, int] = {}
        self.rebase()

    def rebase(self) -> None:
        """Take the learner's current shared state as the base (at the start, and when a
        swap replaced the models: what the new bundle holds is not sent; the learner calls
        this at a swap, and take/apply do if they find other models)."""
        learner = self.learner
        models = learner.models
        self._rating = _TableBase(models.rating, self.source)
        self._implicit = _TableBase(models.implicit, self.source)
        self._engagement = models.engagement
        self._rating_sum = models.rating.global_mean * models.rating.n_ratings
        self._rating_n = models.rating.n_ratings
        self._implicit_n = models.implicit.n_updates
        self._click_weights = models.engagement.weights
        self._click_intercept = models.engagement.intercept
        self._click_n = models.engagement.n_learned
        self._popularity = dict(learner.interactions.popularity)
        # Item profiles admission stores from now on (profiles are rare: a list append);
        # kept across a swap, which does not change profiles.
        profiles = learner.admission.profiles
        if profiles.item_log is None:
            profiles.item_log = []

    def swapped(self, generation: int) -> None:
        """New models (a swap, named ``generation``): they are the base, so the changes
        learned on them from now on (the catch-up first) are what goes out. Popularity is
        not part of the models: its unsent changes still go out."""
        popularity = self._popularity
        self.rebase()
        self._popularity = popularity
        self.generation = generation

    def release_held(self) -> int:
        """Apply the held deltas of this task's generation (other tasks that swapped first);
        drop those of older ones; keep newer ones. Return how many were applied."""
        held, self.held = self.held, ()
        n = 0
        for delta in held:
            if delta.generation == self.generation:
                n += self.apply(delta)
            elif delta.generation > self.generation:
                self.held = (*self.held, delta)
        return n

    def _check_models(self) -> None:
        models = self.learner.models
        if (
            models.rating is not self._rating.model
            or models.implicit is not self._implicit.model
            or models.engagement is not self._engagement
        ):
            self.rebase()

    def take(self) -> ItemDelta | None:
        """The changes since the last take or apply (None: nothing changed); they become
        part of the base."""
        self._check_models()
        learner = self.learner
        models = learner.models
        rating, implicit, engagement = models.rating, models.implicit, models.engagement
        delta = ItemDelta(
            source=self.source,
            seq=self.seq + 1,
            generation=self.generation,
            factors=(rating.factors, implicit.factors),
            rating=self._rating.take(),
            implicit=self._implicit.take(),
        )
        if rating.n_ratings != self._rating_n:  # the sum moves only with the count
            total = rating.global_mean * rating.n_ratings
            delta.rating_sum = total - self._rating_sum
            delta.rating_n = rating.n_ratings - self._rating_n
            self._rating_sum, self._rating_n = total, rating.n_ratings
        delta.implicit_n = implicit.n_updates - self._implicit_n
        self._implicit_n = implicit.n_updates
        delta.click_n = engagement.n_learned - self._click_n
        self._click_n = engagement.n_learned
        base_w, scale = self._click_weights, self.click_scale
        weights = engagement.model._weights
        changed_w = {}
        # As for popularity below: the set difference scans every weight in C, the loop
        # runs over changed weights only (a weight absent from the base has base 0.0).
        for k, v in weights.items() - base_w.items():
            b = base_w.get(k, 0.0)
            if v == b:  # a new weight still at 0.0
                continue
            if scale == 1.0:
                changed_w[k] = v - b
                base_w[k] = v
            else:  # this task keeps the scaled change too, as the others will
                d = changed_w[k] = (v - b) * scale
                base_w[k] = weights[k] = b + d
        delta.click_weights = changed_w
        intercept = engagement.intercept
        if intercept != self._click_intercept:
            if scale == 1.0:
                delta.click_intercept = intercept - self._click_intercept
                self._click_intercept = intercept
            else:
                d = delta.click_intercept = (intercept - self._click_intercept) * scale
                self._click_intercept += d
                engagement.model.intercept = self._click_intercept
        base_p = self._popularity
        # A set difference of the item views: the scan runs in C, the loop only over changes.
        moved = learner.interactions.popularity.items() - base_p.items()
        delta.popularity = {k: c - base_p.get(k, 0) for k, c in moved}
        base_p.update(moved)
        profiles = learner.admission.profiles
        log = profiles.item_log
        if log:
            items = profiles.items
            delta.profiles = {k: items[k] for k in dict.fromkeys(log) if k in items}
            log.clear()
        if delta.empty():
            return None
        self.seq += 1
        return delta

    def apply(self, delta: ItemDelta) -> bool:
        """Add another task's delta to the shared state and to the base; whether it was
        applied (False: this task's own, or not newer than the last one from its source)."""
        source = delta.source
        if source == self.source or delta.seq <= self.applied.get(source, 0):
            return False
        if delta.generation > self.generation:  # models this task has not swapped to yet
            if not any(h.source == source and h.seq == delta.seq for h in self.held):
                self.held = (*self.held, delta)  # (a re-read after a restore: held once)
            return False
        self._check_models()
        learner = self.learner
        # Profiles first: rows the delta adds register their genres with cold start.
        profiles = learner.admission.profiles
        for item_id, profile in delta.profiles.items():
            stored = dict(profile)
            profiles.items[item_id] = stored
            profiles.changed_items.add(item_id)
        popularity, base_p = learner.interactions.popularity, self._popularity
        for k, dc in delta.popularity.items():
            popularity[k] = popularity.get(k, 0) + dc
            base_p[k] = base_p.get(k, 0) + dc
        if delta.generation == self.generation:
            # Older generations' model changes: the bundle or its senders' catch-ups hold them.
            self._apply_models(delta, profiles.items)
        self.applied[source] = delta.seq
        return True

    def _apply_models(self, delta: ItemDelta, items: dict[str, dict[str, Any]]) -> None:
        source = delta.source
        models = self.learner.models
        self._rating.apply(delta.rating, source, items)
        self._implicit.apply(delta.implicit, source, items)
        if delta.rating_n:
            rating = models.rating
            unsent_n = rating.n_ratings - self._rating_n
            unsent_sum = rating.global_mean * rating.n_ratings - self._rating_sum
            self._rating_sum += delta.rating_sum
            self._rating_n += delta.rating_n
            rating.n_ratings = self._rating_n + unsent_n
            rating.global_mean = (self._rating_sum + (unsent_sum if unsent_n else 0.0)) / (
                rating.n_ratings
            )
        models.implicit.n_updates += delta.implicit_n
        self._implicit_n += delta.implicit_n
        _follow_schedule(models.rating, delta.rating_n)
        _follow_schedule(models.implicit, delta.implicit_n)
        engagement = models.engagement
        engagement.n_learned += delta.click_n
        self._click_n += delta.click_n
        weights, base_w = engagement.model._weights, self._click_weights
        for k, dv in delta.click_weights.items():
            b = base_w.get(k, 0.0)
            unsent = weights.get(k, 0.0) - b
            b += dv
            base_w[k] = b
            weights[k] = b + unsent
        if delta.click_intercept:
            b = self._click_intercept
            unsent = engagement.model.intercept - b
            b += delta.click_intercept
            self._click_intercept = b
            engagement.model.intercept = b + unsent
