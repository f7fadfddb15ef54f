"""`feedback-loop serve` under load: latency, throughput, freshness and memory.

    .venv/bin/python bench/serving.py [--items 100000] [--users 10000] [--out-section]

1. Latency and requests/s: synthetic model state (``--items`` items and ``--users`` users
   with 16 factors, popularity, genres) is published straight to a model-state topic with
   :class:`~stream.kafka.model_state.ModelStatePublisher`; a ``feedback-loop serve`` process
   follows it; a bounded load generator (threads, one keep-alive ``http.client`` connection
   each, a fixed number of requests per client) asks ``GET /recommendations/{user}?k=10`` for
   random users at 1 and 16 concurrent clients. Latency is measured by the client (loopback,
   the generator shares the machine with the server).
2. Memory: resident set size of the serve process holding that state, minus the RSS of a
   serve process with an empty state, scaled to one million items.
3. Freshness: a real consumer (``feedback-loop consume``, publishing its state at the default
   cadence) and a second serve process follow a simulated stream; for each of ``--fresh``
   rating events the bench produces the event to Kafka and polls the served prediction of
   that pair until it changes: the time from produce to the changed answer.

Without ``--out-section`` the markdown is printed; with it, the ``serving`` section of
BENCHMARKS.md is rewritten (only that one).
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import orjson  # noqa: E402

from bench.report import machine, replace_section  # noqa: E402
from producers.simulator import Simulator, SimulatorConfig  # noqa: E402
from stream.config import ConsumerConfig, ServingConfig, Settings, Topics, settings_env  # noqa: E402
from stream.events import RatingEvent  # noqa: E402
from stream.kafka.broker import EmbeddedBroker, ensure_topics, stop_process  # noqa: E402
from stream.kafka.model_state import ModelStatePublisher  # noqa: E402
from stream.kafka.publisher import EventPublisher  # noqa: E402
from stream.serving.records import (  # noqa: E402
    EngagementState,
    ItemState,
    ModelMeta,
    UserState,
    encode_record,
)

ROOT = Path(__file__).resolve().parent.parent
GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Thriller", "Documentary")
FACTORS = 16


def bench_settings(bootstrap: str, state_dir: Path) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return Settings(
        bootstrap_servers=bootstrap,
        topics=Topics.prefixed(tag),
        consumer=ConsumerConfig(group_id=f"bench-{tag}", state_dir=state_dir),
    )


# --- synthetic state --------------------------------------------------------------------------


def synthetic_records(
    n_items: int, n_users: int, seed: int = 42
) -> Iterator[tuple[bytes, bytes | None]]:
    """Items and users with random vectors, then the click model and one snapshot meta."""
    rng = np.random.default_rng(seed)
    for i in range(n_items):
        rv, iv = rng.normal(0, 0.1, FACTORS), rng.normal(0, 0.3, FACTORS)
        genres = [GENRES[g] for g in rng.choice(len(GENRES), 2, replace=False)]
        yield encode_record(
            ItemState(
                f"i{i:07d}",
                float(rng.normal(0, 0.2)),
                tuple(rv.tolist()),
                float(rng.normal(0, 0.2)),
                tuple(iv.tolist()),
                {"genres": genres, "year": 1990 + i % 30},
                int(rng.zipf(1.5)) % 10_000,
            )
        )
    for u in range(n_users):
        rv, iv = rng.normal(0, 0.1, FACTORS), rng.normal(0, 0.3, FACTORS)
        seen = tuple(f"i{j:07d}" for j in rng.integers(0, n_items, 20))
        profile = {
            "age": int(rng.integers(18, 70)),
            "gender": "F" if u % 2 else "M",
            "occupation": "engineer",
        }
        yield encode_record(
            UserState(
                f"u{u:07d}",
                float(rng.normal(0, 0.2)),
                tuple(rv.tolist()),
                tuple(iv.tolist()),
                profile,
                seen,
            )
        )
    yield encode_record(EngagementState({"cf_logit": 1.0}, -1.0))
    yield encode_record(
        ModelMeta(
            version=0,
            sequence=1,
            snapshot=True,
            published_at=time.time(),
            consumed=n_items,
            global_mean=3.5,
            rating_min=1.0,
            rating_max=5.0,
        )
    )


def publish_state(settings: Settings, n_items: int, n_users: int) -> float:
    started = time.perf_counter()
    pub = ModelStatePublisher(
        settings.bootstrap_servers or "", settings.topics.model_state, kafka=settings.kafka
    )
    pub.publish(synthetic_records(n_items, n_users))
    assert pub.flush(120) == 0 and pub.failed == 0, pub.errors
    return time.perf_counter() - started


# --- processes --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(conn: http.client.HTTPConnection, path: str) -> tuple[int, bytes]:
    conn.request("GET", path)
    resp = conn.getresponse()
    return resp.status, resp.read()


def wait_for(url_path: str, port: int, proc: subprocess.Popen[bytes], timeout: float) -> float:
    """Seconds until ``url_path`` answers 200 (the process must stay alive)."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            status, _ = get(conn, url_path)
            conn.close()
            if status == 200:
                return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url_path} not 200 within {timeout}s")


@contextmanager
def serve_process(settings: Settings, port: int) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, **settings_env(settings)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.app", "serve", "--port", str(port), "--log-level", "WARNING"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        stop_process(proc)


def app_seconds(port: int) -> tuple[float, float]:
    """(sum, count) of the server's request-time histogram for the recommendations route."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    _, body = get(conn, "/metrics")
    conn.close()
    out = [0.0, 0.0]
    for line in body.decode().splitlines():
        if line.startswith("feedback_loop_serve_request_seconds_") and "/recommendations/" in line:
            for i, suffix in enumerate(("_sum{", "_count{")):
                if suffix in line:
                    out[i] = float(line.rsplit(" ", 1)[1])
    return out[0], out[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


# --- load -------------------------------------------------------------------------------------


class Connection:
    """A minimal keep-alive HTTP/1.1 client for GETs: the load generator shares the machine's
    cores with the server, so it should spend as little CPU per request as it can
    (``http.client`` parses headers with the email package, several times this cost)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def get(self, path: str) -> tuple[int, bytes]:
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        while b"\r\n\r\n" not in self.buf:
            self._recv()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = next(
            int(line.split(b":", 1)[1])
            for line in lines[1:]
            if line.lower().startswith(b"content-length:")
        )
        while len(self.buf) < length:
            self._recv()
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, body

    def _recv(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    def close(self) -> None:
        self.sock.close()


def load(port: int, clients: int, requests: int, n_users: int, k: int) -> dict[str, float]:
    """``clients`` threads, ``requests`` each over one keep-alive connection."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    barrier = threading.Barrier(clients + 1)

    def client(c: int) -> None:
        rng = np.random.default_rng(c)
        paths = [f"/recommendations/u{u:07d}?k={k}" for u in rng.integers(0, n_users, requests)]
        conn = Connection(port)
        for path in paths[:20]:  # warm the connection and the server's caches
            conn.get(path)
        barrier.wait()
        out = latencies[c]
        for path in paths:
            t = time.perf_counter()
            status, body = conn.get(path)
            out.append(time.perf_counter() - t)
            if status != 200 and len(errors) < 5:
                errors.append(f"{status}: {body[:200]!r}")
        conn.close()

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"errors under load: {errors}")
    lat = np.array([x for per in latencies for x in per]) * 1000
    return {
        "clients": clients,
        "requests": len(lat),
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "max_ms": float(lat.max()),
        "rps": len(lat) / wall,
    }


# --- freshness --------------------------------------------------------------------------------


def freshness(bootstrap: str, tmp: Path, n: int) -> dict[str, Any]:
    """Produce a rating, poll the served prediction of its pair until it changes."""
    settings = bench_settings(bootstrap, tmp / "fresh-state")
    ensure_topics(bootstrap, settings.topics, kafka=settings.kafka)
    sim = Simulator(SimulatorConfig(n_users=1000, n_items=500, seed=5))
    pub = EventPublisher(bootstrap, settings.topics.events, kafka=settings.kafka)
    for p in sim.profiles():
        pub.publish(p)
    for e in sim.events(50_000):
        pub.publish(e)
    assert pub.flush().failed == 0
    env = {**os.environ, **settings_env(settings)}
    consumer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli.app",
            "consume",
            "--metrics-port",
            "0",
            "--log-level",
            "WARNING",
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    port = free_port()
    samples: list[float] = []
    try:
        with serve_process(settings, port) as proc:
            wait_for("/readyz", port, proc, 120)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

            def rating_of(uid: str, iid: str) -> float | None:
                """The served rating (None: the item is not in the served state yet)."""
                status, body = get(conn, f"/users/{uid}/items/{iid}")
                if status == 404:
                    return None
                assert status == 200, body
                return float(orjson.loads(body)["rating"])

            rng = np.random.default_rng(1)
            deadline = time.monotonic() + 300
            # Let the consumer finish the backlog: the prediction of a fixed pair exists and
            # stops changing for 3 s.
            probe = (sim.user_ids[0], sim.item_ids[0])
            last, still_since = rating_of(*probe), time.monotonic()
            while time.monotonic() - still_since < 3:
                if time.monotonic() > deadline:
                    raise TimeoutError("the consumer did not catch up")
                time.sleep(0.1)
                now = rating_of(*probe)
                if now != last or now is None:
                    last, still_since = now, time.monotonic()
            for i in range(n):
                before = None
                while before is None:
                    uid = sim.user_ids[int(rng.integers(len(sim.user_ids)))]
                    iid = sim.item_ids[int(rng.integers(len(sim.item_ids)))]
                    before = rating_of(uid, iid)
                event = RatingEvent(
                    event_id=f"fresh-{i}-{uuid.uuid4().hex[:6]}",
                    user_id=uid,
                    item_id=iid,
                    ts=time.time(),
                    rating=1.0 if before > 3 else 5.0,
                )
                t0 = time.perf_counter()
                pub.publish(event)  # librdkafka sends it within linger.ms (5 ms)
                while rating_of(uid, iid) == before:
                    if time.perf_counter() - t0 > 30:
                        raise TimeoutError(f"event {i} not reflected within 30 s")
                    time.sleep(0.002)
                samples.append(time.perf_counter() - t0)
            assert pub.flush().failed == 0
            conn.close()
    finally:
        stop_process(consumer)
    s = np.array(samples)
    return {
        "events": n,
        "p50_s": float(np.percentile(s, 50)),
        "p99_s": float(np.percentile(s, 99)),
        "max_s": float(s.max()),
        "publish_every_seconds": ServingConfig().publish_every_seconds,
    }


# --- the run ----------------------------------------------------------------------------------


def run(args: argparse.Namespace, bootstrap: str, tmp: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"items": args.items, "users": args.users}
    # Baseline memory: a serve process with an empty state.
    empty = bench_settings(bootstrap, tmp / "empty")
    ensure_topics(bootstrap, empty.topics, kafka=empty.kafka)
    port = free_port()
    with serve_process(empty, port) as proc:
        wait_for("/healthz", port, proc, 60)
        result["rss_empty_mib"] = rss_mib(proc.pid)

    settings = bench_settings(bootstrap, tmp / "state")
    ensure_topics(bootstrap, settings.topics, kafka=settings.kafka)
    print(f"publishing {args.items:,} items and {args.users:,} users...", file=sys.stderr)
    result["publish_seconds"] = publish_state(settings, args.items, args.users)
    port = free_port()
    with serve_process(settings, port) as proc:
        result["ready_seconds"] = wait_for("/readyz", port, proc, 600)
        result["rss_mib"] = rss_mib(proc.pid)
        result["load"] = []
        for clients, per_client in ((1, args.requests), (16, max(args.requests // 4, 50))):
            print(f"{clients} client(s)...", file=sys.stderr)
            before = app_seconds(port)
            row = load(port, clients, per_client, args.users, 10)
            after = app_seconds(port)
            # Time inside the application (routing, validation, recommender, JSON), from the
            # server's own histogram: the rest of the latency is the HTTP stack and queueing.
            row["app_mean_ms"] = (after[0] - before[0]) / max(after[1] - before[1], 1) * 1000
            result["load"].append(row)
        result["rss_after_load_mib"] = rss_mib(proc.pid)
    if args.fresh:
        print("freshness...", file=sys.stderr)
        result["freshness"] = freshness(bootstrap, tmp, args.fresh)
    delta = result["rss_mib"] - result["rss_empty_mib"]
    result["mib_per_million_items"] = delta * 1_000_000 / args.items
    return result


def http_stack() -> str:
    """What uvicorn picks here (the serve processes inherit this environment)."""
    fast = [m for m in ("httptools", "uvloop") if importlib.util.find_spec(m) is not None]
    return " + ".join(fast) if fast else "h11 + asyncio (httptools and uvloop not installed)"


def markdown(r: dict[str, Any], command: str) -> str:
    f = r.get("freshness")
    lines = [
        "## Serving (`feedback-loop serve`)",
        "",
        f"Machine: {machine()}.",
        f"Command: `{command}`.",
        "",
        f"State: {r['items']:,} items and {r['users']:,} users with {FACTORS} factors, published "
        f"to the model-state topic in {r['publish_seconds']:.1f} s; a new serve process is "
        f"ready (caught up, index built) {r['ready_seconds']:.1f} s after it starts. "
        "`GET /recommendations/{user}?k=10` (default policy: ANN candidates, exact re-rank, "
        "10% exploration) for random users, one keep-alive connection per client thread, "
        "client and server on the same machine over loopback; one serve process, async "
        f"handlers, uvicorn with {http_stack()}. In-app: the server's own request histogram "
        "(routing, validation, recommender, JSON); the rest is the HTTP stack and queueing.",
        "",
        "| concurrent clients | requests | p50 ms | p99 ms | max ms | requests/s "
        "| in-app mean ms |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in r["load"]:
        lines.append(
            f"| {row['clients']} | {row['requests']:,} | {row['p50_ms']:.2f} | "
            f"{row['p99_ms']:.2f} | {row['max_ms']:.1f} | {row['rps']:,.0f} | "
            f"{row['app_mean_ms']:.2f} |"
        )
    lines.append("")
    if f:
        lines += [
            f"Freshness (a rating produced to Kafka until the served prediction of its pair "
            f"changes; real consumer publishing every {f['publish_every_seconds']:g} s, "
            f"{f['events']} events): p50 **{f['p50_s']:.2f} s**, p99 **{f['p99_s']:.2f} s** "
            f"(max {f['max_s']:.2f} s).",
            "",
        ]
    lines += [
        f"Memory: RSS {r['rss_mib']:.0f} MiB with the state, {r['rss_empty_mib']:.0f} MiB "
        f"empty: about **{r['mib_per_million_items']:,.0f} MiB per million items** "
        f"(extrapolated from {r['items']:,}, the users' share included); "
        f"{r['rss_after_load_mib']:.0f} MiB after the load.",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=2000, help="Per client at 1 client.")
    ap.add_argument("--fresh", type=int, default=30, help="Events for the freshness test.")
    ap.add_argument(
        "--out-section", action="store_true", help="Rewrite the serving section of BENCHMARKS.md."
    )
    args = ap.parse_args()
    command = " ".join([".venv/bin/python", "bench/serving.py", *sys.argv[1:]])
    with tempfile.TemporaryDirectory() as tmp:
        external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if external:
            result = run(args, external, Path(tmp))
        else:
            with EmbeddedBroker(log_file=Path(tmp) / "tansu.log") as broker:
                result = run(args, broker.bootstrap_servers, Path(tmp))
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode(), file=sys.stderr)
    text = markdown(result, command)
    if args.out_section:
        replace_section(ROOT / "BENCHMARKS.md", "serving", text)
    else:
        print(text)


if __name__ == "__main__":
    main()
