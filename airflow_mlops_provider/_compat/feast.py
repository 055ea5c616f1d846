"""Every use of Feast's private API, each behind a version gate with a public fallback.

The hook relies on four pieces of Feast (and typeguard) that are not public API. Each was read
in ``feast-dev/feast`` at tag ``v0.50.0`` (the declared floor), at every release tag up to
``v0.66.0``, and in the installed 0.67.0; all have the same shape there. A gate covers
``0.50.0 <= feast < 0.68.0``. Outside it, the hook takes Feast's public path and logs once, at
WARNING, what that costs:

- ``TYPEGUARD_GATE``: feast's modules bind ``typeguard.typechecked`` while they are imported
  (``from typeguard import typechecked``). Fallback: a plain ``import feast``.
- ``PROVIDER_GATE``: ``FeatureStore._get_provider()``. Fallback: a second provider from the
  public ``feast.infra.provider.get_provider(store.config)``.
- ``FILE_REGISTRY_GATE``: ``Registry._registry_store``, ``FileRegistryStore._filepath`` and
  ``._write_registry``. Fallback: Feast's own in-place registry write (still under the lock).
- ``SQLITE_GATE``: ``SqliteOnlineStore._conn``, ``._get_conn``, ``._get_db_path``, and
  ``online_write_batch`` writing only inside ``with conn:``. Fallback: Feast's own
  ``online_write_batch`` under the SQLite write lock, the database path from the config.

Importing this module imports neither feast nor typeguard.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_mlops_provider import _compat
from airflow_mlops_provider._compat import VersionRange

if TYPE_CHECKING:
    import sqlite3

    from feast import FeatureStore
    from feast.infra.provider import Provider

__all__ = [
    "FILE_REGISTRY_GATE",
    "PROVIDER_GATE",
    "SQLITE_GATE",
    "TYPEGUARD_GATE",
    "gate_open",
    "import_feast",
    "make_file_registry_writes_atomic",
    "set_sqlite_connection",
    "sqlite_connection",
    "sqlite_db_path",
    "sqlite_recorded_writes_supported",
    "store_provider",
]

log = logging.getLogger(__name__)

_LOWEST, _BELOW = "0.50.0", "0.68.0"

#: sdk/python/feast/{feature_view,entity,field,...}.py: ``from typeguard import typechecked`` and
#: ``@typechecked`` on the definition classes, applied while the module is imported (18 modules in
#: 0.67.0, 16 in 0.50.0). typeguard 4's ``typechecked`` re-reads and re-compiles the defining
#: module once per method.
TYPEGUARD_GATE = VersionRange(
    "feast", _LOWEST, _BELOW, "Importing feast with typeguard's @typechecked turned off"
)
#: sdk/python/feast/feature_store.py: ``FeatureStore._get_provider()`` returns ``self._provider``,
#: built in ``__init__`` by ``get_provider(self.config)``.
PROVIDER_GATE = VersionRange("feast", _LOWEST, _BELOW, "FeatureStore._get_provider()")
#: sdk/python/feast/infra/registry/registry.py ``Registry.__init__`` sets ``self._registry_store``;
#: sdk/python/feast/infra/registry/file.py ``FileRegistryStore`` keeps the path in ``_filepath``
#: and ``update_registry_proto`` calls ``self._write_registry(registry_proto)``, which sets
#: ``version_id`` and ``last_updated`` and rewrites the file in place.
FILE_REGISTRY_GATE = VersionRange(
    "feast",
    _LOWEST,
    _BELOW,
    "Registry._registry_store, FileRegistryStore._filepath and FileRegistryStore._write_registry",
)
#: sdk/python/feast/infra/online_stores/sqlite.py ``SqliteOnlineStore``: the class attribute
#: ``_conn``, ``_get_conn(config)`` (opens ``_conn`` once), the static ``_get_db_path(config)``,
#: and ``online_write_batch``, which gets ``conn = self._get_conn(config)`` and issues its
#: upserts with ``conn.execute`` inside one ``with conn:`` (0.67.0 also runs a ``PRAGMA`` before
#: it, outside the transaction).
SQLITE_GATE = VersionRange(
    "feast",
    _LOWEST,
    _BELOW,
    "SqliteOnlineStore._conn, _get_conn, _get_db_path and online_write_batch's `with conn:` writes",
)

_WARNED: set[str] = set()
_WARN_LOCK = threading.Lock()
_IMPORT_LOCK = threading.Lock()


def gate_open(gate: VersionRange, fallback: str) -> bool:
    """
    Return True when the installed feast is inside ``gate``; otherwise log once why not.

    :param gate: One of this module's gates.
    :param fallback: What the hook does instead, for the warning.
    """
    if _compat.version_gate(gate):
        return True
    with _WARN_LOCK:
        first = gate.what not in _WARNED
        _WARNED.add(gate.what)
    if first:
        log.warning("%s; %s", gate.describe(_compat.installed_version(gate.distribution)), fallback)
    return False


# --- importing feast -------------------------------------------------------------------------


def _skip_instrumentation(target: Any = None, **_options: Any) -> Any:
    """Stand-in for ``typeguard.typechecked``: return the class or function unchanged."""
    if target is None:
        return _skip_instrumentation
    return target


def import_feast(*, typecheck: bool = False) -> None:
    """
    Import feast once per process, by default without typeguard's import-time instrumentation.

    Feast then skips its run-time argument type checks (as under ``python -O``); the values it
    reads and writes are the same. Whichever import comes first in a process decides for it.

    :param typecheck: Keep typeguard's ``@typechecked`` instrumentation of Feast's classes (run-
        time argument type checks, about 2.7 s more import time). Has no effect once feast is
        imported in this process.
    """
    if "feast" in sys.modules:
        return
    with _IMPORT_LOCK:
        if "feast" in sys.modules:
            return
        if typecheck or not gate_open(
            TYPEGUARD_GATE, "importing feast with typeguard's instrumentation (about 2.7 s more)"
        ):
            import feast

            return
        import typeguard  # a dependency of feast

        original = typeguard.typechecked
        typeguard.typechecked = _skip_instrumentation
        try:
            import feast  # noqa: F401
        finally:
            typeguard.typechecked = original


# --- provider --------------------------------------------------------------------------------


def store_provider(store: FeatureStore) -> Provider:
    """The store's provider (and so its online store); outside the gate, a new one for its config."""
    if gate_open(PROVIDER_GATE, "building a second provider with feast.infra.provider.get_provider"):
        return store._get_provider()
    from feast.infra.provider import get_provider

    return get_provider(store.config)


# --- file registry ---------------------------------------------------------------------------


def make_file_registry_writes_atomic(store: FeatureStore) -> None:
    """
    Let a file registry write a temporary file and rename it, so no reader sees half a file.

    Call it for a local file registry only. Outside the gate Feast's own write stays: it
    rewrites the file in place, still under the hook's registry lock.
    """
    fallback = "the file registry is rewritten in place by Feast (not atomically)"
    if not gate_open(FILE_REGISTRY_GATE, fallback):
        return
    registry_store: Any = getattr(store.registry, "_registry_store", None)
    filepath = getattr(registry_store, "_filepath", None)
    if filepath is None or type(registry_store).__name__ != "FileRegistryStore":
        log.warning("Feast's registry store is %r, not a FileRegistryStore; %s", registry_store, fallback)
        return

    def write_atomically(registry_proto: Any) -> None:
        # What FileRegistryStore._write_registry sets before writing.
        registry_proto.version_id = str(uuid.uuid4())
        registry_proto.last_updated.FromDatetime(datetime.now(timezone.utc))
        path = Path(filepath)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(registry_proto.SerializeToString())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    registry_store._write_registry = write_atomically


# --- SQLite online store ---------------------------------------------------------------------


def sqlite_recorded_writes_supported() -> bool:
    """True when a SQLite batch may be recorded outside the database lock and replayed."""
    return gate_open(
        SQLITE_GATE,
        "SQLite batches are written by Feast's own online_write_batch under the write lock, "
        "rows prepared while the lock is held",
    )


def sqlite_db_path(online_store: Any, config: Any) -> Path:
    """The database file of Feast's SQLite online store (outside the gate: from the config)."""
    if _compat.version_gate(SQLITE_GATE):
        return Path(online_store._get_db_path(config))
    # Public config, resolved as _get_db_path does in 0.50.0 to 0.67.0.
    path = Path(config.online_store.path)
    if config.repo_path and not path.is_absolute():
        path = Path(config.repo_path) / path
    return path


def sqlite_connection(online_store: Any, config: Any) -> sqlite3.Connection:
    """The store's own connection, opened if need be (only inside the gate)."""
    _compat.version_gate(SQLITE_GATE, strict=True)
    conn: sqlite3.Connection = online_store._get_conn(config)
    return conn


def set_sqlite_connection(online_store: Any, conn: Any) -> None:
    """Make ``online_write_batch`` (via ``_get_conn``) use ``conn`` (only inside the gate)."""
    _compat.version_gate(SQLITE_GATE, strict=True)
    online_store._conn = conn
