"""Load Feast's MLflow request-header plugin only once Feast itself is in use.

feast 0.67 registers ``feast = feast.infra.data_sources.mlflow.auth:FeastMLflowHeaderProvider``
in the entry-point group ``mlflow.request_header_provider``. MLflow loads every plugin of that
group when its registry module is first imported: mlflow/tracking/request_header/registry.py
calls ``_request_header_provider_registry.register_entrypoints()`` at module level, and
mlflow/utils/rest_utils.py ``http_request`` imports that module on the first HTTP request of a
process (read in 3.1.0 and 3.17.2). Loading Feast's plugin imports all of ``feast`` (4 to 10 s
on 2 cores) in every task process that talks to MLflow, which is most of a tracked sweep's
overhead per round.

The plugin adds a header only when ``in_context()``, which is
``_current_mlflow_token.get() is not None``: a ``ContextVar`` of the plugin's own module, set only
by Feast's ``mlflow_token_scope`` (read in feast 0.67.0). Until that module is imported, nothing
can have set it, and the plugin adds nothing. :func:`defer_feast_header_plugin` therefore imports
MLflow's registry with Feast's entry point left out and registers a stand-in that loads the real
provider as soon as its module is imported (by Feast, for its MLflow data sources), and from then
on answers as it does. Requests carry the same headers as before, minus the import.

Both gates: ``mlflow >=3.1.0,<3.19`` (``get_entry_points`` imported by name into the registry
module, ``_request_header_provider_registry.register(cls)``) and ``feast >=0.67.0,<0.68`` (the
entry point and ``in_context``). Outside them, or once MLflow's registry is imported, nothing is
changed. Importing this module imports no mlflow and no feast.
"""

from __future__ import annotations

import sys
from typing import Any

from airflow_mlops_provider._compat import VersionRange, version_gate

__all__ = ["FEAST_PLUGIN_GATE", "REGISTRY_GATE", "defer_feast_header_plugin"]

REGISTRY_GATE = VersionRange(
    "mlflow",
    "3.1.0",
    "3.19",
    "mlflow.tracking.request_header.registry (get_entry_points bound at import, "
    "_request_header_provider_registry.register)",
)
FEAST_PLUGIN_GATE = VersionRange(
    "feast",
    "0.67.0",
    "0.68",
    "the mlflow.request_header_provider entry point "
    "feast.infra.data_sources.mlflow.auth:FeastMLflowHeaderProvider (in_context reads a ContextVar "
    "of its own module)",
)
_REGISTRY = "mlflow.tracking.request_header.registry"
_GROUP = "mlflow.request_header_provider"
_FEAST_MODULE = "feast.infra.data_sources.mlflow.auth"
_FEAST_ENTRY = f"{_FEAST_MODULE}:FeastMLflowHeaderProvider"


class _DeferredFeastProvider:
    """Stands in for Feast's provider; loads it once its module is imported, then answers as it does."""

    def __init__(self, entrypoint: Any) -> None:
        self._entrypoint = entrypoint
        self._real: Any = None

    def _provider(self) -> Any:
        if self._real is None and _FEAST_MODULE in sys.modules:
            self._real = self._entrypoint.load()()
        return self._real

    def in_context(self) -> bool:
        real = self._provider()
        return bool(real is not None and real.in_context())

    def request_headers(self) -> dict[str, str]:
        real = self._provider()
        return dict(real.request_headers()) if real is not None else {}


def defer_feast_header_plugin() -> bool:
    """
    Import MLflow's request-header registry with Feast's plugin deferred (see the module docstring).

    :return: True when the plugin was deferred; False when there was nothing to do (outside the
        gates, Feast's plugin not installed, or MLflow's registry imported already).
    """
    if _REGISTRY in sys.modules or not version_gate(FEAST_PLUGIN_GATE) or not version_gate(REGISTRY_GATE):
        return False
    import mlflow.utils.plugins as plugins

    original = plugins.get_entry_points
    deferred: list[Any] = []

    def without_feast(group: str) -> Any:
        entries = list(original(group))
        if group != _GROUP:
            return entries
        deferred.extend(e for e in entries if e.value == _FEAST_ENTRY)
        return [e for e in entries if e.value != _FEAST_ENTRY]

    plugins.get_entry_points = without_feast
    try:
        import mlflow.tracking.request_header.registry as registry
    finally:
        plugins.get_entry_points = original
    for entry in deferred:
        registry._request_header_provider_registry.register(lambda entry=entry: _DeferredFeastProvider(entry))
    return bool(deferred)
