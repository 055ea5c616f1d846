"""What the Models view shows: the MLflow registry behind each ``mlflow`` connection.

Everything is read through the :class:`~airflow_mlops_provider.hooks.mlflow.MlflowHook` of each
connection, with a bounded number of calls per page (never "all versions"):

- the model list: one ``registered-models/search`` page per connection (its latest version and
  aliases come with it), and one ``model-versions/search`` for the last promotion decision of
  the models on the page;
- a model: ``registered-models/get``, one page of versions newest first (``page_token``), the
  newest promotion decisions, and one ``runs/search`` for the experiments of the versions' runs
  (for the links to MLflow's UI).

An ``http(s)`` registry is asked with single requests bounded by :data:`TIMEOUT` (MLflow's own
client retries for minutes when the server is down); an embedded ``sqlite:``/``file:`` registry
through the hook's client. Both give MLflow's REST JSON shape. A backend that fails gives an
``error`` text (redacted) instead of an exception.

The tags read are the ones the operators write: ``airflow.dag_id`` / ``airflow.run_id`` /
``airflow.task_id`` / ``airflow.map_index`` (:func:`~airflow_mlops_provider.operators.
mlflow_common.ti_identity_tags`) and ``airflow.promotion.*``
(:class:`~airflow_mlops_provider.operators.mlflow_alias.MlflowPromoteModelOperator`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from airflow_mlops_provider._compat import airflow_ui
from airflow_mlops_provider.plugins.models_registry import TIMEOUT, Registry, registry_hook

if TYPE_CHECKING:
    from airflow_mlops_provider.hooks.mlflow import MlflowHook

__all__ = [
    "MODELS_PAGE_SIZE",
    "PAGE_SIZE",
    "TIMEOUT",
    "airflow_links",
    "model_detail",
    "models_overview",
    "promotion_of",
    "registered_by",
    "tag_dict",
]

log = logging.getLogger(__name__)

#: Versions per page of a model.
PAGE_SIZE = 50
#: Registered models per page of a connection.
MODELS_PAGE_SIZE = 100
#: Newest promotion decisions shown on a model's page.
PROMOTIONS_SHOWN = 20

PROMOTION_PREFIX = "airflow.promotion."
DECISION_TAG = PROMOTION_PREFIX + "decision"
_FLOATS = ("challenger_value", "champion_value", "delta", "min_delta")


def tag_dict(tags: Any) -> dict[str, str]:
    """MLflow's tags (``[{"key", "value"}]`` in JSON, or a mapping) as a dict."""
    if isinstance(tags, dict):
        return {str(k): str(v) for k, v in tags.items()}
    return {str(t.get("key")): str(t.get("value", "")) for t in tags or [] if isinstance(t, dict)}


def _float(text: Any) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except (TypeError, ValueError):
        return None


def promotion_of(tags: dict[str, str]) -> dict[str, Any] | None:
    """The ``airflow.promotion.*`` decision recorded on a version, or None (values as floats)."""
    if DECISION_TAG not in tags:
        return None
    found: dict[str, Any] = {
        key[len(PROMOTION_PREFIX) :]: value for key, value in tags.items() if key.startswith(PROMOTION_PREFIX)
    }
    for key in _FLOATS:
        found[key] = _float(found.get(key))
    for key in ("metric", "mode", "alias", "champion_version"):
        found.setdefault(key, "")
    return found


def airflow_links(
    dag_id: str, run_id: str | None = None, task_id: str | None = None, map_index: Any = -1
) -> dict[str, str]:
    """Airflow 3 UI paths of a DAG, its run and a task instance (each part URL-quoted)."""
    links = {"dag": f"/dags/{quote(dag_id, safe='')}"}
    if run_id:
        links["run"] = f"{links['dag']}/runs/{quote(run_id, safe='')}"
        if task_id:
            links["task"] = f"{links['run']}/tasks/{quote(task_id, safe='')}"
            index = str(map_index if map_index not in (None, "") else -1)
            if index.lstrip("-").isdigit() and int(index) >= 0:
                links["task"] += f"/mapped/{index}"
    return links


def registered_by(tags: dict[str, str]) -> dict[str, Any] | None:
    """The Airflow task instance that registered a version (``airflow.*`` tags), or None."""
    dag_id = tags.get("airflow.dag_id")
    if not dag_id:
        return None
    run_id, task_id = tags.get("airflow.run_id", ""), tags.get("airflow.task_id", "")
    map_index = tags.get("airflow.map_index", "-1")
    return {
        "dag_id": dag_id,
        "run_id": run_id,
        "task_id": task_id,
        "map_index": map_index,
        "links": airflow_links(dag_id, run_id, task_id, map_index),
    }


def _error_text(conn_id: str, err: BaseException, hook: MlflowHook | None) -> str:
    text = f"{type(err).__name__}: {err}"
    secret = None
    if hook is not None:
        try:
            secret = hook._settings.get("secret")
        except Exception:
            secret = None
    if secret:
        text = text.replace(secret, "***")
    if len(text) > 600:
        text = text[:600] + " ..."
    return str(airflow_ui.redact(text))


def _model_url(hook: MlflowHook, name: str) -> str:
    return f"{hook.ui_url}/#/models/{quote(name, safe='')}" if hook.ui_url else ""


def _view_path(conn_id: str, name: str, **query: Any) -> str:
    path = f"/mlops/models/{quote(conn_id, safe='')}/{quote(name, safe='')}"
    query = {k: v for k, v in query.items() if v not in (None, "")}
    return f"{path}?{urlencode(query)}" if query else path


def _aliases(model: dict[str, Any]) -> dict[str, str]:
    return {str(a.get("alias")): str(a.get("version")) for a in model.get("aliases") or []}


def _last_promotions(registry: Registry, names: list[str]) -> dict[str, dict[str, Any]]:
    """The newest promotion decision of each of ``names`` (one call, bounded)."""
    from airflow_mlops_provider.hooks.mlflow import filter_literal

    quoted = []
    for name in names:
        try:
            quoted.append(filter_literal(name))
        except ValueError:
            continue
    if not quoted:
        return {}
    clause = f"name IN ({', '.join(quoted)}) AND tags.`{DECISION_TAG}` LIKE '%'"
    versions, _ = registry.search_versions(clause, max_results=1000)
    latest: dict[str, dict[str, Any]] = {}
    for version in versions:
        name = str(version.get("name"))
        if name not in latest and (promotion := promotion_of(tag_dict(version.get("tags")))):
            latest[name] = {"version": str(version.get("version")), **promotion}
    return latest


def _connection_models(conn_id: str, page_token: str | None) -> dict[str, Any]:
    hook: MlflowHook | None = None
    result: dict[str, Any] = {
        "conn_id": conn_id,
        "ui_url": "",
        "models": [],
        "next_page_token": None,
        "error": None,
    }
    try:
        hook = registry_hook(conn_id)
        result["ui_url"] = hook.ui_url
        registry = Registry(hook)
        models, result["next_page_token"] = registry.search_models(MODELS_PAGE_SIZE, page_token)
        names = [str(m.get("name")) for m in models]
        promotions = _last_promotions(registry, names) if names else {}
        for model in models:
            name = str(model.get("name"))
            latest = max((int(v.get("version", 0)) for v in model.get("latest_versions") or []), default=None)
            result["models"].append(
                {
                    "name": name,
                    "description": model.get("description") or "",
                    "latest_version": str(latest) if latest is not None else "",
                    "aliases": _aliases(model),
                    "last_updated": model.get("last_updated_timestamp"),
                    "last_promotion": promotions.get(name),
                    "path": _view_path(conn_id, name),
                    "mlflow_url": _model_url(hook, name),
                }
            )
    except Exception as err:
        log.warning("mlops models view: MLflow connection %s failed: %s", conn_id, err)
        result["error"] = _error_text(conn_id, err, hook)
    return result


def models_overview(*, conn_id: str | None = None, page_token: str | None = None) -> dict[str, Any]:
    """
    Every registered model of every ``mlflow`` connection (one page each), for ``GET /models``.

    :param conn_id: The connection ``page_token`` belongs to.
    :param page_token: MLflow's token of the next page of ``conn_id``'s models.
    """
    connections = airflow_ui.connection_ids_of_type("mlflow")
    return {
        "connections": [
            _connection_models(cid, page_token if cid == conn_id else None) for cid in connections
        ]
    }


def _version_row(
    version: dict[str, Any], hook: MlflowHook, experiments: dict[str, str], aliases: dict[str, str]
) -> dict[str, Any]:
    tags = tag_dict(version.get("tags"))
    name, number = str(version.get("name")), str(version.get("version"))
    run_id = version.get("run_id") or ""
    # A searched version carries no aliases in MLflow's answer: they come from the model.
    version_aliases = sorted(
        {*(str(a) for a in version.get("aliases") or []), *(a for a, v in aliases.items() if v == number)}
    )
    return {
        "version": number,
        "status": version.get("status") or "",
        "created": version.get("creation_timestamp"),
        "source": version.get("source") or "",
        "run_id": run_id,
        "run_url": hook.run_url(experiments.get(run_id), run_id),
        "aliases": version_aliases,
        "registered_by": registered_by(tags),
        "promotion": promotion_of(tags),
        "tags": {k: v for k, v in tags.items() if not k.startswith("airflow.")},
        "mlflow_url": hook.model_version_url(name, number),
    }


def model_detail(
    conn_id: str, name: str, *, page_token: str | None = None, page: int = 1, page_size: int = PAGE_SIZE
) -> dict[str, Any]:
    """
    One registered model: one page of versions newest first, aliases and promotion history.

    :param conn_id: The ``mlflow`` connection.
    :param name: The registered model.
    :param page_token: MLflow's token of the page to show (None: the newest versions).
    :param page: The page's number, for display.
    :param page_size: Versions per page.
    :raises LookupError: ``conn_id`` is not an ``mlflow`` connection, or the model does not exist.
    """
    from airflow_mlops_provider.hooks.mlflow import filter_literal

    if conn_id not in airflow_ui.connection_ids_of_type("mlflow"):
        raise LookupError(f"no mlflow connection {conn_id!r}")
    result: dict[str, Any] = {
        "conn_id": conn_id, "name": name, "description": "", "aliases": [], "versions": [],
        "promotions": [], "page": page, "next_page_token": None, "next_path": "", "first_path": "",
        "mlflow_url": "", "ui_url": "", "error": None,
    }  # fmt: skip
    hook: MlflowHook | None = None
    try:
        hook = registry_hook(conn_id)
        registry = Registry(hook)
        result["ui_url"], result["mlflow_url"] = hook.ui_url, _model_url(hook, name)
        try:
            model = registry.get_model(name)
        except Exception as err:
            if hook.is_not_found(err):
                raise LookupError(f"no registered model {name!r} behind connection {conn_id!r}") from err
            raise
        result["description"] = model.get("description") or ""
        aliases = _aliases(model)
        clause = f"name = {filter_literal(name)}"
        versions, token = registry.search_versions(clause, page_size, page_token)
        promoted, _ = registry.search_versions(
            f"{clause} AND tags.`{DECISION_TAG}` LIKE '%'", PROMOTIONS_SHOWN
        )
        experiments = registry.experiments_of_runs(v.get("run_id") or "" for v in versions)
        result["versions"] = [_version_row(v, hook, experiments, aliases) for v in versions]
        result["aliases"] = [
            {"alias": alias, "version": version, "mlflow_url": hook.model_version_url(name, version)}
            for alias, version in sorted(aliases.items())
        ]
        result["promotions"] = [
            {
                "version": str(v.get("version")),
                "created": v.get("creation_timestamp"),
                **(promotion_of(tag_dict(v.get("tags"))) or {}),
            }
            for v in promoted
        ]
        result["next_page_token"] = token
        if token:
            result["next_path"] = _view_path(conn_id, name, page_token=token, page=page + 1)
        if page_token:
            result["first_path"] = _view_path(conn_id, name)
    except LookupError:
        raise
    except Exception as err:
        log.warning("mlops models view: model %s of connection %s failed: %s", name, conn_id, err)
        result["error"] = _error_text(conn_id, err, hook)
    return result
