"""Moving aliases: MlflowSetAliasOperator, and MlflowPromoteModelOperator (champion/challenger).

Aliases replace MLflow's deprecated stages. An alias move emits an Airflow Asset event for the
model (``mlflow-model://<name>``), so a deployment DAG can be scheduled on it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from airflow_mlops_provider.hooks.mlflow import MlflowHook
from airflow_mlops_provider.links.mlflow import push_mlflow_urls
from airflow_mlops_provider.operators._common import contains_template
from airflow_mlops_provider.operators.mlflow_common import (
    MODES,
    PROMOTION_TAG_PREFIX,
    TI_KEY_TAG,
    MlflowRegistryBaseOperator,
    compare_metrics,
    emit_model_event,
    parse_min_delta,
    ti_identity_tags,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import Context

__all__ = ["ALIAS_TAG_PREFIX", "MlflowPromoteModelOperator", "MlflowSetAliasOperator"]

#: Prefix of the tags MlflowSetAliasOperator writes on the version before moving an alias to it:
#: ``airflow.alias.<alias>.previous`` and ``airflow.alias.<alias>.ti_key``.
ALIAS_TAG_PREFIX = "airflow.alias."


def _optional_float(text: str | None) -> float | None:
    return float(text) if text else None


class MlflowSetAliasOperator(MlflowRegistryBaseOperator):
    """
    Point an alias of a registered model at a version.

    Returns ``{"name", "alias", "version", "previous_version"}``. Before the move, the version
    is tagged with the task instance and the previous version (``airflow.alias.<alias>.*``), so
    a retry after a move whose answer was lost still reports that move (and emits its event).

    :param model_name: Registered model name. (templated)
    :param alias: Alias to set, e.g. ``champion``. (templated)
    :param version: Model version the alias points at. (templated)
    :param emit_asset_event: Emit an event on ``mlflow-model://<model_name>`` when the alias moves.
    :param mlflow_conn_id: Airflow connection of type ``mlflow``.
    """

    template_fields: Sequence[str] = ("model_name", "alias", "version")

    def __init__(
        self,
        *,
        model_name: str,
        alias: str,
        version: str | int,
        emit_asset_event: bool = True,
        mlflow_conn_id: str = MlflowHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(mlflow_conn_id=mlflow_conn_id, emit_asset_event=emit_asset_event, **kwargs)
        self.model_name = model_name
        self.alias = alias
        self.version = version

    def execute(self, context: Context) -> dict[str, Any]:
        name, alias = self.required_text("model_name"), self.required_text("alias")
        version = self.required_version("version")
        hook = self.hook
        ti_key = ti_identity_tags(context)[TI_KEY_TAG]
        marker = f"{ALIAS_TAG_PREFIX}{alias}."
        previous = hook.alias_version(name, alias)
        if previous == version:
            recorded = hook.version_tags(name, version)
            if recorded.get(marker + "ti_key") == ti_key:  # moved by an earlier try of this task
                previous = recorded.get(marker + "previous") or None
        else:
            hook.set_version_tags(
                name, version, {marker + "previous": previous or "", marker + "ti_key": ti_key}
            )
        hook.set_alias(name, alias, version)
        self.log.info("Alias %r of %s: version %s -> %s", alias, name, previous, version)
        push_mlflow_urls(context, model_version=self.hook.model_version_url(name, version))
        if self.emit_asset_event and previous != version:
            emit_model_event(
                context,
                name,
                self.outlets,
                {"event": "promoted", "model_name": name, "alias": alias, "version": version,
                 "previous_version": previous},
            )  # fmt: skip
        return {"name": name, "alias": alias, "version": version, "previous_version": previous}


class MlflowPromoteModelOperator(MlflowRegistryBaseOperator):
    """
    Champion/challenger: move an alias to the challenger only if its metric is better.

    The challenger's metric comes from its run (or ``challenger_metric_value``), the champion's
    from the run of the version that holds ``alias``. The alias moves when no version holds it
    yet, or when the challenger improves on the champion by more than ``min_delta``. The decision
    is recorded as ``airflow.promotion.*`` tags on the challenger version (with the task
    instance's key, so a retry after a move whose answer was lost reports that promotion instead
    of finding the challenger already champion), and returned as
    ``{"decision": "promote" | "keep", "promoted", "champion_version", "challenger_version",
    "champion_value", "challenger_value", "delta", ...}`` for a branch task.

    :param model_name: Registered model name. (templated)
    :param challenger_version: The candidate version. (templated)
    :param metric: Run metric to compare, e.g. ``val_auc``. (templated)
    :param mode: ``"max"`` when higher is better, ``"min"`` when lower is better.
    :param alias: The alias to move. (templated)
    :param min_delta: Required improvement (>= 0), in the metric's units; a number, or a
        template such as ``"{{ params.min_delta }}"``. (templated)
    :param challenger_metric_value: Use this value instead of the challenger run's metric. (templated)
    :param emit_asset_event: Emit an event on ``mlflow-model://<model_name>`` on promotion.
    :param mlflow_conn_id: Airflow connection of type ``mlflow``.
    """

    template_fields: Sequence[str] = (
        "model_name", "challenger_version", "metric", "alias", "min_delta", "challenger_metric_value",
    )  # fmt: skip

    def __init__(
        self,
        *,
        model_name: str,
        challenger_version: str | int,
        metric: str,
        mode: str = "max",
        alias: str = "champion",
        min_delta: float | str = 0.0,
        challenger_metric_value: float | str | None = None,
        emit_asset_event: bool = True,
        mlflow_conn_id: str = MlflowHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(mlflow_conn_id=mlflow_conn_id, emit_asset_event=emit_asset_event, **kwargs)
        if mode not in MODES:
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        if not contains_template(min_delta):
            min_delta = parse_min_delta(min_delta)
        self.model_name = model_name
        self.challenger_version = challenger_version
        self.metric = metric
        self.mode = mode
        self.alias = alias
        self.min_delta = min_delta
        self.challenger_metric_value = challenger_metric_value

    def _metric_of(self, name: str, version: str, role: str) -> float:
        found = self.hook.version_metrics(name, version, wanted=self.metric)
        if self.metric not in found.metrics:
            raise AirflowFailException(
                f"{role} version {version} of {name!r} has no metric {self.metric!r} "
                f"(run {found.run_id!r} has {sorted(found.metrics)})"
            )
        return float(found.metrics[self.metric])

    def _challenger_value(self, name: str, challenger: str) -> float:
        if self.challenger_metric_value in (None, ""):
            return self._metric_of(name, challenger, "challenger")
        try:
            value = float(self.challenger_metric_value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            value = math.nan
        if math.isnan(value):
            raise AirflowFailException(
                f"challenger_metric_value must be a number, got {self.challenger_metric_value!r}"
            )
        return value

    def _own_promotion(
        self, name: str, alias: str, metric: str, challenger: str, champion: str | None, ti_key: str
    ) -> dict[str, str] | None:
        """The promotion tags of an earlier try of this task instance that moved the alias, or None."""
        if champion != challenger:
            return None
        tags = self.hook.version_tags(name, challenger)
        recorded = {
            k.removeprefix(PROMOTION_TAG_PREFIX): v
            for k, v in tags.items()
            if k.startswith(PROMOTION_TAG_PREFIX)
        }
        mine = (
            recorded.get("ti_key"),
            recorded.get("decision"),
            recorded.get("alias"),
            recorded.get("metric"),
        )
        return recorded if mine == (ti_key, "promote", alias, metric) else None

    def execute(self, context: Context) -> dict[str, Any]:
        name, alias = self.required_text("model_name"), self.required_text("alias")
        metric = self.required_text("metric")
        challenger = self.required_version("challenger_version")
        min_delta = parse_min_delta(self.min_delta, error=AirflowFailException)
        hook = self.hook
        ti_key = ti_identity_tags(context)[TI_KEY_TAG]
        champion = hook.alias_version(name, alias)
        recorded = self._own_promotion(name, alias, metric, challenger, champion, ti_key)
        delta: float | None
        champion_value: float | None
        if recorded is not None:  # an earlier try of this task decided and moved the alias
            promote, champion = True, recorded["champion_version"] or None
            challenger_value = float(recorded["challenger_value"])
            champion_value = _optional_float(recorded["champion_value"])
            delta = _optional_float(recorded["delta"])
        else:
            challenger_value = self._challenger_value(name, challenger)
            if champion == challenger:
                champion_value = challenger_value
                promote, delta = False, 0.0
            else:
                champion_value = self._metric_of(name, champion, "champion") if champion else None
                promote, delta = compare_metrics(
                    challenger_value, champion_value, mode=self.mode, min_delta=min_delta
                )
        decision = "promote" if promote else "keep"
        if recorded is None:
            tags = {
                "decision": decision,
                "metric": metric,
                "mode": self.mode,
                "alias": alias,
                "min_delta": repr(min_delta),
                "challenger_value": repr(challenger_value),
                "champion_value": "" if champion_value is None else repr(champion_value),
                "champion_version": champion or "",
                "delta": "" if delta is None else repr(delta),
                "ti_key": ti_key,  # last: the record is complete once it is there
            }
            hook.set_version_tags(name, challenger, {PROMOTION_TAG_PREFIX + k: v for k, v in tags.items()})
            if promote:
                hook.set_alias(name, alias, challenger)
        self.log.info(
            "%s %s: challenger v%s %s=%s vs champion v%s %s (delta %s, min_delta %s) -> %s",
            name, alias, challenger, metric, challenger_value, champion, champion_value,
            delta, min_delta, decision,
        )  # fmt: skip
        result = {
            "decision": decision,
            "promoted": promote,
            "model_name": name,
            "alias": alias,
            "metric": metric,
            "mode": self.mode,
            "challenger_version": challenger,
            "champion_version": champion,
            "challenger_value": challenger_value,
            "champion_value": champion_value,
            "delta": delta,
        }
        push_mlflow_urls(context, model_version=hook.model_version_url(name, challenger))
        if promote and self.emit_asset_event:
            emit_model_event(
                context, name, self.outlets,
                {"event": "promoted", "version": challenger, "previous_version": champion,
                 **{k: v for k, v in result.items() if k not in ("decision", "promoted")}},
            )  # fmt: skip
        return result
