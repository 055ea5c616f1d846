"""What the MLflow registry operators share: the base operator, the task instance identity, the
metric comparison, argument parsing and the model's Asset events.
"""

from __future__ import annotations

import hashlib
import math
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops_provider.assets.mlflow import mlflow_model_asset, mlflow_model_events_alias
from airflow_mlops_provider.hooks.mlflow import TI_KEY_TAG, MlflowHook
from airflow_mlops_provider.links.mlflow import MlflowModelVersionLink, MlflowRunLink

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Context

__all__ = [
    "MODES",
    "PROMOTION_TAG_PREFIX",
    "TI_KEY_TAG",
    "MlflowRegistryBaseOperator",
    "compare_metrics",
    "emit_model_event",
    "parse_min_delta",
    "positive_version",
    "ti_identity_tags",
]

#: Prefix of the decision tags MlflowPromoteModelOperator writes on the challenger version.
PROMOTION_TAG_PREFIX = "airflow.promotion."
MODES = ("max", "min")


def ti_identity_tags(context: Context) -> dict[str, str]:
    """Tags naming the task instance that registers a version (the idempotency key)."""
    ti = context["ti"]
    ident = {
        "airflow.dag_id": str(ti.dag_id),
        "airflow.task_id": str(ti.task_id),
        "airflow.run_id": str(ti.run_id),
        "airflow.map_index": str(ti.map_index if ti.map_index is not None else -1),
    }
    digest = hashlib.sha256("\x1f".join(ident.values()).encode()).hexdigest()
    return {**ident, TI_KEY_TAG: digest}


def positive_version(value: Any, *, name: str, error: type[Exception]) -> int:
    """Return ``value`` as a model version number (>= 1), or raise ``error`` naming ``name``."""
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        number = 0
    if number < 1:
        raise error(f"{name} must be a positive model version, got {value!r}")
    return number


def compare_metrics(
    challenger: float, champion: float | None, *, mode: str, min_delta: float
) -> tuple[bool, float | None]:
    """
    Decide whether the challenger beats the champion.

    :return: ``(promote, delta)``; ``delta`` is the improvement (positive is better in both
        modes), ``None`` without a champion. Promote when there is no champion or when the
        improvement is strictly greater than ``min_delta`` (beyond float rounding).
    """
    if champion is None:
        return True, None
    delta = challenger - champion if mode == "max" else champion - challenger
    # An improvement equal to min_delta up to float rounding (0.805 - 0.8) does not promote.
    return delta > min_delta and not math.isclose(delta, min_delta, rel_tol=1e-9, abs_tol=1e-12), delta


def parse_min_delta(value: Any, *, error: type[Exception] = ValueError) -> float:
    """
    Return ``min_delta`` as a float >= 0; a number or its text (what a rendered template gives).

    :raises error: naming the value when it is not a finite number >= 0.
    """
    number = math.nan
    if not isinstance(value, bool) and isinstance(value, (int, float, str)):
        try:
            number = float(value)
        except ValueError:
            pass
    if not (math.isfinite(number) and number >= 0):
        raise error(f"min_delta must be a number >= 0, got {value!r}")
    return number


def emit_model_event(context: Context, model_name: str, outlets: Sequence[Any], extra: dict) -> None:
    """Add an event on the model's Asset (through the events alias and any matching outlet)."""
    events = context["outlet_events"]
    alias = mlflow_model_events_alias()
    if any(getattr(o, "name", None) == alias.name and type(o).__name__ == "AssetAlias" for o in outlets):
        events[alias].add(mlflow_model_asset(model_name), extra=extra)
    uri = mlflow_model_asset(model_name).uri
    for outlet in outlets:
        if isinstance(outlet, Asset) and outlet.uri == uri:
            events[outlet].extra.update(extra)


class MlflowRegistryBaseOperator(BaseOperator):
    """
    Shared set-up of the registry operators (connection, Asset outlets, links).

    :param mlflow_conn_id: Airflow connection of type ``mlflow``.
    :param emit_asset_event: Add the ``mlflow-model-events`` AssetAlias to the outlets.
    """

    operator_extra_links = (MlflowRunLink(), MlflowModelVersionLink())

    def __init__(self, *, mlflow_conn_id: str, emit_asset_event: bool, **kwargs: Any) -> None:
        if emit_asset_event:
            outlets = kwargs.get("outlets") or []
            if not isinstance(outlets, (list, tuple)):
                outlets = [outlets]
            kwargs["outlets"] = [*outlets, mlflow_model_events_alias()]
        super().__init__(**kwargs)
        self.mlflow_conn_id = mlflow_conn_id
        self.emit_asset_event = emit_asset_event

    @cached_property
    def hook(self) -> MlflowHook:
        """The MlflowHook of ``mlflow_conn_id`` (built on first use, at run time)."""
        return MlflowHook(mlflow_conn_id=self.mlflow_conn_id)

    def required_text(self, name: str) -> str:
        """The rendered argument ``name``, stripped; AirflowFailException when it is empty."""
        value = getattr(self, name)
        if value is None or not str(value).strip():
            raise AirflowFailException(f"{name} must be a non-empty string, got {value!r}")
        return str(value).strip()

    def required_version(self, name: str) -> str:
        """The rendered argument ``name`` as a model version; AirflowFailException when not one."""
        return str(positive_version(getattr(self, name), name=name, error=AirflowFailException))
