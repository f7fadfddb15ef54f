"""Faults from outside the process: a disk that fills up under a real consumer process.

The consumer runs as ``feedback-loop consume`` in a child process whose file-size limit
(``RLIMIT_FSIZE``) is smaller than its later checkpoints: the first saves fit, then a save
fails the way it does on a full disk (the kernel refuses the write; Python ignores
``SIGXFSZ``, so the write raises). The consumer must stop with an error and leave the last
whole checkpoint and no partial file; once space is back, a restart must end in exactly the
state of an uninterrupted run. Crashes at each step of a checkpoint commit are injected
in-process by tests/test_crash_recovery.py.
"""

from __future__ import annotations

import resource
import subprocess
from pathlib import Path

import pytest

from consumers.loop import FeedbackConsumer
from stream.config import Settings
from stream.kafka.checkpoint import FILE_NAME
from stream.kafka.partitions import LEASE_FILE
from tests.helpers import consume_command, derived, partition_checkpoint, publish_stream

pytestmark = pytest.mark.integration


def consume(
    settings: Settings, file_size_limit: int | None = None
) -> subprocess.CompletedProcess[bytes]:
    def limit() -> None:
        if file_size_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.run(
        **consume_command(settings, batch_size=500, checkpoint_every=2000),
        capture_output=True,
        preexec_fn=limit,
        timeout=600,
    )


def leftovers(state_dir: Path) -> list[str]:
    """Files in the state dir other than the checkpoints, their leases and the archive's
    finished files."""
    whole = (FILE_NAME, LEASE_FILE)
    files = [p for p in state_dir.rglob("*") if p.is_file()]
    return [p.name for p in files if p.name not in whole and not p.name.endswith(".parquet")]


def test_a_disk_that_fills_up_stops_the_consumer_and_a_restart_loses_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    sent = publish_stream(settings, 20_000, seed=5)
    full = derived(settings, state_dir=tmp_path / "full")
    store = partition_checkpoint(full)

    # The size of the first checkpoint, to set the limit between it and the final one.
    probe = derived(
        settings,
        state_dir=tmp_path / "probe",
        group_id="probe",
        checkpoint_every_events=2000,
        batch_size=500,
    )
    first = FeedbackConsumer(probe, settings.bootstrap_servers or "")
    first.stop_at({p: min(o, 2000) for p, o in sent["end_offsets"].items()})
    first.run()
    small = partition_checkpoint(probe).path.stat().st_size

    failed = consume(full, file_size_limit=small + small // 4)
    assert failed.returncode != 0, failed.stdout.decode()[-2000:]
    err = (failed.stdout + failed.stderr).decode()
    assert "File too large" in err or "No space left" in err, err[-3000:]
    left = store.load()
    assert left is not None, "not even the first checkpoint fitted"
    assert 0 < left.state.counts.consumed == sum(left.offsets.values()) < sent["sent"]
    assert store.path.exists() and leftovers(full.consumer.state_dir) == []  # no partial file

    again = consume(full, file_size_limit=small + small // 4)  # still full: fails the same way
    assert again.returncode != 0
    assert store.path.exists() and leftovers(full.consumer.state_dir) == []

    done = consume(full)  # space is back
    assert done.returncode == 0, (done.stdout + done.stderr).decode()[-3000:]
    final = store.load()
    assert final is not None

    ref = FeedbackConsumer(
        derived(settings, state_dir=tmp_path / "reference", group_id="reference"),
        settings.bootstrap_servers or "",
    )
    ref.stop_at(sent["end_offsets"])
    reference = ref.run().learner
    assert final.state.counts.consumed == sent["sent"] and final.state.counts.reconciles()
    assert final.state.state_equal(reference)
