"""Checkpoints and registry bundles refuse corrupt or truncated files before unpickling."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest

from stream.config import ModelConfig
from stream.kafka.checkpoint import FILE_NAME, CheckpointError, CheckpointStore
from stream.lifecycle import ModelRegistry, RegistryError
from stream.lifecycle.registry import BUNDLE_FILE
from stream.models import ModelBundle


def flip(path: Path, bit: int) -> None:
    data = bytearray(path.read_bytes())
    data[bit // 8] ^= 1 << (bit % 8)
    path.write_bytes(bytes(data))


def positions(size: int) -> list[int]:
    """Bit positions spread over the whole file: header, start, middle and end of the payload."""
    bits = size * 8
    return sorted({0, 70, 8 * 60 + 3, bits // 3, bits // 2 + 5, bits - 9, bits - 1})


def test_a_flipped_bit_anywhere_in_a_checkpoint_is_refused(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    factors = np.linspace(0.1, 1.0, 4096)  # float bits: a flip would load as another number
    store.save({"factors": factors}, {("events", 0): 10})
    path = tmp_path / FILE_NAME
    good = path.read_bytes()
    for bit in positions(len(good)):
        path.write_bytes(good)
        flip(path, bit)
        with pytest.raises(CheckpointError, match="move it away") as err:
            store.load()
        assert "cannot read checkpoint" in str(err.value), bit
    path.write_bytes(good)
    saved = store.load()
    assert saved is not None and np.array_equal(saved.state["factors"], factors)


@pytest.mark.parametrize("keep", [0, 10, 60, -1])
def test_a_truncated_checkpoint_is_refused(tmp_path: Path, keep: int) -> None:
    store = CheckpointStore(tmp_path)
    store.save({"factors": np.ones(1000)}, {("events", 0): 10})
    path = tmp_path / FILE_NAME
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(CheckpointError, match="damaged|truncated"):
        store.load()


def test_a_checkpoint_of_the_previous_format_is_refused_as_unsupported(tmp_path: Path) -> None:
    import pickle

    (tmp_path / FILE_NAME).write_bytes(pickle.dumps({"version": 4, "state": {}, "offsets": {}}))
    with pytest.raises(CheckpointError, match="unsupported format; move it away"):
        CheckpointStore(tmp_path).load()


def test_checkpoints_are_owner_only(tmp_path: Path) -> None:
    CheckpointStore(tmp_path).save({}, {})
    assert stat.S_IMODE((tmp_path / FILE_NAME).stat().st_mode) == 0o600


def test_a_flipped_bit_or_truncation_in_a_registry_bundle_is_refused(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    version = registry.publish(ModelBundle.fresh(ModelConfig()), {"event_index": 0})
    path = version.path / BUNDLE_FILE
    good = path.read_bytes()
    for bit in positions(len(good)):
        path.write_bytes(good)
        flip(path, bit)
        with pytest.raises(RegistryError, match="corrupt.*publish it again or roll back"):
            registry.load(version.version)
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(RegistryError, match="corrupt"):
        registry.load(version.version)
    path.write_bytes(good)
    assert registry.load(version.version).state_equal(ModelBundle.fresh(ModelConfig()))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
