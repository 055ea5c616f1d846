"""The copied DockerOperator container-creation code has not drifted from the installed provider's.

``_compat/docker.py`` records, for every keyword ``DockerOperator._run_image_with_mounts`` passes
to ``create_host_config`` and ``create_container``, either upstream's expression (passed through)
or why ours replaces it. These tests parse the installed provider's source with ``ast`` and fail
when a keyword appears, disappears or changes its expression, or when the seam itself moves.
"""

from __future__ import annotations

import ast
import inspect
import textwrap

import pytest
from airflow.providers.docker.operators.docker import DockerOperator

from airflow_mlops_provider._compat import UnsupportedVersionError, VersionRange, installed_version
from airflow_mlops_provider._compat import docker as compat


def _function(method) -> ast.FunctionDef:
    tree = ast.parse(textwrap.dedent(inspect.getsource(method)))
    node = tree.body[0]
    assert isinstance(node, ast.FunctionDef)
    return node


def _calls(node: ast.AST, attribute: str) -> list[ast.Call]:
    return [
        n
        for n in ast.walk(node)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == attribute
    ]


def _keywords(attribute: str) -> dict[str, str]:
    (call,) = _calls(_function(DockerOperator._run_image_with_mounts), attribute)
    assert all(k.arg is not None for k in call.keywords), f"{attribute} got **kwargs upstream"
    return {str(k.arg): ast.unparse(k.value) for k in call.keywords}


@pytest.mark.parametrize(
    ("call", "passed", "replaced"),
    [
        ("create_host_config", compat.HOST_CONFIG_PASSED, compat.HOST_CONFIG_REPLACED),
        ("create_container", compat.CONTAINER_PASSED, compat.CONTAINER_REPLACED),
    ],
    ids=["create_host_config", "create_container"],
)
def test_every_upstream_keyword_is_passed_through_or_deliberately_replaced(call, passed, replaced):
    upstream = _keywords(call)
    handled = set(passed) | set(replaced)
    assert set(upstream) - handled == set(), (
        f"new {call} keyword(s) upstream: handle them in _compat/docker.py"
    )
    assert handled - set(upstream) == set(), (
        f"{call} keyword(s) gone upstream: drop them from _compat/docker.py"
    )
    assert not set(passed) & set(replaced)
    changed = {k: upstream[k] for k in passed if upstream[k] != passed[k]}
    assert changed == {}, f"upstream expressions of {call} changed: {changed}"
    assert all(reason.strip() for reason in replaced.values())


def test_our_keywords_are_exactly_the_handled_and_added_ones():
    op = DockerOperator(task_id="op", image="python:3.11", env_file="A=1", private_environment={"S": "x"})
    host, container = compat.container_kwargs(op, name="n", target_mounts=[], engine={}, labels={"l": "v"})
    assert set(host) == set(compat.HOST_CONFIG_PASSED) | set(compat.HOST_CONFIG_REPLACED) | set(
        compat.HOST_CONFIG_ADDED
    )
    expected = set(compat.CONTAINER_PASSED) | set(compat.CONTAINER_REPLACED) | set(compat.CONTAINER_ADDED)
    assert set(container) | {"host_config"} == expected
    assert container["environment"] == {"A": "1", "S": "x"}


def test_passed_keywords_have_upstream_values():
    """Each passed-through keyword evaluates as upstream's expression does, on the same operator."""
    from docker.types import LogConfig

    op = DockerOperator(
        task_id="op",
        image="python:3.11",
        command="['python3', '-V']",
        cpus=2,
        network_mode="none",
        dns=["1.1.1.1"],
        cap_add=["SYS_PTRACE"],
        log_opts_max_size="10m",
        port_bindings={8080: 80},
        tty=True,
        user="nobody",
        private_environment={"S": "x"},
        environment={"E": "1"},
    )
    mounts = ["m"]
    host, container = compat.container_kwargs(op, name="n", target_mounts=mounts, engine={}, labels={})
    scope = {
        "self": op,
        "target_mounts": mounts,
        "docker_log_config": {"max-size": "10m"},
        "env_file_vars": {},
        "LogConfig": LogConfig,
    }
    for table, built in ((compat.HOST_CONFIG_PASSED, host), (compat.CONTAINER_PASSED, container)):
        for key, expression in table.items():
            assert built[key] == eval(expression, scope), key  # upstream's own expression


def test_without_our_values_replaced_keywords_fall_back_to_docker_operators():
    op = DockerOperator(task_id="op", image="i", mem_limit="1g", shm_size=64, device_requests=["r"])
    host, _ = compat.container_kwargs(op, name="n", target_mounts=[], engine={}, labels={})
    assert (host["mem_limit"], host["shm_size"], host["device_requests"]) == ("1g", 64, ["r"])
    host, _ = compat.container_kwargs(
        op,
        name="n",
        target_mounts=[],
        engine={"mem_limit": 5, "shm_size": 6, "device_requests": ["d"]},
        labels={},
    )
    assert (host["mem_limit"], host["shm_size"], host["device_requests"]) == (5, 6, ["d"])


def test_the_seam_is_where_the_override_expects_it():
    """execute() -> _run_image() -> _run_image_with_mounts(target_mounts, add_tmp_variable=...)."""
    params = list(inspect.signature(DockerOperator._run_image_with_mounts).parameters)
    assert params == ["self", "target_mounts", "add_tmp_variable"]
    assert _calls(_function(DockerOperator.execute), "_run_image")
    seam_calls = _calls(_function(DockerOperator._run_image), "_run_image_with_mounts")
    assert seam_calls
    assert all([k.arg for k in c.keywords] == ["add_tmp_variable"] for c in seam_calls)
    body = ast.unparse(_function(DockerOperator._run_image_with_mounts))
    assert "self.environment['AIRFLOW_TMP_DIR'] = self.tmp_dir" in body
    assert "self.environment.pop('AIRFLOW_TMP_DIR', None)" in body
    assert "_attempt_to_retrieve_result" in ast.unparse(_function(DockerOperator._run_image_with_mounts))
    assert "self._private_environment = private_environment or {}" in inspect.getsource(
        DockerOperator.__init__
    )


def test_the_installed_provider_is_inside_the_gate():
    assert compat.GATE.contains(installed_version(compat.GATE.distribution))
    compat.check_docker_provider()


def test_outside_the_gate_the_operator_fails_loudly(monkeypatch):
    gate = VersionRange(compat.GATE.distribution, "0.1", "0.2", compat.GATE.what)
    monkeypatch.setattr(compat, "GATE", gate)
    with pytest.raises(
        UnsupportedVersionError, match=r"_run_image_with_mounts .* no public fallback exists$"
    ):
        compat.check_docker_provider()
