"""Approximate nearest neighbours for serving: which library, and what a recommendation costs.

Part 1 compares hnswlib, faiss (HNSW) and usearch against exact numpy on a maximum inner
product search over item vectors ``[q_i, b_i]`` queried with ``[p_u, 1]`` (the implicit
model's logits), on two seeded catalogues: ``random`` (standard normal) and ``skewed`` (genre
clusters, log-normal norms, bias growing with the norm: popular items are long vectors, as a
trained factorization makes them). Per library: build time, single-query latency p50/p99 for
``--candidates`` candidates, recall@10 after an exact re-rank of the candidates, the cost of
upserting 1% of the rows, and the resident memory the index adds (each library in a fresh
process so the numbers do not mix).

Part 2 times :meth:`stream.serving.recommender.Recommender.recommend` itself (policy
``model`` and ``explore``, k=10) over a :class:`~stream.serving.state.ServingState` built from
records, and the exact brute force it replaces, at several catalogue sizes.

    .venv/bin/python bench/ann.py                      # print
    .venv/bin/python bench/ann.py --out BENCHMARKS.md  # also write the ``ann`` section
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import machine, replace_section  # noqa: E402

K = 10


def catalogue(kind: str, n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(items ``n x (dim+1)`` = [q, b], users ``1000 x (dim+1)`` = [p, 1]), float32."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        q = rng.standard_normal((n, dim))
        b = rng.standard_normal(n)
        p = rng.standard_normal((1000, dim))
    else:
        centers = rng.standard_normal((18, dim))
        genre = rng.integers(0, 18, n)
        direction = centers[genre] + 0.7 * rng.standard_normal((n, dim))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        norm = rng.lognormal(-1.0, 0.6, n)
        q = direction * norm[:, None]
        b = -2.0 + 1.5 * norm + 0.3 * rng.standard_normal(n)
        taste = centers[rng.integers(0, 18, 1000)] + 0.8 * rng.standard_normal((1000, dim))
        p = taste * rng.lognormal(-0.5, 0.4, 1000)[:, None]
    items = np.hstack([q, b[:, None]]).astype(np.float32)
    users = np.hstack([p, np.ones((1000, 1))]).astype(np.float32)
    return items, users


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


class Lib:
    """One library behind the three calls the comparison makes."""

    def __init__(self, name: str, dim: int, n: int, ef: int) -> None:
        self.name, self.dim, self.ef = name, dim, ef
        if name == "hnswlib":
            import hnswlib

            self.ix: Any = hnswlib.Index(space="ip", dim=dim)
            self.ix.init_index(max_elements=n, M=16, ef_construction=200, random_seed=1)
            self.ix.set_num_threads(1)
        elif name == "faiss":
            import faiss

            faiss.omp_set_num_threads(1)
            self.ix = faiss.IndexHNSWFlat(dim, 16, faiss.METRIC_INNER_PRODUCT)
            self.ix.hnsw.efConstruction = 200
            self.ix.hnsw.efSearch = ef
            self.labels = np.zeros(0, dtype=np.int64)  # faiss node -> row
        elif name == "usearch":
            from usearch.index import Index

            self.ix = Index(
                ndim=dim,
                metric="ip",
                dtype="f32",
                connectivity=16,
                expansion_add=200,
                expansion_search=ef,
            )
        else:
            raise ValueError(name)

    def add(self, rows: np.ndarray, vecs: np.ndarray) -> None:
        if self.name == "hnswlib":
            self.ix.add_items(vecs, rows)
            self.ix.set_ef(self.ef)
        elif self.name == "faiss":
            self.ix.add(vecs)
            self.labels = np.concatenate([self.labels, rows.astype(np.int64)])
        else:
            self.ix.add(rows.astype(np.uint64), vecs, threads=1)

    def upsert(self, rows: np.ndarray, vecs: np.ndarray) -> None:
        if self.name == "hnswlib":
            self.ix.add_items(vecs, rows)  # an existing label is updated in place
        elif self.name == "faiss":
            # HNSW in faiss cannot remove or update a node: append, and let the re-rank
            # (which reads current vectors) drop the stale copy.
            self.add(rows, vecs)
        else:
            self.ix.remove(rows.astype(np.uint64))
            self.ix.add(rows.astype(np.uint64), vecs, threads=1)

    def query(self, v: np.ndarray, n: int) -> np.ndarray:
        if self.name == "hnswlib":
            labels, _ = self.ix.knn_query(v, k=n)
            return labels[0]
        if self.name == "faiss":
            _, nodes = self.ix.search(v[None, :], n)
            return self.labels[nodes[0][nodes[0] >= 0]]
        return self.ix.search(v, n).keys.astype(np.int64)


def exact_top(items: np.ndarray, u: np.ndarray, k: int) -> np.ndarray:
    s = items @ u
    top = np.argpartition(-s, k)[:k]
    return top[np.argsort(-s[top], kind="stable")]


def run_lib(name: str, kind: str, n: int, dim: int, candidates: int, seed: int) -> dict[str, Any]:
    items, users = catalogue(kind, n, dim, seed)
    items64 = items.astype(np.float64)
    gc.collect()
    before = rss_bytes()
    t0 = time.perf_counter()
    lib = Lib(name, dim + 1, n, ef=candidates)
    lib.add(np.arange(n), items)
    build = time.perf_counter() - t0
    mem = rss_bytes() - before
    lat: list[float] = []
    hits = 0
    for u in users:
        t0 = time.perf_counter()
        cand = lib.query(u, candidates)
        lat.append(time.perf_counter() - t0)
        cand = np.unique(cand)
        s = items64[cand] @ u.astype(np.float64)
        got = cand[np.argsort(-s, kind="stable")[:K]]
        hits += len(set(got.tolist()) & set(exact_top(items64, u.astype(np.float64), K).tolist()))
    rng = np.random.default_rng(seed + 1)
    rows = rng.choice(n, n // 100, replace=False)
    moved = items[rows] + 0.1 * rng.standard_normal(items[rows].shape).astype(np.float32)
    t0 = time.perf_counter()
    lib.upsert(rows, moved)
    upsert = time.perf_counter() - t0
    items[rows] = moved
    # Recall after the update: the index must still find moved items.
    hits_after = 0
    for u in users[:300]:
        cand = np.unique(lib.query(u, candidates))
        s = items[cand].astype(np.float64) @ u.astype(np.float64)
        got = cand[np.argsort(-s, kind="stable")[:K]]
        truth = exact_top(items.astype(np.float64), u.astype(np.float64), K)
        hits_after += len(set(got.tolist()) & set(truth.tolist()))
    ms = np.array(lat) * 1e3
    return {
        "lib": name,
        "kind": kind,
        "build_s": build,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "recall": hits / (K * len(users)),
        "recall_after": hits_after / (K * 300),
        "upsert_ms": upsert * 1e3,
        "mem_mb": mem / 2**20,
    }


def run_exact(kind: str, n: int, dim: int, seed: int) -> dict[str, Any]:
    items, users = catalogue(kind, n, dim, seed)
    lat = []
    for u in users:
        t0 = time.perf_counter()
        exact_top(items, u, K)
        lat.append(time.perf_counter() - t0)
    ms = np.array(lat) * 1e3
    return {
        "lib": "numpy exact",
        "kind": kind,
        "build_s": 0.0,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "recall": 1.0,
        "recall_after": 1.0,
        "upsert_ms": 0.0,
        "mem_mb": items.nbytes / 2**20,
    }


def compare(n: int, dim: int, candidates: int, seed: int) -> list[dict[str, Any]]:
    ctx = mp.get_context("spawn")
    out = []
    for kind in ("random", "skewed"):
        for name in ("hnswlib", "faiss", "usearch"):
            with ctx.Pool(1) as pool:
                out.append(pool.apply(run_lib, (name, kind, n, dim, candidates, seed)))
            print(out[-1], flush=True)
        out.append(run_exact(kind, n, dim, seed))
        print(out[-1], flush=True)
    return out


def brute_threshold(dim: int, seed: int) -> list[tuple[int, float]]:
    """p50 ms of an exact top-k by catalogue size (where brute force stops being cheap)."""
    out = []
    for n in (1_000, 5_000, 10_000, 20_000, 50_000, 100_000):
        items, users = catalogue("skewed", n, dim, seed)
        lat = []
        for u in users[:500]:
            t0 = time.perf_counter()
            exact_top(items, u, K)
            lat.append(time.perf_counter() - t0)
        out.append((n, float(np.percentile(np.array(lat) * 1e3, 50))))
    return out


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| catalogue | library | build s | query p50 ms | query p99 ms | recall@10 | "
        "recall@10 after upsert | upsert 1% ms | memory MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['kind']} | {r['lib']} | {r['build_s']:.2f} | {r['p50_ms']:.3f} | "
            f"{r['p99_ms']:.3f} | {r['recall']:.3f} | {r['recall_after']:.3f} | "
            f"{r['upsert_ms']:.1f} | {r['mem_mb']:.1f} |"
        )
    return "\n".join(lines)


def recommender_bench(n: int, dim: int, seed: int, requests: int) -> str:
    """Part 2: the serving state and the recommender over ``n`` items (the skewed catalogue)."""
    from stream.config import ServingConfig
    from stream.serving.recommender import Recommender
    from stream.serving.records import ItemState, ModelMeta, UserState, encode_record
    from stream.serving.state import ServingState

    items, users = catalogue("skewed", n, dim, seed)
    rng = np.random.default_rng(seed + 2)
    genres = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "War", "Western"]
    n_users = 10_000
    raws = [
        encode_record(
            ItemState(
                f"i{i}",
                implicit_vector=tuple(items[i, :dim].astype(np.float64)),
                implicit_bias=float(items[i, dim]),
                rating_bias=0.1,
                rating_vector=(0.0,) * dim,
                profile={"genres": [genres[i % 8], genres[(i // 8) % 8]], "year": 1990},
                interactions=int(rng.integers(0, 1000)),
            )
        )
        for i in range(n)
    ]
    for u in range(n_users):
        raws.append(
            encode_record(
                UserState(
                    f"u{u}",
                    rating_bias=0.0,
                    rating_vector=(0.0,) * dim,
                    implicit_vector=tuple(users[u % 1000, :dim].astype(np.float64)),
                    profile={
                        "age": int(rng.integers(18, 70)),
                        "gender": "FM"[u % 2],
                        "occupation": "other",
                    },
                    seen=tuple(f"i{j}" for j in rng.choice(n, 20, replace=False)),
                )
            )
        )
    raws.append(encode_record(ModelMeta(0, 1, True, time.time(), 0, 3.5, 1.0, 5.0)))
    gc.collect()
    before = rss_bytes()
    state = ServingState(seed=seed)
    t0 = time.perf_counter()
    for key, value in raws:
        state.apply_raw(key, value)
    t_apply = time.perf_counter() - t0
    t0 = time.perf_counter()
    state.sync_index()
    t_index = time.perf_counter() - t0
    mem = rss_bytes() - before
    rec = Recommender(state, ServingConfig(exploration=0.1, seed=seed))
    gc.freeze()  # as the follower thread does once ready
    cold = [f"cold{u}" for u in range(500)]
    for c in cold:
        state.apply(UserState(c, profile={"age": 30, "gender": "F", "occupation": "other"}))

    def timed(call: Any) -> tuple[float, float]:
        lat = []
        for r in range(requests):
            t = time.perf_counter()
            call(r)
            lat.append(time.perf_counter() - t)
        ms = np.array(lat) * 1e3
        return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))

    def warm(policy: str) -> Any:
        return lambda r: rec.recommend(f"u{r % n_users}", 10, policy)  # type: ignore[arg-type]

    rows = [
        ("recommend, model, warm user", timed(warm("model"))),
        ("recommend, explore (eps 0.1), warm user", timed(warm("explore"))),
        (
            "recommend, model, cold-start user",
            timed(lambda r: rec.recommend(cold[r % 500], 10, "model")),
        ),
        ("recommend, model, unknown user", timed(lambda r: rec.recommend(f"x{r}", 10, "model"))),
        ("recommend, popular", timed(warm("popular"))),
        ("recommend, random", timed(warm("random"))),
        ("exact_top_k (brute force)", timed(lambda r: rec.exact_top_k(f"u{r % n_users}", 10))),
        ("predict (rating + click)", timed(lambda r: rec.predict(f"u{r % n_users}", f"i{r}"))),
    ]
    hits = 0
    for u in range(500):
        got = [x.item_id for x in rec.recommend(f"u{u}", 10, "model").items]
        hits += len(set(got) & set(rec.exact_top_k(f"u{u}", 10)))
    moved = rng.choice(n, n // 100, replace=False)
    for i in moved.tolist():
        v = items[i, :dim].astype(np.float64) + 0.1 * rng.standard_normal(dim)
        b = float(items[i, dim])
        state.apply(ItemState(f"i{i}", implicit_vector=tuple(v), implicit_bias=b))
    state.apply(ModelMeta(0, 2, False, time.time(), 0, 3.5, 1.0, 5.0))
    t0 = time.perf_counter()
    state.sync_index()
    t_sync = time.perf_counter() - t0
    lines = [
        f"Serving state over {n:,} items x {dim} factors and {n_users:,} users (20 seen items "
        f"each), {requests:,} sequential requests per row, k=10, candidates 100:",
        "",
        "| call | p50 ms | p99 ms |",
        "|---|---:|---:|",
        *(f"| {name} | {p50:.3f} | {p99:.3f} |" for name, (p50, p99) in rows),
        "",
        f"Applying the {len(raws):,} records (decode included): {t_apply:.1f} s "
        f"({len(raws) / t_apply:,.0f} records/s); first index build: {t_index:.1f} s; "
        f"re-indexing 1% of the items after a publication: {t_sync * 1e3:.0f} ms. "
        f"Recall@10 of the `model` policy against exact: {hits / 5000:.3f} (500 users). "
        f"Memory of the state with its index: {mem / 2**20:.0f} MiB, about "
        f"{mem / 2**20 * 1e6 / n / 1024:.1f} GiB per million items at this user count.",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=16, help="factors (the index adds the bias)")
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--requests", type=int, default=5_000, help="per row of part 2")
    ap.add_argument("--skip-libs", action="store_true", help="only part 2 (the recommender)")
    ap.add_argument("--out", type=Path, help="write the ann section of this markdown file")
    args = ap.parse_args()
    parts = [
        "## Serving: ANN library and recommendation cost (issue 8)",
        "",
        f"`OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/ann.py --out BENCHMARKS.md` "
        f"(items {args.items:,}, factors {args.dim} + bias, candidates {args.candidates}, "
        f"seed {args.seed}). Machine: {machine()}; shared with other work, so the p99 "
        "columns carry scheduling noise.",
        "",
    ]
    if not args.skip_libs:
        rows = compare(args.items, args.dim, args.candidates, args.seed)
        parts += [table(rows), ""]
        thr = brute_threshold(args.dim, args.seed)
        parts += [
            "Exact numpy top-10 p50 by catalogue size: "
            + ", ".join(f"{n:,}: {ms:.3f} ms" for n, ms in thr),
            "",
        ]
    parts += [recommender_bench(args.items, args.dim, args.seed, args.requests), ""]
    parts += [
        "The library table builds every graph alike (M=16, ef_construction=200, one "
        "thread, ef = candidates). Choice: hnswlib. It queried fastest on both catalogues at "
        "equal recall after the exact re-rank, used the least memory, and updates a label's "
        "vector in place; faiss' HNSW cannot update or remove a node (an upsert appends, the "
        "stale copy stays in the graph), usearch was 1.7-2.3x slower per query. The serving "
        "state builds with ef_construction=100 on every core (the second table). Below "
        "`serving.ann_min_items` (20,000) items the state "
        "scans exactly: at that size a numpy scan costs about one graph query and needs no "
        "build or update. Run the server with `OPENBLAS_NUM_THREADS=1`: on 2 busy cores a "
        "multi-threaded BLAS matrix-vector product over 100k rows had a p99 above 100 ms "
        "(its threads spin against the request threads), single-threaded 0.7 ms.",
    ]
    print("\n".join(parts))
    if args.out:
        replace_section(args.out, "ann", "\n".join(parts))


if __name__ == "__main__":
    main()
