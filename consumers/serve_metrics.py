"""The metrics of a ``serve`` process: request counts and latencies by route, and the state.

Request instruments are updated by :class:`Instrumented` (ASGI middleware); what the served
state holds is read from it when Prometheus scrapes, so requests pay nothing for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as AsgiMessage

from stream.serving.state import ServingState

__all__ = ["PREFIX", "Instrumented", "ServeMetrics"]

PREFIX = "feedback_loop_serve"


class ServeMetrics:
    """The metrics of one ``serve`` process, on their own registry.

    Request counts and latencies are instruments (see :class:`Instrumented`); what the
    state holds is read from it when Prometheus scrapes, so requests pay nothing for it.
    """

    def __init__(self, state: ServingState, ready: Callable[[], bool]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            f"{PREFIX}_requests",
            "HTTP requests answered, by route and status.",
            ["endpoint", "status"],
            registry=r,
        )
        self.seconds = Histogram(
            f"{PREFIX}_request_seconds",
            "Time to answer one HTTP request, by route.",
            ["endpoint"],
            registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
        )
        self.accepted = Counter(
            f"{PREFIX}_events_accepted",
            "Events posted, validated and acknowledged by Kafka.",
            registry=r,
        )
        self.rejected = Counter(
            f"{PREFIX}_events_rejected",
            "Events posted and refused (nothing published), by kind.",
            ["kind"],
            registry=r,
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
            "model_version",
            "Model version of the served state (-1: none yet).",
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


class Instrumented:
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
