"""The archive's filter columns (type, user_id, item_id, ts) hold what each message says,
whether Arrow's JSON reader parses the batch or a message makes it fall back to one at a time."""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from producers.simulator import Simulator, SimulatorConfig
from stream.events import encode_event
from stream.kafka.archive import ArchivedEvent, EventArchive

FIELDS = ["type", "user_id", "item_id", "ts"]


def expected(raw: bytes) -> dict[str, object]:
    d = orjson.loads(raw)
    ts = d.get("ts")
    return {
        "type": d.get("type"),
        "user_id": d.get("user_id"),
        "item_id": d.get("item_id"),
        "ts": float(ts) if ts is not None else None,
    }


def simulated(n: int) -> list[bytes]:
    sim = Simulator(SimulatorConfig(seed=7, bot_share=0.02))
    return [encode_event(e) for e in [*sim.profiles(), *sim.events(n)]]


ODD = [
    b'{"type":"click","event_id":"a","user_id":"\\u00e9","item_id":"i","ts":1700000000}',
    b'{"type":"click",\n "event_id":"b","user_id":"u","item_id":"i","ts":1.7e9}',
    b'{"type":"item_profile","event_id":"c","item_id":"i","ts":1.7e9,"genres":["x"]}',
]
# Messages Arrow's reader refuses, which send the batch down the per-message path.
REFUSED = [
    b'{"type":"click","event_id":"d","user_id":"u","user_id":"v","item_id":"i","ts":1.7e9}',
    b'{"type":"click","event_id":"e","user_id":"u","item_id":"i","ts":"1.7e9"}',
]


@pytest.mark.parametrize(
    "raws",
    [simulated(3000), simulated(500) + ODD, ODD + REFUSED[:1], REFUSED[1:] + simulated(200)],
    ids=["simulator", "odd-but-parsed", "duplicate-key", "ts-as-string"],
)
def test_filter_columns_hold_what_each_message_says(raws: list[bytes], tmp_path: Path) -> None:
    archive = EventArchive(tmp_path)
    rows = [ArchivedEvent(1, 10 + k, 5, 100 + k, raw) for k, raw in enumerate(raws)]
    path = archive.write(1, 10, 10 + len(raws) - 1, rows, {"consumed": 7})
    table = pq.read_table(path)
    assert table.column("raw").to_pylist() == raws
    assert table.select(FIELDS).to_pylist() == [expected(r) for r in raws]
    assert table.column("offset").to_pylist() == [r.offset for r in rows]
    assert [e.raw for e in archive.events()] == raws
