"""ContainerTrialOperator without a Docker engine: parse-time checks, Kubernetes trial pods, local trials.

The Kubernetes trials run in one real DAG run (``dag.test()``: ``plan_sweep`` -> mapped
``container_trials`` -> ``select_best_trial``, real rendering with the run's context). Only
``GpuKubernetesPodOperator.execute`` is replaced: it builds each trial's pod through
KubernetesPodOperator's real ``build_pod_request_obj``, records it, and answers as the pod would.
The local runtime runs real processes.
"""

from __future__ import annotations

import json
import os
import re
import types
from pathlib import Path
from unittest import mock

import pendulum
import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops_provider.compute import Resources
from airflow_mlops_provider.operators.kubernetes import GpuKubernetesPodOperator
from airflow_mlops_provider.sweeps import ContainerTrialOperator, container_trials, make_trial
from tests.unit.kubernetes.conftest import fake_kubeconfig, kube_conn, kube_env  # noqa: F401 (fixtures)

IMAGE = "registry.example.com/train:1.0"
DAG_ID = "mlops_k8s_container_trials"
#: Two learning rates x two resource shapes, plus one trial whose pod fails.
SPACES = [
    {
        "lr": [0.1, 0.01],
        "resources": [{"cpus": 1, "memory": "1Gi"}, {"gpus": 1, "gpu_type": "NVIDIA-L4", "shm_size": "1Gi"}],
    },
    {"lr": 0.5, "crash": True},
]


def _context(dag_id: str = "d", map_index: int = -1) -> dict:
    ti = types.SimpleNamespace(
        dag_id=dag_id, task_id="train", run_id="r1", map_index=map_index, try_number=1, xcom_push=mock.Mock()
    )
    return {"ti": ti, "run_id": "r1", "params": {}}


# -- parse time -------------------------------------------------------------------------------

BAD = [
    ({"image": ""}, "image must be a non-empty image reference such as 'python:3.11', got ''"),
    ({"image": None}, "image must be a non-empty image reference such as 'python:3.11', got None"),
    ({"command": {"a": 1}}, "command must be a string or a list of strings, got {'a': 1}"),
    ({"env": ["A"]}, "env must be a dict of variable names to values, got ['A']"),
    (
        {"env": {"MLOPS_TRIAL": "{}"}},
        "env must not set ['MLOPS_TRIAL']: each trial's container gets them, got env={'MLOPS_TRIAL': '{}'}",
    ),
    ({"resources": {"gpus": -1}}, "gpus must be an integer >= 0, got -1"),
    (
        {"resources": {"cpu": 2}},
        "resources has unknown field(s) ['cpu']; expected some of ['cpus', 'memory', 'gpus', 'gpu_type', "
        "'gpu_vendor', 'shm_size']",
    ),
    ({"runtime": "slurm"}, "runtime must be one of ['docker', 'kubernetes', 'local'], got 'slurm'"),
    (
        {"docker_kwargs": ["gpu_ids"]},
        "docker_kwargs must be a dict of docker operator arguments, got ['gpu_ids']",
    ),
    (
        {"docker_kwargs": {"nope": 1}},
        "docker_kwargs ['nope'] are not arguments of DockerContainerOperator, got docker_kwargs={'nope': 1}",
    ),
    (
        {"docker_kwargs": {"container_name": "x"}},
        "docker_kwargs ['container_name'] are set per trial by ContainerTrialOperator, "
        "got docker_kwargs={'container_name': 'x'}",
    ),
    (
        {"docker_kwargs": {"image": "x"}},
        "docker_kwargs ['image'] are set per trial by ContainerTrialOperator, got docker_kwargs={'image': 'x'}",
    ),
    (
        {"docker_kwargs": {"retries": 2}},
        "docker_kwargs ['retries'] are arguments of the trial task itself; pass them to "
        "ContainerTrialOperator directly, got docker_kwargs={'retries': 2}",
    ),
    (
        {"docker_kwargs": {"gpu_fallback": "gpu"}},
        None,  # the runtime operator's own check, when the trial's operator is built
    ),
    (
        {"runtime": "kubernetes", "kubernetes_kwargs": {"deferrable": True}},
        "kubernetes_kwargs deferrable=True cannot run a batch of trials in one task (each trial's pod is "
        "awaited in turn), got kubernetes_kwargs={'deferrable': True}",
    ),
    (
        {"runtime": "kubernetes", "kubernetes_kwargs": {"name": "pod"}},
        "kubernetes_kwargs ['name'] are set per trial by ContainerTrialOperator, "
        "got kubernetes_kwargs={'name': 'pod'}",
    ),
    (
        {"runtime": "kubernetes", "kubernetes_kwargs": {"labels": ["team"]}},
        "kubernetes_kwargs labels must be a dict (a trial's label is added to it), got ['team']",
    ),
    (
        {"runtime": "local", "command": None},
        "command must be a non-empty string or list of strings, got None",
    ),
    (
        {"trials": [{"x": 1}]},
        "each trial must be a dict with 'trial_id' (str) and 'hparams' (dict), got {'x': 1}",
    ),
    ({"trials": {"x": 1}}, "trials must be a list of trial dicts (see trials_from_grid), got {'x': 1}"),
]
BAD_IDS = [
    "empty-image",
    "no-image",
    "command-dict",
    "env-list",
    "env-reserved",
    "resources-negative-gpus",
    "resources-unknown-field",
    "unknown-runtime",
    "docker-kwargs-not-dict",
    "docker-kwargs-unknown",
    "docker-kwargs-container-name",
    "docker-kwargs-image",
    "docker-kwargs-base-operator-arg",
    "docker-kwargs-bad-value",
    "kubernetes-deferrable",
    "kubernetes-name",
    "kubernetes-labels-list",
    "local-without-command",
    "trial-without-id",
    "trials-not-list",
]


@pytest.mark.parametrize(("override", "message"), BAD, ids=BAD_IDS)
def test_bad_static_arguments_are_a_parse_time_value_error(override, message):
    kwargs = {"task_id": "train", "runtime": "docker", "image": IMAGE, "command": ["python", "train.py"]}
    kwargs.update(override)
    if message is None:  # checked by GpuDockerOperator itself, when execute builds each trial's operator
        op = ContainerTrialOperator(**kwargs, trials=[make_trial({"x": 1})])
        with pytest.raises(AirflowFailException, match=re.escape("gpu_fallback must be one of")):
            op.execute(_context())
        return
    with pytest.raises(ValueError, match=re.escape(message)):
        ContainerTrialOperator(**kwargs)
    if "trials" not in override:  # the same check in container_trials (partial) when the DAG is parsed
        from airflow.sdk import DAG

        with DAG("parse", schedule=None), pytest.raises(ValueError, match=re.escape(message)):
            container_trials(batches=[{"trials": [make_trial({"x": 1})]}], **kwargs)


def test_batch_and_trials_together_are_refused():
    with pytest.raises(ValueError, match=re.escape("pass batch or trials, not both, got batch={'key': 'k'}")):
        ContainerTrialOperator(
            task_id="t", image=IMAGE, batch={"key": "k"}, trials=[make_trial({"x": 1})], runtime="docker"
        )


def test_templates_and_mapped_arguments_pass_parse_time_checks():
    from airflow.sdk import DAG

    with DAG("parse", schedule=None) as dag:
        mapped = container_trials(
            task_id="train",
            batches=[{"trials": [make_trial({"x": 1})]}],
            runtime="kubernetes",
            image="{{ params.image }}",
            command=["python", "train.py", "--x", "{{ trial.hparams.x }}"],
            env="{{ params.env }}",
            resources=Resources(memory="1Gi"),
            kubernetes_kwargs={"namespace": "ml", "labels": {"team": "ml"}},
        )
    # partial() resolved the runtime once, at parse time, and sent the Resources as its dict.
    assert mapped.operator.partial_kwargs["runtime"] == "kubernetes"
    assert mapped.operator.partial_kwargs["resources"] == {"memory": 1073741824}
    assert list(dag.task_dict) == ["train"]  # no probe operator left in the DAG


def test_runtime_defaults_to_the_mlops_runtime_option(monkeypatch):
    monkeypatch.setenv("AIRFLOW__MLOPS__RUNTIME", "local")
    assert ContainerTrialOperator(task_id="t", command=["true"]).runtime == "local"


# -- local runtime: real processes ----------------------------------------------------------

TRIAL_SCRIPT = """
import json, os, sys, pathlib
trial = json.loads(os.environ["MLOPS_TRIAL"])
kind = trial["hparams"]["kind"]
print("argv", sys.argv[1:], flush=True)
out = pathlib.Path(os.environ["MLOPS_RESULT_FILE"])
if kind == "none":
    print("forgot to write the result", flush=True)
elif kind == "text":
    out.write_text(json.dumps({"loss": "low"}))
elif kind == "marker":
    pathlib.Path(sys.argv[2]).write_text("ran")
    out.write_text(json.dumps({"loss": 0.0}))
else:
    out.write_text(json.dumps({"loss": trial["hparams"]["x"],
                               "outputs": {"trial": trial, "id": os.environ["MLOPS_TRIAL_ID"],
                                           "greeting": os.environ["GREETING"], "argv": sys.argv[1:]}}))
"""


def _local(trials, **kwargs):
    params = {
        "task_id": "train",
        "runtime": "local",
        "command": ["python3", "-c", TRIAL_SCRIPT, "{{ trial.hparams.x }}"],
        "env": {"GREETING": "x is {{ trial.hparams.x }}"},
        "trials": trials,
    }
    return ContainerTrialOperator(**{**params, **kwargs})


def test_local_trials_get_the_trial_as_json_and_templated_command_and_env():
    trials = [make_trial({"kind": "ok", "x": 2}), make_trial({"kind": "ok", "x": 1}, {"cpus": 1})]
    records = _local(trials).execute(_context())
    assert [r["status"] for r in records] == ["success", "success"]
    for trial, record in zip(trials, records, strict=True):
        assert record["metrics"] == {"loss": trial["hparams"]["x"]}
        outputs = record["outputs"]
        assert outputs["trial"] == trial  # MLOPS_TRIAL: the whole trial, resources included
        assert outputs["id"] == trial["trial_id"]
        assert outputs["argv"] == [str(trial["hparams"]["x"])]  # {{ trial.hparams.x }} in command
        assert outputs["greeting"] == f"x is {trial['hparams']['x']}"  # ... and in env


def test_missing_and_non_numeric_results_are_failed_trials_with_their_output():
    trials = [make_trial({"kind": "none", "x": 1}), make_trial({"kind": "text", "x": 2})]
    missing, text = _local(trials).execute(_context())
    assert missing["status"] == "failed"
    assert missing["error"] == (
        f"trial {trials[0]['trial_id']} wrote no result: nothing at $MLOPS_RESULT_FILE "
        "(/airflow/xcom/return.json in a container)"
    )
    assert missing["tail"] == ["argv ['1']", "forgot to write the result"]
    assert text["status"] == "failed"
    assert text["error"].startswith(
        f"trial {trials[1]['trial_id']} returned 'loss' = 'low'; expected a JSON object"
    )
    assert text["tail"] == ["argv ['2']"]


def test_a_trial_whose_resources_do_not_validate_fails_the_task_before_any_trial_runs(tmp_path):
    marker = tmp_path / "ran"
    good = make_trial({"kind": "marker", "x": 0})
    bad = {"trial_id": "bad0000000000000", "hparams": {"kind": "marker", "x": 1}, "resources": {"gpus": -1}}
    op = _local([good, bad], command=["python3", "-c", TRIAL_SCRIPT, "{{ trial.hparams.x }}", str(marker)])
    with pytest.raises(
        AirflowFailException, match=re.escape("trial bad0000000000000 (resources={'gpus': -1}): gpus must be")
    ):
        op.execute(_context())
    assert not marker.exists()


def test_env_that_renders_into_a_trial_variable_is_a_configuration_error():
    from airflow.sdk import DAG

    with DAG("native", schedule=None, render_template_as_native_obj=True):
        op = _local(
            [make_trial({"kind": "ok", "x": 1})], command=["true"], env="{{ {'MLOPS_TRIAL_ID': 'x'} }}"
        )
    with pytest.raises(
        AirflowFailException, match=re.escape("Invalid env after rendering: env must not set")
    ):
        op.execute(_context())


def test_the_trial_json_is_data_never_rendered():
    trial = make_trial({"prompt": "{{ not rendered }} {% raw %}", "x": 1})
    script = (
        "import os, json; json.dump({'loss': 1, 'outputs': json.loads(os.environ['MLOPS_TRIAL'])}, "
        "open(os.environ['MLOPS_RESULT_FILE'], 'w'))"
    )
    (record,) = _local([trial], command=["python3", "-c", script], env=None).execute(_context())
    assert record["outputs"] == trial


def test_no_nested_operator_warning_per_trial(capfd, monkeypatch):
    trials = [make_trial({"kind": "ok", "x": x}) for x in (1, 2)]
    _local(trials).execute(_context())
    assert "TrialLocalProcessOperator.execute cannot be called outside of the Task Runner" not in (
        "".join(capfd.readouterr())
    )
    # Outside the version gate the public path is taken: the trials run, and the warning shows.
    monkeypatch.setattr("airflow_mlops_provider._compat.airflow.version_gate", lambda gate: False)
    records = _local(trials).execute(_context())
    assert [r["status"] for r in records] == ["success", "success"]
    out = "".join(capfd.readouterr())
    assert out.count("TrialLocalProcessOperator.execute cannot be called outside of the Task Runner") == 2


def test_on_kill_is_forwarded_to_the_running_trial():
    op = _local([make_trial({"kind": "ok", "x": 1})])
    op.on_kill()  # nothing runs: nothing to do
    inner = mock.Mock()
    op._running = inner
    op.on_kill()
    inner.on_kill.assert_called_once_with()


# -- Kubernetes: one real DAG run, pods built by KubernetesPodOperator's builder --------------


def _build_dag():
    from airflow.sdk import dag, task

    from airflow_mlops_provider.params import sweep_params
    from airflow_mlops_provider.sweeps import plan_sweep, select_best_trial

    keep = task(_keep, task_id="keep")

    @dag(
        dag_id=DAG_ID,
        schedule=None,
        start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
        params=sweep_params(search_space=SPACES[0], strategy="grid", metric="loss"),
    )
    def sweep():
        batches = plan_sweep(search_space=SPACES, mlflow_conn_id=None, max_parallel_tasks=2)
        results = container_trials(
            task_id="train",
            batches=batches,
            runtime="kubernetes",
            image=IMAGE,
            command=["python", "train.py", "--lr", "{{ trial.hparams.lr }}"],
            env={"RUN": "{{ run_id }}"},
            kubernetes_kwargs={"namespace": "mlops", "labels": {"team": "ml"}},
        )
        keep(select_best_trial(results, batches))

    return sweep()


#: What the DAG run's last task received: the select-best result (dag.test() runs tasks in-process).
_KEPT: list[dict] = []


def _keep(summary: dict) -> None:
    _KEPT.append(summary)


class _Pods:
    def __init__(self) -> None:
        self.pods: list = []
        self.deferrable: list[bool] = []

    def execute(self, op, context):
        from airflow_mlops_provider.operators._common import container_failed_error

        pod = op.build_pod_request_obj(context)
        self.pods.append(pod)
        self.deferrable.append(op.deferrable)
        env = {e.name: e.value for e in _base(pod).env}
        trial = json.loads(env["MLOPS_TRIAL"])
        if trial["hparams"].get("crash"):
            raise container_failed_error(f"Pod {pod.metadata.name}", 3, ["loading data", "CUDA error"])
        return {"loss": trial["hparams"]["lr"] * (2 if trial.get("resources", {}).get("gpus") else 1)}


def _base(pod):
    (base,) = [c for c in pod.spec.containers if c.name == "base"]
    return base


@pytest.fixture(scope="module")
def k8s_run(airflow_db, kube_env):  # noqa: F811 (fixture imported above)
    dag_file = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]) / f"{DAG_ID}.py"
    dag_file.write_text(
        "# airflow DAG (safe-mode discovery needs both words)\n"
        "from tests.unit.sweeps.test_container_trials import _build_dag\n\ndag = _build_dag()\n"
    )
    pods = _Pods()
    dag = _build_dag()
    with (
        mock.patch.object(
            GpuKubernetesPodOperator, "execute", lambda self, context: pods.execute(self, context)
        ),
        mock.patch.dict(
            "os.environ",
            {
                "AIRFLOW_CONN_KUBERNETES_DEFAULT": kube_conn(kube_env),
                # Trials never defer, whatever the default: each pod is awaited in turn.
                "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True",
            },
        ),
    ):
        try:
            dag_run = dag.test()
        finally:
            dag_file.unlink()
    assert dag_run.state == "success"
    (summary,) = _KEPT
    return types.SimpleNamespace(pods=pods, summary=summary, dag_run=dag_run)


def test_each_trial_is_one_pod_with_its_trial_env_args_and_labels(k8s_run):
    pods = k8s_run.pods.pods
    assert len(pods) == 5
    assert k8s_run.pods.deferrable == [False] * 5
    for pod in pods:
        env = {e.name: e.value for e in _base(pod).env}
        trial = json.loads(env["MLOPS_TRIAL"])
        assert env["MLOPS_TRIAL_ID"] == trial["trial_id"]
        assert env["MLOPS_RESULT_FILE"] == "/airflow/xcom/return.json"
        assert env["RUN"] == k8s_run.dag_run.run_id
        assert _base(pod).args == ["python", "train.py", "--lr", str(trial["hparams"]["lr"])]
        labels = pod.metadata.labels
        assert labels["airflow-mlops/trial-id"] == trial["trial_id"]
        assert labels["team"] == "ml"
        assert labels["task_id"] == "train"
        assert labels["map_index"] in ("0", "1")
        assert pod.metadata.name.startswith(f"trial-{trial['trial_id'][:12]}-train-")
        assert pod.metadata.namespace == "mlops"
    assert [p.metadata.labels["map_index"] for p in pods].count("0") == 3  # 5 trials in 2 mapped tasks


def test_each_pod_is_sized_by_its_trial_resources(k8s_run):
    by_shape = {}
    for pod in k8s_run.pods.pods:
        trial = json.loads({e.name: e.value for e in _base(pod).env}["MLOPS_TRIAL"])
        by_shape.setdefault(json.dumps(trial.get("resources"), sort_keys=True), []).append(pod)
    cpu_pods = by_shape[json.dumps({"cpus": 1.0, "memory": 1073741824}, sort_keys=True)]
    gpu_pods = by_shape[
        json.dumps({"gpus": 1, "gpu_type": "NVIDIA-L4", "shm_size": 1073741824}, sort_keys=True)
    ]
    assert len(cpu_pods) == len(gpu_pods) == 2
    for pod in cpu_pods:
        assert _base(pod).resources.limits == {"cpu": "1", "memory": "1Gi"}
        assert not pod.spec.tolerations
    for pod in gpu_pods:
        assert _base(pod).resources.limits == {"nvidia.com/gpu": "1"}
        terms = pod.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
        assert terms.node_selector_terms[0].match_expressions[0].values == ["NVIDIA-L4"]
        assert [t.key for t in pod.spec.tolerations] == ["nvidia.com/gpu"]
        assert {m.mount_path for m in _base(pod).volume_mounts} == {"/airflow/xcom", "/dev/shm"}
    (crash,) = by_shape["null"]
    assert _base(crash).resources is None  # no resources of its own, none on the operator


def test_select_best_trial_ranks_pod_results_and_keeps_the_failed_pod(k8s_run):
    summary = k8s_run.summary
    assert summary["n_trials"] == 5
    assert summary["n_failed"] == 1
    ranked = [(r["hparams"]["lr"], r["metrics"]["loss"]) for r in summary["leaderboard"] if r["rank"]]
    assert ranked == [(0.01, 0.01), (0.01, 0.02), (0.1, 0.1), (0.1, 0.2)]
    (failed,) = [r for r in summary["leaderboard"] if r["status"] == "failed"]
    assert failed["hparams"] == {"lr": 0.5, "crash": True}
    assert re.fullmatch(r"Pod trial-[0-9a-f]{12}-train-\S+ exited with code 3", failed["error"])
    assert failed["tail"] == ["loading data", "CUDA error"]
