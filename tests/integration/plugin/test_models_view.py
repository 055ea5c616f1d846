"""The Models view on a real api-server, against a real ``mlflow server`` filled by our operators.

One module-scoped world: an ``mlflow server`` where ``churn`` has three versions registered by
MlflowRegisterModelOperator (the ``airflow.*`` tags), two champion/challenger decisions by
MlflowPromoteModelOperator (``airflow.promotion.*``: one promote, one keep) and an alias moved
by MlflowSetAliasOperator; ``bulk`` has 120 versions (three pages of 50); a model named
``<img src=x onerror=alert(1)>``. The api-server runs with that server as ``mlflow_default``
(with a token) and ``mlflow_down`` pointing at a port where nothing listens. The world is built
once for the package (``plugin_stack`` in conftest.py) and shared with three other modules.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest

from tests.integration.mlflow.conftest import TOKEN
from tests.integration.plugin.conftest import XSS_ATTR, XSS_NAME, XSS_TEXT

if TYPE_CHECKING:
    from tests.integration.plugin.conftest import PluginStack
    from tests.support.mlflow_server import MlflowServer

pytestmark = pytest.mark.integration


@dataclass
class World:
    root: str
    token: str
    server: MlflowServer
    runs: dict[str, str]
    experiment_id: str
    down_port: int
    bodies: list[str]

    def get(self, path: str, *, html: bool = False, token: str | None = "default") -> tuple[int, str]:
        headers = {"Accept": "text/html" if html else "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {self.token if token == 'default' else token}"
        request = urllib.request.Request(f"{self.root}{path}", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, body = response.status, response.read().decode()
        except urllib.error.HTTPError as err:
            status, body = err.code, err.read().decode()
        self.bodies.append(body)
        return status, body

    def json(self, path: str) -> dict[str, Any]:
        status, body = self.get(path)
        assert status == 200, body
        return dict(json.loads(body))


@pytest.fixture(scope="module")
def world(plugin_stack: PluginStack) -> World:
    """The registry and the api-server of the package's shared stack (tests/integration/plugin/conftest.py)."""
    s = plugin_stack
    assert s.api.token
    return World(
        s.api.root, s.api.token, s.mlflow, s.model_runs, s.model_experiment_id, s.mlflow_down_port, []
    )


class _Page(HTMLParser):
    """The rows of each ``<table class=...>``, the links, and the error notices of a page."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.links: list[dict[str, str]] = []
        self.notices: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._link: dict[str, str] | None = None
        self._notice: list[str] | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = {k: v or "" for k, v in attrs}
        if tag == "table":
            self._table = attr.get("class", "")
            self.tables.setdefault(self._table, [])
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = []
        elif tag == "a":
            self._link = {**attr, "text": ""}
        elif tag == "div" and "notice" in attr.get("class", "").split():
            self._notice = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            if self._row:
                self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "td" and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "a" and self._link is not None:
            self._link["text"] = self._link["text"].strip()
            self.links.append(self._link)
            self._link = None
        elif tag == "div" and self._notice is not None:
            self.notices.append(" ".join("".join(self._notice).split()))
            self._notice = None

    def handle_data(self, data: str) -> None:
        for part in (self._cell, self._notice):
            if part is not None:
                part.append(data)
        if self._link is not None:
            self._link["text"] += data


def test_models_list_shows_every_connection_with_versions_aliases_and_promotions(world: World) -> None:
    data = world.json("/mlops/api/models")
    by_conn = {c["conn_id"]: c for c in data["connections"]}
    assert {"mlflow_default", "mlflow_down"} <= set(by_conn)  # (other modules may leave DB connections)
    default = by_conn["mlflow_default"]
    assert default["error"] is None
    models = {m["name"]: m for m in default["models"]}
    assert list(models) == sorted(["bulk", "churn", XSS_NAME])  # name order
    churn = models["churn"]
    assert churn["latest_version"] == "3"
    assert churn["aliases"] == {"champion": "2", "production": "2"}
    last = churn["last_promotion"]
    assert (last["version"], last["decision"], last["champion_version"]) == ("3", "keep", "2")
    assert last["challenger_value"] == pytest.approx(0.78)
    assert last["champion_value"] == pytest.approx(0.85)
    assert last["delta"] == pytest.approx(-0.07)
    assert models["bulk"]["latest_version"] == "120"
    assert models["bulk"]["last_promotion"] is None
    assert churn["path"] == "/mlops/models/mlflow_default/churn"
    assert churn["mlflow_url"] == f"{world.server.url}/#/models/churn"

    status, html = world.get("/mlops/models", html=True)
    assert status == 200
    page = _Page(html)
    rows = {row[0]: row for row in page.tables["models"]}
    assert rows["churn"][1] == "3"
    assert rows["churn"][2] == "champion: v2 production: v2"
    assert rows["churn"][3].startswith("keep v3 val_auc 0.78 vs 0.85")
    assert rows["bulk"][1] == "120"
    hrefs = {link["text"]: link for link in page.links}
    assert hrefs["churn"]["href"] == "/mlops/models/mlflow_default/churn"


def test_a_model_page_shows_versions_registering_runs_aliases_and_promotion_history(world: World) -> None:
    data = world.json("/mlops/api/models/mlflow_default/churn")
    assert data["error"] is None
    assert [v["version"] for v in data["versions"]] == ["3", "2", "1"]
    v3, v2, v1 = data["versions"]
    assert v2["aliases"] == ["champion", "production"]
    assert v1["aliases"] == []
    assert v1["run_id"] == world.runs["1"]
    assert v1["run_url"] == f"{world.server.url}/#/experiments/{world.experiment_id}/runs/{world.runs['1']}"
    assert v1["mlflow_url"] == f"{world.server.url}/#/models/churn/versions/1"
    assert v1["registered_by"]["links"] == {
        "dag": "/dags/train_churn",
        "run": "/dags/train_churn/runs/manual__1",
        "task": "/dags/train_churn/runs/manual__1/tasks/register",
    }
    assert v3["registered_by"]["links"]["task"] == "/dags/train_churn/runs/manual__3/tasks/register/mapped/2"
    assert v2["promotion"]["decision"] == "promote"
    assert isinstance(v1["created"], int)
    assert v1["created"] > 1_600_000_000_000
    assert data["aliases"] == [
        {"alias": "champion", "version": "2", "mlflow_url": f"{world.server.url}/#/models/churn/versions/2"},
        {
            "alias": "production",
            "version": "2",
            "mlflow_url": f"{world.server.url}/#/models/churn/versions/2",
        },
    ]
    history = [(p["version"], p["decision"], p["champion_version"], p["metric"]) for p in data["promotions"]]
    assert history == [("3", "keep", "2", "val_auc"), ("2", "promote", "1", "val_auc")]
    keep, promote = data["promotions"]
    assert (promote["challenger_value"], promote["champion_value"]) == (
        pytest.approx(0.85),
        pytest.approx(0.80),
    )
    assert promote["delta"] == pytest.approx(0.05)
    assert keep["delta"] == pytest.approx(-0.07)
    assert data["next_page_token"] is None

    status, html = world.get("/mlops/models/mlflow_default/churn", html=True)
    assert status == 200
    page = _Page(html)
    assert [r[:3] for r in page.tables["promotions"]] == [
        ["v3", "keep", "champion"],
        ["v2", "promote", "champion"],
    ]
    assert [r[4:8] for r in page.tables["promotions"]] == [
        ["0.78", "v2", "0.85", "-0.07"],
        ["0.85", "v1", "0.8", "0.05"],
    ]
    versions = page.tables["versions"]
    assert [r[0] for r in versions] == ["3", "2", "1"]
    assert versions[1][1] == "champion production"
    assert versions[2][4] == world.runs["1"]
    assert versions[2][5] == "train_churn / manual__1 / register"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", versions[2][3])
    by_href = {link["href"]: link for link in page.links}
    run_link = by_href[v1["run_url"]]
    assert (run_link["target"], run_link["rel"]) == ("_blank", "noopener noreferrer")
    task_link = by_href["/dags/train_churn/runs/manual__3/tasks/register/mapped/2"]
    assert task_link["target"] == "_top"
    assert by_href[f"{world.server.url}/#/models/churn/versions/3"]["text"] == "open"


def test_versions_are_paged_newest_first(world: World) -> None:
    first = world.json("/mlops/api/models/mlflow_default/bulk")
    assert [v["version"] for v in first["versions"]] == [str(n) for n in range(120, 70, -1)]
    assert first["next_page_token"]
    second = world.json(
        f"/mlops/api/models/mlflow_default/bulk?page_token={quote(first['next_page_token'])}&page=2"
    )
    assert [v["version"] for v in second["versions"]] == [str(n) for n in range(70, 20, -1)]
    third = world.json(
        f"/mlops/api/models/mlflow_default/bulk?page_token={quote(second['next_page_token'])}&page=3"
    )
    assert [v["version"] for v in third["versions"]] == [str(n) for n in range(20, 0, -1)]
    assert third["next_page_token"] is None
    assert third["next_path"] == ""

    # The HTML page links to the next page (MLflow's token), and back to the newest.
    status, html = world.get("/mlops/models/mlflow_default/bulk", html=True)
    assert status == 200
    older = next(link for link in _Page(html).links if link["text"] == "Older versions")
    assert older["href"] == first["next_path"]
    status, html = world.get(older["href"], html=True)
    page = _Page(html)
    assert [r[0] for r in page.tables["versions"]][:2] == ["70", "69"]
    assert "page 2" in html
    assert any(
        link["text"] == "Newest versions" and link["href"] == "/mlops/models/mlflow_default/bulk"
        for link in page.links
    )


def test_mlflow_down_gives_a_readable_notice_not_an_error(world: World) -> None:
    data = world.json("/mlops/api/models")
    down = next(c for c in data["connections"] if c["conn_id"] == "mlflow_down")
    assert down["models"] == []
    assert f"127.0.0.1:{world.down_port}" in down["error"]
    status, html = world.get("/mlops/models", html=True)
    assert status == 200
    notices = [n for n in _Page(html).notices if "mlflow_down" in n]
    assert len(notices) == 1
    assert notices[0].startswith("MLflow behind connection mlflow_down did not answer: MlflowException")
    assert f"127.0.0.1:{world.down_port}" in notices[0]

    status, html = world.get("/mlops/models/mlflow_down/churn", html=True)
    assert status == 200
    assert "MLflow behind connection mlflow_down did not answer" in _Page(html).notices[0]
    detail = world.json("/mlops/api/models/mlflow_down/churn")
    assert detail["versions"] == []
    assert "Connection refused" in detail["error"]


def test_unknown_connection_or_model_is_404_and_no_token_is_401(world: World) -> None:
    status, body = world.get("/mlops/api/models/nope/churn")
    assert (status, json.loads(body)) == (404, {"detail": "no mlflow connection 'nope'"})
    status, body = world.get("/mlops/api/models/mlflow_default/missing-model")
    assert status == 404
    assert (
        json.loads(body)["detail"] == "no registered model 'missing-model' behind connection 'mlflow_default'"
    )
    status, html = world.get("/mlops/models/nope/churn", html=True)
    assert status == 404
    assert "no mlflow connection &#39;nope&#39;" in html
    assert world.get("/mlops/api/models", token=None)[0] == 401
    assert world.get("/mlops/models/mlflow_default/churn", html=True, token=None)[0] == 401


def test_names_tags_and_descriptions_are_rendered_escaped(world: World) -> None:
    status, html = world.get("/mlops/models", html=True)
    assert status == 200
    assert "<img src=x" not in html
    assert "<script>alert" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # the description
    path = f"/mlops/models/mlflow_default/{quote(XSS_NAME, safe='')}"
    assert any(link["href"] == path and link["text"] == XSS_NAME for link in _Page(html).links)

    status, html = world.get(path, html=True)
    assert status == 200
    assert "<img src=x" not in html
    assert "<script>" not in html
    assert "<svg" not in html
    assert "<title>Model &lt;img src=x onerror=alert(1)&gt; · MLOps</title>" in html
    versions = _Page(html).tables["versions"]
    assert versions[0][5] == f"{XSS_ATTR} / {XSS_TEXT}"  # the registering DAG run, as text
    assert f'href="/dags/{quote(XSS_ATTR, safe="")}"' in html
    assert world.json(f"/mlops/api/models/mlflow_default/{quote(XSS_NAME, safe='')}")["name"] == XSS_NAME


def test_no_response_carries_the_connection_token(world: World) -> None:
    world.get("/mlops/models", html=True)
    world.get("/mlops/models/mlflow_down/churn", html=True)
    assert len(world.bodies) > 10
    assert all(TOKEN not in body for body in world.bodies)
