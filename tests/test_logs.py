"""Structured logs: JSON lines, the consumer's periodic progress line, `consume --json-logs`."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from consumers.loop import FeedbackConsumer
from producers.simulator import Simulator, SimulatorConfig
from stream.config import Settings
from stream.kafka.publisher import EventPublisher
from stream.learner import Counts
from stream.observability.logs import JsonFormatter, ProgressLog, setup_logging
from tests.helpers import child_env

PROGRESS_FIELDS = {
    "events_consumed_total",
    "events_applied_total",
    "events_dead_lettered_total",
    "events_filtered_total",
    "events_duplicate_total",
    "consumer_lag_messages",
    "events_per_second",
}


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Undo what setup_logging does to the root logger."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


def capture(name: str) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(name)
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


def json_lines(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


def test_json_lines_have_the_standard_and_extra_fields() -> None:
    log, stream = capture("test.logs.fields")
    log.info("consumed %d", 42, extra={"events_consumed_total": 42, "partition": "0"})
    log.warning("two\nlines", extra={"path": stream})  # not JSON-serializable: str()
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    text = stream.getvalue()
    lines = json_lines(text)
    assert len(lines) == len(text.splitlines()) == 3  # one object per line
    first = lines[0]
    assert first["level"] == "INFO"
    assert first["logger"] == "test.logs.fields"
    assert first["msg"] == "consumed 42"
    assert first["events_consumed_total"] == 42 and first["partition"] == "0"
    assert first["ts"].endswith("Z") and first["ts"][10] == "T"
    assert set(first) == {"ts", "level", "logger", "msg", "events_consumed_total", "partition"}
    assert lines[1]["msg"] == "two\nlines"
    assert lines[1]["path"].startswith("<_io.StringIO")
    assert lines[2]["level"] == "ERROR"
    assert "ValueError: boom" in lines[2]["exc"]


@pytest.mark.usefixtures("root_logging")
def test_setup_logging_json_and_human(capsys: pytest.CaptureFixture[str]) -> None:
    log = logging.getLogger("test.logs.setup")
    setup_logging("info", json=True)
    setup_logging("info", json=True)  # replaces its handler rather than adding a second
    log.debug("hidden")
    log.info("hello", extra={"consumer_lag_messages": 3})
    lines = json_lines(capsys.readouterr().err)
    assert len(lines) == 1
    assert lines[0]["msg"] == "hello" and lines[0]["consumer_lag_messages"] == 3

    setup_logging("WARNING", json=False)
    log.info("hidden")
    log.warning("plain %s", "text")
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.rstrip().endswith("WARNING test.logs.setup: plain text")


@pytest.mark.usefixtures("root_logging")
def test_setup_logging_writes_to_the_current_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A command run while stderr is swapped (by a test runner) leaves no dead stream behind."""
    setup_logging("INFO")
    log = logging.getLogger("test.logs.stderr")
    swapped = io.StringIO()
    with monkeypatch.context() as m:
        m.setattr(sys, "stderr", swapped)
        log.info("while swapped")
    written = swapped.getvalue()
    swapped.close()
    log.info("after")
    assert written.rstrip().endswith("INFO test.logs.stderr: while swapped")
    err = capsys.readouterr().err
    assert err.rstrip().endswith("INFO test.logs.stderr: after")
    assert "Logging error" not in err


def test_progress_log_fields_count_from_the_start_of_the_process() -> None:
    counts = Counts(consumed=100, applied=90, dead_lettered=5, filtered=3, duplicates=2)
    progress = ProgressLog(counts, every_seconds=3600)
    assert not progress.due()
    counts.consumed, counts.applied, counts.filtered = 160, 148, 5
    log, stream = capture("test.logs.progress")
    fields = progress.log(log, counts, 12)
    (line,) = json_lines(stream.getvalue())
    assert set(fields) == PROGRESS_FIELDS
    assert {k: line[k] for k in PROGRESS_FIELDS} == fields
    assert fields["events_consumed_total"] == 60
    assert fields["events_applied_total"] == 58
    assert fields["events_dead_lettered_total"] == 0
    assert fields["events_filtered_total"] == 2
    assert fields["consumer_lag_messages"] == 12
    assert fields["events_per_second"] > 0
    assert line["msg"].startswith("progress: consumed 60 (")


def publish(settings: Settings, n_events: int) -> dict[int, int]:
    sim = Simulator(SimulatorConfig(n_users=100, n_items=80, seed=11, bot_share=0.05))
    pub = EventPublisher(
        settings.bootstrap_servers or "", settings.topics.events, kafka=settings.kafka
    )
    for record in [*sim.profiles(), *sim.events(n_events)]:
        pub.publish(record)
    pub.publish(b"{not json", key=b"u00001")
    stats = pub.flush()
    assert stats.failed == 0 and stats.delivered == stats.sent
    return stats.end_offsets


@pytest.mark.integration
def test_consumer_progress_line(settings: Settings) -> None:
    end_offsets = publish(settings, 3000)
    consumer = FeedbackConsumer(settings, settings.bootstrap_servers or "")
    consumer.progress_log.every_seconds = 0.0  # a line after every batch
    consumer.stop_at(end_offsets)
    _log, stream = capture("consumers.loop")
    try:
        result = consumer.run()
    finally:
        logging.getLogger("consumers.loop").handlers = []
        logging.getLogger("consumers.loop").propagate = True
    progress = [line for line in json_lines(stream.getvalue()) if "events_per_second" in line]
    assert progress, stream.getvalue()
    last = progress[-1]
    assert set(last) >= PROGRESS_FIELDS
    assert last["level"] == "INFO" and last["logger"] == "consumers.loop"
    c = result.learner.counts
    assert last["events_consumed_total"] == c.consumed == sum(end_offsets.values())
    assert last["events_applied_total"] == c.applied
    assert last["events_dead_lettered_total"] == c.dead_lettered == 1
    assert last["events_filtered_total"] == c.filtered
    assert last["consumer_lag_messages"] == 0


@pytest.mark.integration
def test_consume_json_logs(settings: Settings) -> None:
    end_offsets = publish(settings, 500)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.app",
            "consume",
            "--until-end",
            "--json-logs",
            "--metrics-port",
            "0",
            "--state-dir",
            str(settings.consumer.state_dir),
        ],
        env=child_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [orjson.loads(x) for x in proc.stderr.splitlines() if x.startswith("{")]
    for line in lines:
        assert set(line) >= {"ts", "level", "logger", "msg"}
    # The CLI's own lines ("metrics on http://...") and the consumer's ("assigned [...]").
    assert {"feedback_loop", "consumers.loop"} <= {line["logger"] for line in lines}
    assert any(line["level"] == "INFO" for line in lines)
    assert f"{sum(end_offsets.values()):,}" in proc.stderr  # the summary table still prints
