"""The ``serve`` process: recommendations and predictions over HTTP from the live models' state.

:func:`create_app` builds a FastAPI application that follows the model-state topic (a
:class:`~consumers.state_follower.StateFollowerThread` applying records to a
:class:`~stream.serving.state.ServingState`), answers from a
:class:`~stream.serving.recommender.Recommender`, and publishes events posted to ``/events`` to
the events topic, so an application can close the loop over HTTP:

============================================ ================================================
``GET /recommendations/{user_id}``            ranked items, why each is there, model version
``GET /users/{user_id}/items/{item_id}``      predicted rating and click probability
``POST /events``                              one event or a JSON array, validated, published
``GET /healthz`` / ``GET /readyz``            alive / caught up with the model-state topic
``GET /metrics``                              Prometheus text (``feedback_loop_serve_*``)
``GET /docs`` / ``GET /openapi.json``         the OpenAPI description
============================================ ================================================

Each process is an independent reader of the model-state topic (no consumer group), so any
number of them can serve side by side behind a load balancer.

``POST /events`` validates every event with the project's codec and the settings' limits
before publishing any (all or nothing), and answers 202 only once the broker has acknowledged
every one: an accepted event is never lost. A 503 on delivery may leave some of the batch
published; posting the same events again is safe because the consumer de-duplicates on
``event_id``.

>>> from stream.config import Settings
>>> app = create_app(Settings(), "127.0.0.1:9092")  # no I/O until the lifespan starts
>>> sorted(r.path for r in app.routes if r.path.startswith(("/rec", "/users", "/events")))
['/events', '/recommendations/{user_id}', '/users/{user_id}/items/{item_id}']
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import orjson
from confluent_kafka import KafkaError, Message, Producer
from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import BaseModel, Field, TypeAdapter
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as AsgiMessage

from consumers.state_follower import StateFollowerThread
from stream.config import Settings
from stream.events import Context, Event, InvalidEvent, decode_event, encode_event
from stream.kafka import clients
from stream.kafka.publisher import event_key
from stream.serving.recommender import (
    NotReady,
    Policy,
    Reason,
    Recommender,
    UnknownItem,
    UserKind,
)
from stream.serving.state import ServingState

log = logging.getLogger(__name__)

PREFIX = "feedback_loop_serve"
#: Events one ``POST /events`` may carry (a bigger batch gets 413: split it).
MAX_EVENTS_PER_REQUEST = 10_000
#: Seconds to wait for the broker to acknowledge posted events before answering 503.
DELIVERY_TIMEOUT_SECONDS = 15.0

Device = Literal["mobile", "desktop", "tablet", "tv"]


# --- response bodies (what /openapi.json documents) ----------------------------------------


class Problem(BaseModel):
    """Every error answer: one line saying what is wrong."""

    reason: str


class RecommendedItem(BaseModel):
    item_id: str
    score: float = Field(description="The implicit model's preference in (0, 1).")
    reason: Reason = Field(description="Why the item is in the slate.")
    position: int = Field(description="0-based slot.")
    propensity: float = Field(
        description="Probability that this policy put this item at this position."
    )


class RecommendationsOut(BaseModel):
    user_id: str
    user_kind: UserKind
    policy: Policy
    model_version: int
    state_age_seconds: float
    request_id: str
    items: list[RecommendedItem]


class PredictionOut(BaseModel):
    user_id: str
    item_id: str
    rating: float
    click_probability: float
    model_version: int
    state_age_seconds: float


class EventsAccepted(BaseModel):
    count: int
    event_ids: list[str]


class EventError(BaseModel):
    index: int = Field(description="Position of the event in the posted array (0: single).")
    kind: str = Field(description="malformed_json, unknown_type or invalid_event.")
    event_type: str
    reason: str


class EventsRejected(BaseModel):
    reason: str
    errors: list[EventError]


class Readiness(BaseModel):
    ready: bool
    reason: str
    model_version: int | None
    state_age_seconds: float | None
    users: int
    items: int


# --- metrics ---------------------------------------------------------------------------------


class ServeMetrics:
    """The metrics of one ``serve`` process, on their own registry.

    Request counts and latencies are instruments (see :class:`_Instrumented`); what the
    state holds is read from it when Prometheus scrapes, so requests pay nothing for it.
    """

    def __init__(self, state: ServingState, ready: Callable[[], bool]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            f"{PREFIX}_requests", "HTTP requests answered, by route and status.",
            ["endpoint", "status"], registry=r,
        )
        self.seconds = Histogram(
            f"{PREFIX}_request_seconds", "Time to answer one HTTP request, by route.",
            ["endpoint"], registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
        )
        self.accepted = Counter(
            f"{PREFIX}_events_accepted", "Events posted, validated and acknowledged by Kafka.",
            registry=r,
        )
        self.rejected = Counter(
            f"{PREFIX}_events_rejected", "Events posted and refused (nothing published), by kind.",
            ["kind"], registry=r,
        )
        for kind in ("malformed_json", "unknown_type", "invalid_event"):
            self.rejected.labels(kind)
        r.register(_StateCollector(state, ready))


class _StateCollector(Collector):
    """Gauges of the served state, read at scrape time."""

    def __init__(self, state: ServingState, ready: Callable[[], bool]) -> None:
        self.state = state
        self.ready = ready

    def collect(self) -> Iterator[Metric]:
        state, meta = self.state, self.state.meta
        age = state.age_seconds()

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=value)

        yield gauge(
            "state_age_seconds",
            "Seconds since the last applied model state was published (-1: none yet).",
            -1.0 if age is None else age,
        )
        yield gauge(
            "model_version", "Model version of the served state (-1: none yet).",
            -1.0 if meta is None else meta.version,
        )
        yield gauge("items", "Items in the served state.", state.n_items)
        yield gauge("users", "Users in the served state.", state.n_users)
        yield gauge("ready", "1 once caught up with the model-state topic.", float(self.ready()))
        records = CounterMetricFamily(
            f"{PREFIX}_state_records", "Model-state records read, by outcome.", labels=["outcome"]
        )
        records.add_metric(["applied"], state.records_applied)
        records.add_metric(["invalid"], state.records_invalid)
        yield records


class _Instrumented:
    """Pure ASGI middleware: count and time every request by its route template.

    The route template (``/recommendations/{user_id}``), not the path, is the label: ids
    would make the label set unbounded.
    """

    def __init__(self, app: ASGIApp, metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: AsgiMessage) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            # The router records the matched route in the (shared) scope.
            endpoint = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.seconds.labels(endpoint).observe(time.perf_counter() - started)


# --- publishing posted events ----------------------------------------------------------------


class BodyRefused(ValueError):
    """A posted body that holds no events to validate (not JSON, empty, too many)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class DeliveryFailed(RuntimeError):
    """The broker did not acknowledge every event of a request."""


class EventSink:
    """Publishes events and lets a request await the broker's acknowledgement of its own.

    One idempotent producer per process; a thread serves its delivery reports, which resolve
    each request's future on the event loop.
    """

    def __init__(self, bootstrap_servers: str, topic: str, timeout: float) -> None:
        self.topic = topic
        self.timeout = timeout
        config = clients.producer_config(bootstrap_servers, linger_ms=1)
        # librdkafka gives up on a message after this and reports the failure: every
        # request's future resolves, one way or the other.
        config["message.timeout.ms"] = int(timeout * 1000)
        self._producer = Producer(config)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="event-sink", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    async def publish(self, records: list[tuple[bytes | None, bytes]]) -> None:
        """Produce every (key, value); return once all are acknowledged, else raise."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[list[str]] = loop.create_future()
        errors: list[str] = []
        pending = len(records)
        lock = threading.Lock()

        def resolve() -> None:
            if not done.done():
                done.set_result(errors)

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            nonlocal pending
            with lock:
                if err is not None:
                    errors.append(str(err))
                pending -= 1
                last = pending == 0
            if last:
                with contextlib.suppress(RuntimeError):  # the loop closed at shutdown
                    loop.call_soon_threadsafe(resolve)

        for key, value in records:
            try:
                self._producer.produce(self.topic, value, key, on_delivery=on_delivery)
            except BufferError:
                raise DeliveryFailed("the local produce queue is full; retry") from None
        try:
            failures = await asyncio.wait_for(done, self.timeout + 5)
        except TimeoutError:
            raise DeliveryFailed(f"not acknowledged within {self.timeout:.0f}s") from None
        if failures:
            raise DeliveryFailed(f"{len(failures)} not delivered: {failures[0]}")

    def close(self) -> None:
        remaining = self._producer.flush(self.timeout)
        if remaining:
            log.warning("%d posted events undelivered at shutdown", remaining)
        self._stop.set()
        self._thread.join()


def validate_events(body: bytes, settings: Settings) -> tuple[list[Event], list[EventError]]:
    """The valid events of a posted body and the reason of each invalid one.

    Raise :class:`BodyRefused` when the body is not an event or an array of them.

    The same codec as the consumer's admission, so what is refused here would have been
    dead-lettered there (except unknown users and items: the consumer decides those).

    >>> ok, errors = validate_events(b'[{"type": "teleport", "event_id": "e", "ts": 1.7e9}]',
    ...                              Settings())
    >>> ok, errors[0].kind, errors[0].reason.split(";")[0]
    ([], 'unknown_type', "unknown event type 'teleport'")
    >>> validate_events(b'{"type": ', Settings())
    Traceback (most recent call last):
    ...
    consumers.server.BodyRefused: malformed JSON: unexpected end of data: line 1 column 10 (char 9)
    """
    try:
        parsed: Any = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise BodyRefused(400, f"malformed JSON: {err}") from None
    items = parsed if isinstance(parsed, list) else [parsed]
    if not items:
        raise BodyRefused(422, "no events: post one event object or a non-empty array")
    if len(items) > MAX_EVENTS_PER_REQUEST:
        raise BodyRefused(
            413, f"{len(items)} events: at most {MAX_EVENTS_PER_REQUEST} in one request"
        )
    events: list[Event] = []
    errors: list[EventError] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            errors.append(EventError(
                index=i, kind="malformed_json", event_type="invalid",
                reason=f"an event is a JSON object, not {type(item).__name__}",
            ))
            continue
        try:
            events.append(decode_event(orjson.dumps(item), settings.limits))
        except InvalidEvent as err:
            errors.append(
                EventError(index=i, kind=err.kind, event_type=err.event_type, reason=err.reason)
            )
    return events, errors


# --- the application -------------------------------------------------------------------------


def _problem(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"reason": reason}, status_code=status)


def _readiness(app: FastAPI) -> Readiness:
    state: ServingState = app.state.serving
    follower: StateFollowerThread | None = getattr(app.state, "follower", None)
    meta, age = state.meta, state.age_seconds()
    topic = app.state.settings.topics.model_state
    if follower is None:
        ready, reason = False, "not started"
    elif follower.error is not None or not follower.is_alive():
        ready, reason = False, f"the follower of {topic} stopped: {follower.error}"
    elif follower.ready.is_set():
        ready, reason = True, f"caught up with {topic}"
    elif meta is None:
        ready = False
        reason = (
            f"no model state on {topic} yet ({state.records_applied} records read): "
            "is a consumer publishing state?"
        )
    else:
        ready, reason = False, f"catching up with {topic} ({state.records_applied} records read)"
    return Readiness(
        ready=ready, reason=reason, model_version=None if meta is None else meta.version,
        state_age_seconds=age, users=state.n_users, items=state.n_items,
    )


def create_app(settings: Settings, bootstrap_servers: str) -> FastAPI:
    """The HTTP service; its lifespan starts the state follower and the events producer."""
    state = ServingState.from_config(settings.serving)
    recommender = Recommender(state, settings.serving)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        follower = StateFollowerThread(bootstrap_servers, settings.topics.model_state, state)
        follower.start()
        app.state.follower = follower
        app.state.sink = EventSink(
            bootstrap_servers, settings.topics.events, DELIVERY_TIMEOUT_SECONDS
        )
        log.info("following %s; posting events to %s",
                 settings.topics.model_state, settings.topics.events)
        try:
            yield
        finally:
            app.state.sink.close()
            follower.stop()

    app = FastAPI(
        title="feedback-loop serve",
        summary="Recommendations from the live models; events back into the loop.",
        version="1",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.serving = state
    app.state.recommender = recommender
    metrics = ServeMetrics(state, lambda: _readiness(app).ready)
    app.state.metrics = metrics
    app.add_middleware(_Instrumented, metrics=metrics)
    not_ready: dict[int | str, dict[str, Any]] = {
        503: {"model": Problem, "description": "No model state yet."}
    }

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, err: RequestValidationError) -> JSONResponse:
        # One line with every problem, plus FastAPI's structured list.
        parts = []
        for e in err.errors():
            loc = ".".join(str(p) for p in e.get("loc", ())[1:])
            parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
        detail = orjson.loads(orjson.dumps(err.errors(), default=str))
        return JSONResponse({"reason": "; ".join(parts), "detail": detail}, status_code=422)

    @app.get(
        "/recommendations/{user_id}",
        response_model=RecommendationsOut,
        responses={**not_ready, 422: {"model": Problem}},
        summary="Top-k items for a user",
    )
    async def recommendations(
        user_id: Annotated[str, Path(min_length=1, max_length=256)],
        k: Annotated[int, Query(ge=1, le=1000, description="Slate size.")] = 10,
        policy: Annotated[Policy, Query(description="Who chooses the items.")] = "explore",
        exclude_seen: Annotated[
            bool, Query(description="Leave out items the user clicked or rated.")
        ] = True,
        exploration: Annotated[
            float | None,
            Query(ge=0, le=1, description="Share of exploration slots (default: settings)."),
        ] = None,
        device: Device | None = None,
        hour: Annotated[int | None, Query(ge=0, le=23)] = None,
        weekday: Annotated[int | None, Query(ge=0, le=6)] = None,
    ) -> RecommendationsOut | JSONResponse:
        context = _context(device, hour, weekday)
        try:
            rec = recommender.recommend(user_id, k, policy, exclude_seen, exploration, context)
        except NotReady as err:
            return _problem(503, f"not ready: {err}")
        except ValueError as err:
            return _problem(422, str(err))
        return RecommendationsOut(
            user_id=rec.user_id, user_kind=rec.user_kind, policy=rec.policy,
            model_version=rec.model_version, state_age_seconds=rec.state_age_seconds,
            request_id=rec.request_id,
            items=[
                RecommendedItem(
                    item_id=r.item_id, score=r.score, reason=r.reason, position=r.position,
                    propensity=r.propensity,
                )
                for r in rec.items
            ],
        )

    @app.get(
        "/users/{user_id}/items/{item_id}",
        response_model=PredictionOut,
        responses={**not_ready, 404: {"model": Problem, "description": "Unknown item."}},
        summary="Predicted rating and click probability of one pair",
    )
    async def prediction(
        user_id: Annotated[str, Path(min_length=1, max_length=256)],
        item_id: Annotated[str, Path(min_length=1, max_length=256)],
        device: Device | None = None,
        hour: Annotated[int | None, Query(ge=0, le=23)] = None,
        weekday: Annotated[int | None, Query(ge=0, le=6)] = None,
    ) -> PredictionOut | JSONResponse:
        try:
            p = recommender.predict(user_id, item_id, _context(device, hour, weekday))
        except NotReady as err:
            return _problem(503, f"not ready: {err}")
        except UnknownItem:
            return _problem(404, f"unknown item {item_id!r}")
        return PredictionOut(
            user_id=p.user_id, item_id=p.item_id, rating=p.rating,
            click_probability=p.click_probability, model_version=p.model_version,
            state_age_seconds=p.state_age_seconds,
        )

    @app.post(
        "/events",
        status_code=202,
        response_model=EventsAccepted,
        responses={
            400: {"model": Problem, "description": "The body is not JSON."},
            413: {"model": Problem},
            422: {"model": EventsRejected, "description": "Invalid events; none published."},
            503: {"model": Problem, "description": "Kafka did not acknowledge them; retry."},
        },
        openapi_extra={"requestBody": _EVENTS_BODY},
        summary="Publish events (one object or an array) to the events topic",
    )
    async def post_events(request: Request) -> EventsAccepted | JSONResponse:
        try:
            events, errors = validate_events(await request.body(), settings)
        except BodyRefused as err:
            metrics.rejected.labels("malformed_json").inc()
            return _problem(err.status, err.reason)
        if errors:
            for e in errors:
                metrics.rejected.labels(e.kind).inc()
            body = EventsRejected(
                reason=f"{len(errors)} of {len(events) + len(errors)} events are invalid; "
                "none was published",
                errors=errors,
            )
            return JSONResponse(body.model_dump(), status_code=422)
        try:
            await app.state.sink.publish([(event_key(e), encode_event(e)) for e in events])
        except DeliveryFailed as err:
            return _problem(503, f"events not acknowledged by Kafka: {err}")
        metrics.accepted.inc(len(events))
        return EventsAccepted(count=len(events), event_ids=[e.event_id for e in events])

    @app.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz", response_model=Readiness,
        responses={503: {"model": Readiness, "description": "Not caught up yet."}},
        summary="Caught up with the model-state topic",
    )
    async def readyz() -> Readiness | JSONResponse:
        r = _readiness(app)
        return r if r.ready else JSONResponse(r.model_dump(), status_code=503)

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(
            generate_latest(metrics.registry), media_type="text/plain; version=0.0.4"
        )

    _document_event_schema(app)
    return app


def _context(device: Device | None, hour: int | None, weekday: int | None) -> Context | None:
    if device is None and hour is None and weekday is None:
        return None
    return Context(device=device, hour=hour, weekday=weekday)


# The /events body is read raw (validated by the project's codec, with the settings' limits),
# so its schema is declared by hand for the OpenAPI document.
_EVENTS_ADAPTER: TypeAdapter[Any] = TypeAdapter(Event | list[Event])
_EVENTS_SCHEMA = _EVENTS_ADAPTER.json_schema(ref_template="#/components/schemas/{model}")
_EVENTS_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {k: v for k, v in _EVENTS_SCHEMA.items() if k != "$defs"}
        }
    },
}


def _document_event_schema(app: FastAPI) -> None:
    """Add the event models the /events body refers to to the OpenAPI components."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in _EVENTS_SCHEMA.get("$defs", {}).items():
                components.setdefault(name, definition)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
