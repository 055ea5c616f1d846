"""Every route of the ``mlops`` plugin, over HTTP, against a real api-server and real backends.

One module-scoped site: two sweeps run for real (``airflow dags test``) with markup in a
parameter and in a trial's error, a real ``mlflow server`` holding a model named
``<img src=x onerror=alert(1)>``, connections carrying secrets (in the metadata database and in
``AIRFLOW_CONN_*``), and one api-server whose auth manager (:mod:`tests.support.ui_auth`) is
SimpleAuthManager with users alice and bob, where bob may not read ``sec_sweep_denied``.

The routes are enumerated from the app itself (``build_app().routes``), so a route added later
is covered without editing this file: it must refuse anonymous and forged requests, answer
alice, escape what it shows, carry the security headers and never leak a secret.
"""

from __future__ import annotations

import html.parser
import http.server
import json
import secrets
import threading
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from markupsafe import escape

from tests.conftest import REPO_ROOT, dags_test, free_port, run_airflow
from tests.support.airflow_runs import latest_run_id
from tests.support.airflow_services import airflow_services, generated_passwords, login_token
from tests.support.mlflow_server import start_mlflow_server

pytestmark = pytest.mark.integration

DAGS = Path(__file__).parent / "dags"
OPEN_DAG, DENIED_DAG = "sec_sweep_open", "sec_sweep_denied"
MODEL_PAYLOAD = "<img src=x onerror=alert(1)>"
PARAM_PAYLOAD = '"><svg onload=alert(1)>'
ERROR_PAYLOAD = "<script>alert(1)</script>"
PAYLOADS = (MODEL_PAYLOAD, PARAM_PAYLOAD, ERROR_PAYLOAD)
#: Connection ids: a live MLflow (env), a dead MLflow (database), a broken Feast repo (env), AWS (env),
#: and an HTTP connection whose host records every request (no page may send it anything).
MLFLOW_CONN, MLFLOW_DOWN_CONN, FEAST_CONN, AWS_CONN = "mlflow_sec", "mlflow_sec_down", "feast_sec", "aws_sec"
HTTP_CONN = "http_sec"
#: Which path parameter of a route gets which value (a new parameter name must be added here).
UNKNOWN = object()


def _secret(label: str) -> str:
    return f"{label}-{secrets.token_hex(8)}"


SECRETS = {
    "mlflow password": _secret("mlflowpw"),
    "mlflow token extra": _secret("mlflowtok"),
    "dead mlflow password": _secret("deadpw"),
    "feast redis password": _secret("redispw"),
    "aws access key id": "AKIA" + secrets.token_hex(8).upper(),
    "aws secret key": _secret("awssecret"),
    "aws session token": _secret("awssession"),
    "http password": _secret("httppw"),
}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: str

    def json(self) -> Any:
        return json.loads(self.body)


class Recorder:
    """An HTTP server on loopback that answers 200 and records each request's path and headers."""

    def __init__(self) -> None:
        seen = self.requests = []  # type: list[tuple[str, dict[str, str]]]

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append((self.path, dict(self.headers)))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            do_POST = do_GET

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


@dataclass
class Site:
    root: str
    tokens: dict[str, str]
    run_ids: dict[str, str]
    mlflow: Any
    recorder: Recorder
    routes: list[str] = field(default_factory=list)

    def get(
        self,
        path: str,
        *,
        user: str | None = None,
        token: str | None = None,
        cookie: str | None = None,
        accept: str = "text/html,application/xhtml+xml",
    ) -> Answer:
        """GET ``path`` (under the api-server's root) as ``user`` (bearer), with ``token`` or a ``_token`` cookie."""
        headers = {"Accept": accept}
        if user is not None:
            token = self.tokens[user]
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if cookie is not None:
            headers["Cookie"] = f"_token={cookie}"
        request = urllib.request.Request(f"{self.root}{path}", headers=headers)
        try:
            with _OPENER.open(request, timeout=60) as response:
                return Answer(
                    response.status,
                    {k.lower(): v for k, v in response.headers.items()},
                    response.read().decode(),
                )
        except urllib.error.HTTPError as err:
            return Answer(err.code, {k.lower(): v for k, v in err.headers.items()}, err.read().decode())

    def paths(self) -> list[str]:
        """Every GET route of the app with its path parameters filled in."""
        return [fill(route, self.values()) for route in self.routes]

    def values(self) -> dict[str, str]:
        return {
            "dag_id": OPEN_DAG,
            "run_id": self.run_ids[OPEN_DAG],
            "conn_id": MLFLOW_CONN,
            "name": MODEL_PAYLOAD,
            "model_name": MODEL_PAYLOAD,
        }


def app_routes() -> list[str]:
    """The GET routes of the plugin's app, as the api-server serves them (under ``/mlops``)."""
    from fastapi.routing import APIRoute

    from airflow_mlops_provider.plugins.app import URL_PREFIX, build_app

    return sorted(
        f"{URL_PREFIX}{route.path}"
        for route in build_app().routes
        if isinstance(route, APIRoute) and "GET" in route.methods
    )


def fill(route: str, values: dict[str, str]) -> str:
    """Fill ``{param}`` (and ``{param:path}``) parts of ``route``, URL-quoted."""
    parts = []
    for part in route.split("/"):
        if part.startswith("{") and part.endswith("}"):
            name = part[1:-1].split(":")[0]
            assert name in values, (
                f"route {route} has path parameter {name!r}: add a value for it in Site.values"
            )
            part = urllib.parse.quote(values[name], safe="")
        parts.append(part)
    return "/".join(parts)


def is_api(path: str) -> bool:
    return "/api/" in path


def _register_xss_model(tracking_uri: str, run_ids: dict[str, str]) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment("security")
    run = client.create_run(experiment_id, tags={"note": ERROR_PAYLOAD})
    client.log_metric(run.info.run_id, "loss", 0.25)
    client.set_terminated(run.info.run_id)
    client.create_registered_model(MODEL_PAYLOAD, description=ERROR_PAYLOAD)
    version = client.create_model_version(
        MODEL_PAYLOAD,
        source=f"runs:/{run.info.run_id}/model",
        run_id=run.info.run_id,
        tags={
            "airflow.dag_id": OPEN_DAG,
            "airflow.run_id": run_ids[OPEN_DAG],
            "airflow.task_id": PARAM_PAYLOAD,
            "airflow.promotion.decision": PARAM_PAYLOAD,
        },
    )
    client.set_registered_model_alias(MODEL_PAYLOAD, "champion", version.version)


def _broken_feast_repo(directory: Path) -> Path:
    """A Feast repo whose registry cannot be read (it is under a file), with a Redis online store."""
    directory.mkdir(parents=True)
    (directory / "feature_store.yaml").write_text(
        "project: sec\nprovider: local\nregistry: /dev/null/registry.db\n"
        f"online_store:\n  type: redis\n  connection_string: 127.0.0.1:{free_port()}\n"
        "offline_store:\n  type: file\nentity_key_serialization_version: 3\n"
    )
    return directory


@pytest.fixture(scope="module")
def site(airflow_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The sweeps and the database connection are written while the servers start (they cost most)."""
    tmp = tmp_path_factory.mktemp("plugin-security")
    dead = json.dumps(
        {
            "conn_type": "mlflow",
            "host": f"http://127.0.0.1:{free_port()}",
            "password": SECRETS["dead mlflow password"],
        }
    )

    def write_the_database() -> None:
        # One after the other: two `airflow dags test` of one DAG file race to insert its DAGs.
        for dag_id in (OPEN_DAG, DENIED_DAG):
            dags_test(dag_id, DAGS)
        run_airflow("connections", "add", MLFLOW_DOWN_CONN, "--conn-json", dead)

    with ThreadPoolExecutor(max_workers=1) as pool:
        setup = [pool.submit(write_the_database)]
        mlflow = start_mlflow_server(tmp / "mlflow")
        recorder = Recorder()
        try:
            connections = {
                f"AIRFLOW_CONN_{HTTP_CONN.upper()}": json.dumps(
                    {"conn_type": "http", "host": recorder.url, "password": SECRETS["http password"]}
                ),
                f"AIRFLOW_CONN_{MLFLOW_CONN.upper()}": json.dumps(
                    {
                        "conn_type": "mlflow",
                        "host": mlflow.url,
                        "password": SECRETS["mlflow password"],
                        "extra": {"token": SECRETS["mlflow token extra"], "ui_url": mlflow.url},
                    }
                ),
                f"AIRFLOW_CONN_{FEAST_CONN.upper()}": json.dumps(
                    {
                        "conn_type": "feast",
                        "password": SECRETS["feast redis password"],
                        "extra": {"repo_path": str(_broken_feast_repo(tmp / "feast"))},
                    }
                ),
                f"AIRFLOW_CONN_{AWS_CONN.upper()}": json.dumps(
                    {
                        "conn_type": "aws",
                        "login": SECRETS["aws access key id"],
                        "password": SECRETS["aws secret key"],
                        "extra": {"aws_session_token": SECRETS["aws session token"]},
                    }
                ),
            }
            logs = tmp / "logs"
            logs.mkdir()
            with airflow_services(
                DAGS,
                logs,
                users="alice:viewer,bob:viewer",
                components=("api-server",),
                AIRFLOW__CORE__AUTH_MANAGER="tests.support.ui_auth.PerDagAuthManager",
                MLOPS_TEST_DENY=f"bob:{DENIED_DAG}",
                PYTHONPATH=str(REPO_ROOT),
                **connections,
            ) as api:
                for future in setup:
                    future.result()
                run_ids = {dag_id: latest_run_id(dag_id) for dag_id in (OPEN_DAG, DENIED_DAG)}
                _register_xss_model(mlflow.url, run_ids)
                passwords = generated_passwords(airflow_db)
                tokens = {"alice": str(api.token), "bob": login_token(api.root, "bob", passwords["bob"])}
                yield Site(api.root, tokens, run_ids, mlflow, recorder, app_routes())
        finally:
            recorder.stop()
            mlflow.stop()
            run_airflow("connections", "delete", MLFLOW_DOWN_CONN, check=False)


class _Markup(html.parser.HTMLParser):
    """Collects what a page would run: script elements, event-handler attributes, javascript: URLs."""

    def __init__(self) -> None:
        super().__init__()
        self.active: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        if tag in {"script", "iframe", "object", "embed", "img"} and not (
            (tag == "img" and self._local(attrs)) or (tag == "script" and self._link_script(attrs))
        ):
            self.active.append(f"<{tag}>")
        for name, value in attrs:
            if name.startswith("on"):
                self.active.append(f"<{tag} {name}=...>")
            if name in {"href", "src", "action", "formaction"} and (value or "").strip().lower().startswith(
                "javascript:"
            ):
                self.active.append(f"<{tag} {name}={value}>")

    @staticmethod
    def _link_script(attrs: list[tuple[str, str | None]]) -> bool:
        # The one script a page may load: the app's own links.js (base.html), never inline.
        return dict(attrs).get("src") == "/mlops/assets/links.js"

    def handle_data(self, data: str) -> None:
        if self.lasttag == "script" and data.strip():
            self.active.append(f"inline script {data.strip()[:40]!r}")

    @staticmethod
    def _local(attrs: list[tuple[str, str | None]]) -> bool:
        src = dict(attrs).get("src") or ""
        return src.startswith("/mlops/")


def active_markup(body: str) -> list[str]:
    parser = _Markup()
    parser.feed(body)
    return parser.active


def test_the_app_has_the_four_views(site: Site) -> None:
    """The enumerated routes hold each page and its JSON twin (so the loops below cover them)."""
    routes = set(site.routes)
    assert {"/mlops/", "/mlops/assets/mlops.css", "/mlops/assets/icon.svg"} <= routes
    for page in ("/mlops/sweeps/{dag_id}/{run_id}", "/mlops/models", "/mlops/features", "/mlops/gpus"):
        if page in routes:
            assert page.replace("/mlops/", "/mlops/api/", 1) in routes, f"{page} has no JSON twin"


def test_every_route_refuses_a_request_without_a_token(site: Site) -> None:
    for path in site.paths():
        for accept in ("text/html", "application/json"):
            answer = site.get(path, accept=accept)
            assert answer.status == 401, (path, accept, answer.status, answer.body[:300])
            assert "script-src 'self';" in answer.headers["content-security-policy"], path
            if accept == "application/json" or is_api(path):
                assert answer.json() == {"detail": "Not authenticated"}, path
            else:
                assert answer.headers["content-type"].startswith("text/html"), path
                assert "Sign in to Airflow" in answer.body, path
                assert 'href="/auth/login/' in answer.body, path


def test_every_route_refuses_forged_and_foreign_tokens(site: Site) -> None:
    import jwt

    alice = site.tokens["alice"]
    claims = jwt.decode(alice, options={"verify_signature": False})
    foreign = jwt.encode(
        {**claims, "sub": "alice", "role": "ADMIN"}, "not-the-server-secret" * 4, algorithm="HS512"
    )
    unsigned = jwt.encode({**claims, "role": "ADMIN"}, key=None, algorithm="none")  # type: ignore[arg-type]
    tampered = alice[:-4] + ("AAAA" if not alice.endswith("AAAA") else "BBBB")
    for path in site.paths():
        for label, token in (
            ("garbage", "not-a-jwt"),
            ("foreign", foreign),
            ("alg none", unsigned),
            ("tampered", tampered),
        ):
            by_header = site.get(path, token=token, accept="application/json")
            assert by_header.status in (401, 403), (path, label, by_header.status, by_header.body[:300])
            by_cookie = site.get(path, cookie=token, accept="application/json")
            assert by_cookie.status in (401, 403), (
                path,
                label,
                "cookie",
                by_cookie.status,
                by_cookie.body[:300],
            )
            assert SECRETS["mlflow password"] not in by_header.body + by_cookie.body


def test_every_route_answers_alice_by_token_and_by_the_ui_cookie(site: Site) -> None:
    for path in site.paths():
        for how in ("bearer", "cookie"):
            answer = (
                site.get(path, user="alice")
                if how == "bearer"
                else site.get(path, cookie=site.tokens["alice"])
            )
            expected = 307 if path == "/mlops/" else 200
            assert answer.status == expected, (path, how, answer.status, answer.body[:500])
            assert "script-src 'self';" in answer.headers["content-security-policy"]
            assert answer.headers["cache-control"] == "no-store"
            assert answer.headers["x-content-type-options"] == "nosniff"
            if path == "/mlops/":
                assert answer.headers["location"] == "/mlops/models"
            elif is_api(path):
                assert answer.headers["content-type"].startswith("application/json"), path
                answer.json()
            elif path.endswith(".css"):
                assert answer.headers["content-type"].startswith("text/css")
                assert ".badge" in answer.body
            elif path.endswith(".js"):
                assert answer.headers["content-type"].startswith("text/javascript")
                assert "topDocument" in answer.body
            elif path.endswith(".svg"):
                assert answer.headers["content-type"].startswith("image/svg+xml")
                assert "<svg" in answer.body
            else:
                assert answer.headers["content-type"].startswith("text/html"), path
                assert '<link rel="stylesheet" href="/mlops/assets/mlops.css">' in answer.body, path


def test_a_sweep_is_shown_only_to_users_the_auth_manager_lets_read_its_dag(site: Site) -> None:
    sweep_routes = [r for r in site.routes if "{dag_id}" in r]
    assert sweep_routes, "no route takes a dag_id"
    for route in sweep_routes:
        values = site.values()
        opened = fill(route, values)
        denied = fill(route, {**values, "dag_id": DENIED_DAG, "run_id": site.run_ids[DENIED_DAG]})
        assert site.get(opened, user="bob").status == 200, opened
        assert site.get(denied, user="alice").status == 200, denied
        refused = site.get(denied, user="bob", accept="application/json")
        assert refused.status == 403, (denied, refused.status, refused.body[:300])
        assert refused.json() == {"detail": f"you may not read the data of DAG {DENIED_DAG!r}"}
        page = site.get(denied, user="bob")
        assert page.status == 403
        if not is_api(denied):
            assert "Not allowed" in page.body
            assert escape(DENIED_DAG) in page.body
        # nothing of the denied run leaks into the refusal
        assert site.run_ids[DENIED_DAG] not in refused.body + page.body


def test_markup_from_models_params_and_errors_is_only_ever_escaped(site: Site) -> None:
    seen: dict[str, set[str]] = {payload: set() for payload in PAYLOADS}
    for path in site.paths():
        answer = site.get(path, user="alice")
        if not answer.headers.get("content-type", "").startswith("text/html"):
            continue
        assert active_markup(answer.body) == [], path
        for payload in PAYLOADS:
            assert payload not in answer.body, (path, payload)
            if escape(payload) in answer.body:
                seen[payload].add(path)
    assert seen[MODEL_PAYLOAD] or "/mlops/models" not in site.routes, "the model's name is on no page"


def test_no_response_of_any_route_holds_a_secret(site: Site) -> None:
    for path in site.paths():
        for user in ("alice", "bob"):
            for accept in ("text/html", "application/json"):
                answer = site.get(path, user=user, accept=accept)
                text = answer.body + json.dumps(answer.headers)
                for what, secret in SECRETS.items():
                    assert secret not in text, f"{path} ({user}, {accept}) shows the {what}"


def test_the_plugin_is_listed_by_the_rest_api_with_its_views(site: Site) -> None:
    request = urllib.request.Request(
        f"{site.root}/api/v2/plugins", headers={"Authorization": f"Bearer {site.tokens['bob']}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        plugins = {p["name"]: p for p in json.loads(response.read())["plugins"]}
    views = {v["name"]: v for v in plugins["mlops"]["external_views"]}
    assert views["Sweep"]["href"] == "/mlops/sweeps/{DAG_ID}/{RUN_ID}"
    assert views["Sweep"]["destination"] == "dag_run"
    assert {name: views[name]["href"] for name in ("Models", "Features", "GPUs")} == {
        "Models": "/mlops/models",
        "Features": "/mlops/features",
        "GPUs": "/mlops/gpus",
    }
    assert plugins["mlops"]["fastapi_apps"] == [
        {"name": "mlops", "app": "fastapi.applications.FastAPI", "url_prefix": "/mlops"}
    ]


def test_each_view_shows_what_its_backend_holds_and_escapes_it(site: Site) -> None:
    """The pages the loops above walked do show the data (so the escaping checks are not vacuous)."""
    values = site.values()
    sweep = site.get(
        fill("/mlops/api/sweeps/{dag_id}/{run_id}", values), user="bob", accept="application/json"
    ).json()
    assert sorted((r["params"]["x"], r["params"]["label"], r["status"]) for r in sweep["rows"]) == [
        (1, PARAM_PAYLOAD, "success"),
        (1, "plain", "success"),
        (2, PARAM_PAYLOAD, "success"),
        (2, "plain", "failed"),
    ]
    assert (sweep["best"]["params"], sweep["best"]["metric"]) == ({"x": 1, "label": "plain"}, 1.0)
    assert [r["params"] for r in sweep["failed"]] == [{"x": 2, "label": "plain"}]
    assert ERROR_PAYLOAD in sweep["failed"][0]["error"]
    page = site.get(fill("/mlops/sweeps/{dag_id}/{run_id}", values), user="bob").body
    assert str(escape(ERROR_PAYLOAD)) in page
    assert str(escape(PARAM_PAYLOAD)) in page

    models = {
        c["conn_id"]: c
        for c in site.get("/mlops/api/models", user="alice", accept="application/json").json()["connections"]
    }
    assert set(models) >= {MLFLOW_CONN, MLFLOW_DOWN_CONN}
    assert models[MLFLOW_CONN]["error"] is None
    [model] = [m for m in models[MLFLOW_CONN]["models"] if m["name"] == MODEL_PAYLOAD]
    assert (model["latest_version"], model["aliases"]) == ("1", {"champion": "1"})
    assert model["path"] == f"/mlops/models/{MLFLOW_CONN}/{urllib.parse.quote(MODEL_PAYLOAD, safe='')}"
    assert "Connection refused" in models[MLFLOW_DOWN_CONN]["error"]
    overview = site.get("/mlops/models", user="alice").body
    assert str(escape(MODEL_PAYLOAD)) in overview
    assert f'href="{escape(model["path"])}"' in overview
    detail = site.get(
        model["path"].replace("/mlops/", "/mlops/api/", 1), user="alice", accept="application/json"
    ).json()
    assert [(v["version"], sorted(v["aliases"])) for v in detail["versions"]] == [("1", ["champion"])]
    detail_page = site.get(model["path"], user="alice").body
    assert str(escape(MODEL_PAYLOAD)) in detail_page
    assert str(escape(PARAM_PAYLOAD)) in detail_page  # the registering task id and promotion decision

    features = {
        c["conn_id"]: c
        for c in site.get("/mlops/api/features", user="alice", accept="application/json").json()[
            "connections"
        ]
    }
    assert features[FEAST_CONN]["views"] == []
    assert features[FEAST_CONN]["error"], features[FEAST_CONN]
    gpus = site.get("/mlops/api/gpus", user="alice", accept="application/json")
    assert gpus.status == 200
    assert isinstance(gpus.json(), dict)


def test_no_page_talks_to_a_connection_that_is_not_its_backends_type(site: Site) -> None:
    """A conn_id in the URL naming an ``http`` connection is refused: its password is never sent anywhere."""
    for path in (
        f"/mlops/api/models/{HTTP_CONN}/anything",
        f"/mlops/models/{HTTP_CONN}/anything",
        f"/mlops/api/models?conn_id={HTTP_CONN}",
        f"/mlops/models?conn_id={HTTP_CONN}",
        f"/mlops/api/models/{AWS_CONN}/anything",
    ):
        answer = site.get(path, user="alice", accept="application/json")
        assert answer.status in (200, 404), (path, answer.status, answer.body[:300])
        if answer.status == 200 and is_api(path):
            assert HTTP_CONN not in [c["conn_id"] for c in answer.json()["connections"]], path
    assert site.recorder.requests == []


def test_zz_backends_down_give_a_readable_notice_on_every_nav_page(site: Site) -> None:
    """Runs last: stops the MLflow server. The dead MLflow and the broken Feast repo are down from the start."""
    site.mlflow.stop()
    for path in ("/mlops/models", "/mlops/features", "/mlops/gpus"):
        if path not in site.routes:
            continue
        page = site.get(path, user="alice")
        assert page.status == 200, (path, page.status, page.body[:500])
        assert "<h1>" in page.body, path
        assert "</main>" in page.body, path
        api = site.get(path.replace("/mlops/", "/mlops/api/", 1), user="alice", accept="application/json")
        assert api.status == 200, (path, api.status, api.body[:500])
        if path == "/mlops/models":
            for conn_id in (MLFLOW_CONN, MLFLOW_DOWN_CONN):
                assert 'class="notice error"' in page.body, path
                assert conn_id in page.body, (path, conn_id)
                assert conn_id in api.body
                assert '"error"' in api.body
        if path == "/mlops/features":
            assert 'class="notice error"' in page.body
            assert FEAST_CONN in page.body
            assert FEAST_CONN in api.body
            assert '"error"' in api.body
        for what, secret in SECRETS.items():
            assert secret not in page.body + api.body, f"{path} shows the {what} when its backend is down"
