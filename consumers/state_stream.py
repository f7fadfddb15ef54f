"""The consumer's publication of its model state, at a bounded cadence.

:class:`ModelStateStream` joins the exporters (what changed in each assigned partition's
learner, :class:`stream.serving.export.PartitionExporters`: every learner's users, the lowest
partition's items, click model and meta), the
Kafka publisher (:class:`stream.kafka.model_state.ModelStatePublisher`) and the cadence of
``settings.serving``: after a batch it publishes the changed entities once
``publish_every_seconds`` have passed or ``publish_every_events`` messages were consumed since
the last publication, and :meth:`ModelStateStream.snapshot` publishes every entity (the
consumer calls it after each checkpoint commit, and a swap is always followed by one).

Publishing happens after a batch is applied, so the published state may run ahead of the last
checkpoint. If the consumer dies, its successor restores the checkpoint and its first
publication is a snapshot of that older state: a reader sees the state go back, then forward
again as the same events are re-applied (to the same bits: replays are deterministic). Each
key's last record wins, and a ``meta`` closes every publication, so a reader is never left
with half of one. Each consumer of a group publishes its own partitions to the same topic; a
partition that moves to another consumer is published by that one from then on, and nothing
is deleted for it here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from stream.cadence import Cadence
from stream.config import Settings
from stream.kafka.model_state import ModelStatePublisher
from stream.learner import FeedbackLearner
from stream.serving.export import PartitionExporters
from stream.serving.records import encode_record

log = logging.getLogger(__name__)

__all__ = ["ModelStateStream"]


class ModelStateStream:
    """Publishes the model state of a consumer's learners (by partition) to
    ``settings.topics.model_state``.

    Opens a Kafka producer: build it when the consumer runs, not before.
    """

    def __init__(self, settings: Settings, bootstrap_servers: str) -> None:
        self.exporters = PartitionExporters()
        self.publisher = ModelStatePublisher(
            bootstrap_servers, settings.topics.model_state, kafka=settings.kafka
        )
        every = settings.serving
        self.cadence = Cadence(every.publish_every_events, every.publish_every_seconds)
        self.publications = 0
        self.records = 0

    def after_batch(self, learners: Mapping[int, FeedbackLearner], messages: int) -> bool:
        """Publish the changes if due (``messages`` consumed since the last call); whether
        it published. Called with 0 when idle, so the ``meta`` still goes out on time."""
        self.cadence.add(messages)
        if not self.cadence.due():
            return False
        self._publish(learners, snapshot=False)
        return True

    def snapshot(self, learners: Mapping[int, FeedbackLearner]) -> None:
        """Publish every entity (after a checkpoint commit, hence also after a swap)."""
        self._publish(learners, snapshot=True)

    def _publish(self, learners: Mapping[int, FeedbackLearner], snapshot: bool) -> None:
        records = self.exporters.changes(learners, snapshot=snapshot)
        if not records:  # no partition assigned yet
            return
        self.records += self.publisher.publish(map(encode_record, records))
        self.publications += 1
        self.cadence.reset()
        if self.publisher.failed:
            log.warning(
                "%d model-state records failed: %s", self.publisher.failed, self.publisher.errors
            )
            self.publisher.failed = 0

    def close(self) -> None:
        """Wait until the broker has every published record."""
        self.publisher.close()
