"""FeedbackLearner.process_batch is process() per message, in order."""

from __future__ import annotations

import pytest

from producers.simulator import Simulator, SimulatorConfig
from stream.config import Settings
from stream.events import encode_event
from stream.learner import FeedbackLearner


def stream() -> list[bytes | None]:
    sim = Simulator(SimulatorConfig(seed=4, bot_share=0.05))
    raws: list[bytes | None] = [encode_event(e) for e in [*sim.profiles(), *sim.events(4000)]]
    # Bad and repeated messages among the good ones, at fixed places.
    for k, bad in enumerate(
        [None, b"", b'{"type": "rating"', b'{"type": "nope", "event_id": "x"}', raws[-1]]
    ):
        raws.insert(1500 + 400 * k, bad)
    raws.insert(3000, raws[2000])  # a redelivery: a duplicate
    return raws


@pytest.mark.parametrize("batch", [1, 7, 500, 10_000])
def test_process_batch_is_process_per_message(batch: int) -> None:
    raws = stream()
    one, many = FeedbackLearner(Settings()), FeedbackLearner(Settings())
    expected, kept = [], []  # kept: message numbers admitted, as the consumer archives them
    for raw in raws:
        applied = one.counts.applied
        expected.append(one.process(raw))
        if one.counts.applied != applied:
            kept.append(one.counts.consumed - 1)
    got, admitted = [], []
    for start in range(0, len(raws), batch):
        first, positions = many.counts.consumed, []
        got += many.process_batch(raws[start : start + batch], positions)
        admitted += [first + k for k in positions]
    assert got == expected and sum(r is not None for r in got) >= 3
    assert admitted == kept and len(kept) < len(raws) - 3  # drops and rejects not kept
    assert many.state_equal(one) and many.counts.reconciles()
    assert many.counts.duplicates >= 1 and many.timeline == one.timeline
