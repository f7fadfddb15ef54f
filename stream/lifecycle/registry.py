"""Versioned model artifacts on disk.

Layout under the registry root::

    v000001/bundle.pkl       the pickled ModelBundle
    v000001/metadata.json    caller's metadata + version, created_at, sha256 of the pickle
    CURRENT                  the version in service (one integer), replaced atomically
    HISTORY                  append-only JSON lines {"version", "at", "action"}

A version is written into a temporary directory (``.publishing-*``, under the registry's lock)
and renamed into place, so a reader never sees half a version; the temporary directories of
publishers killed mid-write are removed when a registry is opened. A version's pickle is
checked against the recorded sha256 on every load, before it is unpickled.
Publishing does not put a version in service: :meth:`ModelRegistry.set_current` does, and
:meth:`ModelRegistry.rollback` undoes the last change of the current version (repeatedly:
the history is a stack). Writers in several processes are serialized by a lock file.

>>> import tempfile
>>> from stream.models import ModelBundle
>>> from stream.config import ModelConfig
>>> reg = ModelRegistry(Path(tempfile.mkdtemp()))
>>> v1 = reg.publish(ModelBundle.fresh(ModelConfig()), {"note": "first"})
>>> v2 = reg.publish(ModelBundle.fresh(ModelConfig()), {"note": "second"})
>>> [v.version for v in reg.versions()], reg.current()
([1, 2], None)
>>> v2.path.name, sorted(v2.metadata)
('v000002', ['created_at', 'note', 'sha256', 'version'])
>>> reg.set_current(1); reg.set_current(2)
>>> reg.rollback(), reg.current()
(1, 1)
>>> reg.load(1).state_equal(ModelBundle.fresh(ModelConfig()))
True
>>> reg.rollback()
Traceback (most recent call last):
...
stream.lifecycle.registry.RegistryError: no earlier model version to roll back to (current: 1)
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stream.files import fsync_directory
from stream.models import ModelBundle

__all__ = ["ModelRegistry", "ModelVersion", "RegistryError"]

log = logging.getLogger(__name__)

BUNDLE_FILE = "bundle.pkl"
METADATA_FILE = "metadata.json"
CURRENT_FILE = "CURRENT"
HISTORY_FILE = "HISTORY"
_LOCK_FILE = ".lock"
_PUBLISHING = ".publishing-"
_VERSION_DIR = re.compile(r"^v(\d{6,})$")


class RegistryError(RuntimeError):
    """A version is missing or corrupt, the pointer is unreadable, or a rollback has
    nowhere to go."""


@dataclass(frozen=True)
class ModelVersion:
    """One stored version: its number, directory and metadata."""

    version: int
    path: Path
    metadata: dict[str, Any]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _write_file(path: Path, data: bytes) -> None:
    # Owner-only: a bundle is unpickled (runs code), so only the registry's owner may write it.
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


class ModelRegistry:
    """A directory of model versions with a current pointer and its history."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.remove_stale_publishing()

    def remove_stale_publishing(self) -> list[Path]:
        """Delete the temporary directories of publishers that died mid-write; return them.

        A publisher holds the registry's lock for the whole life of its temporary directory,
        so any found while holding the lock is stale. If another process holds the lock now
        (it may be publishing), nothing is removed: the next opening does it.
        """
        if not self.root.is_dir():
            return []
        with self._locked(wait=False) as held:
            stale = sorted(p for p in self.root.glob(f"{_PUBLISHING}*") if p.is_dir() and held)
            for path in stale:
                log.warning("removing %s, left by a publisher that died mid-write", path)
                shutil.rmtree(path, ignore_errors=True)
        return stale

    # -- paths and locking ------------------------------------------------------------

    def _dir(self, version: int) -> Path:
        return self.root / f"v{version:06d}"

    @contextmanager
    def _locked(self, wait: bool = True) -> Iterator[bool]:
        """Exclusive lock of the registry (publishers and pointer changes in any process);
        yields whether it is held (always, unless ``wait`` is False and another holds it)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / _LOCK_FILE, "a") as lock:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _version_numbers(self) -> list[int]:
        """Numbers of every version directory, valid or not, ascending."""
        if not self.root.is_dir():
            return []
        found = []
        for p in self.root.iterdir():
            m = _VERSION_DIR.match(p.name)
            if m and p.is_dir():
                found.append(int(m.group(1)))
        return sorted(found)

    # -- versions ---------------------------------------------------------------------

    def publish(self, bundle: ModelBundle, metadata: dict[str, Any]) -> ModelVersion:
        """Store ``bundle`` as the next version (not made current) and return it.

        ``metadata`` must be JSON-serializable (other values are written as strings); the
        keys ``version``, ``created_at`` (ISO 8601, UTC) and ``sha256`` (of the pickle) are
        added.
        """
        blob = pickle.dumps(bundle, protocol=pickle.HIGHEST_PROTOCOL)
        digest = hashlib.sha256(blob).hexdigest()
        with self._locked():
            numbers = self._version_numbers()
            version = (numbers[-1] if numbers else 0) + 1
            meta = {**metadata, "version": version, "created_at": _now(), "sha256": digest}
            text = json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n"
            tmp = Path(tempfile.mkdtemp(prefix=f"{_PUBLISHING}v{version:06d}-", dir=self.root))
            try:
                _write_file(tmp / BUNDLE_FILE, blob)
                _write_file(tmp / METADATA_FILE, text.encode())
                fsync_directory(tmp)
                os.rename(tmp, self._dir(version))
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            fsync_directory(self.root)
        return ModelVersion(version, self._dir(version), json.loads(text))

    def get(self, version: int) -> ModelVersion:
        """The version's directory and metadata; RegistryError if it does not exist."""
        path = self._dir(version)
        try:
            text = (path / METADATA_FILE).read_text()
        except FileNotFoundError:
            raise RegistryError(f"model version {version} not found in {self.root}") from None
        except OSError as err:
            raise RegistryError(f"model version {version}: cannot read metadata: {err}") from None
        try:
            meta = json.loads(text)
        except ValueError as err:
            raise RegistryError(f"model version {version}: corrupt metadata: {err}") from None
        if not isinstance(meta, dict):
            raise RegistryError(f"model version {version}: metadata is not a JSON object")
        return ModelVersion(version, path, meta)

    def load(self, version: int) -> ModelBundle:
        """The models of ``version``, after checking the pickle against its sha256."""
        mv = self.get(version)
        try:
            blob = (mv.path / BUNDLE_FILE).read_bytes()
        except OSError as err:
            raise RegistryError(f"model version {version}: cannot read the bundle: {err}") from None
        expected = mv.metadata.get("sha256")
        actual = hashlib.sha256(blob).hexdigest()
        if actual != expected:
            raise RegistryError(
                f"model version {version} is corrupt: bundle sha256 {actual} does not match "
                f"the recorded {expected}; it was not loaded (publish it again or roll back "
                "to another version)"
            )
        try:
            bundle = pickle.loads(blob)
        except Exception as err:
            raise RegistryError(f"model version {version}: cannot unpickle: {err}") from None
        if not isinstance(bundle, ModelBundle):
            raise RegistryError(
                f"model version {version} holds a {type(bundle).__name__}, not a ModelBundle"
            )
        return bundle

    def versions(self) -> list[ModelVersion]:
        """Every readable version, ascending (directories with broken metadata are left out)."""
        found = []
        for number in self._version_numbers():
            try:
                found.append(self.get(number))
            except RegistryError:
                continue
        return found

    # -- the current pointer ----------------------------------------------------------

    def current(self) -> int | None:
        """The version in service, or None when none was ever set."""
        try:
            text = (self.root / CURRENT_FILE).read_text().strip()
        except FileNotFoundError:
            return None
        except OSError as err:
            raise RegistryError(f"cannot read {self.root / CURRENT_FILE}: {err}") from None
        try:
            return int(text)
        except ValueError:
            raise RegistryError(
                f"{self.root / CURRENT_FILE} does not hold a version number: {text[:40]!r}"
            ) from None

    def history(self) -> list[dict[str, Any]]:
        """Every change of the current version, oldest first (unreadable lines skipped)."""
        try:
            lines = (self.root / HISTORY_FILE).read_text().splitlines()
        except FileNotFoundError:
            return []
        entries = []
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # e.g. a line torn by a crash
            if isinstance(entry, dict) and isinstance(entry.get("version"), int):
                entries.append(entry)
        return entries

    def set_current(self, version: int, action: str = "activate") -> None:
        """Put ``version`` in service and record it in the history."""
        with self._locked():
            self._set_current(version, action)

    def _set_current(self, version: int, action: str) -> None:
        mv = self.get(version)  # must exist
        if not (mv.path / BUNDLE_FILE).is_file():
            raise RegistryError(f"model version {version} has no {BUNDLE_FILE}")
        entry = {"version": version, "at": _now(), "action": action}
        with open(self.root / HISTORY_FILE, "a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())
        tmp = self.root / f".{CURRENT_FILE}.tmp-{os.getpid()}"
        _write_file(tmp, f"{version}\n".encode())
        os.replace(tmp, self.root / CURRENT_FILE)
        fsync_directory(self.root)

    def _stack(self) -> list[int]:
        """The versions that were put in service and not rolled back, oldest first."""
        stack: list[int] = []
        for entry in self.history():
            v = entry["version"]
            if entry.get("action") == "rollback":
                if stack:
                    stack.pop()
                if not stack or stack[-1] != v:
                    stack.append(v)
            elif not stack or stack[-1] != v:
                stack.append(v)
        return stack

    def rollback(self) -> int:
        """Put back in service the version that was current before the current one.

        Rollbacks undo changes one by one: after activating 1, 2, 3, two rollbacks give 2,
        then 1. RegistryError when there is no earlier version.
        """
        with self._locked():
            current = self.current()
            if current is None:
                raise RegistryError(f"no current model version in {self.root} to roll back")
            stack = self._stack()
            if not stack or stack[-1] != current:  # CURRENT was changed by hand
                stack.append(current)
            if len(stack) < 2:
                raise RegistryError(
                    f"no earlier model version to roll back to (current: {current})"
                )
            target = stack[-2]
            self._set_current(target, "rollback")
            return target
