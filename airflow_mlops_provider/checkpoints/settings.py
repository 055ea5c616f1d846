"""The checkpoint arguments every runtime shares, and where a checkpoint lives.

``checkpoint``, ``checkpoint_interval``, ``checkpoint_retention``, ``checkpoint_max_bytes`` and
``checkpoint_conn_id`` mean the same on ``GpuDockerOperator``, ``GpuKubernetesPodOperator``,
``LocalProcessOperator``, ``container_trials`` and ``trial_task``:

- static values are checked when the DAG file is parsed (:meth:`CheckpointOptions.from_args`,
  a ``ValueError`` naming the argument and the value);
- ``checkpoint`` is templated: it is checked again after rendering
  (:meth:`CheckpointOptions.resolve`, a ``CheckpointConfigError``: no retries);
- unset arguments fall back to the ``[mlops] checkpoint_*`` options.

A checkpoint lives under the URI at a path derived from the task instance without its try
number, so every try of one task instance finds the same checkpoint::

    <uri>/<dag_id>/<run_id>/<task_id>/<map_index>/     a task (map_index -1 when not mapped)
    <uri>/<dag_id>/<run_id>/trials/<trial_id>/         a sweep trial (every rung of halving)

Each segment is percent-quoted (``urllib.parse.quote(safe="")``: a run id's ``:`` and ``+``
become ``%3A`` and ``%2B``). Under it: ``manifest.json`` (written last) and ``data/``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "CHECKPOINT_ARGS",
    "CHECKPOINT_DIR_ENV",
    "CONTAINER_CHECKPOINT_DIR",
    "RETENTIONS",
    "CheckpointOptions",
    "CheckpointSettings",
    "task_prefix",
    "trial_prefix",
]

#: ``checkpoint_retention`` values: keep the checkpoint after success, or delete it.
RETENTIONS = ("keep", "delete_on_success")
#: Where a container finds its checkpoint directory (Docker bind mount, Kubernetes emptyDir).
CONTAINER_CHECKPOINT_DIR = "/mlops/checkpoint"
#: The variable every runtime sets to the checkpoint directory.
CHECKPOINT_DIR_ENV = "MLOPS_CHECKPOINT_DIR"
#: The operator arguments of the contract, in their documented order.
CHECKPOINT_ARGS = (
    "checkpoint",
    "checkpoint_interval",
    "checkpoint_retention",
    "checkpoint_max_bytes",
    "checkpoint_conn_id",
)
#: ``[mlops] checkpoint_interval``'s default, in seconds.
DEFAULT_INTERVAL = 60.0


def _is_template(value: Any) -> bool:
    from airflow_mlops_provider.operators._common import contains_template

    return contains_template(value) or hasattr(value, "resolve")


def _off(value: Any) -> bool:
    return value is False or (isinstance(value, str) and not value.strip())


def check_uri(value: Any, *, argument: str = "checkpoint") -> str:
    """
    Return ``value`` as a checkpoint URI (a path, ``file://`` or ``s3://``).

    :raises ValueError: naming ``argument``, the value and what was expected.
    """
    from airflow_mlops_provider.checkpoints.store import parse_checkpoint_uri

    if not isinstance(value, str):
        raise ValueError(
            f"{argument} must be a path or an s3://bucket/prefix URI (or '' / False for none), got {value!r}"
        )
    try:
        parse_checkpoint_uri(value.strip())
    except ValueError as err:
        raise ValueError(f"{argument}: {err}") from err
    return value.strip()


def check_interval(value: Any, *, argument: str = "checkpoint_interval") -> float:
    """Return ``value`` as seconds > 0; raise ``ValueError`` naming it otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{argument} must be a number of seconds > 0, got {value!r}")
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{argument} must be a number of seconds > 0, got {value!r}") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{argument} must be a number of seconds > 0, got {value!r}")
    return seconds


def check_retention(value: Any, *, argument: str = "checkpoint_retention") -> str:
    """Return ``value`` if it is one of :data:`RETENTIONS`; raise ``ValueError`` naming it otherwise."""
    if value not in RETENTIONS:
        raise ValueError(f"{argument} must be one of {list(RETENTIONS)}, got {value!r}")
    return value


def check_max_bytes(value: Any, *, argument: str = "checkpoint_max_bytes") -> int:
    """Return ``value`` in bytes (``"10Gi"``, ``"500M"`` or an int); raise ``ValueError`` naming it otherwise."""
    from airflow_mlops_provider.compute.quantities import parse_memory

    return parse_memory(value, field=argument)


def check_conn_id(value: Any, *, argument: str = "checkpoint_conn_id") -> str:
    """Return ``value`` if it is a non-empty connection id; raise ``ValueError`` naming it otherwise."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{argument} must be the id of an Airflow aws connection, got {value!r}")
    return value.strip()


def _config(option: str) -> str:
    from airflow.sdk import conf

    return (conf.get("mlops", option, fallback="") or "").strip()


@dataclass(frozen=True)
class CheckpointSettings:
    """
    A resolved checkpoint: where it lives and how it is synced.

    :param uri: The store's root: a path or ``s3://bucket/prefix``.
    :param interval: Seconds between two periodic uploads.
    :param retention: ``"keep"`` or ``"delete_on_success"``.
    :param max_bytes: The largest checkpoint that may be uploaded (None: no limit).
    :param conn_id: The Airflow ``aws`` connection for ``s3://`` (None: boto3's own chain).
    :param endpoint_url: ``[mlops] checkpoint_endpoint_url`` (the connection's extra wins).
    """

    uri: str
    interval: float = DEFAULT_INTERVAL
    retention: str = "keep"
    max_bytes: int | None = None
    conn_id: str | None = None
    endpoint_url: str | None = None

    @property
    def scheme(self) -> str:
        """``"file"`` or ``"s3"``."""
        from airflow_mlops_provider.checkpoints.store import parse_checkpoint_uri

        return parse_checkpoint_uri(self.uri)[0]

    def client_kwargs(self) -> dict[str, Any]:
        """
        Return the boto3 client arguments for ``s3://``: the connection's keys, region and endpoint.

        Every secret read is registered with Airflow's masker first. Without a connection only
        the endpoint is set, and boto3 finds credentials in its standard chain (environment,
        shared files, instance or pod identity).

        :raises CheckpointConfigError: when the connection does not exist.
        """
        kwargs: dict[str, Any] = {}
        if self.conn_id:
            from airflow.sdk import BaseHook
            from airflow.sdk.exceptions import AirflowNotFoundException
            from airflow.sdk.log import mask_secret

            from airflow_mlops_provider.exceptions import CheckpointConfigError

            try:
                conn = BaseHook.get_connection(self.conn_id)
            except AirflowNotFoundException as err:
                raise CheckpointConfigError(
                    f"checkpoint_conn_id {self.conn_id!r}: no such Airflow connection", location=self.uri
                ) from err
            extra = conn.extra_dejson or {}
            for secret in (conn.password, extra.get("aws_secret_access_key"), extra.get("aws_session_token")):
                if secret:
                    mask_secret(secret)
            key_id = conn.login or extra.get("aws_access_key_id")
            secret_key = conn.password or extra.get("aws_secret_access_key")
            if key_id and secret_key:
                kwargs.update(aws_access_key_id=key_id, aws_secret_access_key=secret_key)
            if extra.get("aws_session_token"):
                kwargs["aws_session_token"] = extra["aws_session_token"]
            region = extra.get("region_name") or extra.get("region")
            if region:
                kwargs["region_name"] = region
            endpoint = extra.get("endpoint_url") or (extra.get("service_config") or {}).get("s3", {}).get(
                "endpoint_url"
            )
            if endpoint:
                kwargs["endpoint_url"] = endpoint
        if "endpoint_url" not in kwargs and self.endpoint_url:
            kwargs["endpoint_url"] = self.endpoint_url
        return kwargs

    def store(self) -> Any:
        """Return the store of :attr:`uri` (a ``LocalStore`` or an ``S3Store``)."""
        from airflow_mlops_provider.checkpoints.store import store_from_uri

        return store_from_uri(self.uri, client_kwargs=self.client_kwargs() if self.scheme == "s3" else None)

    def location(self, prefix: str) -> str:
        """Return the full location of the checkpoint at ``prefix``, for logs (no credentials)."""
        return f"{self.uri.rstrip('/')}/{prefix}"


@dataclass(frozen=True)
class CheckpointOptions:
    """
    The checkpoint arguments of one operator, checked at parse time; resolved at execute.

    Build it with :meth:`from_args`; ``None`` fields fall back to ``[mlops] checkpoint_*`` when
    :meth:`resolve` runs.
    """

    checkpoint: Any = None
    interval: float | None = None
    retention: str | None = None
    max_bytes: int | None = None
    conn_id: str | None = None

    @classmethod
    def from_args(
        cls,
        checkpoint: Any = None,
        checkpoint_interval: Any = None,
        checkpoint_retention: Any = None,
        checkpoint_max_bytes: Any = None,
        checkpoint_conn_id: Any = None,
    ) -> CheckpointOptions:
        """
        Check the arguments that are static now.

        :raises ValueError: naming the argument and the value, e.g. ``checkpoint: unsupported
            scheme 'gs' in 'gs://b/p'; expected a path, file:// or s3://``.
        """
        if checkpoint is not None and not _off(checkpoint) and not _is_template(checkpoint):
            check_uri(checkpoint)
        return cls(
            checkpoint=checkpoint,
            interval=None if checkpoint_interval is None else check_interval(checkpoint_interval),
            retention=None if checkpoint_retention is None else check_retention(checkpoint_retention),
            max_bytes=None if checkpoint_max_bytes is None else check_max_bytes(checkpoint_max_bytes),
            conn_id=None if checkpoint_conn_id is None else check_conn_id(checkpoint_conn_id),
        )

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> CheckpointOptions:
        """:meth:`from_args` from a dict holding some of :data:`CHECKPOINT_ARGS`."""
        return cls.from_args(**{k: kwargs.get(k) for k in CHECKPOINT_ARGS})

    def as_kwargs(self, checkpoint: Any = None) -> dict[str, Any]:
        """The operator arguments these options were built from (``checkpoint`` replaced if given)."""
        return {
            "checkpoint": self.checkpoint if checkpoint is None else checkpoint,
            "checkpoint_interval": self.interval,
            "checkpoint_retention": self.retention,
            "checkpoint_max_bytes": self.max_bytes,
            "checkpoint_conn_id": self.conn_id,
        }

    def resolve(self, rendered_checkpoint: Any = None) -> CheckpointSettings | None:
        """
        Return the settings after rendering, or None when checkpoints are off.

        :param rendered_checkpoint: The rendered ``checkpoint`` (default: :attr:`checkpoint`).
            None: ``[mlops] checkpoint_uri``; ``""`` or False: off.
        :raises CheckpointConfigError: for a bad rendered URI or a bad ``[mlops] checkpoint_*``
            option (no retries).
        """
        from airflow_mlops_provider.exceptions import CheckpointConfigError

        value = self.checkpoint if rendered_checkpoint is None else rendered_checkpoint
        source = "checkpoint"
        if value is None:
            value, source = _config("checkpoint_uri"), "[mlops] checkpoint_uri"
        if _off(value):
            return None
        try:
            uri = check_uri(
                value, argument=source if source != "checkpoint" else "checkpoint after rendering"
            )
            interval = self.interval
            if interval is None:
                raw = _config("checkpoint_interval")
                interval = (
                    check_interval(raw, argument="[mlops] checkpoint_interval") if raw else DEFAULT_INTERVAL
                )
            retention = self.retention or "keep"
            max_bytes = self.max_bytes
            if max_bytes is None and _config("checkpoint_max_bytes"):
                max_bytes = check_max_bytes(
                    _config("checkpoint_max_bytes"), argument="[mlops] checkpoint_max_bytes"
                )
        except ValueError as err:
            raise CheckpointConfigError(str(err), location=str(value)) from err
        return CheckpointSettings(
            uri=uri,
            interval=interval,
            retention=retention,
            max_bytes=max_bytes,
            conn_id=self.conn_id or _config("checkpoint_conn_id") or None,
            endpoint_url=_config("checkpoint_endpoint_url") or None,
        )


def _segment(value: Any) -> str:
    text = str(value)
    if not text:
        raise ValueError(f"a checkpoint path segment must not be empty, got {value!r}")
    return quote(text, safe="")


def task_prefix(identity: Mapping[str, str]) -> str:
    """Return ``<dag_id>/<run_id>/<task_id>/<map_index>`` (quoted) for a task instance, without its try."""
    return "/".join(_segment(identity[k]) for k in ("dag_id", "run_id", "task_id", "map_index"))


def trial_prefix(dag_id: str, run_id: str, trial_id: str) -> str:
    """Return ``<dag_id>/<run_id>/trials/<trial_id>`` (quoted): one trial, in every rung of a sweep."""
    return "/".join((_segment(dag_id), _segment(run_id), "trials", _segment(trial_id)))
