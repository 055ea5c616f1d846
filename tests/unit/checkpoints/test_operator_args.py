"""Every runtime takes the same checkpoint arguments, with the same parse-time errors."""

from __future__ import annotations

import pytest

from airflow_mlops_provider.operators.docker import GpuDockerOperator
from airflow_mlops_provider.operators.kubernetes import GpuKubernetesPodOperator
from airflow_mlops_provider.operators.local import LocalProcessOperator
from airflow_mlops_provider.sweeps import container_trials, halving, halving_sweep, trial_task
from airflow_mlops_provider.sweeps.container import ContainerTrialOperator

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
