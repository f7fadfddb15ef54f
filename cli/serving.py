"""The ``serve`` command: the HTTP service over the live models' state.

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 feedback-loop serve --port 8000
    curl 'http://127.0.0.1:8000/recommendations/u00001?k=10'

The application itself is :func:`consumers.server.create_app`; this module only reads the
settings and options and runs it on uvicorn, which stops cleanly on SIGINT and SIGTERM
(in-flight requests finish, posted events are flushed, the state follower stops).
"""

from __future__ import annotations

import signal
from typing import Annotated

import typer

from cli.common import console, require_cluster, settings
from stream.observability.logs import setup_logging


def serve(
    host: Annotated[
        str | None, typer.Option(help="Bind address (default: FEEDBACK_LOOP_SERVING__HOST).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="Port (default: FEEDBACK_LOOP_SERVING__PORT, 8000)."),
    ] = None,
    log_level: str = "INFO",
    json_logs: Annotated[bool, typer.Option("--json-logs", help="Log JSON lines.")] = False,
    access_log: Annotated[
        bool, typer.Option("--access-log", help="Log every request (costs throughput).")
    ] = False,
) -> None:
    """Serve recommendations from the model-state topic over HTTP; accept events by POST."""
    import uvicorn

    from consumers.server import create_app
    from stream.kafka.broker import ensure_topics

    setup_logging(log_level, json_logs)
    cfg = settings()
    bootstrap = require_cluster(cfg, "serve")
    # The server may start before any consumer: the topics it reads and writes must exist.
    ensure_topics(bootstrap, cfg.topics, kafka=cfg.kafka)
    bind_host = host or cfg.serving.host
    bind_port = cfg.serving.port if port is None else port
    console.print(f"serving on http://{bind_host}:{bind_port} (docs: /docs)")
    # uvicorn handles SIGINT/SIGTERM while it runs (finish the requests in flight, run the
    # shutdown), then re-raises the signal with the handlers it found: with these, a stop by
    # signal ends the command normally (status 0), as the other long-running commands do.
    stopped: list[str] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: stopped.append(signal.Signals(signum).name))
    # One process: to serve more, run more `serve` processes (each follows the topic on its
    # own) behind a load balancer. (uvicorn's --workers binds a socket on which asyncio does
    # not set TCP_NODELAY: every answer would wait ~40 ms for the client's delayed ACK.)
    uvicorn.run(
        create_app(cfg, bootstrap),
        host=bind_host,
        port=bind_port,
        log_level=log_level.lower(),
        access_log=access_log,
        log_config=None,  # keep the project's log setup
    )
    console.print(f"serve stopped ({', '.join(stopped) or 'done'})")
