"""Scale-out: events/s of one and of two consumer processes on a 2-partition events topic.

    .venv/bin/python bench/scale_out.py [--events 200000] [--repeats 3] [--out BENCHMARKS.md]

N simulated events (plus profiles; item profiles go to both partitions, events are keyed by
user) are pre-loaded into one 2-partition topic of the embedded broker. Each round measures,
in an order that alternates from round to round, each with a fresh consumer group and state
dir:

- raw confluent-kafka consumption of the whole topic, no decoding (first message to last);
- one ``feedback-loop consume --until-end`` process, which gets both partitions;
- two such processes started together in one group, which split the partitions.

A consumer run's rate is the topic's message count over the time from the first partition
assigned in the group (its ``assigned`` log line) to the last partition checkpoint written
(each partition's final checkpoint is its last act on the data): process start-up and the
group join are excluded, a rebalance while both processes join is included. The per-process
figure each child prints itself (first message to the end of its run) is recorded beside it.
After every run the per-partition checkpoints are read back: the consumed counts of the
partitions' learners must add up to the topic's message count.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import machine, replace_section  # noqa: E402
from bench.throughput import raw_consume  # noqa: E402
from producers.simulator import Simulator, SimulatorConfig  # noqa: E402
from stream.config import ConsumerConfig, KafkaConfig, Settings, Topics, settings_env  # noqa: E402
from stream.kafka.broker import EmbeddedBroker, ensure_topics  # noqa: E402
from stream.kafka.partitions import PartitionStore  # noqa: E402
from stream.kafka.publisher import EventPublisher  # noqa: E402
from stream.learner import FeedbackLearner  # noqa: E402

PARTITIONS = 2
MODES = ("raw", "1 consumer", "2 consumers")


@dataclass
class Run:
    rate: float  # messages / (last checkpoint written - first partition assigned)
    own_rates: list[float]  # what each process reported: its messages, first to last
    assignments: list[list[list[int]]]  # per process, every partition set it was assigned
    others_cpu: float = 0.0  # CPU seconds of processes outside this bench during the run


def cpu_seconds() -> tuple[float, float]:
    """CPU time used so far by the whole machine, and by this process tree (itself, its
    waited-for children, and its live children: the broker)."""
    tick = os.sysconf("SC_CLK_TCK")
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    busy = sum(int(fields[i]) for i in (0, 1, 2, 5, 6, 7)) / tick  # all but idle, iowait
    t = os.times()
    tree = t.user + t.system + t.children_user + t.children_system
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            f = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(f[1]) == os.getpid():  # ppid; then utime, stime at 11, 12
            tree += (int(f[11]) + int(f[12])) / tick
    return busy, tree


def preload(bootstrap: str, topics: Topics, events: int) -> int:
    """Publish the simulated stream through EventPublisher; return the topic's message count."""
    ensure_topics(bootstrap, topics, kafka=KafkaConfig())
    pub = EventPublisher(bootstrap, topics.events, kafka=KafkaConfig())
    sim = Simulator(SimulatorConfig(seed=42, bot_share=0.02))
    for e in [*sim.profiles(), *sim.events(events)]:
        pub.publish(e)
    stats = pub.flush()
    assert stats.failed == 0 and stats.delivered == stats.sent, stats.errors
    return sum(stats.end_offsets.values())


def consumers(settings: Settings, processes: int, total: int, workdir: Path) -> Run:
    """``processes`` × ``feedback-loop consume --until-end`` in one group, started together."""
    env = {**os.environ, **settings_env(settings), "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, "-m", "cli.app", "consume", "--until-end", "--metrics-port", "0"]
    args += ["--log-level", "INFO", "--json-logs"]
    procs = []
    logs = [workdir / f"consumer-{i}.log" for i in range(processes)]  # logs and summary
    for log in logs:
        with log.open("wb") as f:
            procs.append(subprocess.Popen(args, env=env, cwd=ROOT, stdout=f, stderr=f))
    for proc, log in zip(procs, logs, strict=True):
        try:
            code = proc.wait(timeout=900)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        if code != 0:
            raise RuntimeError(f"consumer exited {code}, see {log}:\n{log.read_text()[-3000:]}")

    assigned_at, own_rates, assignments = [], [], []
    for log in logs:
        seen = []
        text = log.read_text()
        for line in text.splitlines():
            rec = orjson.loads(line) if line.startswith("{") else {}
            if str(rec.get("msg", "")).startswith("assigned "):
                parts = [p for p, _ in re.findall(r"\((\d+), (-?\d+)\)", rec["msg"])]
                seen.append([int(p) for p in parts])
                if parts:
                    assigned_at.append(datetime.fromisoformat(rec["ts"]).timestamp())
        assignments.append(seen)
        # The summary table's row (the JSON progress lines have the field too).
        own = re.findall(r"│ events_per_second\s*│\s*([\d,]+)", text)
        own_rates.append(float(own[-1].replace(",", "")) if own else float("nan"))

    store = PartitionStore(settings.consumer.state_dir, settings.topics.events)
    consumed = 0
    for p in range(PARTITIONS):
        ckpt = store.load(p)
        assert ckpt is not None, f"partition {p} has no checkpoint"
        learner: FeedbackLearner = ckpt.state
        assert learner.counts.reconciles(), p
        consumed += learner.counts.consumed
    assert consumed == total, f"the partitions' learners consumed {consumed:,}, not {total:,}"
    ended = max(store.checkpoints(p).path.stat().st_mtime for p in range(PARTITIONS))
    return Run(total / (ended - min(assigned_at)), own_rates, assignments)


def measure(events: int, repeats: int) -> tuple[int, dict[str, list[Run]]]:
    runs: dict[str, list[Run]] = {mode: [] for mode in MODES}
    with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap_servers
        tag = uuid.uuid4().hex[:8]
        topics = Topics.prefixed(tag).model_copy(update={"events_partitions": PARTITIONS})
        total = preload(bootstrap, topics, events)
        for r in range(repeats):
            for mode in MODES if r % 2 == 0 else MODES[::-1]:
                busy, tree = cpu_seconds()
                if mode == "raw":
                    rate = raw_consume(bootstrap, topics.events, total)
                    run = Run(rate, [], [])
                else:
                    workdir = Path(tempfile.mkdtemp(prefix="scale-out-"))
                    settings = Settings(
                        bootstrap_servers=bootstrap,
                        topics=topics,
                        consumer=ConsumerConfig(
                            group_id=f"scale-{tag}-{r}-{mode[0]}", state_dir=workdir / "state"
                        ),
                    )
                    run = consumers(settings, int(mode[0]), total, workdir)
                busy2, tree2 = cpu_seconds()
                run.others_cpu = max(0.0, (busy2 - busy) - (tree2 - tree))
                runs[mode].append(run)
                print(
                    f"  round {r + 1} {mode}: {run.rate:,.0f} events/s "
                    f"(own: {', '.join(f'{x:,.0f}' for x in run.own_rates) or '-'}; "
                    f"assigned: {run.assignments or '-'}; "
                    f"CPU of other processes: {run.others_cpu:.1f} s)",
                    file=sys.stderr,
                )
    return total, runs


def section(events: int, total: int, runs: dict[str, list[Run]], cmd: str) -> str:
    med = {mode: statistics.median(r.rate for r in rs) for mode, rs in runs.items()}

    def row(mode: str, label: str) -> str:
        rates = ", ".join(f"{r.rate:,.0f}" for r in runs[mode])
        own = "; ".join(" + ".join(f"{x:,.0f}" for x in r.own_rates) for r in runs[mode])
        others = ", ".join(f"{r.others_cpu:.1f}" for r in runs[mode])
        return f"| {label} | {med[mode]:,.0f} | {rates} | {own.strip('; ') or '-'} | {others} |"

    splits = sorted({str(r.assignments) for r in runs["2 consumers"]})
    return "\n".join(
        [
            "## Scale-out: one and two consumer processes on a 2-partition topic",
            "",
            f"Machine: {machine()}.",
            f"Command: `{cmd}`.",
            "",
            f"{total:,} messages ({events:,} simulated events, 2% bot users, plus profiles; "
            "item profiles are sent to both partitions) pre-loaded into one 2-partition topic "
            f"of the embedded broker. {len(runs['raw'])} rounds in one run, the order of the "
            "three alternating; every consumer run a fresh group and state dir, "
            "`feedback-loop consume --until-end` child processes with the default settings. "
            "A consumer run's events/s is the topic's message count over the time from the "
            "first partition assigned in the group to the last partition checkpoint written "
            "(process start-up and group join excluded; a rebalance while the two processes "
            "join is included). Raw: first message to last. After every consumer run the "
            "partitions' checkpointed learners together consumed exactly the topic's "
            f"{total:,} messages, and their counts reconcile. Last column: CPU seconds the "
            "machine spent outside this bench's processes (and its broker) during each run, "
            "from /proc/stat: anything above a fraction of a second means the run shared the "
            "2 cores with something else.",
            "",
            "| what | events/s (median) | all runs | each process's own figure | "
            "CPU s of other processes |",
            "|---|---:|---|---|---|",
            row("raw", "raw confluent-kafka consume, no decoding"),
            row("1 consumer", "1 `feedback-loop consume` process (both partitions)"),
            row("2 consumers", "2 processes, one group"),
            "",
            f"2 consumers / 1 consumer: **{med['2 consumers'] / med['1 consumer']:.2f}×**; "
            f"1 consumer / raw: **{med['1 consumer'] / med['raw']:.2f}**. "
            "Partitions assigned to each of the two processes, over their run (per round): "
            + "; ".join(f"`{s}`" for s in splits)
            + ".",
            "",
            limits(runs),
        ]
    )


def limits(runs: dict[str, list[Run]]) -> str:
    """What bounds the scale-out on this machine, with this run's figures."""
    one = statistics.median(x for r in runs["1 consumer"] for x in r.own_rates)
    each = statistics.median(x for r in runs["2 consumers"] for x in r.own_rates)
    return (
        "What limits it on this 2-core machine: the consumer is CPU-bound Python in one "
        "thread (decoding, validation, de-duplication and the model updates; raw consumption "
        "of the same topic is several times faster, so the broker is not the bottleneck for "
        f"one consumer). A process of the pair ran at {each:,.0f} events/s (median of their "
        f"own figures) against {one:,.0f} for the single process: while each has a core to "
        "itself, two processes nearly double the group's rate. But the pair uses both cores, "
        "and the broker (serving both consumers' fetches and offset commits), this bench "
        "process, and anything else running on the machine then take their CPU directly from "
        "the consumers: there is no spare core, so a third process could not help here, and "
        "the pair's figure varies far more from round to round than the single process's. "
        "On a host with a core per consumer plus the broker's own, adding partitions and "
        "processes is what scales the consumer side."
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="BENCHMARKS.md: replace `scale-out`")
    args = ap.parse_args()
    cmd = " ".join([".venv/bin/python", "bench/scale_out.py", *sys.argv[1:]])
    total, runs = measure(args.events, args.repeats)
    text = section(args.events, total, runs, cmd)
    print(text)
    if args.out is not None:
        replace_section(args.out, "scale-out", text)


if __name__ == "__main__":
    main()
