"""``LocalProcessOperator``: the container vocabulary, run as a plain process on the worker.

This is the runtime of last resort: the demo uses it when no Docker engine answers, so a
fresh machine with only Python can still run the example pipeline. It keeps the contract of
the container runtimes (``command``, ``env``, the result file returned as XCom, live logs,
a clear error with the last output lines on a non-zero exit, the process group killed when
the task is killed) but it isolates nothing: ``image`` is ignored, ``resources`` are not
enforced, and GPUs are whatever the worker has.

The result file is ``$MLOPS_RESULT_FILE`` (a private temporary path) instead of
``/airflow/xcom/return.json``; code meant for every runtime writes to
``os.environ.get("MLOPS_RESULT_FILE", "/airflow/xcom/return.json")``.
"""

from __future__ import annotations

import collections
import json
import os
import shlex
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

from airflow_mlops_provider.exceptions import ContainerFailedError
from airflow_mlops_provider.operators._common import (
    RESULT_FILE,
    ResourcesPartialMixin,
    env_as_strings,
    resources_for_execute,
    resources_for_init,
    validate_command,
    validate_env,
)

if TYPE_CHECKING:
    from airflow.sdk import Context


class LocalProcessOperator(ResourcesPartialMixin, BaseOperator):
    """
    Run ``command`` as a local process with the container runtimes' contract.

    :param image: Accepted for a shared vocabulary and ignored (logged).
    :param command: The command, a list or a shell-like string. (templated)
    :param env: Environment variables added to the worker's environment. (templated)
    :param resources: A ``Resources`` or dict; validated, not enforced. (templated)
    :param cwd: Working directory of the process. (templated)
    :param return_result_file: Return the JSON the process wrote to ``$MLOPS_RESULT_FILE``.
    :param tail_lines: How many output lines an error message carries.
    :param docker_kwargs: Docker-only arguments (as ``container_operator`` takes them); ignored.
    :param kubernetes_kwargs: Kubernetes-only arguments; ignored.
    """

    template_fields: Sequence[str] = ("command", "env", "compute_resources", "cwd")
    template_fields_renderers = {"env": "json", "compute_resources": "json"}
    ui_color = "#d9f0d3"

    def __init__(
        self,
        *,
        command: str | list[str],
        image: str | None = None,
        env: Mapping[str, Any] | None = None,
        resources: Any = None,
        cwd: str | None = None,
        return_result_file: bool = True,
        tail_lines: int = 50,
        docker_kwargs: Mapping[str, Any] | None = None,
        kubernetes_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if command is None or (isinstance(command, (str, list)) and not command):
            raise ValueError(f"command must be a non-empty string or list of strings, got {command!r}")
        validate_command(command)
        validate_env(env)
        self.command = command
        self.image = image
        self.env = dict(env) if isinstance(env, Mapping) else env
        self.compute_resources = resources_for_init(resources)
        self.cwd = cwd
        self.return_result_file = return_result_file
        self.tail_lines = tail_lines
        self.ignored_arguments = [
            name
            for name, value in (("docker_kwargs", docker_kwargs), ("kubernetes_kwargs", kubernetes_kwargs))
            if value
        ]
        self._process: subprocess.Popen[str] | None = None

    def _argv(self) -> list[str]:
        if isinstance(self.command, str):
            return shlex.split(self.command)
        return [str(part) for part in self.command]

    def execute(self, context: Context) -> Any:
        resources = resources_for_execute(self.compute_resources)
        if self.image:
            self.log.info("Local runtime: image %s is ignored; the command runs on the worker", self.image)
        if self.ignored_arguments:
            self.log.info("Local runtime ignores container-only arguments %s", self.ignored_arguments)
        if resources.gpus:
            self.log.warning(
                "Local runtime cannot reserve GPUs: resources ask for %d GPU(s); the process sees "
                "whatever devices the worker has",
                resources.gpus,
            )
        with tempfile.TemporaryDirectory(prefix="mlops-local-") as tmp:
            result_file = Path(tmp) / "return.json"
            env = dict(os.environ)
            env.update(env_as_strings(self.env))
            env["MLOPS_RESULT_FILE"] = str(result_file)
            argv = self._argv()
            self.log.info("Running %s", argv)
            tail: collections.deque[str] = collections.deque(maxlen=self.tail_lines)
            self._process = subprocess.Popen(
                argv,
                env=env,
                cwd=self.cwd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            try:
                assert self._process.stdout is not None
                for line in self._process.stdout:
                    line = line.rstrip("\n")
                    tail.append(line)
                    self.log.info("%s", line)
                code = self._process.wait()
            finally:
                self._terminate()
            if code != 0:
                raise ContainerFailedError(
                    f"Local process {argv!r} exited with code {code}", exit_code=code, logs="\n".join(tail)
                )
            if not self.return_result_file:
                return None
            if not result_file.exists():
                self.log.info("The process wrote no result file (%s); returning None", RESULT_FILE)
                return None
            try:
                return json.loads(result_file.read_text())
            except ValueError as err:
                raise AirflowException(f"The result file is not valid JSON: {err}") from err

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def on_kill(self) -> None:
        self._terminate()
