"""Candidate items for a maximum-inner-product query: an HNSW graph (hnswlib) over item rows.

The implicit model's logit of item ``i`` for user ``u`` is ``[q_i, b_i] . [p_u, 1]``, so top-K
is a maximum inner product search over the rows ``[q_i, b_i]``. :class:`ItemIndex` keeps an
hnswlib graph in inner-product space over those rows (float32), labelled by the row number
the serving state gives each item, and returns candidate rows; the caller re-ranks them
exactly with the float64 vectors, so a slightly stale or approximate index costs recall,
never a wrong score.

Why hnswlib: ``bench/ann.py`` (100k items x 17 dims, see BENCHMARKS.md) measured it fastest
to query (p50 0.08-0.15 ms for 100 candidates against 0.13-0.32 ms for faiss HNSW and usearch),
with the same recall (0.995-0.999 after re-rank) and the least memory, and it updates a
label's vector in place (faiss' HNSW can neither update nor remove a node).

Below ``min_items`` rows there is no graph: an exact numpy scan of that many rows costs about
what a graph query does (0.14 ms at 20k rows) and is exact, with no build or update cost, so
:meth:`ItemIndex.candidates` returns ``None`` and the caller scans everything.

Upserts are applied in chunks under the index's own lock so a query never waits long behind
a large batch; rows that moved less than ``tolerance`` (relative to the vector the graph has)
are not re-linked, since their neighbourhood barely changed and the re-rank reads the exact
vector anyway.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> rows = rng.standard_normal((300, 5))
>>> ix = ItemIndex(dim=5, min_items=100, seed=1)
>>> ix.upsert(np.arange(300), rows)
>>> ix.size, ix.built
(300, True)
>>> q = rng.standard_normal(5)
>>> best = int(np.argmax(rows @ q))
>>> best in ix.candidates(q, 20).tolist()
True
>>> ItemIndex(dim=5, min_items=1000).candidates(q, 20) is None  # small: scan exactly
True
"""

from __future__ import annotations

import os
import threading

import hnswlib
import numpy as np

__all__ = ["ItemIndex"]

# Rows re-linked per lock hold: ~0.1 ms each on realistic vectors, so a query waits at most a
# few milliseconds behind an update batch.
_CHUNK = 64


class ItemIndex:
    """An inner-product HNSW index over item rows, built once the catalogue is large enough.

    Parameters
    ----------
    dim
        Length of a row (factors + 1 for the bias).
    min_items
        Below this many rows, no graph: :meth:`candidates` returns ``None`` (scan exactly).
    m, ef_construction
        hnswlib's graph degree and build-time beam width.
    tolerance
        Relative change of a row below which an upsert leaves the graph as it is.
    seed
        The graph's level generator seed.
    """

    def __init__(
        self,
        dim: int,
        min_items: int = 20_000,
        m: int = 16,
        ef_construction: int = 100,
        tolerance: float = 0.0,
        seed: int = 42,
    ) -> None:
        self.dim = dim
        self.min_items = min_items
        self.m = m
        self.ef_construction = ef_construction
        self.tolerance = tolerance
        self.seed = seed
        self.upserted = 0  # rows written into the graph (after the tolerance filter)
        self.skipped = 0  # rows whose change was under the tolerance
        self._lock = threading.Lock()
        self._graph: hnswlib.Index | None = None
        # The rows as the graph has them (float32), and which rows it has.
        self._rows = np.zeros((0, dim), dtype=np.float32)
        self._present = np.zeros(0, dtype=bool)
        self._size = 0

    @property
    def size(self) -> int:
        """Rows known to the index (in the graph once it is built)."""
        return self._size

    @property
    def built(self) -> bool:
        return self._graph is not None

    def _grow(self, n: int) -> None:
        cap = len(self._present)
        if n <= cap:
            return
        new_cap = max(n, 2 * cap, 1024)
        rows = np.zeros((new_cap, self.dim), dtype=np.float32)
        rows[:cap] = self._rows
        present = np.zeros(new_cap, dtype=bool)
        present[:cap] = self._present
        self._rows, self._present = rows, present
        if self._graph is not None:
            with self._lock:  # resizing is not safe beside a query
                self._graph.resize_index(new_cap)

    def upsert(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        """Insert or update these rows (``vectors``: one row each, any float dtype).

        Called by one writer at a time (the serving state's sync); queries may run meanwhile.
        """
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return
        vecs = np.asarray(vectors, dtype=np.float32).reshape(len(rows), self.dim)
        self._grow(int(rows.max()) + 1)
        known = self._present[rows]
        if self.tolerance > 0 and self._graph is not None and known.any():
            old = self._rows[rows]
            moved = np.linalg.norm(vecs - old, axis=1)
            scale = np.maximum(np.linalg.norm(old, axis=1), 1e-12)
            keep = ~known | (moved > self.tolerance * scale)
            self.skipped += int(len(rows) - keep.sum())
            rows, vecs = rows[keep], vecs[keep]
        self._rows[rows] = vecs
        new = int((~self._present[rows]).sum())
        self._present[rows] = True
        self._size += new
        if self._graph is None:
            if self._size >= self.min_items:
                self._build()
            return
        for start in range(0, len(rows), _CHUNK):
            with self._lock:
                # An existing label is updated in place (its links repaired).
                self._graph.add_items(
                    vecs[start : start + _CHUNK], rows[start : start + _CHUNK], num_threads=1
                )
        self.upserted += len(rows)

    def _build(self) -> None:
        # The first build is a bulk load on every core; queries scan exactly until it is done.
        graph = hnswlib.Index(space="ip", dim=self.dim)
        graph.init_index(
            max_elements=len(self._present),
            M=self.m,
            ef_construction=self.ef_construction,
            random_seed=self.seed,
        )
        rows = np.flatnonzero(self._present)
        graph.add_items(self._rows[rows], rows, num_threads=os.cpu_count() or 1)
        self.upserted += len(rows)
        with self._lock:
            self._graph = graph

    def candidates(self, query: np.ndarray, n: int) -> np.ndarray | None:
        """Up to ``n`` rows with the largest inner product with ``query`` (unordered), or
        ``None`` when there is no graph (scan every row instead)."""
        graph = self._graph
        if graph is None:
            return None
        q = np.asarray(query, dtype=np.float32).reshape(1, self.dim)
        with self._lock:
            n = min(n, graph.get_current_count())
            # The beam must be at least as wide as the answer.
            graph.set_ef(max(n, 64))
            labels, _ = graph.knn_query(q, k=n, num_threads=1)
        return labels[0].astype(np.int64)
