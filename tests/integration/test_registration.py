"""The real Airflow CLI discovers the provider and its plugin through their entry points."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_airflow

pytestmark = pytest.mark.integration


def test_airflow_providers_list_shows_the_package():
    proc = run_airflow("providers", "list", "--output", "json")
    providers = {p["package_name"]: p for p in json.loads(proc.stdout[proc.stdout.index("[") :])}
    assert "airflow-mlops-provider" in providers, sorted(providers)
    from airflow_mlops_provider import __version__

    assert providers["airflow-mlops-provider"]["version"] == __version__


def test_airflow_providers_get_lists_connection_types_and_links():
    proc = run_airflow("providers", "hooks", "--output", "json")
    hooks = {h["connection_type"]: h for h in json.loads(proc.stdout[proc.stdout.index("[") :])}
    assert hooks["mlflow"]["class"] == "airflow_mlops_provider.hooks.mlflow.MlflowHook"
    assert hooks["feast"]["class"] == "airflow_mlops_provider.hooks.feast.FeastHook"
    links = run_airflow("providers", "links", "--output", "json").stdout
    assert "airflow_mlops_provider.links.mlflow.MlflowRunLink" in links
    assert "airflow_mlops_provider.links.mlflow.MlflowModelVersionLink" in links


def test_airflow_plugins_shows_the_plugin():
    proc = run_airflow("plugins", "--output", "json")
    plugins = json.loads(proc.stdout[proc.stdout.index("[") :])
    names = {p["name"]: p for p in plugins}
    assert "mlops" in names, plugins
    assert "airflow_mlops_provider.plugins.mlops" in json.dumps(names["mlops"])


def test_provider_config_section_is_registered():
    proc = run_airflow("config", "get-value", "mlops", "runtime")
    assert proc.stdout.strip().splitlines()[-1] == "docker"
