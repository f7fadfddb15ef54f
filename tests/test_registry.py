"""The model registry: versions on disk, checksums, the current pointer and rollbacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from producers.simulator import Simulator, SimulatorConfig
from stream.config import ModelConfig
from stream.lifecycle import ModelRegistry, RegistryError, TrainingData
from stream.models import ModelBundle


def _trained_bundle(seed: int = 5, n: int = 2000) -> ModelBundle:
    sim = Simulator(SimulatorConfig(n_users=60, n_items=40, seed=seed))
    data = TrainingData.from_events([*sim.profiles(), *sim.events(n)])
    bundle = ModelBundle.fresh(ModelConfig(), rating_min=1.0, rating_max=5.0)
    for e in data.events:
        bundle.learn(e, data.users, data.items)
    return bundle


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry")


def test_publish_load_round_trip(registry: ModelRegistry) -> None:
    bundle = _trained_bundle()
    version = registry.publish(bundle, {"params": {"factors": 16}, "accepted": True})
    assert version.version == 1
    assert version.path == registry.root / "v000001"
    assert (version.path / "bundle.pkl").is_file()
    loaded = registry.load(1)
    assert loaded.state_equal(bundle)
    assert loaded.rating.n_ratings == bundle.rating.n_ratings > 0
    # No temporary directory is left behind.
    assert sorted(p.name for p in registry.root.iterdir() if not p.name.startswith(".lock")) == [
        "v000001"
    ]


def test_metadata_json_contents(registry: ModelRegistry) -> None:
    version = registry.publish(
        _trained_bundle(n=500), {"params": {"window": 0.5}, "champion_holdout": None}
    )
    on_disk = json.loads((version.path / "metadata.json").read_text())
    assert on_disk == version.metadata == registry.get(1).metadata
    assert on_disk["version"] == 1
    assert on_disk["params"] == {"window": 0.5}
    assert on_disk["champion_holdout"] is None
    assert isinstance(on_disk["created_at"], str) and on_disk["created_at"].endswith("Z")
    assert len(on_disk["sha256"]) == 64
    # Values JSON cannot hold are written as strings rather than failing the publish.
    v2 = registry.publish(_trained_bundle(n=500), {"dir": Path("/tmp/x")})
    assert v2.metadata["dir"] == "/tmp/x"


def test_versions_are_ascending_and_publish_does_not_activate(registry: ModelRegistry) -> None:
    assert registry.versions() == []
    assert registry.current() is None
    bundle = ModelBundle.fresh(ModelConfig())
    numbers = [registry.publish(bundle, {"i": i}).version for i in range(12)]
    assert numbers == list(range(1, 13))
    listed = registry.versions()
    assert [v.version for v in listed] == numbers
    assert [v.metadata["i"] for v in listed] == list(range(12))
    assert registry.current() is None


def test_current_set_current_and_history(registry: ModelRegistry) -> None:
    bundle = ModelBundle.fresh(ModelConfig())
    for _ in range(3):
        registry.publish(bundle, {})
    registry.set_current(2)
    assert registry.current() == 2
    assert (registry.root / "CURRENT").read_text().strip() == "2"
    registry.set_current(3)
    assert registry.current() == 3
    lines = (registry.root / "HISTORY").read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    assert [(e["version"], e["action"]) for e in entries] == [(2, "activate"), (3, "activate")]
    assert all(isinstance(e["at"], str) for e in entries)
    with pytest.raises(RegistryError, match="not found"):
        registry.set_current(9)
    assert registry.current() == 3


def test_rollback_undoes_changes_one_by_one(registry: ModelRegistry) -> None:
    bundle = ModelBundle.fresh(ModelConfig())
    for _ in range(3):
        registry.publish(bundle, {})
    with pytest.raises(RegistryError, match="no current"):
        registry.rollback()
    registry.set_current(1)
    with pytest.raises(RegistryError, match="no earlier model version"):
        registry.rollback()
    registry.set_current(2)
    registry.set_current(3)
    assert registry.rollback() == 2
    assert registry.current() == 2
    assert registry.rollback() == 1
    assert registry.current() == 1
    with pytest.raises(RegistryError, match="no earlier model version"):
        registry.rollback()
    assert registry.current() == 1
    actions = [e["action"] for e in registry.history()]
    assert actions == ["activate", "activate", "activate", "rollback", "rollback"]
    # Re-activating the current version is recorded but is not a step to roll back to.
    registry.set_current(3)
    registry.set_current(3)
    assert registry.rollback() == 1


def test_rollback_survives_a_new_registry_object(registry: ModelRegistry) -> None:
    bundle = ModelBundle.fresh(ModelConfig())
    for _ in range(2):
        registry.publish(bundle, {})
    registry.set_current(1)
    registry.set_current(2)
    reopened = ModelRegistry(registry.root)
    assert reopened.current() == 2
    assert reopened.rollback() == 1


def test_corrupt_pickle_is_detected(registry: ModelRegistry) -> None:
    version = registry.publish(_trained_bundle(n=500), {})
    pkl = version.path / "bundle.pkl"
    data = bytearray(pkl.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pkl.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="corrupt"):
        registry.load(1)
    pkl.unlink()
    with pytest.raises(RegistryError, match="cannot read the bundle"):
        registry.load(1)


def test_missing_and_broken_versions(registry: ModelRegistry) -> None:
    with pytest.raises(RegistryError, match="not found"):
        registry.load(1)
    with pytest.raises(RegistryError, match="not found"):
        registry.get(1)
    registry.publish(ModelBundle.fresh(ModelConfig()), {})
    registry.publish(ModelBundle.fresh(ModelConfig()), {})
    (registry.root / "v000001" / "metadata.json").write_text("{not json")
    with pytest.raises(RegistryError, match="corrupt metadata"):
        registry.get(1)
    assert [v.version for v in registry.versions()] == [2]
    # A broken directory still holds its number: the next version does not reuse it.
    assert registry.publish(ModelBundle.fresh(ModelConfig()), {}).version == 3
    (registry.root / "CURRENT").write_text("garbage")
    with pytest.raises(RegistryError, match="version number"):
        registry.current()


def test_stale_publishing_directories_are_removed_on_open(tmp_path: Path) -> None:
    """A publisher killed mid-write leaves a ``.publishing-*`` directory: the next opening of
    the registry removes it, but never one whose publisher is still at work (holds the lock)."""
    import fcntl
    import subprocess
    import sys

    root = tmp_path / "registry"
    ModelRegistry(root).publish(ModelBundle.fresh(ModelConfig()), {})
    stale = root / ".publishing-v000002-abc123"
    stale.mkdir()
    (stale / "bundle.pkl").write_bytes(b"half a bundle")
    # Another process holds the registry's lock, as a publisher writing that directory does.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys; f = open(sys.argv[1], 'a'); "
         "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.read()",
         str(root / ".lock")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert ModelRegistry(root).remove_stale_publishing() == [] and stale.is_dir()
    finally:
        holder.communicate("")
    reopened = ModelRegistry(root)
    assert not stale.exists()
    assert [v.version for v in reopened.versions()] == [1]
    assert reopened.publish(ModelBundle.fresh(ModelConfig()), {}).version == 2
    with open(root / ".lock", "a") as f:  # our own lock is free again
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
