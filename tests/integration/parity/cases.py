"""The parity table: one row per case, the same expected outcome on Docker, Kubernetes and local.

Every case is a set of shared-vocabulary arguments (``image``, ``command``, ``env``,
``resources``) and what must come of them: the task's XCom (``Ok``) or an error (``Err``), whose
message is the same on every runtime once the runtime's name for what ran (``Container <name>``,
``Pod <name>``, ``Local process [...]``) is replaced by ``<source>``.

The programs are small ``python3 -c`` probes that write what they see to ``$MLOPS_RESULT_FILE``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from airflow_mlops_provider.compute import Resources

RUNTIMES = ("docker", "kubernetes", "local")
IMAGE = os.environ.get("MLOPS_TEST_IMAGE", "mlops-base:bookworm")
SOURCE = "<source>"

_WRITE = 'open(os.environ["MLOPS_RESULT_FILE"], "w").write'
ENV_NAMES = ("PARITY_SHARED", "PARITY_NATIVE", "PARITY_ENV")
ENV_PROBE = (
    "import json, os; "
    f"{_WRITE}(json.dumps(dict([(k, os.environ.get(k)) for k in {ENV_NAMES!r}], "
    'result_file_set=bool(os.environ.get("MLOPS_RESULT_FILE")))))'
)
ARGV_PROBE = f"import json, os, sys; {_WRITE}(json.dumps(sys.argv[1:]))"
# What the container's limits look like from inside (cgroup v2, else v1) and the size of /dev/shm.
LIMITS_PROBE = (
    "import json, os\n"
    "def read(*paths):\n"
    "    for p in paths:\n"
    "        if os.path.exists(p):\n"
    "            return open(p).read().strip()\n"
    "s = os.statvfs('/dev/shm')\n"
    f"{_WRITE}(json.dumps(dict(memory=read('/sys/fs/cgroup/memory.max', "
    "'/sys/fs/cgroup/memory/memory.limit_in_bytes'), shm=s.f_frsize * s.f_blocks)))"
)
#: Both lines go to stderr: a container's stdout and stderr are two pipes that the engine reads
#: separately, so lines written to both within microseconds may come out in either order on Docker
#: (CI saw "boom" before "line one"). Within one stream the order is kept on every runtime.
FAILING = (
    "import sys; print('line one', file=sys.stderr, flush=True); "
    "print('boom', file=sys.stderr, flush=True); sys.exit(3)"
)

#: What every runtime's native environment argument holds in the env-precedence case (the
#: worker's environment, for local, is patched to hold the same).
NATIVE_ENV = {"PARITY_SHARED": "native", "PARITY_NATIVE": "native"}
#: DAG params the templated cases render.
PARAMS = {
    "resources": {"cpus": 1, "memory": "256Mi", "shm_size": "64Mi"},
    "empty_image": "",
    "bad_resources": '{"gpus": "two"}',
}
#: Upstream tasks whose XCom a case's argument is (an XComArg resolved when the task renders).
PRODUCERS = {"bad_command": {"run": "x"}, "bad_env": ["A=1"]}

LIMITS = Resources(cpus=1, memory="256Mi", shm_size="64Mi")


def py(code: str, *args: str) -> list[str]:
    return ["python3", "-c", code, *args]


@dataclass(frozen=True)
class Ok:
    """The task succeeds and returns ``value`` (``ANY``: checked per runtime, see ``limits``)."""

    value: Any


@dataclass(frozen=True)
class Err:
    """The task fails with ``kind`` and exactly ``message`` (``<source>`` standing for what ran)."""

    kind: str
    message: str
    retried: bool = True


@dataclass(frozen=True)
class Case:
    id: str
    kwargs: dict[str, Any]
    expect: Ok | Err
    #: Pass the runtime's native environment argument (``environment``/``env_vars``) too.
    native_env: bool = False
    #: The ``Resources`` every runtime must have rendered, when the case is about resources.
    resources: Resources | None = None
    #: ``{argument: producer}``: the argument is the XCom of that upstream task.
    from_xcom: dict[str, str] = field(default_factory=dict)


ANY = object()


def _config_error(argument: str, detail: str) -> Err:
    return Err("ContainerConfigError", f"Invalid {argument} after rendering: {detail}", retried=False)


CASES = [
    Case(
        "env-precedence",
        {"command": py(ENV_PROBE), "env": {"PARITY_SHARED": "env", "PARITY_ENV": "env"}},
        Ok({"PARITY_SHARED": "env", "PARITY_NATIVE": "native", "PARITY_ENV": "env", "result_file_set": True}),
        native_env=True,
    ),
    Case(
        "command-string",
        {"command": f"python3 -c '{ARGV_PROBE}' a 'b c' \"d'e\""},
        Ok(["a", "b c", "d'e"]),
    ),
    Case(
        "command-list",
        {"command": py(ARGV_PROBE, "a", "b c", "{{ ti.task_id }}")},
        Ok(["a", "b c", "TASK_ID"]),
    ),
    Case(
        "resources-dict",
        {"command": py(LIMITS_PROBE), "resources": {"cpus": 1, "memory": "256Mi", "shm_size": "64Mi"}},
        Ok(ANY),
        resources=LIMITS,
    ),
    Case(
        "resources-json",
        {"command": py(LIMITS_PROBE), "resources": '{"cpus": 1, "memory": "256Mi", "shm_size": "64Mi"}'},
        Ok(ANY),
        resources=LIMITS,
    ),
    Case(
        "resources-template",
        {"command": py(LIMITS_PROBE), "resources": "{{ params.resources | tojson }}"},
        Ok(ANY),
        resources=LIMITS,
    ),
    Case("result-present", {"command": py(f"import os; {_WRITE}('{{\"loss\": 0.5}}')")}, Ok({"loss": 0.5})),
    Case("result-missing", {"command": py("print('no result file')")}, Ok(None)),
    Case(
        "result-malformed",
        {"command": py(f"import os; {_WRITE}('{{not json')")},
        Err(
            "ResultFileError",
            f"{SOURCE} wrote a result file ($MLOPS_RESULT_FILE) that is not JSON: Expecting property name "
            "enclosed in double quotes: line 1 column 2 (char 1); first bytes: '{not json'",
        ),
    ),
    Case(
        "non-zero-exit",
        {"command": py(FAILING)},
        Err(
            "ContainerFailedError",
            f"{SOURCE} exited with code 3\n--- last container output ---\nline one\nboom",
        ),
    ),
    Case(
        "bad-image",
        {"command": py("pass"), "image": "{{ params.empty_image }}"},
        _config_error("image", "image must be a non-empty image reference such as 'python:3.11', got ''"),
    ),
    Case(
        "bad-command",
        {},
        _config_error("command", "command must be a string or a list of strings, got {'run': 'x'}"),
        from_xcom={"command": "bad_command"},
    ),
    Case(
        "bad-env",
        {"command": py("pass")},
        _config_error("env", "env must be a dict of variable names to values, got ['A=1']"),
        from_xcom={"env": "bad_env"},
    ),
    Case(
        "bad-resources",
        {"command": py("pass"), "resources": "{{ params.bad_resources }}"},
        _config_error("resources", "gpus must be an integer >= 0, got 'two'"),
    ),
]

#: Static bad values: the same parse-time ValueError text on every runtime.
STATIC_BAD = [
    ("image", {"image": ""}, "image must be a non-empty image reference such as 'python:3.11', got ''"),
    ("command", {"command": {"run": "x"}}, "command must be a string or a list of strings, got {'run': 'x'}"),
    ("env", {"env": ["A=1"]}, "env must be a dict of variable names to values, got ['A=1']"),
    ("env-key", {"env": {"A=B": "1"}}, "env keys must be non-empty strings without '=', got ['A=B'] in env"),
    ("resources", {"resources": {"gpus": -1}}, "gpus must be an integer >= 0, got -1"),
    ("resources-json", {"resources": "{not json"}, "resources must be a JSON object, got '{not json'"),
]


def task_id(case: Case, runtime: str) -> str:
    return f"{case.id.replace('-', '_')}__{runtime}"


def expected_value(case: Case, runtime: str) -> Any:
    """The expected XCom of ``case`` on ``runtime`` (a task id in a command is the runtime's own)."""
    value = case.expect.value if isinstance(case.expect, Ok) else None
    if isinstance(value, list):
        return [task_id(case, runtime) if v == "TASK_ID" else v for v in value]
    return value
