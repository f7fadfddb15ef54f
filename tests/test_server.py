"""`feedback-loop serve` over real HTTP, on the embedded broker, fed by a real consumer.

One consumer (publishing its model state) and one server run for the whole module: the
simulated stream is applied once, then each test asks the server over loopback HTTP. The
swap test changes the model version, so it runs last.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from consumers.loop import FeedbackConsumer
from consumers.server import create_app
from producers.simulator import Simulator, SimulatorConfig
from stream.config import RetrainConfig, ServingConfig, Settings
from stream.events import ModelActivated, RatingEvent, UserProfileEvent, encode_event
from stream.kafka.broker import ensure_topics
from stream.kafka.control import publish_control
from stream.kafka.model_state import ModelStatePublisher
from stream.kafka.publisher import EventPublisher
from stream.lifecycle import ModelRegistry
from stream.models import ModelBundle
from stream.serving.recommender import Recommender
from stream.serving.records import ItemState, ModelMeta, UserState, encode_record
from stream.serving.state import ServingState
from tests.helpers import child_env, isolated_settings, read_topic, wait_until

pytestmark = pytest.mark.integration

N_EVENTS = 20_000
COLD_USER = "cold-user-1"
METRIC_NAMES = (
    "feedback_loop_serve_requests_total",
    "feedback_loop_serve_request_seconds",
    "feedback_loop_serve_state_age_seconds",
    "feedback_loop_serve_model_version",
    "feedback_loop_serve_items",
    "feedback_loop_serve_users",
    "feedback_loop_serve_ready",
    "feedback_loop_serve_events_accepted_total",
    "feedback_loop_serve_events_rejected_total",
    "feedback_loop_serve_state_records_total",
)


def serving_settings(bootstrap: str, tmp: Path) -> Settings:
    """Isolated settings with a model-state topic and a registry of their own."""
    s = isolated_settings(bootstrap, tmp / "state")
    tag = s.topics.events.split(".")[0]
    s = s.model_copy(
        update={
            "topics": s.topics.model_copy(update={"model_state": f"{tag}.model-state"}),
            "retrain": RetrainConfig(registry_dir=tmp / "registry"),
            # The ANN index even for a small catalogue, so its recall is what is measured.
            "serving": ServingConfig(ann_min_items=0, candidates=50),
        }
    )
    ensure_topics(bootstrap, s.topics, kafka=s.kafka)
    return s


class ServerThread:
    """A uvicorn server for ``app`` on a free loopback port, in a thread of this process."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY on accepted connections only
        # when the listening socket says it is TCP (else every answer waits ~40 ms for
        # the peer's delayed ACK).
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", access_log=False, log_config=None)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> ServerThread:
        self.thread.start()
        wait_until(lambda: self.server.started, "server started", timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


@dataclass
class Loop:
    settings: Settings
    server: ServerThread
    http: httpx.Client
    consumer: FeedbackConsumer
    sim: Simulator
    sent: int  # messages published to the events topic before the server started

    @property
    def state(self) -> ServingState:
        state: ServingState = self.server.app.state.serving
        return state

    @property
    def recommender(self) -> Recommender:
        rec: Recommender = self.server.app.state.recommender
        return rec


def publish_simulation(settings: Settings, sim: Simulator) -> int:
    pub = EventPublisher(
        settings.bootstrap_servers or "", settings.topics.events, kafka=settings.kafka
    )
    profiles = list(sim.profiles())
    for p in profiles:
        pub.publish(p)
    # A user announced by a profile, with no event: a cold start for the server.
    first = next(p for p in profiles if isinstance(p, UserProfileEvent))
    pub.publish(first.model_copy(update={"user_id": COLD_USER, "event_id": "cold-profile"}))
    for e in sim.events(N_EVENTS):
        pub.publish(e)
    stats = pub.flush()
    assert stats.failed == 0
    return stats.sent


@pytest.fixture(scope="module")
def loop(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    settings = serving_settings(bootstrap, tmp_path_factory.mktemp("serve"))
    sim = Simulator(SimulatorConfig(n_users=300, n_items=1000, seed=11))
    sent = publish_simulation(settings, sim)
    consumer = FeedbackConsumer(settings, bootstrap)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            consumer.run()
        except BaseException as err:  # surfaced by the fixture's teardown
            errors.append(err)

    thread = threading.Thread(target=run, name="consumer", daemon=True)
    thread.start()
    with (
        ServerThread(create_app(settings, bootstrap)) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        loop = Loop(settings, server, http, consumer, sim, sent)
        # The whole stream applied by the consumer and its state applied by the server.
        wait_until(
            lambda: loop.state.meta is not None and loop.state.meta.consumed >= sent,
            "the server caught up with the consumer",
            timeout=120,
        )
        wait_until(lambda: http.get("/readyz").status_code == 200, "ready", timeout=60)
        yield loop
    consumer.request_stop()
    thread.join(timeout=60)
    assert not errors, errors


def warm_users(loop: Loop, n: int) -> list[str]:
    users = []
    for uid in loop.sim.user_ids:
        u = loop.state.user(uid)
        if u is not None and u.implicit_vector is not None and u.seen:
            users.append(uid)
        if len(users) == n:
            break
    assert len(users) == n
    return users


# --- recommendations -------------------------------------------------------------------------


def test_warm_user_gets_personalized_items_not_seen_before(loop: Loop) -> None:
    (uid,) = warm_users(loop, 1)
    r = loop.http.get(f"/recommendations/{uid}", params={"k": 10, "policy": "model"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user_id"] == uid and body["user_kind"] == "warm" and body["policy"] == "model"
    assert body["model_version"] == 0
    assert body["state_age_seconds"] >= 0
    items = body["items"]
    assert [i["position"] for i in items] == list(range(10))
    assert len({i["item_id"] for i in items}) == 10
    assert {i["reason"] for i in items} == {"personalized"}
    assert all(0 < i["propensity"] <= 1 for i in items)
    scores = [i["score"] for i in items]
    assert scores == sorted(scores, reverse=True)
    seen = set((loop.state.user(uid) or UserState(uid)).seen)
    assert seen and not seen & {i["item_id"] for i in items}
    # With the seen items allowed, the answer is still a valid slate.
    again = loop.http.get(f"/recommendations/{uid}", params={"k": 10, "exclude_seen": "false"})
    assert again.status_code == 200 and len(again.json()["items"]) == 10
    assert again.json()["request_id"] != body["request_id"]


def test_exploration_marks_the_explored_slots(loop: Loop) -> None:
    (uid,) = warm_users(loop, 1)
    r = loop.http.get(f"/recommendations/{uid}", params={"k": 20, "exploration": 1.0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["policy"] == "explore"
    assert {i["reason"] for i in body["items"]} == {"exploration"}
    none = loop.http.get(f"/recommendations/{uid}", params={"k": 20, "exploration": 0.0})
    assert "exploration" not in {i["reason"] for i in none.json()["items"]}


def test_cold_start_and_unknown_users(loop: Loop) -> None:
    cold = loop.http.get(f"/recommendations/{COLD_USER}", params={"k": 5, "policy": "model"})
    assert cold.status_code == 200, cold.text
    assert cold.json()["user_kind"] == "cold_start"
    assert len(cold.json()["items"]) == 5
    assert {i["reason"] for i in cold.json()["items"]} <= {"cold_start", "popular"}
    unknown = loop.http.get("/recommendations/nobody-at-all", params={"k": 5})
    assert unknown.status_code == 200, unknown.text
    assert unknown.json()["user_kind"] == "unknown"
    assert len(unknown.json()["items"]) == 5


def test_other_policies(loop: Loop) -> None:
    (uid,) = warm_users(loop, 1)
    for policy, reason in (("popular", "popular"), ("random", "random")):
        r = loop.http.get(f"/recommendations/{uid}", params={"k": 7, "policy": policy})
        assert r.status_code == 200, r.text
        assert {i["reason"] for i in r.json()["items"]} == {reason}
        assert len(r.json()["items"]) == 7


def test_bad_requests_get_4xx_with_reasons(loop: Loop) -> None:
    for k in ("0", "1001", "ten"):
        r = loop.http.get("/recommendations/u1", params={"k": k})
        assert r.status_code == 422, (k, r.text)
        assert r.json()["reason"].startswith("k:"), r.json()
    r = loop.http.get("/recommendations/u1", params={"policy": "telepathy"})
    assert r.status_code == 422
    assert "policy" in r.json()["reason"] and "'explore'" in r.json()["reason"]
    r = loop.http.get("/recommendations/u1", params={"exploration": "1.5"})
    assert r.status_code == 422 and r.json()["reason"].startswith("exploration:")
    r = loop.http.get("/users/u1/items/no-such-item")
    assert r.status_code == 404
    assert r.json()["reason"] == "unknown item 'no-such-item'"


def test_ann_top_10_agrees_with_exact_top_10(loop: Loop) -> None:
    users = warm_users(loop, 150)
    hits = 0
    for uid in users:
        r = loop.http.get(f"/recommendations/{uid}", params={"k": 10, "policy": "model"})
        assert r.status_code == 200, r.text
        served = {i["item_id"] for i in r.json()["items"]}
        exact = set(loop.recommender.exact_top_k(uid, 10, exclude_seen=True))
        hits += len(served & exact)
    recall = hits / (10 * len(users))
    assert recall >= 0.95, recall


# --- predictions and events ----------------------------------------------------------------


def predict(loop: Loop, uid: str, iid: str) -> dict[str, Any]:
    r = loop.http.get(f"/users/{uid}/items/{iid}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_prediction_of_a_pair(loop: Loop) -> None:
    (uid,) = warm_users(loop, 1)
    iid = loop.sim.item_ids[0]
    p = predict(loop, uid, iid)
    s = loop.settings.limits
    assert p["user_id"] == uid and p["item_id"] == iid and p["model_version"] == 0
    assert s.rating_min <= p["rating"] <= s.rating_max
    assert 0 < p["click_probability"] < 1
    with_context = loop.http.get(f"/users/{uid}/items/{iid}", params={"device": "tv", "hour": 3})
    assert with_context.status_code == 200


def rating(uid: str, iid: str, value: float, event_id: str | None = None) -> dict[str, Any]:
    e = RatingEvent(
        event_id=event_id or f"http-{uuid.uuid4().hex}",
        user_id=uid,
        item_id=iid,
        ts=time.time(),
        rating=value,
    )
    return dict(RatingEvent.model_validate_json(encode_event(e)).model_dump(mode="json"))


def test_a_posted_event_is_applied_and_changes_the_served_score(loop: Loop) -> None:
    (uid,) = warm_users(loop, 1)
    seen = (loop.state.user(uid) or UserState(uid)).seen
    iid = next(i for i in loop.sim.item_ids if i not in seen)
    before = predict(loop, uid, iid)["rating"]
    target = 1.0 if before > 3 else 5.0
    event = rating(uid, iid, target)
    r = loop.http.post("/events", json=event)
    assert r.status_code == 202, r.text
    assert r.json() == {"count": 1, "event_ids": [event["event_id"]]}

    def moved() -> bool:
        return predict(loop, uid, iid)["rating"] != before

    wait_until(moved, "the served rating reflects the posted event", timeout=60)
    after = predict(loop, uid, iid)["rating"]
    assert abs(target - after) < abs(target - before)  # learned towards the posted rating


def test_bad_events_are_refused_and_nothing_is_published(loop: Loop) -> None:
    uid, iid = loop.sim.user_ids[0], loop.sim.item_ids[0]
    good = rating(uid, iid, 4, "bad-batch-good")
    r = loop.http.post(
        "/events",
        content=b'{"type": "rating", "event_id"',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400 and r.json()["reason"].startswith("malformed JSON")
    cases = [
        (
            {"type": "teleport", "event_id": "bad-1", "user_id": uid, "ts": 1.7e9},
            "unknown_type",
            "unknown event type 'teleport'",
        ),
        (
            rating(uid, iid, 4, "bad-2") | {"rating": 11},
            "invalid_event",
            "rating 11.0 is outside the scale",
        ),
        (rating(uid, iid, 4, "bad-3") | {"colour": "red"}, "invalid_event", "colour"),
        ("just a string", "malformed_json", "JSON object"),
    ]
    for bad, kind, reason in cases:
        r = loop.http.post("/events", json=[good, bad])  # all or nothing
        assert r.status_code == 422, r.text
        body = r.json()
        assert "none was published" in body["reason"]
        (error,) = body["errors"]
        assert error["index"] == 1 and error["kind"] == kind and reason in error["reason"]
    r = loop.http.post("/events", json=[])
    assert r.status_code == 422
    # A sentinel published after them: reading up to it shows the refused ones never were.
    sentinel = rating(uid, iid, 4, f"sentinel-{uuid.uuid4().hex}")
    assert loop.http.post("/events", json=[sentinel]).status_code == 202
    ids = [m.value() for m in read_topic(loop.settings, loop.settings.topics.events)]
    assert any(sentinel["event_id"].encode() in v for v in ids if v)
    assert not [v for v in ids if v and b'"bad-' in v]
    assert not [v for v in ids if v and b'"bad-batch-good"' in v]


# --- operations ------------------------------------------------------------------------------


def test_metrics_and_docs(loop: Loop) -> None:
    (uid,) = warm_users(loop, 1)
    loop.http.get(f"/recommendations/{uid}")
    text = loop.http.get("/metrics").text
    for name in METRIC_NAMES:
        assert name in text, name
    route = '{endpoint="/recommendations/{user_id}",status="200"}'
    assert f"feedback_loop_serve_requests_total{route}" in text
    assert "feedback_loop_serve_ready 1.0" in text
    assert f"feedback_loop_serve_items {float(loop.state.n_items)}" in text
    assert loop.http.get("/healthz").json() == {"status": "ok"}
    spec = loop.http.get("/openapi.json").json()
    assert {
        "/recommendations/{user_id}",
        "/users/{user_id}/items/{item_id}",
        "/events",
        "/readyz",
    } <= set(spec["paths"])
    schemas = set(spec["components"]["schemas"])
    assert {"RecommendationsOut", "PredictionOut", "RatingEvent"} <= schemas
    assert loop.http.get("/docs").status_code == 200


def test_readyz_waits_for_model_state(bootstrap: str, tmp_path: Path) -> None:
    settings = serving_settings(bootstrap, tmp_path)
    with (
        ServerThread(create_app(settings, bootstrap)) as server,
        httpx.Client(base_url=server.url, timeout=10) as http,
    ):
        r = http.get("/readyz")
        assert r.status_code == 503 and not r.json()["ready"]
        assert settings.topics.model_state in r.json()["reason"]
        assert http.get("/recommendations/u1").status_code == 503
        assert "not ready" in http.get("/recommendations/u1").json()["reason"]
        assert http.get("/healthz").status_code == 200
        pub = ModelStatePublisher(bootstrap, settings.topics.model_state, kafka=settings.kafka)
        item = ItemState("i1", 0.0, (0.1, 0.2), 0.0, (0.3, 0.1), {"genres": ["Drama"]}, 3)
        meta = ModelMeta(
            version=0,
            sequence=1,
            snapshot=True,
            published_at=time.time(),
            consumed=1,
            global_mean=3.5,
            rating_min=1,
            rating_max=5,
        )
        pub.publish([encode_record(item), encode_record(meta)])
        assert pub.flush() == 0
        wait_until(lambda: http.get("/readyz").status_code == 200, "ready", timeout=60)
        assert http.get("/readyz").json()["items"] == 1
        r = http.get("/recommendations/anyone", params={"k": 1, "policy": "model"})
        assert r.status_code == 200 and r.json()["items"][0]["item_id"] == "i1"


def test_posted_item_profiles_reach_every_partition_and_interactions_one(
    bootstrap: str, tmp_path: Path
) -> None:
    # Each partition's learner knows only the items whose profiles its partition holds.
    s = isolated_settings(bootstrap, tmp_path / "state")
    s = s.model_copy(update={"topics": s.topics.model_copy(update={"events_partitions": 3})})
    ensure_topics(bootstrap, s.topics, kafka=s.kafka)
    tag = uuid.uuid4().hex[:8]
    item_event = f"item-{tag}"
    item = {"type": "item_profile", "event_id": item_event, "item_id": f"i-{tag}", "ts": 1.7e9}
    ratings = [rating(f"u{n}-{tag}", f"i-{tag}", 4, f"rating-{n}-{tag}") for n in range(6)]
    with (
        ServerThread(create_app(s, bootstrap)) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        r = http.post("/events", json=[item, *ratings])
        assert r.status_code == 202, r.text
        assert r.json()["count"] == 7  # an event, however many copies
    on_topic = read_topic(s, s.topics.events)
    copies = [m.partition() or 0 for m in on_topic if item_event.encode() in (m.value() or b"")]
    assert sorted(copies) == [0, 1, 2]
    for e in ratings:
        assert sum(e["event_id"].encode() in (m.value() or b"") for m in on_topic) == 1
    assert len(on_topic) == 3 + len(ratings)


def test_a_swap_changes_the_served_model_version(loop: Loop) -> None:
    s = loop.settings
    (uid,) = warm_users(loop, 1)
    registry = ModelRegistry(s.retrain.registry_dir)
    fresh = ModelBundle.fresh(
        s.model, s.limits.rating_min, s.limits.rating_max, s.limits.dwell_cap_seconds
    )
    version = registry.publish(fresh, {"event_index": 0}).version
    registry.set_current(version)
    publish_control(
        s.bootstrap_servers or "",
        s.topics.control,
        ModelActivated(version=version),
        kafka=s.kafka,
    )

    def served_version() -> int:
        r = loop.http.get(f"/recommendations/{uid}", params={"policy": "model"})
        assert r.status_code == 200, r.text
        v: int = r.json()["model_version"]
        return v

    wait_until(lambda: served_version() == version, f"model version {version} served", timeout=120)
    assert predict(loop, uid, loop.sim.item_ids[0])["model_version"] == version


# --- the command -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_serve_command_runs_and_stops_on_sigterm(bootstrap: str, tmp_path: Path) -> None:
    settings = serving_settings(bootstrap, tmp_path)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.app", "serve", "--port", str(port)],
        env=child_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(up, "serve answers /healthz", timeout=60, proc=proc)
        assert httpx.get(f"{url}/readyz").status_code == 503
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_needs_a_cluster() -> None:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    proc = subprocess.run(
        [sys.executable, "-m", "cli.app", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "KAFKA_BOOTSTRAP_SERVERS" in proc.stderr
