"""Throughput and model-cost benchmarks; writes BENCHMARKS.md.

    .venv/bin/python bench/throughput.py [--events 200000] [--out BENCHMARKS.md]
    .venv/bin/python bench/throughput.py --only publishing [--publishing-repeats 5]

1. End to end: N simulated events pre-loaded into the embedded broker, then one consumer
   process (this one) consumes, validates, de-duplicates and applies them; events/s is counted
   from the first message to the last applied (the group join is excluded). Raw
   confluent-kafka consumption of the same topic (no decoding) is measured beside it.
2. Model update cost per event: our OnlineMF.update against River's reco.BiasedMF
   (predict_one + learn_one, the same prequential protocol) on the same rating events, in the
   same run: the simulator's ratings and MovieLens-100K (when it can be obtained).
3. The learner alone (no broker) over the same simulated stream: the per-event cost of the
   user logic, i.e. the ceiling of the consumer.
4. The cost of publishing the model state (``settings.serving.publish_state``): the consumer
   over one pre-loaded events topic with publishing on and off, alternating which goes first,
   several pairs in the same run; medians (its own section of BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from confluent_kafka import KafkaError  # noqa: E402

from bench.report import machine, replace_section  # noqa: E402
from consumers.loop import FeedbackConsumer  # noqa: E402
from producers.simulator import Simulator, SimulatorConfig  # noqa: E402
from stream.config import (  # noqa: E402
    ConsumerConfig,
    KafkaConfig,
    ModelConfig,
    ServingConfig,
    Settings,
    Topics,
)
from stream.events import RatingEvent, encode_event  # noqa: E402
from stream.kafka import clients  # noqa: E402
from stream.kafka.broker import EmbeddedBroker, ensure_topics  # noqa: E402
from stream.kafka.publisher import EventPublisher  # noqa: E402
from stream.learner import FeedbackLearner  # noqa: E402
from stream.models import OnlineMF  # noqa: E402


def simulated(n: int, seed: int = 42) -> list[bytes]:
    sim = Simulator(SimulatorConfig(seed=seed, bot_share=0.02))
    return [encode_event(e) for e in [*sim.profiles(), *sim.events(n)]]


def raw_consume(bootstrap: str, topic: str, expected: int) -> float:
    c = clients.group_consumer(
        bootstrap, f"raw-{uuid.uuid4().hex[:6]}", kafka=KafkaConfig(), partition_eof=True
    )
    c.subscribe([topic])
    got, first = 0, 0.0
    while got < expected:
        for m in c.consume(5000, 1.0):
            err = m.error()
            if err is None:
                if not first:
                    first = time.perf_counter()
                got += 1
            elif err.code() != KafkaError._PARTITION_EOF:
                raise RuntimeError(err)
    elapsed = time.perf_counter() - first
    c.close()
    return got / elapsed


def end_to_end(raws: list[bytes], repeats: int) -> dict[str, Any]:
    with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap_servers
        rates, raw_rates = [], []
        for _ in range(repeats):
            tag = uuid.uuid4().hex[:8]
            settings = Settings(
                bootstrap_servers=bootstrap,
                topics=Topics.prefixed(tag),
                consumer=ConsumerConfig(
                    group_id=f"bench-{tag}", state_dir=Path(tempfile.mkdtemp())
                ),
            )
            ensure_topics(bootstrap, settings.topics, kafka=settings.kafka)
            pub = EventPublisher(bootstrap, settings.topics.events, kafka=settings.kafka)
            for raw in raws:
                pub.publish_raw(raw, None)
            stats = pub.flush()
            raw_rates.append(raw_consume(bootstrap, settings.topics.events, len(raws)))
            consumer = FeedbackConsumer(settings, bootstrap)
            consumer.stop_at(stats.end_offsets)
            result = consumer.run()
            assert result.learner.counts.consumed == len(raws)
            assert result.learner.counts.reconciles()
            rates.append(result.events_per_second)
    return {"consumer": rates, "raw": raw_rates}


def publishing_cost(raws: list[bytes], pairs: int) -> dict[str, Any]:
    """Consumer events/s with model-state publishing on and off, same topic, same broker.

    Each pair runs both, alternating which goes first (so warm-up and broker state favour
    neither); every run is a fresh consumer group and state dir, stopped at the end of the
    topic, its time including the final checkpoint, snapshot and flush.
    """
    with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap_servers
        tag = uuid.uuid4().hex[:8]
        topics = Topics.prefixed(tag)
        ensure_topics(bootstrap, topics, kafka=KafkaConfig())
        pub = EventPublisher(bootstrap, topics.events, kafka=KafkaConfig())
        for raw in raws:
            pub.publish_raw(raw, None)
        end_offsets = pub.flush().end_offsets
        rates: dict[bool, list[float]] = {True: [], False: []}
        publications: list[tuple[int, int]] = []
        for pair in range(pairs):
            for publish in (True, False) if pair % 2 == 0 else (False, True):
                settings = Settings(
                    bootstrap_servers=bootstrap,
                    topics=topics,
                    consumer=ConsumerConfig(
                        group_id=f"bench-{tag}-{pair}-{publish}",
                        state_dir=Path(tempfile.mkdtemp()),
                    ),
                    serving=ServingConfig(publish_state=publish),
                )
                consumer = FeedbackConsumer(settings, bootstrap)
                consumer.stop_at(end_offsets)
                result = consumer.run()
                assert result.learner.counts.consumed == len(raws)
                rates[publish].append(result.events_per_second)
                if consumer.state_stream is not None:
                    stream = consumer.state_stream
                    publications.append((stream.publications, stream.records))
                print(
                    f"  publish_state={publish}: {result.events_per_second:,.0f} events/s",
                    file=sys.stderr,
                )
    on, off = statistics.median(rates[True]), statistics.median(rates[False])
    return {
        "on": rates[True],
        "off": rates[False],
        "median_on": on,
        "median_off": off,
        "cost": 1.0 - on / off,
        "publications": publications,
    }


def publishing_section(raws: list[bytes], cost: dict[str, Any], cmd: str) -> str:
    pubs, records = zip(*cost["publications"], strict=True)
    s = Settings().serving
    return "\n".join(
        [
            "## Consumer throughput with and without model-state publishing",
            "",
            f"Machine: {machine()}.",
            f"Command: `{cmd}`.",
            "",
            f"{len(raws):,} messages pre-loaded into one topic of the embedded broker; "
            f"{len(cost['on'])} runs of each setting in the same process, alternating which goes "
            "first; every run a fresh consumer from the start of the topic, timed from its first "
            "message to the end of its final checkpoint (and, when publishing, the final snapshot "
            f"and flush). Default cadence: changes every {s.publish_every_seconds:g} s or "
            f"{s.publish_every_events:,} events, a snapshot at every checkpoint.",
            "",
            "| `serving.publish_state` | events/s (median) | all runs |",
            "|---|---:|---|",
            f"| off | {cost['median_off']:,.0f} | "
            + ", ".join(f"{r:,.0f}" for r in cost["off"])
            + " |",
            f"| on | {cost['median_on']:,.0f} | "
            + ", ".join(f"{r:,.0f}" for r in cost["on"])
            + " |",
            "",
            f"Publishing costs **{cost['cost']:.1%}** of the median throughput (target: at most "
            f"10%); a run published {statistics.median(pubs):.0f} times, "
            f"{statistics.median(records):,.0f} records (median).",
        ]
    )


def learner_only(raws: list[bytes]) -> float:
    learner = FeedbackLearner(Settings())
    process = learner.process
    started = time.perf_counter()
    for raw in raws:
        process(raw)
    return len(raws) / (time.perf_counter() - started)


def mf_versus_river(ratings: list[tuple[str, str, float]], factors: int = 16) -> dict[str, Any]:
    """Prequential RMSE and cost per event of OnlineMF and River BiasedMF on one stream."""
    from river import optim, reco

    cfg = ModelConfig(factors=factors)
    ours = OnlineMF.from_config(cfg, rating_min=1.0, rating_max=5.0)
    # River's squared-loss gradient is 2 (y_hat - y) and its L2 term is l2 * w, so SGD(lr / 2)
    # with l2 = 2 * reg takes exactly our step: the same model, two implementations.
    river = reco.BiasedMF(
        n_factors=factors,
        bias_optimizer=optim.SGD(cfg.bias_learning_rate / 2),
        latent_optimizer=optim.SGD(cfg.learning_rate / 2),
        l2_bias=2 * cfg.regularization,
        l2_latent=2 * cfg.regularization,
        weight_initializer=optim.initializers.Zeros(),
        latent_initializer=optim.initializers.Normal(mu=0.0, sigma=cfg.init_scale, seed=42),
        seed=42,
    )
    out: dict[str, Any] = {}
    for name, step in (
        ("OnlineMF.update", lambda u, i, y: ours.update(u, i, y)),
        ("river BiasedMF predict_one+learn_one", None),
    ):
        se, started = 0.0, time.perf_counter()
        if step is not None:
            for u, i, y in ratings:
                se += (y - step(u, i, y)) ** 2
        else:
            for u, i, y in ratings:
                p = min(max(river.predict_one(u, i), 1.0), 5.0)
                river.learn_one(u, i, y)
                se += (y - p) ** 2
        elapsed = time.perf_counter() - started
        out[name] = {
            "rmse": (se / len(ratings)) ** 0.5,
            "us_per_event": elapsed / len(ratings) * 1e6,
        }
    return out


def movielens_ratings() -> tuple[list[tuple[str, str, float]], Path] | None:
    from bench.movielens import MovieLensUnavailable, movielens_100k

    try:
        path = movielens_100k()
    except MovieLensUnavailable as err:
        print(f"MovieLens-100K unavailable, skipped: {err}", file=sys.stderr)
        return None
    rows = [line.split("\t") for line in path.read_text().splitlines() if line]
    rows.sort(key=lambda r: int(r[3]))  # the replay order: by timestamp, stable
    return [(r[0], r[1], float(r[2])) for r in rows], path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--publishing-repeats", type=int, default=5)
    ap.add_argument("--only", choices=["all", "publishing"], default="all")
    ap.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    args = ap.parse_args()
    cmd = " ".join([".venv/bin/python", "bench/throughput.py", *sys.argv[1:]])

    print(f"simulating {args.events:,} events...", file=sys.stderr)
    raws = simulated(args.events)
    print("model-state publishing on and off...", file=sys.stderr)
    cost = publishing_cost(raws, args.publishing_repeats)
    section = publishing_section(raws, cost, cmd)
    replace_section(args.out, "state-publishing", section)
    print(section)
    if args.only == "publishing":
        return
    print("learner alone...", file=sys.stderr)
    alone = max(learner_only(raws) for _ in range(args.repeats))
    print("end to end through the embedded broker...", file=sys.stderr)
    e2e = end_to_end(raws, args.repeats)
    sim_ratings = []
    for raw in raws:
        if b'"type":"rating"' in raw:
            r = RatingEvent.model_validate_json(raw)
            sim_ratings.append((r.user_id, r.item_id, r.rating))
    print("OnlineMF vs River BiasedMF...", file=sys.stderr)
    sim_cmp = mf_versus_river(sim_ratings)
    ml = movielens_ratings()
    ml_cmp = mf_versus_river(ml[0]) if ml else None
    evaluate_rmse = None
    if ml:
        from consumers.evaluate import evaluate_records
        from producers.replay import open_source

        learner, _ = evaluate_records(Settings(), open_source(ml[1]).records())
        evaluate_rmse = learner.scores()["rmse"]

    cmd = " ".join(["python", "bench/throughput.py", *sys.argv[1:]])
    lines = [
        "# Benchmarks",
        "",
        f"Machine: {machine()}.",
        f"Command: `{cmd}` (results below are from the last run; best of {args.repeats}).",
        "",
        "## Consumer throughput (one process, embedded Tansu broker)",
        "",
        f"{len(raws):,} messages: {args.events:,} simulated interaction events plus profiles, "
        "2% bot users. Events/s from the first message to the last applied (group join "
        "excluded); every message decoded, validated, de-duplicated and applied to all models.",
        "",
        "| what | events/s (best) | all runs |",
        "|---|---:|---|",
        f"| feedback-loop consumer (`FeedbackConsumer`) | {max(e2e['consumer']):,.0f} | "
        + ", ".join(f"{r:,.0f}" for r in e2e["consumer"])
        + " |",
        f"| raw confluent-kafka consume, no decoding | {max(e2e['raw']):,.0f} | "
        + ", ".join(f"{r:,.0f}" for r in e2e["raw"])
        + " |",
        f"| `FeedbackLearner.process` alone, no broker | {alone:,.0f} | |",
        "",
        "## Rating model: cost per event and prequential RMSE, same stream, same run",
        "",
        "Both predict before learning (prequential), with the default ModelConfig "
        "(factors=16, learning rates 0.05 factors / 0.06 biases, L2 0.02; River's optimizers "
        "set to take the same step), predictions clipped to [1, 5].",
        "",
        "| stream | model | RMSE | us/event |",
        "|---|---|---:|---:|",
    ]
    streams = [("simulator", sim_cmp, len(sim_ratings))]
    if ml_cmp:
        streams.append(("MovieLens-100K (ts order)", ml_cmp, len(ml[0]) if ml else 0))
    for label, cmp, n in streams:
        for model, r in cmp.items():
            lines.append(
                f"| {label} ({n:,} ratings) | {model} | {r['rmse']:.4f} | {r['us_per_event']:.2f} |"
            )
    if evaluate_rmse is not None:
        lines += [
            "",
            "`feedback-loop evaluate u.data --format movielens-100k` (the full learner with "
            f"default settings, profiles included): prequential RMSE **{evaluate_rmse:.4f}**.",
        ]
    else:
        lines += ["", "MovieLens-100K could not be obtained in this run."]
    replace_section(args.out, "throughput", "\n".join(lines[2:]))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
