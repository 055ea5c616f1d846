"""FeastHook reads its connection lazily and explains a missing repo or bad YAML."""

from __future__ import annotations

import json

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops_provider.hooks.feast import FeastHook


def _conn_env(monkeypatch, conn_id="feast_default", **conn):
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "feast", **conn}))


def test_init_reads_no_connection(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("the connection was read in __init__")

    monkeypatch.setattr(FeastHook, "get_connection", boom)
    hook = FeastHook("whatever")
    assert hook.feast_conn_id == "whatever"
    assert (
        FeastHook.conn_type,
        FeastHook.default_conn_name,
        FeastHook.conn_name_attr,
        FeastHook.hook_name,
    ) == (
        "feast",
        "feast_default",
        "feast_conn_id",
        "Feast",
    )


@pytest.mark.parametrize(
    ("extra", "make_dir", "message"),
    [
        (
            {},
            None,
            "Feast connection 'feast_default' names no feature repo: set extra 'repo_path' or 'feature_store_yaml'",
        ),
        (
            {"repo_path": "{tmp}/missing"},
            None,
            "Feast connection 'feast_default': repo_path '{tmp}/missing' is not a directory",
        ),
        (
            {"repo_path": "{tmp}/empty"},
            "empty",
            "Feast connection 'feast_default': repo_path '{tmp}/empty' has no feature_store.yaml",
        ),
    ],
    ids=["no-repo", "missing-dir", "no-yaml-file"],
)
def test_missing_repo(monkeypatch, tmp_path, extra, make_dir, message):
    if make_dir:
        (tmp_path / make_dir).mkdir()
    extra = {k: v.format(tmp=tmp_path) for k, v in extra.items()}
    _conn_env(monkeypatch, extra=extra)
    with pytest.raises(AirflowFailException) as err:
        FeastHook().raw_config  # noqa: B018
    assert str(err.value) == message.format(tmp=tmp_path)


@pytest.mark.parametrize(
    ("yaml_text", "message_start"),
    [
        (
            "project: [unclosed",
            "Feast connection 'feast_default': feature_store_yaml extra is not valid YAML: ",
        ),
        (
            "just a string",
            "Feast connection 'feast_default': feature_store_yaml extra must be a YAML mapping, got 'just a string'",
        ),
    ],
    ids=["syntax-error", "not-a-mapping"],
)
def test_bad_yaml_in_extra(monkeypatch, yaml_text, message_start):
    _conn_env(monkeypatch, extra={"feature_store_yaml": yaml_text})
    with pytest.raises(AirflowFailException) as err:
        FeastHook().raw_config  # noqa: B018
    assert str(err.value).startswith(message_start)


def test_bad_yaml_file_in_repo(monkeypatch, tmp_path):
    (tmp_path / "feature_store.yaml").write_text("project: x\n  bad: indent: here\n")
    _conn_env(monkeypatch, extra={"repo_path": str(tmp_path)})
    with pytest.raises(
        AirflowFailException,
        match="^Feast connection 'feast_default': feature_store.yaml is not valid YAML: ",
    ):
        FeastHook().raw_config  # noqa: B018


def test_password_goes_into_the_redis_connection_string_and_is_masked(monkeypatch, tmp_path):
    masked = []
    monkeypatch.setattr("airflow.sdk.log.mask_secret", lambda value, name=None: masked.append(value))
    yaml_text = "project: p\nonline_store:\n  type: redis\n  connection_string: 127.0.0.1:6379\n"
    _conn_env(monkeypatch, extra={"feature_store_yaml": yaml_text}, password="s3cret")
    hook = FeastHook()
    assert hook.raw_config["online_store"]["connection_string"] == "127.0.0.1:6379,password=s3cret"
    assert "s3cret" in masked
    assert hook.project == "p"
    # YAML alone: a private temporary repo directory.
    assert hook.repo_path is None
    assert hook.repo_dir.is_dir()


def test_password_goes_into_the_password_field_of_other_stores(monkeypatch):
    monkeypatch.setattr("airflow.sdk.log.mask_secret", lambda value, name=None: None)
    yaml_text = "project: p\nonline_store:\n  type: postgres\n  host: db\n"
    _conn_env(monkeypatch, extra={"feature_store_yaml": yaml_text}, password="pw")
    assert FeastHook().raw_config["online_store"]["password"] == "pw"


def test_lock_dir_follows_the_file_registry(monkeypatch, tmp_path):
    (tmp_path / "feature_store.yaml").write_text("project: p\nregistry: data/registry.db\n")
    _conn_env(monkeypatch, extra={"repo_path": str(tmp_path)})
    assert FeastHook().lock_dir == tmp_path.resolve() / "data"
    _conn_env(
        monkeypatch,
        conn_id="sql",
        extra={
            "feature_store_yaml": "project: p\nregistry:\n  registry_type: sql\n  path: postgresql://x/y\n"
        },
    )
    assert FeastHook("sql").lock_dir is None
