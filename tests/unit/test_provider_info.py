"""Provider metadata matches the code: every module, class and handler it names exists, none is missing.

The module lists are checked against the package tree, not against a list kept here, so a new
module holding an operator, hook, sensor or trigger fails this test until it is listed.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
from importlib.resources import files
from urllib.parse import urlsplit, urlunsplit

import jsonschema
import pytest
from airflow.sdk import BaseHook, BaseOperator, BaseOperatorLink, BaseSensorOperator
from airflow.triggers.base import BaseTrigger

import airflow_mlops_provider
from airflow_mlops_provider.assets.mlflow import mlflow_model_uri, model_name_from_uri, sanitize_uri
from airflow_mlops_provider.get_provider_info import get_provider_info

INFO = get_provider_info()
PACKAGE = airflow_mlops_provider.__name__


def _modules() -> dict[str, object]:
    """Every module of the package, imported."""
    found = {PACKAGE: airflow_mlops_provider}
    for mod in pkgutil.walk_packages(airflow_mlops_provider.__path__, prefix=f"{PACKAGE}."):
        found[mod.name] = importlib.import_module(mod.name)
    return found


MODULES = _modules()


def _is_private(module_name: str) -> bool:
    return any(part.startswith("_") for part in module_name.split("."))


def _kind(cls: type) -> str | None:
    """The provider-info section a class belongs to, or None."""
    if issubclass(cls, BaseSensorOperator):
        return "sensors"
    if issubclass(cls, BaseOperator):
        return "operators"
    if issubclass(cls, BaseHook):
        return "hooks"
    if issubclass(cls, BaseTrigger):
        return "triggers"
    return None


def _ours(module: object, kind: str | None = None) -> set[type]:
    """The public classes of ours (of ``kind``, or of any kind) a module defines or re-exports."""
    return {
        cls
        for name, cls in vars(module).items()
        if inspect.isclass(cls)
        and not name.startswith("_")
        and cls.__module__.startswith(f"{PACKAGE}.")
        and _kind(cls) is not None
        and (kind is None or _kind(cls) == kind)
    }


def _listed(kind: str) -> dict[str, str]:
    """Module -> integration name, for one section of provider info."""
    return {
        module: entry["integration-name"]
        for entry in INFO.get(kind, [])
        for module in entry["python-modules"]
    }


KINDS = ("operators", "hooks", "sensors", "triggers")
ALL_CLASSES = {cls for module in MODULES.values() for cls in _ours(module)}


def test_provider_info_follows_airflows_schema():
    schema = json.loads(files("airflow").joinpath("provider_info.schema.json").read_text())
    jsonschema.validate(INFO, schema)


def test_docker_kubernetes_mlflow_and_feast_are_integrations():
    names = [i["integration-name"] for i in INFO["integrations"]]
    assert {"Docker", "Kubernetes", "MLflow", "Feast"} <= set(names)
    assert len(names) == len(set(names))
    used = {name for kind in KINDS for name in _listed(kind).values()}
    assert used <= set(names), f"sections name integrations that are not declared: {used - set(names)}"


@pytest.mark.parametrize("kind", KINDS)
def test_every_listed_module_imports_and_holds_one_of_its_kind(kind):
    listed = _listed(kind)
    assert listed, f"provider info lists no {kind}"
    for module_name in listed:
        module = importlib.import_module(module_name)
        assert _ours(module, kind), f"{module_name} is listed under {kind!r} but holds no public {kind[:-1]}"


@pytest.mark.parametrize("kind", KINDS)
def test_every_module_holding_one_of_ours_is_listed(kind):
    """Derived from the tree: where a class is defined, or (if that is private) where it is exported."""
    listed = set(_listed(kind))
    missing = set()
    for cls in (c for c in ALL_CLASSES if _kind(c) == kind):
        if not _is_private(cls.__module__):
            if cls.__module__ not in listed:
                missing.add(f"{cls.__module__} ({cls.__name__})")
        elif not any(cls in _ours(MODULES[m], kind) for m in listed if m in MODULES):
            exporters = sorted(m for m, mod in MODULES.items() if not _is_private(m) and cls in _ours(mod))
            missing.add(f"one of {exporters or ['<no public module>']} ({cls.__name__})")
    assert not missing, f"add to get_provider_info()[{kind!r}]: {sorted(missing)}"


def test_the_tree_really_holds_each_kind():
    """Guards the check above against finding nothing (a wrong package walk passes vacuously)."""
    names = {cls.__name__ for cls in ALL_CLASSES}
    assert {
        "GpuDockerOperator",
        "MlflowHook",
        "MlflowModelVersionSensor",
        "FeastFeatureFreshnessTrigger",
    } <= names


def test_extra_links_are_exactly_our_operator_links():
    links = {
        f"{cls.__module__}.{cls.__qualname__}"
        for module in MODULES.values()
        for name, cls in vars(module).items()
        if inspect.isclass(cls)
        and issubclass(cls, BaseOperatorLink)
        and not name.startswith("_")
        and cls.__module__.startswith(f"{PACKAGE}.")
    }
    assert set(INFO["extra-links"]) == links


def test_connection_types_name_hooks_that_declare_them():
    declared = {c["connection-type"]: c["hook-class-name"] for c in INFO["connection-types"]}
    for conn_type, path in declared.items():
        module, _, name = path.rpartition(".")
        hook = getattr(importlib.import_module(module), name)
        assert hook.conn_type == conn_type
    own = {cls.conn_type for cls in ALL_CLASSES if "conn_type" in vars(cls) and _kind(cls) == "hooks"}
    # ours, not the ones our hooks inherit (GpuKubernetesHook keeps KubernetesHook's "kubernetes")
    assert own == set(declared)


def test_handlers_and_plugin_registration():
    for entry in INFO["asset-uris"]:
        module, _, name = entry["handler"].rpartition(".")
        assert callable(getattr(importlib.import_module(module), name))
    assert {s for entry in INFO["asset-uris"] for s in entry["schemes"]} == {"feast", "mlflow-model"}
    # the plugin comes in through the airflow.plugins entry point only (see get_provider_info)
    assert "plugins" not in INFO


def _normalised(uri: str) -> str:
    """What Airflow does to an Asset URI before it calls the scheme's handler, then the handler."""
    parts = urlsplit(uri)
    parts = parts._replace(path=parts.path.rstrip("/") or "/", fragment="")
    return urlunsplit(sanitize_uri(parts))


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("mlflow-model://churn", "mlflow-model://churn"),
        ("mlflow-model://churn/", "mlflow-model://churn"),
        ("mlflow-model://team%2fchurn%20model", "mlflow-model://team%2Fchurn%20model"),
        ("mlflow-model://team%2Fchurn model", "mlflow-model://team%2Fchurn%20model"),
        ("mlflow-model://Churn", "mlflow-model://Churn"),
    ],
    ids=["plain", "trailing-slash", "lowercase-escapes", "raw-space", "case-kept"],
)
def test_mlflow_model_uri_handler_normalises(uri, expected):
    assert _normalised(uri) == expected
    assert _normalised(expected) == expected
    assert expected == mlflow_model_uri(model_name_from_uri(uri))


_EXPECTED = (
    "An mlflow-model Asset URI must be mlflow-model://<percent-encoded registered model name>, "
    "as mlflow_model_uri(name) builds it; got "
)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        (
            "mlflow-model://team/churn",
            "'mlflow-model://team/churn', which has a path (write a '/' in the model name as %2F)",
        ),
        ("mlflow-model://", "'mlflow-model:/', which has no model name after 'mlflow-model://'"),
        ("mlflow-model://%20", "'mlflow-model://%20/', which has no model name after 'mlflow-model://'"),
        ("mlflow-model://churn?version=3", "'mlflow-model://churn/?version=3', which has a query"),
    ],
    ids=["unencoded-slash", "no-name", "blank-name", "query"],
)
def test_mlflow_model_uri_handler_rejects_what_names_no_model(uri, message):
    with pytest.raises(ValueError) as err:
        _normalised(uri)
    assert str(err.value) == _EXPECTED + message
