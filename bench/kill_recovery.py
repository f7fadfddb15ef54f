"""SIGKILL the consumer again and again; its final state must equal an uninterrupted run.

On an embedded broker of its own, the bench publishes a seeded simulator stream with
malformed messages mixed in (one every ``--bad-every`` events, cycling through the kinds in
:data:`MALFORMED`), then:

1. runs an uninterrupted consumer over it (in-process) as the reference;
2. starts ``feedback-loop consume --until-end`` as a child process on its own state dir and
   consumer group, SIGKILLs it after a seeded random delay, and does so ``--kills`` times
   (each restart restores the last checkpoint, possibly one written just before the kill);
3. lets a last child run to the end, then compares its checkpoint with the reference
   (``FeedbackLearner.state_equal``: every model weight, count and metric) and counts the
   dead letters (distinct source offsets) against the malformed messages sent::

    .venv/bin/python bench/kill_recovery.py --events 300000 --kills 20 --section /tmp/k.md
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from confluent_kafka import OFFSET_BEGINNING, TopicPartition  # noqa: E402

from bench.report import machine  # noqa: E402
from consumers.loop import FeedbackConsumer  # noqa: E402
from producers.simulator import Simulator, SimulatorConfig  # noqa: E402
from stream.config import ConsumerConfig, Settings, Topics, settings_env  # noqa: E402
from stream.kafka import clients  # noqa: E402
from stream.kafka.broker import EmbeddedBroker, ensure_topics  # noqa: E402
from stream.kafka.checkpoint import CheckpointStore  # noqa: E402
from stream.kafka.partitions import PartitionStore  # noqa: E402
from stream.kafka.publisher import EventPublisher  # noqa: E402

# One of each kind the consumer must reject (and dead-letter) without stopping.
MALFORMED: list[bytes] = [
    b"{not json",
    b"",
    b"\xff\xfe\x00garbage",
    b"[1, 2, 3]",
    b'{"type": "teleport", "event_id": "k1", "user_id": "u00001", "ts": 1.7e9}',
    b'{"type": "rating", "event_id": "k2", "user_id": "u00001", "item_id": "i00001",'
    b' "ts": 1.7e9, "rating": 11}',
    b'{"type": "click", "event_id": "k3", "user_id": "nobody", "item_id": "i00001",'
    b' "ts": 1.7e9}',
    b'{"type": "click", "event_id": "k4", "user_id": "u00001", "item_id": "i00001",'
    b' "ts": NaN}',
    b'{"type": "dwell", "event_id": "k5", "user_id": "u00001", "item_id": "i00001",'
    b' "ts": 1.7e9, "seconds": -3}',
]


def publish(settings: Settings, events: int, seed: int, bad_every: int) -> dict[str, Any]:
    sim = Simulator(SimulatorConfig(n_users=2000, n_items=500, seed=seed, bot_share=0.02))
    pub = EventPublisher(
        settings.bootstrap_servers or "", settings.topics.events, kafka=settings.kafka
    )
    for profile in sim.profiles():
        pub.publish(profile)
    bad = 0
    for i, event in enumerate(sim.events(events), 1):
        pub.publish(event)
        if i % bad_every == 0:
            pub.publish(MALFORMED[bad % len(MALFORMED)], key=b"u00001")
            bad += 1
    stats = pub.flush()
    if stats.failed or stats.delivered != stats.sent:
        raise RuntimeError(f"publishing failed: {stats.errors[:3]}")
    return {"sent": stats.sent, "malformed": bad, "end_offsets": stats.end_offsets}


def dead_letter_sources(settings: Settings) -> int:
    """Distinct source offsets among the dead letters (letters are at-least-once)."""
    topic = settings.topics.dead_letters
    reader = clients.reader(
        settings.bootstrap_servers or "", "bench-reader", kafka=settings.kafka, partition_eof=True
    )
    reader.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    sources: set[bytes] = set()
    at_end: set[int] = set()
    try:
        while not at_end:
            for m in reader.consume(1000, 1.0):
                if clients.is_data(m, at_end):
                    sources.add(dict(m.headers() or [])["source.offset"])  # type: ignore[arg-type]
    finally:
        reader.close()
    return len(sources)


def consume_child(settings: Settings, state_dir: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings_env(settings)}
    return subprocess.Popen(
        [
            sys.executable, "-m", "cli.app", "consume", "--until-end",
            "--state-dir", str(state_dir), "--metrics-port", "0", "--log-level", "WARNING",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_for_new_checkpoint(store: CheckpointStore, proc: subprocess.Popen[bytes]) -> bool:
    """Wait until ``proc`` saves a checkpoint (True) or exits (False)."""
    before = store.path.stat().st_mtime_ns if store.path.exists() else None
    while proc.poll() is None:
        if store.path.exists() and store.path.stat().st_mtime_ns != before:
            return True
        time.sleep(0.02)
    return False


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="kill-recovery-"))
    with EmbeddedBroker(log_file=work / "tansu.log") as broker:
        tag = uuid.uuid4().hex[:8]
        base = Settings(
            bootstrap_servers=broker.bootstrap_servers,
            topics=Topics.prefixed(tag),
            consumer=ConsumerConfig(
                group_id=f"ref-{tag}",
                state_dir=work / "reference",
                batch_size=args.batch_size,
                checkpoint_every_events=args.checkpoint_every,
            ),
        )
        ensure_topics(broker.bootstrap_servers, base.topics, kafka=base.kafka)
        sent = publish(base, args.events, args.seed, args.bad_every)
        print(f"published {sent['sent']:,} messages ({sent['malformed']:,} malformed)", flush=True)

        ref = FeedbackConsumer(base, broker.bootstrap_servers)
        ref.stop_at(sent["end_offsets"])
        reference = ref.run().learner
        print(f"reference run: {reference.counts.consumed:,} consumed", flush=True)

        killed_dir = work / "killed"
        killed = base.model_copy(
            update={
                "consumer": base.consumer.model_copy(
                    update={"group_id": f"killed-{tag}", "state_dir": killed_dir}
                ),
                "topics": base.topics.model_copy(update={"dead_letters": f"{tag}.dl-killed"}),
            }
        )
        ensure_topics(broker.bootstrap_servers, killed.topics, kafka=killed.kafka)
        store = PartitionStore(killed_dir, killed.topics.events).checkpoints(0)
        at_kill: list[int] = []
        for k in range(args.kills):
            proc = consume_child(killed, killed_dir)
            # Kill at a random point after this child's first checkpoint: its start-up
            # (imports, group join) takes seconds on a busy machine.
            wrote = wait_for_new_checkpoint(store, proc)
            delay = rng.uniform(0.0, args.max_delay)
            try:
                proc.wait(timeout=delay if wrote else 0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            saved = store.load()
            consumed = saved.state.counts.consumed if saved is not None else 0
            at_kill.append(consumed)
            print(f"kill {k + 1}/{args.kills} {delay:.1f} s after a checkpoint: last "
                  f"checkpoint at {consumed:,} messages", flush=True)
        proc = consume_child(killed, killed_dir)
        _, err = proc.communicate(timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"final run failed ({proc.returncode}): {err.decode()[-2000:]}")
        final = store.load()
        assert final is not None
        learner = final.state
        letters = dead_letter_sources(killed)
    return {
        "sent": sent["sent"],
        "malformed": sent["malformed"],
        "kills": args.kills,
        "mid_stream_kills": sum(0 < c < sent["sent"] for c in at_kill),
        "identical": learner.state_equal(reference),
        "consumed": learner.counts.consumed,
        "reconciles": learner.counts.reconciles(),
        "dead_lettered": learner.counts.dead_lettered,
        "dead_letter_sources": letters,
    }


def section(args: argparse.Namespace, r: dict[str, Any]) -> str:
    return "\n".join([
        "### Kills survived",
        "",
        f"    .venv/bin/python bench/kill_recovery.py --events {args.events} --kills {args.kills}"
        f" --seed {args.seed}",
        "",
        f"Machine: {machine()}. {r['sent']:,} messages on the embedded broker, "
        f"{r['malformed']:,} of them malformed ({len(MALFORMED)} kinds in turn); "
        f"`feedback-loop consume --until-end` SIGKILLed {r['kills']} times, each at a random "
        f"0-{args.max_delay:g} s after that process's first checkpoint ({r['mid_stream_kills']} "
        f"left a checkpoint mid-stream), then run to the end.",
        "",
        "| kills | final state identical to an uninterrupted run | consumed | counts reconcile "
        "| malformed sent | dead-lettered (distinct source offsets) |",
        "|---:|---|---:|---|---:|---:|",
        f"| {r['kills']} | {'yes' if r['identical'] else 'NO'} | {r['consumed']:,} "
        f"| {'yes' if r['reconciles'] else 'NO'} | {r['malformed']:,} "
        f"| {r['dead_letter_sources']:,} |",
        "",
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--bad-every", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=2000)
    ap.add_argument("--checkpoint-every", type=int, default=20_000)
    ap.add_argument("--max-delay", type=float, default=1.5,
                    help="Kill at most this many seconds after the child's first checkpoint.")
    ap.add_argument("--section", type=Path, help="Write the Markdown section to this file.")
    args = ap.parse_args()
    result = run(args)
    text = section(args, result)
    print(text)
    if args.section is not None:
        args.section.write_text(text)
    if not (result["identical"] and result["reconciles"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
