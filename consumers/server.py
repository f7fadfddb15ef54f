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

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import orjson
from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import generate_latest
from pydantic import BaseModel, Field, TypeAdapter

from consumers.event_intake import (
    DELIVERY_TIMEOUT_SECONDS,
    BodyRefused,
    DeliveryFailed,
    EventError,
    EventSink,
    validate_events,
)
from consumers.serve_metrics import Instrumented, ServeMetrics
from consumers.state_follower import StateFollowerThread
from stream.config import Settings
from stream.events import Context, Event
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
        ready=ready,
        reason=reason,
        model_version=None if meta is None else meta.version,
        state_age_seconds=age,
        users=state.n_users,
        items=state.n_items,
    )


def create_app(settings: Settings, bootstrap_servers: str) -> FastAPI:
    """The HTTP service; its lifespan starts the state follower and the events producer."""
    state = ServingState.from_config(settings.serving)
    recommender = Recommender(state, settings.serving)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        follower = StateFollowerThread(
            bootstrap_servers, settings.topics.model_state, state, kafka=settings.kafka
        )
        follower.start()
        app.state.follower = follower
        app.state.sink = EventSink(
            bootstrap_servers,
            settings.topics.events,
            DELIVERY_TIMEOUT_SECONDS,
            kafka=settings.kafka,
        )
        log.info(
            "following %s; posting events to %s",
            settings.topics.model_state,
            settings.topics.events,
        )
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
    app.add_middleware(Instrumented, metrics=metrics)
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
            user_id=rec.user_id,
            user_kind=rec.user_kind,
            policy=rec.policy,
            model_version=rec.model_version,
            state_age_seconds=rec.state_age_seconds,
            request_id=rec.request_id,
            items=[
                RecommendedItem(
                    item_id=r.item_id,
                    score=r.score,
                    reason=r.reason,
                    position=r.position,
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
            user_id=p.user_id,
            item_id=p.item_id,
            rating=p.rating,
            click_probability=p.click_probability,
            model_version=p.model_version,
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
            await app.state.sink.publish(events)
        except DeliveryFailed as err:
            return _problem(503, f"events not acknowledged by Kafka: {err}")
        metrics.accepted.inc(len(events))
        return EventsAccepted(count=len(events), event_ids=[e.event_id for e in events])

    @app.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        response_model=Readiness,
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
        "application/json": {"schema": {k: v for k, v in _EVENTS_SCHEMA.items() if k != "$defs"}}
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
