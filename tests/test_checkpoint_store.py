"""The checkpoint file under write failures: a full disk leaves nothing behind, and the
temporary files of a process killed while saving are removed at the next start."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest

from stream.kafka.checkpoint import FILE_NAME, CheckpointStore


class FullDisk:
    """Pickling it fails the way a write on a full disk does, after bytes were written."""

    def __reduce__(self) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")


def temps(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name != FILE_NAME)


def test_a_failed_save_leaves_no_partial_file_and_keeps_the_last_checkpoint(
    tmp_path: Path,
) -> None:
    store = CheckpointStore(tmp_path)
    store.save({"n": 1}, {("events", 0): 10})
    for _ in range(3):  # every retry fails the same way and leaves nothing behind
        with pytest.raises(OSError) as err:
            store.save({"big": b"x" * 1_000_000, "then": FullDisk()}, {("events", 0): 20})
        assert err.value.errno == errno.ENOSPC
        assert temps(tmp_path) == []
    saved = store.load()
    assert saved is not None and saved.state == {"n": 1} and saved.offsets == {("events", 0): 10}


def test_temporary_files_of_a_killed_save_are_removed_at_the_next_load(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save({"n": 2}, {("events", 0): 5})
    # What a process SIGKILLed in the middle of a save leaves: a partial temporary file.
    stale = tmp_path / f"{Path(FILE_NAME).stem}.tmp-424242"
    stale.write_bytes(b"\x80\x05partial")
    other = tmp_path / "notes.txt"  # not ours: left alone
    other.write_text("keep")
    saved = CheckpointStore(tmp_path).load()
    assert saved is not None and saved.state == {"n": 2}
    assert not stale.exists() and other.exists()
