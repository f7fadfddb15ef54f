"""SIGKILL the consumer process mid-stream, restart it, and compare with an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from consumers.loop import FeedbackConsumer
from stream.config import Settings
from stream.kafka.checkpoint import CheckpointStore
from tests.helpers import child_env, publish_stream

pytestmark = pytest.mark.integration


def consume_cli(settings: Settings, state_dir: Path) -> subprocess.Popen[bytes]:
    env = child_env(settings)
    # Small batches and frequent checkpoints, so the kill lands between two of them.
    env["FEEDBACK_LOOP_CONSUMER__BATCH_SIZE"] = "300"
    env["FEEDBACK_LOOP_CONSUMER__CHECKPOINT_EVERY_EVENTS"] = "2000"
    return subprocess.Popen(
        [
            sys.executable, "-m", "cli.app", "consume", "--until-end",
            "--state-dir", str(state_dir), "--metrics-port", "0", "--log-level", "WARNING",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def test_sigkill_mid_stream_then_restart_gives_identical_models(
    settings: Settings, tmp_path: Path
) -> None:
    sent = publish_stream(settings, 60_000, seed=11)
    state = tmp_path / "killed"
    store = CheckpointStore(state)

    proc = consume_cli(settings, state)
    deadline = time.monotonic() + 120
    while not store.path.exists():
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        assert time.monotonic() < deadline, "no checkpoint written in time"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = store.load()
    assert killed_at is not None
    assert 0 < killed_at.state.counts.consumed < sent["sent"], "kill did not land mid-stream"

    proc = consume_cli(settings, state)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out.decode()
    after_restart = store.load()
    assert after_restart is not None

    ref_settings = settings.model_copy(
        update={
            "consumer": settings.consumer.model_copy(
                update={"group_id": settings.consumer.group_id + "-ref",
                        "state_dir": tmp_path / "reference"}
            )
        }
    )
    ref = FeedbackConsumer(ref_settings, settings.bootstrap_servers or "")
    ref.stop_at(sent["end_offsets"])
    reference = ref.run().learner

    restarted = after_restart.state
    assert restarted.counts.consumed == sent["sent"]
    assert restarted.counts.reconciles()
    assert restarted.state_equal(reference)
    assert after_restart.offsets == {
        (settings.topics.events, p): o for p, o in sent["end_offsets"].items()
    }


def test_sigterm_finishes_the_batch_checkpoints_and_exits(
    settings: Settings, tmp_path: Path
) -> None:
    sent = publish_stream(settings, 60_000, seed=13)
    state = tmp_path / "graceful"
    store = CheckpointStore(state)
    proc = consume_cli(settings, state)
    deadline = time.monotonic() + 120
    while not store.path.exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out.decode()
    assert b"SIGTERM" in out
    final = store.load()
    assert final is not None
    c = final.state.counts
    assert 0 < c.consumed < sent["sent"] and c.reconciles()
    # The saved offsets are exactly where the applied events end: nothing in flight was lost.
    assert sum(final.offsets.values()) == c.consumed
