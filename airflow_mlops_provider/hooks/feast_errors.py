"""Which errors of a Feast hook call are worth retrying (the triggers' ``is_transient`` predicate)."""

from __future__ import annotations

import sqlite3

from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops_provider.exceptions import FeatureStoreError

__all__ = ["FeastLockTimeoutError", "is_transient_feast_error"]

#: redis-py errors (matched by class name, so redis is not imported) worth retrying. Its
#: AuthenticationError subclasses its ConnectionError and is a configuration error.
_REDIS_TRANSIENT = {"ConnectionError", "TimeoutError", "BusyLoadingError"}
_REDIS_CONFIG = {"AuthenticationError", "AuthenticationWrongNumberOfArgsError"}
#: OSErrors that a retry does not cure: the repo, registry or store is missing or unreadable.
_OS_CONFIG = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)


class FeastLockTimeoutError(FeatureStoreError):
    """Waiting for one of the Feast hook's file locks (registry, online store) timed out."""


def is_transient_feast_error(err: BaseException) -> bool:
    """
    Return True for an error a retry may cure, looking through the ``__cause__`` chain.

    Transient: a lock timeout (:class:`FeastLockTimeoutError`), network and I/O errors
    (``OSError``, except a missing or unreadable file), redis-py's ``ConnectionError``,
    ``TimeoutError`` and ``BusyLoadingError`` (not its ``AuthenticationError``), and SQLite's
    "database is locked". Not transient: configuration errors (``AirflowFailException``: bad
    connection or YAML), unknown feature views, and anything else.

    :param err: The error raised by the check.
    """
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, AirflowFailException):
            return False
        if isinstance(current, FeastLockTimeoutError):
            return True
        if isinstance(current, sqlite3.OperationalError):
            return "database is locked" in str(current)
        redis_classes = {cls.__name__ for cls in type(current).__mro__ if cls.__module__.startswith("redis")}
        if redis_classes & _REDIS_CONFIG:
            return False
        if redis_classes & _REDIS_TRANSIENT:
            return True
        if isinstance(current, OSError):
            return not isinstance(current, _OS_CONFIG)
        current = current.__cause__
    return False
