"""Assets for Feast feature views: ``feast://<project>/<feature_view>``.

``FeastMaterializeOperator`` emits one asset event per materialized feature view through an
``AssetAlias``; a DAG scheduled on ``feature_view_asset("proj", "fv")`` runs after each one.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset

if TYPE_CHECKING:
    from urllib.parse import SplitResult

SCHEME = "feast"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def feature_view_uri(project: str, feature_view: str) -> str:
    """Return the asset URI of a feature view, ``feast://<project>/<feature_view>``."""
    for label, value in (("project", project), ("feature_view", feature_view)):
        if not isinstance(value, str) or not _NAME.match(value):
            raise ValueError(f"{label} must be a Feast name (letters, digits, '_', '-', '.'), got {value!r}")
    return f"{SCHEME}://{project}/{feature_view}"


def feature_view_asset(project: str, feature_view: str, *, extra: dict[str, Any] | None = None) -> Asset:
    """Return the ``Asset`` of a feature view (name and URI are both the ``feast://`` URI)."""
    uri = feature_view_uri(project, feature_view)
    return Asset(name=uri, uri=uri, extra=extra or {})


def sanitize_uri(uri: SplitResult) -> SplitResult:
    """Check a ``feast://`` asset URI (registered with Airflow under ``asset-uris``)."""
    view = uri.path.strip("/")
    if not uri.netloc or not view or "/" in view:
        raise ValueError(
            f"A Feast asset URI must look like feast://<project>/<feature_view>, got {uri.geturl()!r}"
        )
    return uri
