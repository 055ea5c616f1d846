"""One table of cases (``cases.py``), the same outcome and the same message on Docker, Kubernetes and local.

Docker (``GpuDockerOperator`` on the local engine, image ``mlops-base:bookworm``) and local
(``LocalProcessOperator``) run for real; Kubernetes builds each pod through KubernetesPodOperator's
real builder, runs it as a process and collects it through KPO's own ``extract_xcom`` and
``cleanup`` (``pods.py``). Every case is one task per runtime in one real DAG run (``dag.test()``:
real rendering with the run's context, real XComArgs); the mapped case runs one DAG file with
``airflow dags test`` for Docker and local, and through ``dag.test()`` for Kubernetes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
from pathlib import Path
from typing import Any
from unittest import mock

import pendulum
import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops_provider.compute import Resources
from airflow_mlops_provider.operators.container import container_operator
from airflow_mlops_provider.operators.docker import GpuDockerOperator
from airflow_mlops_provider.operators.kubernetes import GpuKubernetesPodOperator
from airflow_mlops_provider.operators.local import LocalProcessOperator
from tests.conftest import REPO_ROOT, dags_test
from tests.integration.parity.cases import (
    ANY,
    CASES,
    IMAGE,
    LIMITS,
    NATIVE_ENV,
    PARAMS,
    PRODUCERS,
    RUNTIMES,
    SOURCE,
    STATIC_BAD,
    Case,
    Err,
    expected_value,
    task_id,
)
from tests.integration.parity.pods import kpo_execute
from tests.unit.kubernetes.conftest import kube_conn

pytestmark = [pytest.mark.integration, pytest.mark.docker]

DAG_ID = "mlops_parity"
MAPPED_DAG = Path(__file__).parent / "dags" / "parity_mapped.py"
NAMESPACE = "mlops"


class Recorder:
    """What each task did: its outcome, the ``Resources`` it rendered, its pod, its construction error."""

    def __init__(self) -> None:
        self.outcomes: dict[str, tuple[Any, ...]] = {}
        self.resources: dict[str, Resources] = {}
        self.pods: dict[tuple[str, int], Any] = {}
        self.parse_errors: dict[str, BaseException] = {}


REC = Recorder()


def _source(op: Any, runtime: str) -> str:
    """The runtime's name for what ran, as its messages say it."""
    if runtime == "docker":
        return f"Container {op.container_name}"
    if runtime == "kubernetes":
        pod = REC.pods.get((op.task_id, -1))
        return f"Pod {pod.metadata.name}" if pod is not None else "Pod ?"
    command = op.command
    argv = shlex.split(command) if isinstance(command, str) else [str(p) for p in command or []]
    return f"Local process {argv!r}"


def _recording(execute: Any, runtime: str) -> Any:
    def wrapper(self: Any, context: Any) -> Any:
        try:
            value = execute(self, context)
        except Exception as err:
            message = str(err).replace(_source(self, runtime), SOURCE)
            REC.outcomes[self.task_id] = (
                "error",
                type(err).__name__,
                message,
                not isinstance(err, AirflowFailException),
            )
            raise
        REC.outcomes[self.task_id] = ("ok", value)
        REC.resources[self.task_id] = Resources.coerce(self.compute_resources)
        return value

    return wrapper


def _producer(value: Any) -> Any:
    def produce() -> Any:
        return value

    return produce


def _case_kwargs(case: Case, runtime: str, producers: dict[str, Any]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"image": IMAGE, "retries": 0, **case.kwargs}
    for argument, producer in case.from_xcom.items():
        kwargs[argument] = producers[producer]
    kubernetes: dict[str, Any] = {"namespace": NAMESPACE}
    if case.native_env:
        kwargs["docker_kwargs"] = {"environment": dict(NATIVE_ENV)}
        kubernetes["env_vars"] = dict(NATIVE_ENV)
    kwargs["kubernetes_kwargs"] = kubernetes
    return kwargs


def _build_dag():
    from airflow.sdk import DAG, task

    with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), params=PARAMS) as dag:
        producers = {name: task(task_id=name)(_producer(value))() for name, value in PRODUCERS.items()}
        for case in CASES:
            for runtime in RUNTIMES:
                try:
                    container_operator(runtime)(
                        task_id=task_id(case, runtime), **_case_kwargs(case, runtime, producers)
                    )
                except Exception as err:  # reported by the case's test, the other tasks still run
                    REC.parse_errors[task_id(case, runtime)] = err
    return dag


def _dag_test(dag: Any, dag_file: Path, stub: str | None = None) -> Any:
    """Run ``dag.test()`` with the DAG in the DAGs folder (dag.test() syncs it from its bundle)."""
    target = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]) / dag_file.name
    if stub is None:
        shutil.copy(dag_file, target)
    else:
        target.write_text(stub)
    try:
        return dag.test()
    finally:
        target.unlink()  # other tests parse the shared DAGs folder


def _patched_runtimes(recorder_pods: dict[tuple[str, int], Any]) -> list[Any]:
    return [
        mock.patch.object(GpuDockerOperator, "execute", _recording(GpuDockerOperator.execute, "docker")),
        mock.patch.object(LocalProcessOperator, "execute", _recording(LocalProcessOperator.execute, "local")),
        mock.patch.object(
            GpuKubernetesPodOperator, "execute", _recording(kpo_execute(recorder_pods), "kubernetes")
        ),
    ]


@pytest.fixture(scope="module")
def parity_run(airflow_db, fake_kubeconfig, no_containers_left):
    env = {
        "KUBECONFIG": str(fake_kubeconfig),
        "AIRFLOW_CONN_KUBERNETES_DEFAULT": kube_conn(fake_kubeconfig),
        **NATIVE_ENV,  # the local runtime's native environment is the worker's
    }
    with mock.patch.dict("os.environ", env):
        patches = _patched_runtimes(REC.pods)
        for patch in patches:
            patch.start()
        try:
            _dag_test(
                _build_dag(),
                Path(f"{DAG_ID}.py"),
                stub="# airflow DAG (safe-mode discovery needs both words)\n"
                "from tests.integration.parity.test_parity import _build_dag\n\ndag = _build_dag()\n",
            )
        finally:
            for patch in reversed(patches):
                patch.stop()
    return REC


def _expected(case: Case, runtime: str) -> tuple[Any, ...]:
    if isinstance(case.expect, Err):
        return ("error", case.expect.kind, case.expect.message, case.expect.retried)
    if case.expect.value is ANY:
        return ("ok", ANY)
    return ("ok", expected_value(case, runtime))


def _got(rec: Recorder, case: Case, runtime: str) -> tuple[Any, ...]:
    tid = task_id(case, runtime)
    if tid in rec.parse_errors:
        err = rec.parse_errors[tid]
        return ("parse error", type(err).__name__, str(err))
    outcome = rec.outcomes.get(tid, ("did not run",))
    if _expected(case, runtime) == ("ok", ANY) and outcome[0] == "ok":
        return ("ok", ANY)  # the value is checked per runtime (resources)
    return outcome


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_same_outcome_and_message_on_every_runtime(parity_run, case):
    got = {runtime: _got(parity_run, case, runtime) for runtime in RUNTIMES}
    assert got == {runtime: _expected(case, runtime) for runtime in RUNTIMES}


def _base(pod: Any) -> Any:
    (base,) = [c for c in pod.spec.containers if c.name == "base"]
    return base


def _pod(rec: Recorder, case_id: str) -> Any:
    (case,) = [c for c in CASES if c.id == case_id]
    return rec.pods[task_id(case, "kubernetes"), -1]


def test_pod_spec_of_the_env_case(parity_run):
    base = _base(_pod(parity_run, "env-precedence"))
    env = [(e.name, e.value) for e in base.env]
    assert env == [
        ("PARITY_SHARED", "env"),
        ("PARITY_ENV", "env"),
        ("PARITY_NATIVE", "native"),
        ("MLOPS_RESULT_FILE", "/airflow/xcom/return.json"),
    ]
    assert {m.mount_path for m in base.volume_mounts} == {"/airflow/xcom"}


def test_pod_args_of_the_command_cases(parity_run):
    (string_case,) = [c for c in CASES if c.id == "command-string"]
    assert _base(_pod(parity_run, "command-string")).args == shlex.split(string_case.kwargs["command"])
    args = _base(_pod(parity_run, "command-list")).args
    assert args[3:] == ["a", "b c", "command_list__kubernetes"]


@pytest.mark.parametrize("case_id", ["resources-dict", "resources-json", "resources-template"])
def test_resources_mean_the_same_and_are_enforced_where_the_runtime_can(parity_run, case_id):
    (case,) = [c for c in CASES if c.id == case_id]
    rendered = {runtime: parity_run.resources.get(task_id(case, runtime)) for runtime in RUNTIMES}
    assert rendered == dict.fromkeys(RUNTIMES, LIMITS)
    # Docker: the container's own limits, read from inside it.
    seen = parity_run.outcomes[task_id(case, "docker")][1]
    assert seen == {"memory": str(256 * 1024**2), "shm": 64 * 1024**2}
    # Kubernetes: requests and limits, and /dev/shm as a memory-backed emptyDir.
    pod = _pod(parity_run, case_id)
    assert _base(pod).resources.limits == {"cpu": "1", "memory": "256Mi"}
    (shm,) = [v for v in pod.spec.volumes if v.name == "mlops-dshm"]
    assert (shm.empty_dir.medium, shm.empty_dir.size_limit) == ("Memory", "64Mi")
    # Local: validated, not enforced (the process sees the worker's limits).


def test_the_operators_left_no_container_behind(parity_run):
    from tests.integration.parity.conftest import remove_parity_containers

    assert remove_parity_containers() == []


# -- static values: the same ValueError when the DAG file is parsed ------------------------------


@pytest.mark.parametrize(("what", "kwargs", "message"), STATIC_BAD, ids=[row[0] for row in STATIC_BAD])
def test_static_bad_values_fail_the_parse_the_same_way_on_every_runtime(what, kwargs, message):
    got = {}
    for runtime in RUNTIMES:
        arguments = {"image": IMAGE, "command": ["true"], **kwargs}
        with pytest.raises(ValueError) as excinfo:
            container_operator(runtime)(task_id=f"bad_{runtime}", **arguments)
        got[runtime] = str(excinfo.value)
    assert got == dict.fromkeys(RUNTIMES, message)


@pytest.mark.parametrize(
    ("runtime", "native", "message"),
    [
        (
            "kubernetes",
            {"container_resources": {"limits": {"memory": "1Gi"}}},
            "resources and container_resources both set the same thing; pass only one, "
            "got resources={'memory': '1Gi'} and container_resources={'limits': {'memory': '1Gi'}}",
        ),
        (
            "docker",
            {"mem_limit": "1g"},
            "resources.memory and mem_limit both set the same thing; pass only one, "
            "got resources.memory=1073741824 and mem_limit='1g'",
        ),
    ],
    ids=["kubernetes-container-resources", "docker-mem-limit"],
)
def test_a_clash_with_a_native_argument_is_an_error_on_every_runtime(runtime, native, message):
    # Local has no native resources argument: nothing can clash there.
    kwargs = {f"{runtime}_kwargs": native}
    with pytest.raises(ValueError) as excinfo:
        container_operator(runtime)(task_id="clash", image=IMAGE, resources={"memory": "1Gi"}, **kwargs)
    assert str(excinfo.value) == message


# -- the mapped case: one DAG file, .partial().expand_kwargs() on each runtime -------------------

MAPPED_RESULTS = [
    {"argv": ["list", "0"], "trial": "0"},
    {"argv": ["string", "1"], "trial": "1"},
]


def _load_mapped_dag() -> Any:
    spec = importlib.util.spec_from_file_location("parity_mapped_k8s", MAPPED_DAG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.parity_mapped()


@pytest.fixture(scope="module")
def mapped_runs(airflow_db, fake_kubeconfig, no_containers_left, tmp_path_factory):
    out = tmp_path_factory.mktemp("parity-out")
    folder = tmp_path_factory.mktemp("parity-dags")
    shutil.copy(MAPPED_DAG, folder / MAPPED_DAG.name)
    proc = dags_test(
        "parity_mapped",
        folder,
        extra_env={"PARITY_RUNTIMES": "docker,local", "PARITY_OUT": str(out), "PYTHONPATH": str(REPO_ROOT)},
        check=False,
    )
    pods: dict[tuple[str, int], Any] = {}
    env = {
        "PARITY_RUNTIMES": "kubernetes",
        "PARITY_OUT": str(out),
        "KUBECONFIG": str(fake_kubeconfig),
        "AIRFLOW_CONN_KUBERNETES_DEFAULT": kube_conn(fake_kubeconfig),
    }
    with (
        mock.patch.dict("os.environ", env),
        mock.patch.object(GpuKubernetesPodOperator, "execute", kpo_execute(pods)),
    ):
        dag_run = _dag_test(_load_mapped_dag(), MAPPED_DAG)
    return proc, dag_run, out, pods


def test_mapped_expand_kwargs_gives_the_same_results_on_every_runtime(mapped_runs):
    proc, dag_run, out, _ = mapped_runs
    log = (proc.stdout + proc.stderr)[-6000:]
    results = {
        runtime: json.loads((out / f"{runtime}.json").read_text())
        if (out / f"{runtime}.json").exists()
        else None
        for runtime in RUNTIMES
    }
    assert results == dict.fromkeys(RUNTIMES, MAPPED_RESULTS), log
    assert "state=success" in proc.stdout + proc.stderr, log
    assert dag_run.state == "success"


def test_mapped_pods_get_each_map_index_its_own_resources(mapped_runs):
    pods = mapped_runs[3]
    assert sorted(pods) == [("trial_kubernetes", 0), ("trial_kubernetes", 1)]
    first, second = (_base(pods["trial_kubernetes", i]) for i in (0, 1))
    assert first.resources.limits == {"cpu": "1", "memory": "256Mi"}
    assert second.resources.limits == {"cpu": "500m", "memory": "128Mi"}
    assert [e.value for e in first.env if e.name == "TRIAL"] == ["0"]
    assert [e.value for e in second.env if e.name == "TRIAL"] == ["1"]
    shm = [v for v in pods["trial_kubernetes", 1].spec.volumes if v.name == "mlops-dshm"]
    assert shm[0].empty_dir.size_limit == "32Mi"
