"""The retrainer worker: retrain requests in, registry versions and announcements out.

It reads the control topic in its own consumer group. For each
:class:`~stream.kafka.control.RetrainRequest` it rebuilds the history the requesting consumer had
applied (the events topic up to the request's offsets, through the same filters), runs the
hyperparameter search and the champion/challenger comparison of :mod:`stream.lifecycle.retrain`,
stores the challenger in the registry (made current only if accepted) and announces it with
:class:`~stream.kafka.control.ModelPublished`, or :class:`~stream.kafka.control.RetrainFailed`.

Requests are answered once per id: at start the worker reads the whole control topic for the
answers already given, so a request repeated by a consumer restarted from an older checkpoint
(same decision, same id) is not retrained twice, and requests published while no retrainer
ran (still unanswered) are served in order. A version stored in the registry for a request
whose announcement was lost (a crash in between) is announced again instead of retrained.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from stream.config import Settings
from stream.events import (
    ForgottenUsers,
    ModelPublished,
    RetrainFailed,
    RetrainRequest,
    decode_control,
)
from stream.kafka import clients
from stream.kafka.control import publish_control, read_control
from stream.kafka.history import read_history
from stream.lifecycle import HoldoutLosses, ModelRegistry, TrainingData, retrain_with
from stream.observability.metrics import RetrainMetrics

log = logging.getLogger(__name__)

# Metadata keys the registry or the request add around the retrain's outcome summary.
_NOT_OUTCOME = frozenset(
    {"request_id", "event_index", "offsets", "reason", "version", "created_at", "sha256"}
)


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
        # Ids of the requests answered on the control topic (by this worker or another).
        self.answered: set[str] = set()
        self.repeated = 0  # requests not served because their id was answered already

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
        self.answered |= {
            m.request_id
            for m in read_control(
                self.bootstrap_servers, self.settings.topics.control, kafka=self.settings.kafka
            )
            if isinstance(m, ModelPublished | RetrainFailed)
        }
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
                    if isinstance(request, ModelPublished | RetrainFailed):
                        self.answered.add(request.request_id)
                    elif isinstance(request, RetrainRequest):
                        if request.request_id in self.answered:
                            log.warning("request %s answered already", request.request_id)
                            self.repeated += 1
                        else:
                            self.handle(request)
                            self.answered.add(request.request_id)
                        self.handled += 1
                    # Committed once handled: a crash mid-retrain re-runs the request.
                    consumer.commit(message=msg, asynchronous=False)
                    if max_requests is not None and self.handled >= max_requests:
                        return
        finally:
            consumer.close()

    def handle(self, request: RetrainRequest) -> ModelPublished | RetrainFailed:
        """Retrain for one request and announce the result on the control topic."""
        stored = self._stored_answer(request)
        if stored is not None:  # retrained before a crash, never announced
            log.warning("retrain %s: announcing stored version %d", request.request_id,
                        stored.version)  # fmt: skip
            publish_control(
                self.bootstrap_servers, self.settings.topics.control, stored,
                kafka=self.settings.kafka,
            )  # fmt: skip
            return stored
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

    def _stored_answer(self, request: RetrainRequest) -> ModelPublished | None:
        """The answer for a version the registry holds for ``request``, if any."""
        for mv in reversed(self.registry.versions()):
            meta = mv.metadata
            if meta.get("request_id") == request.request_id:
                return ModelPublished(
                    request_id=request.request_id,
                    version=mv.version,
                    accepted=bool(meta.get("accepted")),
                    offsets=request.offsets,
                    event_index=request.event_index,
                    outcome={k: v for k, v in meta.items() if k not in _NOT_OUTCOME},
                )
        return None

    def _retrain(self, request: RetrainRequest) -> ModelPublished:
        cfg = self.settings.retrain
        log.warning(
            "retrain %s: reading history up to %s (%s)",
            request.request_id,
            request.offsets,
            request.reason,
        )
        # Users forgotten by the time of the request are left out of the whole history.
        forgotten = ForgottenUsers.from_dict(request.forgotten) if request.forgotten else None
        history = read_history(
            self.bootstrap_servers, self.settings, request.offsets, forgotten=forgotten
        )
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
