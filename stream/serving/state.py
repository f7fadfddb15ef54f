"""A server's copy of the live models, built from the model-state records.

Records are applied in topic order, last wins per entity. Items live in rows of numpy arrays
(grown by doubling) holding the implicit model's vector and bias, so ranking every item is one
matrix-vector product, plus an :class:`~stream.serving.index.ItemIndex` over the same rows for
large catalogues. Users stay in a dict (a request reads one user). Changed item rows are
queued and written into the index by :meth:`ServingState.sync_index` (the follower thread
calls it after each batch; a query calls it when nobody else is), outside ``lock``, so a large
batch of item updates never blocks requests for long.

Cold start, refreshed when a ``meta`` arrives (a publication is then complete):

- a user with a profile but no vectors gets the mean implicit vector of the warm users of
  their segments (age band x gender, and occupation: the mean of those that have warm users);
  an unknown user gets the mean of all warm users;
- an item with a profile but no vectors gets the mean vector and bias of the warm items
  sharing its genres (each shared genre counts its items), so it can be ranked and enters the
  index; it is marked content-based until the model learns it.

The segment and genre sums are kept incrementally as records arrive (each record subtracts
the entity's old contribution and adds the new), so a refresh costs one division per segment
and a few rows per content-only item, not a pass over every user.

>>> from stream.serving.records import ItemState, ModelMeta, UserState
>>> s = ServingState()
>>> s.apply(ItemState("i1", implicit_bias=0.5, implicit_vector=(1.0, 0.0),
...                   profile={"genres": ["Drama"]}, interactions=3))
>>> s.apply(ItemState("i2", profile={"genres": ["Drama"]}))
>>> s.apply(UserState("u1", implicit_vector=(2.0, 1.0), profile={"age": 30, "gender": "F"}))
>>> s.apply(ModelMeta(version=0, sequence=1, snapshot=True, published_at=0.0, consumed=10,
...                   global_mean=3.5, rating_min=1.0, rating_max=5.0))
>>> s.n_items, s.n_users, s.item_ids()
(2, 1, ['i1', 'i2'])
>>> s.is_content_only(s.row_of("i2")), s.logits(None, s.user_query("u1")[1]).tolist()
(True, [2.5, 2.5])
>>> s.user_query("someone")[0], s.user_query("u1")[0]
('unknown', 'warm')
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import Any, Literal

import numpy as np

from stream.config import ServingConfig
from stream.models.click import EngagementModel
from stream.serving.index import ItemIndex
from stream.serving.records import (
    EngagementState,
    ItemState,
    ModelMeta,
    StateRecord,
    StateRecordError,
    UserDeleted,
    UserState,
    decode_record,
)

log = logging.getLogger(__name__)

__all__ = ["ServingState", "UserKind"]

UserKind = Literal["warm", "cold_start", "unknown"]
_ALL = ("all",)


def user_segments(profile: dict[str, Any] | None) -> list[tuple[str, ...]]:
    """The demographic segments of a profile, named by the click model's own features.

    >>> user_segments({"age": 34, "gender": "M", "occupation": "writer"})
    [('age=30s', 'gender=M'), ('occ=writer',)]
    >>> user_segments(None)
    []
    """
    if not profile:
        return []
    x = EngagementModel.features(profile, None, None)
    age = next((k for k in x if k.startswith("age=")), None)
    gender = next((k for k in x if k.startswith("gender=")), None)
    occ = next((k for k in x if k.startswith("occ=")), None)
    out: list[tuple[str, ...]] = []
    if age or gender:
        out.append(tuple(f for f in (age, gender) if f))
    if occ:
        out.append((occ,))
    return out


def _genres(profile: dict[str, Any] | None) -> tuple[str, ...]:
    if not profile:
        return ()
    return tuple(profile.get("genres") or ())


class _Sums:
    """Running sums and counts of vectors per key (segments, genres)."""

    def __init__(self) -> None:
        self.sums: dict[tuple[str, ...], np.ndarray] = {}
        self.counts: dict[tuple[str, ...], int] = {}

    def add(self, keys: list[tuple[str, ...]], vec: np.ndarray, sign: int) -> None:
        for key in keys:
            n = self.counts.get(key, 0) + sign
            if n <= 0:
                # Reset rather than keep the rounding residue of add-then-subtract.
                self.sums.pop(key, None)
                self.counts.pop(key, None)
                continue
            self.counts[key] = n
            acc = self.sums.get(key)
            self.sums[key] = vec * sign if acc is None else acc + vec * sign

    def means(self) -> dict[tuple[str, ...], np.ndarray]:
        return {k: v / self.counts[k] for k, v in self.sums.items()}


class ServingState:
    """Users, items (rows of numpy arrays, plus the ANN index), the click model and the meta.

    Thread safety: one follower thread calls :meth:`apply_raw` / :meth:`apply` under
    ``lock`` and then :meth:`sync_index`; request handlers read through
    :class:`stream.serving.recommender.Recommender`, which holds ``lock`` while it reads.
    Readers can poll ``meta`` to see the served version change.
    """

    lock: threading.RLock
    meta: ModelMeta | None  # the last applied meta (None: nothing published yet)
    engagement: EngagementState
    records_applied: int
    records_invalid: int  # undecodable records (logged and skipped)

    def __init__(
        self,
        candidates: int = 100,
        *,
        ann_min_items: int = 20_000,
        ann_m: int = 16,
        ann_ef_construction: int = 100,
        ann_tolerance: float = 0.0,
        seed: int = 42,
    ) -> None:
        self.candidates = candidates
        self._ann = {
            "min_items": ann_min_items,
            "m": ann_m,
            "ef_construction": ann_ef_construction,
            "tolerance": ann_tolerance,
            "seed": seed,
        }
        self.lock = threading.RLock()
        self._sync_lock = threading.Lock()
        self.meta = None
        self.engagement = EngagementState()
        self.records_applied = 0
        self.records_invalid = 0
        self.metas_applied = 0
        # Whether queries bring the index up to date themselves; a follower thread that
        # syncs after each batch turns it off (requests then never pay for an index update).
        self.auto_sync = True
        self._users: dict[str, UserState] = {}
        # Vectors of users, float64 (the records keep the rest).
        self._uvec: dict[str, np.ndarray] = {}  # implicit: warm users
        self._urvec: dict[str, np.ndarray] = {}  # rating
        self._items: list[ItemState] = []
        self._item_row: dict[str, int] = {}
        self._dim: int | None = None  # implicit factors (set by the first vector seen)
        self._rdim = 0  # rating factors
        self._pop = np.zeros(16, dtype=np.int64)  # interactions per row
        self._alloc(0, 16)
        self._alloc_rating(0, 16)

    @classmethod
    def from_config(cls, cfg: ServingConfig) -> ServingState:
        return cls(
            cfg.candidates,
            ann_min_items=cfg.ann_min_items,
            ann_m=cfg.ann_m,
            ann_ef_construction=cfg.ann_ef_construction,
            ann_tolerance=cfg.ann_tolerance,
            seed=cfg.seed,
        )

    def _alloc(self, dim: int, cap: int) -> None:
        """Fresh item arrays and cold-start sums for implicit vectors of length ``dim``."""
        self._iv = np.zeros((cap, dim))  # implicit vectors (learned, or derived from content)
        self._ib = np.zeros(cap)  # implicit biases
        self._learned = np.zeros(cap, dtype=bool)  # the model has the item's vectors
        self._rankable = np.zeros(cap, dtype=bool)  # learned, or content vector derived
        self._user_sums = _Sums()
        self._genre_sums = _Sums()
        self._seg_means: dict[tuple[str, ...], np.ndarray] = {}
        self._pending: set[int] = set()  # rows to write into the index
        self.index = ItemIndex(dim + 1, **self._ann)  # type: ignore[arg-type]

    def _alloc_rating(self, dim: int, cap: int) -> None:
        self._rdim = dim
        self._rv = np.zeros((cap, dim))  # rating vectors
        self._has_rv = np.zeros(cap, dtype=bool)

    # -- applying records --------------------------------------------------------------
    def apply_raw(self, key: bytes | None, value: bytes | None) -> None:
        """Decode and apply one message (an invalid one is counted, logged and skipped)."""
        try:
            record = decode_record(key, value)
        except StateRecordError as err:
            self.records_invalid += 1
            if self.records_invalid <= 20:
                log.warning("skipping model-state record: %s", err)
            return
        self.apply(record)

    def apply(self, record: StateRecord) -> None:
        with self.lock:
            if isinstance(record, ItemState):
                self._apply_item(record)
            elif isinstance(record, UserState):
                self._apply_user(record)
            elif isinstance(record, UserDeleted):
                self._delete_user(record.user_id)
            elif isinstance(record, EngagementState):
                self.engagement = record
            elif isinstance(record, ModelMeta):
                self._refresh_cold_start(full=record.snapshot)
                self.meta = record
                self.metas_applied += 1
            self.records_applied += 1

    def _fits(self, vec: tuple[float, ...] | None) -> bool:
        """Whether ``vec`` is an implicit vector of the current length (a new length, after a
        swap to a model with other factors, starts the implicit arrays over: the swap's
        snapshot re-sends every entity)."""
        if vec is None:
            return False
        if self._dim != len(vec):
            log.info("implicit vectors now have %d factors (were %s)", len(vec), self._dim)
            self._dim = len(vec)
            self._alloc(self._dim, len(self._ib))
            self._uvec.clear()
        return True

    def _fits_rating(self, vec: tuple[float, ...] | None) -> bool:
        if vec is None:
            return False
        if self._rdim != len(vec):
            self._alloc_rating(len(vec), len(self._ib))
            self._urvec.clear()
        return True

    def _apply_item(self, item: ItemState) -> None:
        learned = self._fits(item.implicit_vector)
        has_rv = self._fits_rating(item.rating_vector)
        # Vectors live in the arrays only: a record keeps ids, biases, profile, popularity.
        stored = replace(item, implicit_vector=None, rating_vector=None)
        row = self._item_row.get(item.item_id)
        if row is None:
            row = len(self._items)
            if row == len(self._ib):
                self._grow(2 * row)
            self._items.append(stored)
            self._item_row[item.item_id] = row
        else:
            old = self._items[row]
            if self._learned[row]:
                self._genre_sums.add(self._genre_keys(old), self._row_vec(row), -1)
            self._items[row] = stored
        self._pop[row] = item.interactions
        self._has_rv[row] = has_rv
        if has_rv:
            self._rv[row] = item.rating_vector
        if learned:
            self._iv[row] = item.implicit_vector
            self._ib[row] = item.implicit_bias or 0.0
            self._learned[row] = self._rankable[row] = True
            self._genre_sums.add(self._genre_keys(stored), self._row_vec(row), +1)
            self._pending.add(row)
        else:
            # Content only: ranked once the next meta derives its vector.
            self._learned[row] = False

    def _genre_keys(self, item: ItemState) -> list[tuple[str, ...]]:
        return [*((g,) for g in _genres(item.profile)), _ALL]

    def _row_vec(self, row: int) -> np.ndarray:
        return np.append(self._iv[row], self._ib[row])

    def _grow(self, cap: int) -> None:
        for name in ("_iv", "_ib", "_learned", "_rankable", "_pop", "_rv", "_has_rv"):
            old = getattr(self, name)
            new = np.zeros((cap, *old.shape[1:]), dtype=old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)

    def _apply_user(self, user: UserState) -> None:
        uid = user.user_id
        old = self._users.get(uid)
        if old is not None and uid in self._uvec:
            self._user_sums.add(self._user_keys(old), self._uvec.pop(uid), -1)
        self._users[uid] = replace(user, implicit_vector=None, rating_vector=None)
        self._urvec.pop(uid, None)
        if self._fits_rating(user.rating_vector):
            self._urvec[uid] = np.array(user.rating_vector, dtype=np.float64)
        if self._fits(user.implicit_vector):
            vec = np.array(user.implicit_vector, dtype=np.float64)
            self._uvec[uid] = vec
            self._user_sums.add(self._user_keys(user), vec, +1)

    def _delete_user(self, uid: str) -> None:
        """Drop everything of a user (a tombstone): they are unknown from now on."""
        old = self._users.pop(uid, None)
        vec = self._uvec.pop(uid, None)
        if old is not None and vec is not None:
            self._user_sums.add(self._user_keys(old), vec, -1)
        self._urvec.pop(uid, None)

    def _user_keys(self, user: UserState) -> list[tuple[str, ...]]:
        return [*user_segments(user.profile), _ALL]

    def _refresh_cold_start(self, full: bool) -> None:
        """Segment means for cold users; vectors for items the model has not learned.

        A content-only item gets its vector when it first appears; all of them are
        re-derived at snapshots (``full``) only, since each re-derived vector is one more
        index update and the genre means move slowly.
        """
        self._seg_means = self._user_sums.means()
        n = len(self._items)
        todo = ~self._learned[:n]
        if not full:
            todo &= ~self._rankable[:n]
        rows = np.flatnonzero(todo)
        if len(rows) == 0:
            return
        d = (self._dim or 0) + 1  # before any vector: zero vectors, ranked by row order
        sums, counts = self._genre_sums.sums, self._genre_sums.counts
        slot = {key: j for j, key in enumerate(sums)}
        g_sum = np.array([sums[key] for key in slot]).reshape(len(slot), d)
        g_cnt = np.array([counts[key] for key in slot], dtype=np.float64)
        at, genre = [], []
        for pos, row in enumerate(rows.tolist()):
            for g in _genres(self._items[row].profile):
                j = slot.get((g,))
                if j is not None:
                    at.append(pos)
                    genre.append(j)
        acc = np.zeros((len(rows), d))
        cnt = np.zeros(len(rows))
        np.add.at(acc, at, g_sum[genre])
        np.add.at(cnt, at, g_cnt[genre])
        j_all = slot.get(_ALL)
        fallback = np.zeros(d) if j_all is None else g_sum[j_all] / g_cnt[j_all]
        vec = np.where(cnt[:, None] > 0, acc / np.maximum(cnt, 1.0)[:, None], fallback)
        current = np.hstack([self._iv[rows], self._ib[rows, None]])
        changed = ~self._rankable[rows] | (vec != current).any(axis=1)
        rows, vec = rows[changed], vec[changed]
        self._iv[rows], self._ib[rows] = vec[:, :-1], vec[:, -1]
        self._rankable[rows] = True
        self._pending.update(rows.tolist())

    # -- the index ---------------------------------------------------------------------
    @property
    def index_pending(self) -> int:
        """Item rows changed since the index last took them."""
        return len(self._pending)

    def sync_index(self, wait: bool = True) -> int:
        """Write the changed item rows into the index; return how many.

        Holds ``lock`` only to take the rows, so queries go on meanwhile (they re-rank
        exactly, so a row not yet in the index costs recall, not correctness). With ``wait``
        False, return 0 at once if another thread is syncing.
        """
        if not self._sync_lock.acquire(blocking=wait):
            return 0
        try:
            with self.lock:
                if not self._pending:
                    return 0
                rows = np.fromiter(sorted(self._pending), dtype=np.int64)
                self._pending.clear()
                vecs = np.hstack([self._iv[rows], self._ib[rows, None]])
                index = self.index
            index.upsert(rows, vecs)
            return len(rows)
        finally:
            self._sync_lock.release()

    def ann_candidates(self, query: np.ndarray, n: int) -> np.ndarray | None:
        """Candidate rows from the index (``None``: no index, scan every row)."""
        return self.index.candidates(query, n)

    # -- reads (callers hold ``lock``) --------------------------------------------------
    def user(self, user_id: str) -> UserState | None:
        """The user's record as published (vectors rebuilt from the float64 copies)."""
        user = self._users.get(user_id)
        if user is None:
            return None
        iv, rv = self._uvec.get(user_id), self._urvec.get(user_id)
        return replace(
            user,
            implicit_vector=None if iv is None else tuple(iv.tolist()),
            rating_vector=None if rv is None else tuple(rv.tolist()),
        )

    def item(self, item_id: str) -> ItemState | None:
        """The item's record as published (vectors rebuilt from the arrays)."""
        row = self._item_row.get(item_id)
        if row is None:
            return None
        return replace(
            self._items[row],
            implicit_vector=tuple(self._iv[row].tolist()) if self._learned[row] else None,
            rating_vector=tuple(self._rv[row].tolist()) if self._has_rv[row] else None,
        )

    @property
    def n_users(self) -> int:
        return len(self._users)

    @property
    def n_items(self) -> int:
        return len(self._items)

    @property
    def dim(self) -> int | None:
        """Implicit factors (None: no vector seen yet)."""
        return self._dim

    def item_ids(self) -> list[str]:
        return [it.item_id for it in self._items]

    def row_of(self, item_id: str) -> int | None:
        return self._item_row.get(item_id)

    def item_at(self, row: int) -> ItemState:
        """The record of a row, without its vectors (cheap: no copy)."""
        return self._items[row]

    def is_content_only(self, row: int) -> bool:
        return not bool(self._learned[row])

    @property
    def rankable(self) -> np.ndarray:
        """Which rows can be ranked (learned, or with a content vector); a view."""
        return self._rankable[: len(self._items)]

    @property
    def learned(self) -> np.ndarray:
        """Which rows have vectors from the model; a view."""
        return self._learned[: len(self._items)]

    @property
    def popularity(self) -> np.ndarray:
        """Interactions per row; a view."""
        return self._pop[: len(self._items)]

    def user_query(self, user_id: str) -> tuple[UserKind, np.ndarray]:
        """The user's kind and query ``[p_u, 1]`` (float64): their own vector when warm, the
        mean of their segments' warm users for a cold start, the mean user if unknown."""
        dim = self._dim or 0
        q = np.ones(dim + 1)
        vec = self._uvec.get(user_id)
        if vec is not None:
            q[:dim] = vec
            return "warm", q
        user = self._users.get(user_id)
        means = self._seg_means
        kind: UserKind = "unknown"
        if user is not None and user.profile:
            kind = "cold_start"
            found = [means[k] for k in user_segments(user.profile) if k in means]
            if found:
                q[:dim] = np.mean(found, axis=0)
                return kind, q
        q[:dim] = means.get(_ALL, 0.0)
        return kind, q

    def item_vector(self, row: int) -> tuple[np.ndarray, float]:
        """(implicit vector, bias) of a row."""
        return self._iv[row], float(self._ib[row])

    def logits(self, rows: np.ndarray | None, query: np.ndarray) -> np.ndarray:
        """Implicit logits ``[q_i, b_i] . query`` of these rows (None: every row), float64."""
        dim = self._dim or 0
        select = slice(0, len(self._items)) if rows is None else rows
        out = self._iv[select] @ query[:dim]
        out += self._ib[select] * query[dim]
        return out

    def seen_rows(self, user_id: str) -> list[int]:
        user = self._users.get(user_id)
        if user is None or not user.seen:
            return []
        get = self._item_row.get
        return [r for r in map(get, user.seen) if r is not None]

    def age_seconds(self, now: float | None = None) -> float | None:
        """Seconds since the last applied meta was published (None: nothing yet)."""
        meta = self.meta
        if meta is None:
            return None
        return max(0.0, (time.time() if now is None else now) - meta.published_at)
