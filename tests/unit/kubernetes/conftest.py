"""Fixtures for the Kubernetes unit tests: a fake kubeconfig and a real DAG run that records pods.

No cluster is reachable here, so the DAG run swaps only ``execute`` for a function that builds the
pod through KubernetesPodOperator's real ``build_pod_request_obj`` (after Airflow rendered the
templates with the run's real context) and records it. Loading a kubeconfig never contacts the
server, so a kubeconfig that points at a closed loopback port is enough for the pod builder.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pathlib import Path

FAKE_KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- cluster: {server: "https://127.0.0.1:9", insecure-skip-tls-verify: true}
  name: fake
contexts:
- context: {cluster: fake, user: fake, namespace: mlops}
  name: fake
current-context: fake
users:
- name: fake
  user: {token: not-a-real-token}
"""


@pytest.fixture(scope="session")
def fake_kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kube") / "config"
    path.write_text(FAKE_KUBECONFIG)
    return path


@pytest.fixture(scope="module")
def kube_env(fake_kubeconfig: Path):
    """
    Point KUBECONFIG at the fake config for one module (restored afterwards).

    Not for the whole session: the live suite (tests/integration/kubernetes) runs whenever
    KUBECONFIG is set, and would take the fake cluster for a real one.
    """
    old = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(fake_kubeconfig)
    yield fake_kubeconfig
    if old is None:
        os.environ.pop("KUBECONFIG", None)
    else:
        os.environ["KUBECONFIG"] = old


def kube_conn(kubeconfig: Path) -> str:
    """The ``AIRFLOW_CONN_KUBERNETES_DEFAULT`` value that points the hook at ``kubeconfig``."""
    return json.dumps({"conn_type": "kubernetes", "extra": {"kube_config_path": str(kubeconfig)}})


class PodRecorder:
    """What the patched ``execute`` saw: pods and serialized triggers, by (task_id, map_index)."""

    def __init__(self) -> None:
        self.pods: dict[tuple[str, int], Any] = {}
        self.triggers: dict[tuple[str, int], tuple[str, dict[str, Any]]] = {}
        self.errors: dict[tuple[str, int], BaseException] = {}
        self.run_ids: set[str] = set()

    def pod(self, task_id: str, map_index: int = -1):
        key = (task_id, map_index)
        if key in self.errors:
            raise self.errors[key]
        return self.pods[key]


def record_pods_execute(recorder: PodRecorder):
    """Return an ``execute`` that builds the pod (and, if deferrable, the trigger) and records them."""
    from airflow.sdk.exceptions import TaskDeferred

    def execute(self, context):
        key = (self.task_id, context["ti"].map_index)
        try:
            pod = self.build_pod_request_obj(context)
        except Exception as err:  # recorded, then re-raised so the task fails visibly
            recorder.errors[key] = err
            raise
        recorder.pods[key] = pod
        recorder.run_ids.add(context["run_id"])
        if self.deferrable:
            self.pod = pod
            try:
                self.invoke_defer_method(context=context)
            except TaskDeferred as deferred:
                recorder.triggers[key] = deferred.trigger.serialize()
        return {"pod": pod.metadata.name}

    return execute
