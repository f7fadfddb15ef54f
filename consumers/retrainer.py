"""The retrainer worker: retrain requests in, registry versions and announcements out.

It reads the control topic in its own consumer group. For each
:class:`~stream.kafka.control.RetrainRequest` it rebuilds the history the requesting consumer had
applied (the events topic up to the request's offsets, through the same filters), runs the
hyperparameter search and the champion/challenger comparison of :mod:`stream.lifecycle.retrain`,
stores the challenger in the registry (made current only if accepted) and announces it with
:class:`~stream.kafka.control.ModelPublished`, or :class:`~stream.kafka.control.RetrainFailed`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from stream.config import Settings
from stream.events import ModelPublished, RetrainFailed, RetrainRequest, decode_control
from stream.kafka import clients
from stream.kafka.control import publish_control
from stream.kafka.history import read_history
from stream.lifecycle import HoldoutLosses, ModelRegistry, TrainingData, retrain_with
from stream.observability.metrics import RetrainMetrics

log = logging.getLogger(__name__)


class RetrainWorker:
    """Serves retrain requests from the control topic until stopped."""

    def __init__(
        self,
        settings: Settings,
        bootstrap_servers: str,
        metrics: RetrainMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.bootstrap_servers = bootstrap_servers
        self.metrics = metrics
        self.registry = ModelRegistry(settings.retrain.registry_dir)
        self._stop = threading.Event()
        self.handled = 0

    def request_stop(self) -> None:
        self._stop.set()

    def run(self, max_requests: int | None = None) -> None:
        consumer = clients.group_consumer(
            self.bootstrap_servers,
            self.settings.retrain.group_id,
            kafka=self.settings.kafka,
            session_timeout_ms=self.settings.consumer.session_timeout_ms,
        )
        consumer.subscribe([self.settings.topics.control])
        log.info("retrainer waiting for requests on %s", self.settings.topics.control)
        try:
            while not self._stop.is_set():
                for msg in consumer.consume(10, 0.5):
                    if not clients.is_data(msg, source="control topic"):
                        continue
                    try:
                        request = decode_control(msg.value() or b"")
                    except ValueError as exc:
                        log.error("invalid control message at %s: %s", msg.offset(), exc)
                        continue
                    if isinstance(request, RetrainRequest):
                        self.handle(request)
                        self.handled += 1
                    # Committed once handled: a crash mid-retrain re-runs the request.
                    consumer.commit(message=msg, asynchronous=False)
                    if max_requests is not None and self.handled >= max_requests:
                        return
        finally:
            consumer.close()

    def handle(self, request: RetrainRequest) -> ModelPublished | RetrainFailed:
        """Retrain for one request and announce the result on the control topic."""
        started = time.perf_counter()
        if self.metrics is not None:
            self.metrics.in_progress.set(1)
        try:
            answer: ModelPublished | RetrainFailed = self._retrain(request)
        except Exception as err:  # any failure is reported, never swallowed
            log.exception("retrain %s failed", request.request_id)
            error = f"{type(err).__name__}: {err}"
            answer = RetrainFailed(request_id=request.request_id, error=error)
        finally:
            if self.metrics is not None:
                self.metrics.in_progress.set(0)
                self.metrics.duration.observe(time.perf_counter() - started)
        if self.metrics is not None:
            outcome = (
                "failed"
                if isinstance(answer, RetrainFailed)
                else "accepted"
                if answer.accepted
                else "rejected"
            )
            self.metrics.retrains.labels(outcome).inc()
        publish_control(
            self.bootstrap_servers, self.settings.topics.control, answer, kafka=self.settings.kafka
        )
        return answer

    def _retrain(self, request: RetrainRequest) -> ModelPublished:
        cfg = self.settings.retrain
        log.warning(
            "retrain %s: reading history up to %s (%s)",
            request.request_id,
            request.offsets,
            request.reason,
        )
        history = read_history(self.bootstrap_servers, self.settings, request.offsets)
        if history.counts.consumed != request.event_index:
            log.warning(
                "history has %d messages, the request covers %d",
                history.counts.consumed,
                request.event_index,
            )
        data = TrainingData(
            history.events,
            history.users,
            history.items,
            first_index=history.indexes[0] if history.indexes else 0,
        )

        def on_trial(number: int, value: float, params: dict[str, Any]) -> None:
            log.info("trial %d: quality %.4f %s", number, value, params)
            if self.metrics is not None:
                self.metrics.trials.inc()
                self.metrics.trial_score.set(value)

        outcome = retrain_with(
            self.settings,
            data,
            HoldoutLosses.from_dict(request.champion),
            on_trial=on_trial,
            timeout_seconds=cfg.timeout_seconds,
        )
        summary = outcome.as_dict()
        if self.metrics is not None:
            self.metrics.best_score.set(outcome.best_validation)
        version = self.registry.publish(
            outcome.bundle,
            {
                "request_id": request.request_id,
                "event_index": request.event_index,
                "offsets": {str(p): o for p, o in request.offsets.items()},
                "reason": request.reason,
                **summary,
            },
        )
        if outcome.accepted:
            self.registry.set_current(version.version)
        log.warning(
            "retrain %s: version %d, challenger %.4f vs champion %s -> %s",
            request.request_id,
            version.version,
            outcome.challenger_holdout,
            f"{outcome.champion_holdout:.4f}" if outcome.champion_holdout is not None else "-",
            "accepted" if outcome.accepted else "rejected",
        )
        return ModelPublished(
            request_id=request.request_id,
            version=version.version,
            accepted=outcome.accepted,
            offsets=request.offsets,
            event_index=request.event_index,
            outcome=summary,
        )
