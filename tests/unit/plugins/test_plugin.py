"""The ``mlops`` plugin as Airflow loads it: cheap to import, well-formed views, guarded routes.

The HTTP-level suite against a real api-server is tests/integration/plugin/test_security.py;
these are the in-process checks that run in a few seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import typing
from typing import Any

import pytest

from tests.conftest import REPO_ROOT, run_airflow

#: What the scheduler, the DAG processor and the workers must not pay for when they load plugins.
HEAVY = (
    "fastapi",
    "starlette",
    "mlflow",
    "feast",
    "pandas",
    "docker",
    "kubernetes",
    "boto3",
    "sqlalchemy.ext.asyncio",
)


def test_importing_the_plugin_imports_no_view_code_and_no_heavy_library() -> None:
    """In a fresh interpreter: importing plugins.mlops (and reading its views) adds only itself."""
    script = (
        "import json, sys\n"
        "import airflow.plugins_manager\n"
        "before = set(sys.modules)\n"
        "from airflow_mlops_provider.plugins.mlops import MlopsPlugin\n"
        "views = MlopsPlugin.external_views\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT, check=True
    )
    added = json.loads(out.stdout.strip().splitlines()[-1])
    heavy = [m for m in added if m.split(".")[0] in HEAVY or m in HEAVY]
    assert heavy == [], f"importing plugins.mlops imported {heavy}"
    ours = [m for m in added if m.startswith("airflow_mlops_provider")]
    assert set(ours) <= {
        "airflow_mlops_provider",
        "airflow_mlops_provider.plugins",
        "airflow_mlops_provider.plugins.mlops",
    }, ours


def test_external_views_are_what_airflow_accepts_and_each_has_a_route() -> None:
    from airflow.api_fastapi.core_api.datamodels.plugins import ExternalViewResponse
    from fastapi.routing import APIRoute

    from airflow_mlops_provider.plugins.app import URL_PREFIX, build_app
    from airflow_mlops_provider.plugins.mlops import EXTERNAL_VIEWS, MlopsPlugin

    assert MlopsPlugin.name == "mlops"
    assert MlopsPlugin.external_views is EXTERNAL_VIEWS
    views = [ExternalViewResponse.model_validate(v) for v in EXTERNAL_VIEWS]
    assert [(v.name, v.destination, v.href) for v in views] == [
        ("Sweep", "dag_run", "/mlops/sweeps/{DAG_ID}/{RUN_ID}"),
        ("Models", "nav", "/mlops/models"),
        ("Features", "nav", "/mlops/features"),
        ("GPUs", "nav", "/mlops/gpus"),
    ]
    assert {v.category for v in views if v.destination == "nav"} == {"MLOps"}
    assert len({v.url_route for v in views}) == len(views)
    assert {v.icon for v in views} == {"/mlops/assets/icon.svg"}
    routes = {f"{URL_PREFIX}{r.path}" for r in build_app().routes if isinstance(r, APIRoute)}
    for view in views:
        # Airflow fills {DAG_ID}/{RUN_ID}; the app declares them as {dag_id}/{run_id}.
        path = view.href.replace("{DAG_ID}", "{dag_id}").replace("{RUN_ID}", "{run_id}")
        assert path in routes, f"{view.name}: {path} is not a route of the app: {sorted(routes)}"
    assert f"{URL_PREFIX}/assets/icon.svg" in routes


def test_fastapi_apps_is_built_on_first_read_under_an_unreserved_prefix() -> None:
    from airflow.api_fastapi.app import RESERVED_URL_PREFIXES
    from fastapi import FastAPI

    from airflow_mlops_provider.plugins.app import build_app
    from airflow_mlops_provider.plugins.mlops import MlopsPlugin

    apps = MlopsPlugin.fastapi_apps
    assert [(a["name"], a["url_prefix"]) for a in apps] == [("mlops", "/mlops")]
    assert isinstance(apps[0]["app"], FastAPI)
    assert apps[0]["app"] is build_app() is MlopsPlugin.fastapi_apps[0]["app"]
    assert not any(apps[0]["url_prefix"].startswith(p) for p in RESERVED_URL_PREFIXES)
    assert apps[0]["app"].openapi_url is None  # no schema of the plugin's routes is published


def test_every_route_answers_401_without_a_token_in_process() -> None:
    from fastapi.routing import APIRoute
    from fastapi.testclient import TestClient

    from airflow_mlops_provider.plugins.app import build_app

    app = build_app()
    client = TestClient(app, raise_server_exceptions=False)
    for route in app.routes:
        if not isinstance(route, APIRoute):
            continue
        path = "/".join("x" if p.startswith("{") else p for p in route.path.split("/")) or "/"
        for accept in ("text/html", "application/json"):
            answer = client.get(path, headers={"Accept": accept}, follow_redirects=False)
            assert answer.status_code == 401, (route.path, accept, answer.text[:300])
            assert answer.headers["cache-control"] == "no-store"
            assert "script-src 'self';" in answer.headers["content-security-policy"]


def _client_with_a_failing_route(message: str) -> Any:
    from fastapi import Depends
    from fastapi.testclient import TestClient

    from airflow_mlops_provider.plugins import app as app_module
    from airflow_mlops_provider.plugins import auth

    app = app_module.build_app.__wrapped__()  # a fresh app: the cached one stays untouched
    get_user = typing.get_args(auth.CurrentUser)[1].dependency

    @app.get("/boom", dependencies=[Depends(get_user)])
    async def boom() -> None:
        raise RuntimeError(message)

    # Stand in for the signed-in user: this test is about the error page, not about signing in.
    app.dependency_overrides[get_user] = lambda: "alice"
    return TestClient(app, raise_server_exceptions=False)


def test_an_unexpected_error_is_a_readable_escaped_page_with_the_security_headers() -> None:
    """A view that lets an exception through still gets the CSP and no-store (it is a response too)."""
    from airflow_mlops_provider.plugins.app import SECURITY_HEADERS

    client = _client_with_a_failing_route("backend said <script>alert(1)</script>")
    page = client.get("/boom", headers={"Accept": "text/html"})
    assert page.status_code == 500
    assert "RuntimeError: backend said &lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "<script>" not in page.text
    as_json = client.get("/boom", headers={"Accept": "application/json"})
    assert as_json.json() == {"detail": "RuntimeError: backend said <script>alert(1)</script>"}
    for answer in (page, as_json):
        missing = {k: v for k, v in SECURITY_HEADERS.items() if answer.headers.get(k) != v}
        assert missing == {}, f"the 500 response lacks {sorted(missing)}"


@pytest.mark.parametrize(("dag_id", "team"), [("dag_a", "team_a"), ("dag_b", "team_b"), ("dag_free", None)])
def test_dag_access_is_decided_as_airflows_own_rest_api_decides_it(
    monkeypatch: pytest.MonkeyPatch, dag_id: str, team: str | None
) -> None:
    """
    ``can_read_dag`` must ask the auth manager what Airflow's ``requires_access_dag`` asks.

    Airflow passes the DAG's team (``DagModel.get_team_name``) to ``is_authorized_dag``; with
    multi-team, a user of team_a may not read team_b's DAGs. The DAG's team comes from the
    metadata database: here it is given by a stand-in for ``get_team_name``.
    """
    from airflow.api_fastapi import app as airflow_app
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.api_fastapi.core_api import security
    from airflow.models.dag import DagModel
    from fastapi import HTTPException
    from starlette.requests import Request

    from airflow_mlops_provider.plugins.auth import can_read_dag

    teams = {"dag_a": "team_a", "dag_b": "team_b"}
    monkeypatch.setattr(DagModel, "get_team_name", staticmethod(lambda dag_id, **_: teams.get(dag_id)))
    monkeypatch.setattr(airflow_app._AuthManagerState, "instance", SimpleAuthManager())
    user = SimpleAuthManagerUser(username="alice", role="viewer", teams=["team_a"])

    check = security.requires_access_dag("GET", DagAccessEntity.XCOM)
    request = Request({"type": "http", "path_params": {"dag_id": dag_id}, "query_string": b"", "headers": []})
    try:
        check(request, user)
        refusal = None
    except HTTPException as err:
        refusal = err.status_code
    assert refusal in (None, 403)
    airflow_allows = refusal is None
    assert airflow_allows is (team in (None, "team_a"))
    assert can_read_dag(user, dag_id) is airflow_allows, (
        f"the plugin lets alice (team_a) read {dag_id} of {team}: Airflow's REST API does not"
    )


def test_airflow_plugins_lists_the_plugin_with_its_views() -> None:
    proc = run_airflow("plugins", "--output", "json", timeout=300)
    plugins = {p["name"]: p for p in json.loads(proc.stdout[proc.stdout.index("[") :])}
    mlops = plugins["mlops"]
    assert (
        "value='airflow_mlops_provider.plugins.mlops:MlopsPlugin', group='airflow.plugins'" in mlops["source"]
    )
    assert mlops["fastapi_apps"] == [
        {"name": "mlops", "app": "fastapi.applications.FastAPI", "url_prefix": "/mlops"}
    ]
    assert [v["href"] for v in mlops["external_views"]] == [
        "/mlops/sweeps/{DAG_ID}/{RUN_ID}",
        "/mlops/models",
        "/mlops/features",
        "/mlops/gpus",
    ]
