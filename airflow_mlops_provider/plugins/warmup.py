"""Import mlflow and feast in the background once the api-server serves an MLOps page.

``import mlflow`` takes about 3 s and ``import feast`` about 5 s on two cores. The Models and
Features pages need them, and a person who opens one should not wait for the import. Doing it
while the api-server starts would slow its start-up (and every api-server that never shows
those pages), so the first request to any ``/mlops`` route starts one daemon thread that
imports each library a configured connection needs (``[mlops] plugin_warm_imports``, on by
default). A failed import is logged, not raised: the page that needs the library reports it.
"""

from __future__ import annotations

import logging
import threading
import time

__all__ = ["ensure_imported", "start_warmup", "warmup_thread"]

log = logging.getLogger(__name__)

#: (connection type, module to import).
WARM_MODULES = (("mlflow", "mlflow.tracking"), ("feast", "feast"))

_lock = threading.Lock()
_import_lock = threading.RLock()
_imported: set[str] = set()
_thread: threading.Thread | None = None


def ensure_imported(module: str) -> None:
    """
    Import ``module`` (``"mlflow.tracking"``, ``"feast"``) once per process, one thread at a time.

    Two threads importing mlflow for the first time at once (the warm-up and a request) can each
    get one of its modules half-initialized ("cannot import name 'LiveSpan' from partially
    initialized module"), so every first import of these libraries, the warm-up's and the
    views', goes through this one lock. mlflow is imported with Feast's request-header plugin
    deferred (:func:`~airflow_mlops_provider._compat.mlflow_headers.defer_feast_header_plugin`),
    which would otherwise import all of Feast.
    """
    if module in _imported:
        return
    import importlib

    with _import_lock:
        if module in _imported:
            return
        if module.split(".")[0] == "mlflow":
            from airflow_mlops_provider._compat.mlflow_headers import defer_feast_header_plugin

            defer_feast_header_plugin()
        importlib.import_module(module)
        _imported.add(module)


def _enabled() -> bool:
    from airflow.sdk import conf

    return conf.getboolean("mlops", "plugin_warm_imports", fallback=True)


def _warm() -> None:
    from airflow_mlops_provider._compat.airflow_ui import connection_ids_of_type

    for conn_type, module in WARM_MODULES:
        try:
            if not connection_ids_of_type(conn_type):
                continue
            started = time.monotonic()
            ensure_imported(module)
            log.info("mlops plugin: imported %s in %.1f s (warm-up)", module, time.monotonic() - started)
        except Exception as err:  # a page that needs it says what is wrong
            log.warning("mlops plugin: warm-up import of %s failed: %s", module, err)


def start_warmup() -> threading.Thread | None:
    """Start the warm-up thread, once per process; return it (None when disabled)."""
    global _thread
    if _thread is not None:
        return _thread
    with _lock:
        if _thread is None:
            if not _enabled():
                return None
            _thread = threading.Thread(target=_warm, name="mlops-plugin-warmup", daemon=True)
            _thread.start()
    return _thread


def warmup_thread() -> threading.Thread | None:
    """The warm-up thread, if started."""
    return _thread
