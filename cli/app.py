"""The ``feedback-loop`` command line.

    feedback-loop demo --events 100000 --report r.json   # everything, on the embedded broker
    feedback-loop broker                                 # a standalone embedded broker
    feedback-loop simulate --events 100000               # publish simulated events
    feedback-loop replay u.data --format movielens-100k  # publish a file's events
    feedback-loop consume --until-end --report r.json    # the long-running consumer
    feedback-loop evaluate u.data                        # the models over a file, no broker
    feedback-loop serve --port 8000                      # recommendations over HTTP
    feedback-loop status                                 # a running consumer, from /metrics
    feedback-loop forget USER_ID                         # erase a user (deletion request)

The commands live by concept in :mod:`cli.pipeline` (the ones that run the pipeline),
:mod:`cli.operations` (the operational ones) and :mod:`cli.serving` (the HTTP service); this
module only assembles them, in the order ``--help`` lists them.
"""

from __future__ import annotations

import typer

from cli import operations, pipeline, serving

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Real-time personalization pipeline: feedback events -> Kafka -> online models.",
)

app.command()(pipeline.demo)
app.command()(operations.broker)
app.command()(operations.simulate)
app.command()(pipeline.replay)
app.command("consume")(pipeline.consume)
app.command()(pipeline.evaluate)
app.command()(serving.serve)
app.command()(operations.retrainer)
app.command()(operations.retrain)
app.command()(operations.rollback)
app.command()(operations.forget)
app.command()(operations.status)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
