"""Atomic, incremental checkpoint sync between a working directory and a store.

Layout under a checkpoint's prefix::

    manifest.json                 written last: the one complete checkpoint, with every file's key and size
    data/<generation>/<path>      the files uploaded by that generation

**Upload** sends the files whose size or mtime changed since the last manifest to
``data/<generation>/``, then writes ``manifest.json``, then deletes every object no manifest
refers to (older generations, and what an interrupted upload left). Unchanged files keep their
earlier key. A file that changes while it is read (its stat differs after the read) is left for
the next upload. **Restore** reads the manifest, downloads exactly its files into a temporary
directory, checks each size, sets each mtime back, and only then moves them into place. An
upload cut off at any point leaves the previous manifest in place, so a half-written checkpoint is
never restored; a manifest that cannot be read or lists a missing or wrongly sized object is
"corrupt": nothing is restored (the caller starts from zero).

Standard library only, and :mod:`~airflow_mlops_provider.checkpoints.store`: this module runs
inside Kubernetes pods too (:mod:`~airflow_mlops_provider.checkpoints.sidecar` is the init
container and the sidecar).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_mlops_provider.checkpoints.store import CheckpointStoreError

__all__ = ["MANIFEST_NAME", "META_NAME", "CheckpointSync", "CheckpointTooLargeError"]
__all__ += ["RestoreResult", "UploadResult"]

MANIFEST_NAME = "manifest.json"
#: The trainer's optional description of its checkpoint (``{"step": 1200}``), kept in the manifest.
META_NAME = "mlops-checkpoint.json"
FORMAT = 1
#: How often one upload sends what changed while it ran before it writes the manifest anyway.
UPLOAD_ROUNDS = 4
#: The largest metadata file whose contents go into the manifest.
META_MAX_BYTES = 64 * 1024
#: A restore's temporary directory inside the checkpoint directory (never uploaded).
STAGING_PREFIX = ".mlops-restore-"
_LOG = logging.getLogger(__name__)


def _parse_meta(data: bytes | None) -> dict[str, Any]:
    """The trainer's metadata from the bytes of :data:`META_NAME` that were sent ({} if not JSON)."""
    try:
        parsed = json.loads(data) if data is not None else {}
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


class CheckpointTooLargeError(CheckpointStoreError):
    """The checkpoint is bigger than ``checkpoint_max_bytes``; nothing was uploaded (permanent)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True)


@dataclass
class RestoreResult:
    """What a restore found: ``reason`` is ``"restored"``, ``"none yet"`` or ``"corrupt: ..."``."""

    restored: bool
    generation: int | None
    files: int
    bytes: int
    seconds: float
    step: Any
    written_at: float | None
    reason: str


@dataclass
class UploadResult:
    """What an upload sent: ``changed`` is False when nothing had changed (no new generation)."""

    generation: int | None
    files_uploaded: int
    bytes_uploaded: int
    files_total: int
    bytes_total: int
    seconds: float
    changed: bool


def _check_manifest(data: Any) -> dict[str, Any]:
    """Return a manifest that has the expected shape; raise ``ValueError`` saying what is wrong."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"not a format-{FORMAT} manifest")
    if not isinstance(data.get("generation"), int) or not isinstance(data.get("files"), dict):
        raise ValueError("manifest lacks generation or files")
    for rel, entry in data["files"].items():
        if (
            not isinstance(rel, str)
            or rel.startswith("/")
            or ".." in rel.split("/")
            or not isinstance(entry, dict)
            or not isinstance(entry.get("key"), str)
            or not isinstance(entry.get("size"), int)
        ):
            raise ValueError(f"manifest entry {rel!r} is malformed")
    return data


class CheckpointSync:
    """
    Sync between ``local_dir`` and the checkpoint at ``prefix`` of ``store``.

    :param store: A ``LocalStore`` or ``S3Store``.
    :param prefix: The checkpoint's prefix in the store (``dag/run/task/-1``).
    :param local_dir: The trainer's checkpoint directory.
    :param max_bytes: The largest checkpoint that may be uploaded (None: no limit).
    :param log: A logger (default: this module's).
    """

    def __init__(
        self,
        store: Any,
        prefix: str,
        local_dir: str | os.PathLike[str],
        *,
        max_bytes: int | None = None,
        log: Any = None,
    ) -> None:
        self.store = store
        self.prefix = prefix.strip("/")
        self.local_dir = Path(local_dir)
        self.max_bytes = max_bytes
        self.log = log or _LOG
        self._lock = threading.Lock()
        self._manifest: dict[str, Any] | None = None
        self._loaded = False

    def _key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def read_manifest(self) -> dict[str, Any] | None:
        """Return the stored manifest (None when there is none); ``ValueError`` when it is corrupt."""
        raw = self.store.get_bytes(self._key(MANIFEST_NAME))
        if raw is None:
            return None
        try:
            return _check_manifest(json.loads(raw))
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"manifest.json cannot be read ({err})") from None

    # -- restore --------------------------------------------------------------------------------

    def restore(self) -> RestoreResult:
        """Replace ``local_dir``'s contents with the latest complete checkpoint (or empty it)."""
        started = time.monotonic()
        with self._lock:
            try:
                manifest = self.read_manifest()
            except ValueError as err:
                return self._start_from_zero(f"corrupt: {err}", started)
            if manifest is None:
                return self._start_from_zero("none yet", started)
            # Staged inside local_dir: the same filesystem (a mounted volume is one of its own).
            self.local_dir.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=self.local_dir, prefix=STAGING_PREFIX))
            try:
                total = 0
                for rel, entry in sorted(manifest["files"].items()):
                    target = staging / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        self.store.get_file(self._key(entry["key"]), target)
                    except CheckpointStoreError as err:
                        if getattr(err, "missing", False):
                            return self._start_from_zero(
                                f"corrupt: object {entry['key']!r} is missing", started
                            )
                        raise
                    size = target.stat().st_size
                    if size != entry["size"]:
                        return self._start_from_zero(
                            f"corrupt: {rel!r} is {size} bytes, the manifest says {entry['size']}", started
                        )
                    if isinstance(entry.get("mtime_ns"), int):
                        os.utime(target, ns=(entry["mtime_ns"], entry["mtime_ns"]))
                    total += size
                self._empty_local_dir(keep=staging)
                for child in staging.iterdir():
                    os.replace(child, self.local_dir / child.name)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            self._manifest, self._loaded = manifest, True
            meta: dict[str, Any] = manifest["meta"] if isinstance(manifest.get("meta"), dict) else {}
            created = manifest.get("created")
            written_at = float(created) if isinstance(created, (int, float)) else None
            seconds, files = time.monotonic() - started, len(manifest["files"])
            step = meta.get("step")
            return RestoreResult(
                True, manifest["generation"], files, total, seconds, step, written_at, "restored"
            )

    def _start_from_zero(self, reason: str, started: float) -> RestoreResult:
        if reason.startswith("corrupt"):  # the next upload's manifest replaces it; its GC cleans up
            self.log.warning("Checkpoint %s/%s is %s; not restoring it", self.store.uri, self.prefix, reason)
        self._manifest, self._loaded = None, True
        self._empty_local_dir()
        return RestoreResult(False, None, 0, 0, time.monotonic() - started, None, None, reason)

    def _empty_local_dir(self, keep: Path | None = None) -> None:
        self.local_dir.mkdir(parents=True, exist_ok=True)
        for child in self.local_dir.iterdir():
            if child == keep:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()

    # -- upload ---------------------------------------------------------------------------------

    def _scan(self) -> dict[str, os.stat_result]:
        files: dict[str, os.stat_result] = {}
        if not self.local_dir.is_dir():
            return files
        for path in self.local_dir.rglob("*"):
            try:
                stat = path.lstat()
            except FileNotFoundError:  # removed while scanning
                continue
            if (
                path.is_file()
                and not path.is_symlink()
                and not path.relative_to(self.local_dir).parts[0].startswith(STAGING_PREFIX)
            ):
                files[path.relative_to(self.local_dir).as_posix()] = stat
        return files

    def upload(self) -> UploadResult:
        """
        Upload what changed since the last manifest, then the new manifest (thread-safe).

        The files are sent, then the directory is scanned again: a file that changed meanwhile
        is sent again (up to :data:`UPLOAD_ROUNDS` rounds), so the manifest lists the directory
        as it was at one moment, never a file from one checkpoint beside another's. Its ``meta``
        is the :data:`META_NAME` that was sent, not the one on disk when the manifest is written.
        """
        started = time.monotonic()
        with self._lock:
            if not self._loaded:  # e.g. reattached to a running container: continue its generations
                try:
                    self._manifest = self.read_manifest()
                except ValueError:
                    self._manifest = None
                self._loaded = True
            previous = (self._manifest or {}).get("files", {})
            generation = int((self._manifest or {}).get("generation", 0)) + 1
            meta = (self._manifest or {}).get("meta", {}) if META_NAME in previous else {}
            files: dict[str, Any] = {}
            total, settled = 0, False
            for _ in range(UPLOAD_ROUNDS):
                scanned = self._scan()
                total = sum(stat.st_size for stat in scanned.values())
                if self.max_bytes is not None and total > self.max_bytes:
                    raise CheckpointTooLargeError(
                        f"checkpoint in {self.local_dir} is {total} bytes, over checkpoint_max_bytes={self.max_bytes}; "
                        "nothing was uploaded"
                    )
                settled = set(files) <= set(scanned)
                files = {rel: entry for rel, entry in files.items() if rel in scanned}
                # The metadata file last: a trainer writes it after the files it describes.
                for rel in sorted(scanned, key=lambda rel: (rel == META_NAME, rel)):
                    stat = scanned[rel]
                    old = files.get(rel, previous.get(rel))
                    if old is not None and (old.get("size"), old.get("mtime_ns")) == (
                        stat.st_size,
                        stat.st_mtime_ns,
                    ):
                        files[rel] = old
                        continue
                    settled = False
                    key = f"data/{generation}/{rel}"
                    sent = self._send(rel, key)
                    if sent is None:
                        if old is not None:
                            files[rel] = old
                        continue
                    sent_stat, data = sent
                    files[rel] = {"key": key, "size": sent_stat.st_size, "mtime_ns": sent_stat.st_mtime_ns}
                    if rel == META_NAME:
                        meta = _parse_meta(data)
                if settled:
                    break
            if not settled and files != previous:
                self.log.warning(
                    "Checkpoint files in %s kept changing during %d upload rounds: generation %s may "
                    "mix files written at different times",
                    self.local_dir,
                    UPLOAD_ROUNDS,
                    generation,
                )
            if META_NAME not in files:
                meta = {}
            if self._manifest is not None and files == previous:
                return UploadResult(
                    self._manifest["generation"], 0, 0, len(files), total, time.monotonic() - started, False
                )
            mine = [entry for entry in files.values() if entry["key"].startswith(f"data/{generation}/")]
            manifest = {
                "format": FORMAT,
                "generation": generation,
                "created": time.time(),
                "files": files,
                "bytes": sum(entry["size"] for entry in files.values()),
                "meta": meta,
            }
            self.store.put_bytes(self._key(MANIFEST_NAME), json.dumps(manifest, sort_keys=True).encode())
            self._manifest = manifest
            self._collect_garbage(files)
            return UploadResult(
                generation,
                len(mine),
                sum(entry["size"] for entry in mine),
                len(files),
                total,
                time.monotonic() - started,
                True,
            )

    def _send(self, rel: str, key: str) -> tuple[os.stat_result, bytes | None] | None:
        """
        Upload one file; return the stat of what was sent (and, for :data:`META_NAME`, its
        bytes), or None when it cannot be trusted.

        One open file serves the whole upload: a trainer that replaces the file atomically
        (tmp + rename) meanwhile leaves this handle on the complete older version, which is sent
        and recorded with its own size and mtime (the next round sends the newer one). A file
        written in place while it was read may be torn: None, and it goes with the next round.
        """
        path = self.local_dir / rel
        data: bytes | None = None
        try:
            with open(path, "rb") as handle:
                before = os.fstat(handle.fileno())
                if rel == META_NAME and before.st_size <= META_MAX_BYTES:
                    data = handle.read()
                    self.store.put_bytes(self._key(key), data)
                else:
                    # The store gets its own descriptor of the same open file (boto3 closes it).
                    with os.fdopen(os.dup(handle.fileno()), "rb") as stream:
                        self.store.put_stream(self._key(key), stream)
                after = os.fstat(handle.fileno())
        except FileNotFoundError:  # renamed or removed since the scan (a trainer's tmp file)
            return None
        except OSError as err:
            raise CheckpointStoreError(
                f"cannot read checkpoint file {str(path)!r}: {err.strerror or err}"
            ) from err
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            self.log.debug("%s changed while it was uploaded; it goes with the next round", rel)
            return None
        return before, data

    def _collect_garbage(self, files: dict[str, Any]) -> None:
        referenced = {self._key(entry["key"]) for entry in files.values()}
        try:
            stale = [key for key in self.store.list_keys(self._key("data")) if key not in referenced]
            if stale:
                self.store.delete_keys(stale)
        except CheckpointStoreError as err:  # the manifest is written: stale objects only cost space
            self.log.warning("Could not delete old checkpoint objects under %s: %s", self.prefix, err)

    def delete(self) -> int:
        """Delete the whole checkpoint (manifest and data); return the number of objects deleted."""
        with self._lock:
            keys = self.store.list_keys(self.prefix)
            manifest = self._key(MANIFEST_NAME)
            # The manifest first: a half-done delete leaves no manifest pointing at missing data.
            if manifest in keys:
                self.store.delete_keys([manifest])
            rest = [key for key in keys if key != manifest]
            if rest:
                self.store.delete_keys(rest)
            self._manifest, self._loaded = None, True
            return len(keys)
