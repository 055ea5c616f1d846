"""Every runtime takes the same checkpoint arguments, with the same errors.

Static values are checked when the DAG file is parsed (a ``ValueError`` naming the argument and
the value), the same on ``GpuDockerOperator``, ``LocalProcessOperator``,
``GpuKubernetesPodOperator``, ``container_trials`` (and through ``container_operator``). A
templated ``checkpoint`` that renders to a bad value fails at execute with an
``AirflowFailException`` (no retries), before any container, process or pod exists.
"""

from __future__ import annotations

import sys
import types

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops_provider.exceptions import CheckpointConfigError
from airflow_mlops_provider.operators.container import container_operator
from airflow_mlops_provider.operators.docker import GpuDockerOperator
from airflow_mlops_provider.operators.kubernetes import GpuKubernetesPodOperator
from airflow_mlops_provider.operators.local import LocalProcessOperator
from airflow_mlops_provider.sweeps import container_trials, halving, halving_sweep, trial_task
from airflow_mlops_provider.sweeps.container import ContainerTrialOperator
from tests.unit.kubernetes.conftest import fake_kubeconfig, kube_conn, kube_env  # noqa: F401 (fixtures)

RUN_ID = "manual__2026-12-02T10:00:00+00:00"

OPERATORS = {
    "docker": lambda **kw: GpuDockerOperator(task_id="t", image="i:1", **kw),
    "kubernetes": lambda **kw: GpuKubernetesPodOperator(task_id="t", image="i:1", **kw),
    "local": lambda **kw: LocalProcessOperator(task_id="t", command=["true"], **kw),
    "container_trials": lambda **kw: ContainerTrialOperator(
        task_id="t", image="i:1", runtime="docker", trials=[], **kw
    ),
}
BAD = [
    ({"checkpoint": "gs://bucket/p"}, "unsupported checkpoint URI scheme 'gs'"),
    ({"checkpoint": "ckpt/relative"}, "'ckpt/relative'"),
    ({"checkpoint": "s3://Bad_Bucket/p"}, "'Bad_Bucket'"),
    ({"checkpoint": "s3://key:secret@bucket/p"}, "must not carry credentials"),
    ({"checkpoint_interval": -5}, "checkpoint_interval must be a number of seconds > 0, got -5"),
    ({"checkpoint_max_bytes": "lots"}, "checkpoint_max_bytes must be a positive quantity"),
    ({"checkpoint_conn_id": ""}, "checkpoint_conn_id must be the id of an Airflow aws connection, got ''"),
    ({"checkpoint": "s3//bucket/prefix"}, "'s3//bucket/prefix'"),  # malformed: a relative path
    ({"checkpoint": "s3://"}, "'s3://'"),  # no bucket
    ({"checkpoint": "http://minio:9000/b"}, "unsupported checkpoint URI scheme 'http'"),
    ({"checkpoint": 3.5}, "got 3.5"),
    ({"checkpoint_interval": 0}, "checkpoint_interval must be a number of seconds > 0, got 0"),
    ({"checkpoint_interval": "hourly"}, "checkpoint_interval must be a number of seconds > 0, got 'hourly'"),
    ({"checkpoint_max_bytes": -1}, "checkpoint_max_bytes"),
    ({"checkpoint_max_bytes": "10 Gigs"}, "'10 Gigs'"),
]


@pytest.mark.parametrize("runtime", sorted(OPERATORS))
@pytest.mark.parametrize(("kwargs", "message"), BAD, ids=[str(b[0]) for b in BAD])
def test_bad_checkpoint_arguments_fail_at_parse_time_on_every_runtime(runtime, kwargs, message):
    with pytest.raises(ValueError) as info:
        OPERATORS[runtime](**kwargs)
    assert message in str(info.value)
    assert "secret" not in str(info.value) or "credentials" in str(info.value)


@pytest.mark.parametrize("runtime", ["docker", "kubernetes", "local"])
def test_retention_and_prefix_are_checked_and_checkpoint_is_templated(runtime):
    with pytest.raises(
        ValueError, match="checkpoint_retention must be one of \\['keep', 'delete_on_success'\\], got 'never'"
    ):
        OPERATORS[runtime](checkpoint_retention="never")
    with pytest.raises(ValueError, match="checkpoint_retention must be one of .*, got ''"):
        OPERATORS[runtime](checkpoint_retention="")
    with pytest.raises(ValueError, match="checkpoint_prefix must be a non-empty key prefix, got '/'"):
        OPERATORS[runtime](checkpoint_prefix="/")
    op = OPERATORS[runtime](checkpoint="{{ params.ckpt }}")
    assert "checkpoint" in op.template_fields
    assert op.checkpoint == "{{ params.ckpt }}"


def test_sweep_entry_points_check_their_checkpoint_arguments():
    with pytest.raises(ValueError, match="unsupported checkpoint URI scheme 'http'"):
        trial_task(checkpoint="http://store/ckpt")(lambda x: {"loss": x})
    with pytest.raises(ValueError, match="delete them with select_best_trial"):
        trial_task(checkpoint="/ckpt", checkpoint_retention="delete_on_success")(lambda x: {"loss": x})
    with pytest.raises(
        ValueError, match="delete_checkpoints must be None or one of \\['losers', 'all'\\], got 'some'"
    ):
        halving_sweep(
            lambda b: b, halving(min_budget=1, max_budget=4, eta=2), n_trials=4, delete_checkpoints="some"
        )
    with pytest.raises(ValueError, match="checkpoint_interval"):
        container_trials(task_id="t", batches=[], image="i:1", runtime="docker", checkpoint_interval=0)


def _docker(**kwargs):
    return GpuDockerOperator(task_id="train", image="mlops-base:bookworm", command=["true"], **kwargs)


def _kubernetes(**kwargs):
    return GpuKubernetesPodOperator(
        task_id="train",
        image="registry.example.com/train:1",
        command=["python", "train.py"],
        namespace="ml",
        checkpoint_sync_image="registry.example.com/ckpt-sync:1",
        **kwargs,
    )


@pytest.mark.parametrize("runtime", ["docker", "local"])
def test_container_operator_passes_the_checkpoint_arguments_through(runtime, monkeypatch):
    monkeypatch.setenv("AIRFLOW__MLOPS__RUNTIME", runtime)
    cls = container_operator(runtime)
    op = cls(
        task_id="train",
        image="mlops-base:bookworm",
        command=["true"],
        checkpoint="s3://ckpt/team",
        checkpoint_interval="15",
        checkpoint_retention="delete_on_success",
        checkpoint_max_bytes="2Gi",
        checkpoint_conn_id="ckpt_s3",
    )
    assert "checkpoint" in op.template_fields
    assert op.checkpoint == "s3://ckpt/team"
    options = op.checkpoint_options
    assert (options.interval, options.retention, options.max_bytes, options.conn_id) == (
        15.0,
        "delete_on_success",
        2 * 1024**3,
        "ckpt_s3",
    )
    with pytest.raises(ValueError, match=r"checkpoint_retention.*'sometimes'"):
        cls(task_id="t", image="i", command=["true"], checkpoint_retention="sometimes")


def _context(params):
    ti = types.SimpleNamespace(
        dag_id="ckpt_dag",
        task_id="train",
        run_id=RUN_ID,
        map_index=-1,
        try_number=1,
        xcom_push=lambda *a, **k: None,
    )
    return {
        "ti": ti,
        "params": params,
        "run_id": RUN_ID,
        "dag": types.SimpleNamespace(dag_id="ckpt_dag"),
        "task": types.SimpleNamespace(task_id="train"),
    }


RENDERED_BAD = [
    ("ftp://files.example/ckpt", "'ftp://files.example/ckpt'"),
    ("relative/ckpt", "'relative/ckpt'"),
    ("s3:///no-bucket", "'s3:///no-bucket'"),
]


@pytest.mark.parametrize(("rendered", "named"), RENDERED_BAD, ids=[r for r, _ in RENDERED_BAD])
def test_templated_checkpoint_rendering_to_a_bad_value_fails_at_execute_without_retries(
    rendered, named, tmp_path, monkeypatch, request
):
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", kube_conn(request.getfixturevalue("kube_env")))
    monkeypatch.setenv("AIRFLOW__MLOPS__CHECKPOINT_LOCAL_DIR", str(tmp_path / "local"))
    marker = tmp_path / "ran"
    context = _context({"ckpt": rendered})
    docker_op = _docker(checkpoint="{{ params.ckpt }}")
    local_op = LocalProcessOperator(
        task_id="train", command=["touch", str(marker)], checkpoint="{{ params.ckpt }}"
    )
    kube_op = _kubernetes(checkpoint="{{ params.ckpt }}")
    for op, run in (
        (docker_op, docker_op.execute),  # fails before the Docker engine is asked for anything
        (local_op, local_op.execute),
        (kube_op, kube_op.build_pod_request_obj),  # the pod is never built
    ):
        op.render_template_fields(context)
        assert op.checkpoint == rendered
        with pytest.raises(AirflowFailException) as info:
            run(context)
        assert isinstance(info.value, CheckpointConfigError), type(info.value)
        assert named in str(info.value), str(info.value)
    assert not marker.exists(), "the local process ran although its checkpoint was bad"
    assert not (tmp_path / "local").exists(), "a working directory was made for a bad checkpoint"


def test_templated_checkpoint_rendering_to_off_runs_without_a_checkpoint(tmp_path, monkeypatch):
    monkeypatch.delenv("AIRFLOW__MLOPS__CHECKPOINT_URI", raising=False)
    script = tmp_path / "show.py"
    script.write_text(
        "import json, os\n"
        "json.dump({'dir': os.environ.get('MLOPS_CHECKPOINT_DIR')}, open(os.environ['MLOPS_RESULT_FILE'], 'w'))\n"
    )
    op = LocalProcessOperator(
        task_id="train", command=[sys.executable, str(script)], checkpoint="{{ params.ckpt }}"
    )
    context = _context({"ckpt": ""})
    op.render_template_fields(context)
    assert op.execute(context) == {"dir": None}
    # And a rendered path is used: the process sees the session's working directory.
    op = LocalProcessOperator(
        task_id="train", command=[sys.executable, str(script)], checkpoint="{{ params.ckpt }}"
    )
    monkeypatch.setenv("AIRFLOW__MLOPS__CHECKPOINT_LOCAL_DIR", str(tmp_path / "work"))
    context = _context({"ckpt": str(tmp_path / "store")})
    op.render_template_fields(context)
    seen = op.execute(context)["dir"]
    assert seen is not None
    assert seen.startswith(str(tmp_path / "work"))
    assert (tmp_path / "store" / "ckpt_dag").is_dir()  # the final upload landed under the task's place
