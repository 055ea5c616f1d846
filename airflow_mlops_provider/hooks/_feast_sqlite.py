"""Write batches to Feast's SQLite online store so that parallel tasks overlap.

Feast's ``SqliteOnlineStore.online_write_batch`` prepares every row (entity-key and value
serialisation, timestamps) inside its write transaction, with one ``execute`` per row. SQLite
admits one writer per database file, so tasks that write the same store take turns for the whole
of that Python work. A writer that waits longer than Feast's busy timeout (5 s) fails with
"database is locked".

:func:`write_batch` runs Feast's own method against a stand-in connection that records the
statements of each transaction. It then replays them in order, with ``executemany``, in one
transaction on the real connection, under an exclusive file lock next to the database. The SQL,
the parameters and their order are Feast's. Only the preparation moves out of the lock, and a
waiting writer queues on the file lock instead of timing out.

The private parts of Feast's store this needs (``_conn``, ``_get_conn``, ``_get_db_path`` and
the shape of ``online_write_batch``) are reached through :mod:`airflow_mlops_provider._compat.feast`.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Literal

from airflow_mlops_provider._compat import feast as feast_compat

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager
    from pathlib import Path

_WRITE_VERBS = ("INSERT", "UPDATE", "DELETE", "REPLACE")


class _NotDeferrable(Exception):
    """Feast ran a statement whose result it needs inside the transaction."""


class _RecordingConnection:
    """Stand-in for a ``sqlite3.Connection``: records the writes made inside ``with conn:``."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._depth = 0
        self._current: list[tuple[str, Any]] = []
        self._checked_sql: str | None = None  # the last statement found to be a write
        self.transactions: list[list[tuple[str, Any]]] = []

    def __enter__(self) -> _RecordingConnection:
        if self._depth == 0:
            self._current = []
        self._depth += 1
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Literal[False]:
        self._depth -= 1
        if self._depth == 0 and exc_type is None:
            self.transactions.append(self._current)
        return False

    def execute(self, sql: str, parameters: Any = ()) -> Any:
        if self._depth == 0:
            return self._conn.execute(sql, parameters)
        if sql is not self._checked_sql:
            if not sql.lstrip().upper().startswith(_WRITE_VERBS):
                raise _NotDeferrable(sql)
            self._checked_sql = sql
        self._current.append((sql, parameters))
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def write_batch(
    write: Callable[..., Any],
    online_store: Any,
    config: Any,
    table: Any,
    data: Any,
    progress: Any,
    *,
    lock: Callable[[Path], AbstractContextManager[Any]],
) -> None:
    """
    Run Feast's ``online_write_batch`` (``write``) with the database held only for the writes.

    Outside the feast versions this was written for (``_compat.feast.SQLITE_GATE``), Feast's own
    write runs as it is, under the same lock.

    :param write: The online store's original ``online_write_batch``.
    :param lock: Returns the exclusive lock for a database file (held while replaying).
    """
    path = feast_compat.sqlite_db_path(online_store, config)
    if not feast_compat.sqlite_recorded_writes_supported():
        with lock(path):
            write(config, table, data, progress)
        return
    conn = feast_compat.sqlite_connection(online_store, config)
    recorder = _RecordingConnection(conn)
    feast_compat.set_sqlite_connection(online_store, recorder)
    try:
        write(config, table, data, progress)
    except _NotDeferrable:
        # A Feast version that reads inside its write transaction: run it as it is.
        feast_compat.set_sqlite_connection(online_store, conn)
        with lock(path):
            write(config, table, data, progress)
        return
    finally:
        feast_compat.set_sqlite_connection(online_store, conn)
    with lock(path):
        for statements in recorder.transactions:
            with conn:
                for sql, group in itertools.groupby(statements, key=lambda item: item[0]):
                    conn.executemany(sql, [parameters for _, parameters in group])
