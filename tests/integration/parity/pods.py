"""Kubernetes for the parity table: KPO's real pod builder, the pod run as a process, KPO's real result path.

No cluster is reachable here. ``execute`` builds the pod with KubernetesPodOperator's real
``build_pod_request_obj`` (after Airflow rendered the templates with the run's context), then runs
the base container's ``args`` with the pod's ``env`` as a local process (what the kubelet would
start; the probes need only ``python3``), and hands what it did to KPO's own public methods the
way ``execute_sync`` does: the result file's text through ``extract_xcom`` (as the sidecar's
``cat`` returns it) and the exit code and output through ``cleanup``. Only the cluster calls
(KPO's pod manager and API client) are replaced.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

from airflow_mlops_provider.operators._common import RESULT_FILE, RESULT_FILE_ENV


class PodRun:
    """What the pod's base container did: exit code, output lines, result file text (None: none)."""

    def __init__(self, exit_code: int, lines: list[str], result_text: str | None) -> None:
        self.exit_code = exit_code
        self.lines = lines
        self.result_text = result_text


def run_pod(pod: Any) -> PodRun:
    """Run the pod's base container as a process: its args, only its env, the result file remapped."""
    (base,) = [c for c in pod.spec.containers if c.name == "base"]
    argv = [*(base.command or []), *(base.args or [])]
    env = {e.name: e.value for e in base.env or [] if e.value is not None}
    with tempfile.TemporaryDirectory(prefix="parity-pod-") as tmp:
        result = Path(tmp) / "return.json"
        if env.get(RESULT_FILE_ENV) == RESULT_FILE:
            env[RESULT_FILE_ENV] = str(result)
        env["PATH"] = os.environ["PATH"]  # the image's PATH: where python3 is
        proc = subprocess.run(
            argv, env=env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60
        )
        # The sidecar reads the file with `[ -s return.json ] && cat return.json`.
        text = result.read_text() if result.exists() and result.stat().st_size else None
    return PodRun(proc.returncode, proc.stdout.splitlines(), text)


def _terminated(pod: Any, exit_code: int) -> Any:
    from kubernetes.client import models as k8s

    remote = copy.deepcopy(pod)
    remote.status = k8s.V1PodStatus(
        phase="Succeeded" if exit_code == 0 else "Failed",
        container_statuses=[
            k8s.V1ContainerStatus(
                name="base",
                image=pod.spec.containers[0].image,
                image_id="",
                ready=False,
                restart_count=0,
                state=k8s.V1ContainerState(terminated=k8s.V1ContainerStateTerminated(exit_code=exit_code)),
            )
        ],
    )
    return remote


def _pod_manager(remote: Any, run: PodRun) -> mock.Mock:
    """KPO's PodManager for this pod: the sidecar's answer, the pod's log tail, reads and deletes."""
    from airflow.providers.cncf.kubernetes.utils.pod_manager import EMPTY_XCOM_RESULT

    def extract_xcom(pod: Any, **kwargs: Any) -> str:
        if run.result_text is None:
            return EMPTY_XCOM_RESULT
        json.loads(run.result_text)  # PodManager.extract_xcom_json checks the text the same way
        return run.result_text

    def read_pod_logs(pod: Any, container_name: str, tail_lines: int | None = None, **kwargs: Any):
        lines = run.lines[-tail_lines:] if tail_lines else run.lines
        return iter([f"{line}\n".encode() for line in lines])

    manager = mock.Mock()
    manager.extract_xcom.side_effect = extract_xcom
    manager.read_pod_logs.side_effect = read_pod_logs
    manager.read_pod.return_value = remote
    return manager


def kpo_execute(recorder: dict[str, Any]):
    """Return an ``execute`` for GpuKubernetesPodOperator that builds, runs and collects the pod."""

    def execute(self: Any, context: Any) -> Any:
        pod = self.build_pod_request_obj(context)
        recorder[self.task_id, context["ti"].map_index] = pod
        run = run_pod(pod)
        remote = _terminated(pod, run.exit_code)
        with (
            mock.patch.object(type(self), "pod_manager", _pod_manager(remote, run)),
            mock.patch.object(type(self), "client", mock.Mock()),
        ):
            result = None
            try:  # the order of KPO's execute_sync: the sidecar first, then the cleanup
                if self.do_xcom_push:
                    result = self.extract_xcom(pod=pod)
            finally:
                self.post_complete_action(pod=pod, remote_pod=remote, context=context, result=result)
        return result

    return execute
