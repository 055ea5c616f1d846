"""Exceptions raised by airflow-mlops-provider, each carrying the context needed to act on it."""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowException, AirflowFailException


class MlopsProviderError(AirflowException):
    """Base class of every error raised by this provider."""


class ContainerFailedError(MlopsProviderError):
    """
    A container, pod or local process ended with a non-zero exit code.

    :param message: What happened.
    :param exit_code: The container's exit code.
    :param logs: The last lines of the container's output.
    :param oom_killed: True when the runtime says the kernel killed it for memory, False when
        it says not, None when it does not say.
    """

    def __init__(
        self, message: str, *, exit_code: int | None = None, logs: str = "", oom_killed: bool | None = None
    ) -> None:
        super().__init__(message if not logs else f"{message}\n--- last container output ---\n{logs}")
        self.exit_code = exit_code
        self.logs = logs
        self.oom_killed = oom_killed


class ContainerConfigError(MlopsProviderError, AirflowFailException):
    """
    A container argument (``image``, ``command``, ``env``, ``resources``, ...) is invalid after
    rendering: a configuration error, never retried. The same on every runtime, with the same
    message shape: ``Invalid <argument> after rendering: <what was expected>, got <value>``.

    :param argument: The operator argument, e.g. ``"resources"``.
    :param detail: What was expected, repeating the value (the parse-time ``ValueError`` text).
    """

    def __init__(self, argument: str, detail: str) -> None:
        super().__init__(f"Invalid {argument} after rendering: {detail}")
        self.argument = argument
        self.detail = detail


class ResultFileError(ContainerFailedError):
    """
    The process exited 0 but its result file (``$MLOPS_RESULT_FILE``) is not JSON.

    The same on every runtime (Docker, Kubernetes, local). Retried like any failed container
    (a trainer killed mid-write leaves half a file).
    """


class GpuUnavailableError(MlopsProviderError):
    """
    The runtime cannot serve the GPU request.

    :param message: What is missing and on which host.
    :param host: The Docker host or cluster that was checked.
    """

    def __init__(self, message: str, *, host: str | None = None) -> None:
        super().__init__(message)
        self.host = host


class ModelRegistryError(MlopsProviderError):
    """
    A model-registry operation failed.

    :param message: What happened.
    :param model_name: The registered model.
    :param version: The model version, when known.
    """

    def __init__(
        self, message: str, *, model_name: str | None = None, version: str | int | None = None
    ) -> None:
        super().__init__(message)
        self.model_name = model_name
        self.version = version


class FeatureStoreError(MlopsProviderError):
    """
    A feature-store operation failed.

    :param message: What happened.
    :param feature_view: The feature view involved, when known.
    """

    def __init__(self, message: str, *, feature_view: str | None = None) -> None:
        super().__init__(message)
        self.feature_view = feature_view


class SweepError(MlopsProviderError):
    """A parameter sweep could not be built or did not meet its success criteria."""


class GpuRuntimeMissingError(GpuUnavailableError, AirflowFailException):
    """
    The host has no GPU runtime (or too few GPUs) for the request: a configuration error, not retried.

    :param message: What is missing and on which host.
    :param host: The Docker host or cluster that was checked.
    """


class CheckpointError(MlopsProviderError):
    """
    A checkpoint could not be restored or uploaded for a reason a retry may cure (the store was
    unreachable, a 5xx).

    :param message: What happened, naming the checkpoint's location (never its credentials).
    :param location: Where the checkpoint lives (``s3://bucket/prefix/...`` or a path).
    """

    def __init__(self, message: str, *, location: str | None = None) -> None:
        super().__init__(message)
        self.location = location


class CheckpointConfigError(CheckpointError, AirflowFailException):
    """
    A checkpoint setting is wrong (a malformed URI, an unsupported scheme, a bucket that does not
    exist, credentials the store refuses, a path that cannot be written, a checkpoint over
    ``checkpoint_max_bytes``): a configuration error, never retried.
    """
