"""The deployment's Kafka settings (TLS, SASL, any librdkafka property) reach every client;
unknown or project-owned properties are refused at start-up, naming the property."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from consumers.loop import FeedbackConsumer
from stream.config import KafkaConfig, Settings
from stream.events import RetrainTrigger
from stream.kafka import clients
from stream.kafka.broker import ensure_topics
from stream.kafka.control import publish_control
from tests.helpers import child_env, isolated_settings, publish_stream

ROOT = Path(__file__).resolve().parent.parent


def test_an_unknown_property_fails_fast_naming_it() -> None:
    with pytest.raises(ValueError, match='No such configuration property: "ssl.no.such"'):
        clients.check_kafka_config(KafkaConfig(extra={"ssl.no.such": "x"}))
    with pytest.raises(ValueError, match='Invalid value "TLS" for configuration property'):
        clients.check_kafka_config(
            KafkaConfig(extra={"ssl.endpoint.identification.algorithm": "TLS"})
        )
    clients.check_kafka_config(
        KafkaConfig(extra={"client.id": "fl", "socket.keepalive.enable": True})
    )


@pytest.mark.parametrize(
    "owned",
    [
        "enable.auto.commit",
        "group.id",
        "bootstrap.servers",
        "enable.idempotence",
        "auto.offset.reset",
    ],
)
def test_settings_the_project_owns_are_refused(owned: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(f"['{owned}']: the project sets")):
        KafkaConfig(extra={owned: "x"})


def test_unknown_kafka_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="sasl_pasword"):
        KafkaConfig(sasl_pasword="typo")  # type: ignore[call-arg]


def test_settings_come_from_the_environment_secrets_included(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FEEDBACK_LOOP_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("FEEDBACK_LOOP_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("FEEDBACK_LOOP_KAFKA__SASL_USERNAME", "loop")
    monkeypatch.setenv("FEEDBACK_LOOP_KAFKA__SASL_PASSWORD", "s3cret")
    monkeypatch.setenv("FEEDBACK_LOOP_KAFKA__EXTRA", json.dumps({"client.id": "fl"}))
    kafka = Settings().kafka
    assert "s3cret" not in repr(kafka)  # a secret is not logged with the settings
    cfg = clients.consumer_config("h:9093", "g", kafka=kafka)
    assert (cfg["security.protocol"], cfg["sasl.mechanism"], cfg["sasl.username"]) == (
        "SASL_SSL",
        "SCRAM-SHA-512",
        "loop",
    )
    assert cfg["sasl.password"] == "s3cret" and cfg["client.id"] == "fl"
    # A child process gets the same settings, the secret too.
    env = {
        k: v for k, v in child_env(Settings()).items() if not k.startswith("FEEDBACK_LOOP_KAFKA__")
    }
    monkeypatch.delenv("FEEDBACK_LOOP_KAFKA__SASL_PASSWORD")
    assert KafkaConfig.model_validate_json(env["FEEDBACK_LOOP_KAFKA"]) == kafka


def test_the_cli_refuses_an_unknown_property(tmp_path: Path) -> None:
    env = {
        **child_env(Settings()),
        "FEEDBACK_LOOP_KAFKA": json.dumps({"extra": {"no.such": 1}}),
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",  # refused before any connection
    }
    proc = subprocess.run(
        [sys.executable, "-m", "cli.app", "consume", "--state-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 2, proc.stderr
    assert 'No such configuration property: "no.such"' in " ".join(proc.stderr.split())


def test_every_client_is_built_by_the_clients_module() -> None:
    """No Consumer/Producer/AdminClient is made elsewhere, so none misses the settings."""
    pattern = re.compile(r"\b(Consumer|Producer|AdminClient)\(")
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for package in ("stream", "consumers", "producers", "cli", "bench")
        for path in (ROOT / package).rglob("*.py")
        if path != ROOT / "stream/kafka/clients.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []


@pytest.mark.integration
def test_the_settings_reach_every_client_of_a_real_run(
    bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kafka = KafkaConfig(security_protocol="PLAINTEXT", extra={"client.id": "fl-test"})
    base = isolated_settings(bootstrap, tmp_path / "state")
    settings = base.model_copy(update={"kafka": kafka})
    built: list[tuple[str, dict[str, Any]]] = []

    def recording(kind: Any) -> Any:
        class Recording(kind):  # type: ignore[misc, valid-type]
            def __init__(self, config: dict[str, Any], **kw: Any) -> None:
                built.append((kind.__name__, dict(config)))
                super().__init__(config, **kw)

        return Recording

    for name in ("Consumer", "Producer", "AdminClient"):
        monkeypatch.setattr(clients, name, recording(getattr(clients, name)))
    ensure_topics(bootstrap, settings.topics, kafka=settings.kafka)
    sent = publish_stream(settings, 2000)
    consumer = FeedbackConsumer(settings, bootstrap)
    consumer.stop_at(sent["end_offsets"])
    learner = consumer.run().learner
    publish_control(bootstrap, settings.topics.control, RetrainTrigger(reason="t"), kafka=kafka)

    assert learner.counts.consumed == sent["sent"] and learner.counts.reconciles()
    kinds = {kind for kind, _ in built}
    assert kinds == {"Consumer", "Producer", "AdminClient"}, kinds
    assert len(built) >= 6  # admin, publisher, consumer, dead letters, control, state
    for kind, cfg in built:
        assert cfg["client.id"] == "fl-test", kind
        assert cfg["security.protocol"] == "PLAINTEXT", kind


def test_produce_waits_for_room_in_a_full_queue_unless_told_not_to() -> None:
    # A queue of one message and no broker: room comes back only when the first message's
    # delivery times out and its report is served.
    tiny = KafkaConfig(extra={"queue.buffering.max.messages": 1, "message.timeout.ms": 300})
    producer = clients.producer("127.0.0.1:1", kafka=tiny)
    reports: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        reports.append(err.name() if err is not None else "delivered")

    clients.produce(producer, "t", b"first", on_delivery=on_delivery)
    with pytest.raises(BufferError):
        clients.produce(producer, "t", b"second", on_delivery=on_delivery, wait_for_room=False)
    clients.produce(producer, "t", b"second", on_delivery=on_delivery)  # waits for the first
    assert reports == ["_MSG_TIMED_OUT"]
    producer.flush(10)
    assert reports == ["_MSG_TIMED_OUT", "_MSG_TIMED_OUT"]
