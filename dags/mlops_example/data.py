"""A synthetic customer-churn dataset with drift, written one weekly partition at a time.

Each week has ``n_customers`` observations: a customer's usage and billing features at a moment
inside the week, and whether the customer churned in the following 30 days. The data drifts: the
price level rises every week and the weight of support calls on churn grows, so last week's
model gets slowly worse on new data, which is what a weekly retraining pipeline is for.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from mlops_example import FEATURES, example_home

if TYPE_CHECKING:
    from pathlib import Path

EPOCH = datetime(2024, 1, 1)


def _week_index(start: datetime) -> int:
    return max(0, (start.replace(tzinfo=None) - EPOCH).days // 7)


def generate_week(start: datetime, end: datetime, n_customers: int = 4000, seed: int = 0):
    """Return one week of observations (a pandas DataFrame) between ``start`` and ``end``."""
    import numpy as np
    import pandas as pd

    week = _week_index(start)
    rng = np.random.default_rng([seed, week])
    n = int(n_customers)
    customer_id = np.arange(n, dtype="int64") + 1
    tenure = rng.gamma(2.0, 12.0, n).clip(0, 120)
    contract_monthly = (rng.random(n) < 0.55).astype("int64")
    price_level = 1.0 + 0.01 * week  # drift: prices creep up
    monthly_charges = (rng.normal(65, 20, n) * price_level).clip(15, 200)
    support_calls = rng.poisson(1.2 + 0.8 * contract_monthly, n).astype("int64")
    usage = rng.lognormal(3.0, 0.6, n)
    support_weight = 0.35 + 0.02 * week  # drift: support calls matter more over time
    logit = (
        -1.6
        - 0.035 * tenure
        + 0.018 * (monthly_charges - 65)
        + support_weight * support_calls
        + 1.1 * contract_monthly
        - 0.01 * usage
    )
    churned = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int64")
    span = (end - start).total_seconds()
    offsets = np.sort(rng.random(n)) * span * 0.999
    timestamps = pd.to_datetime(start) + pd.to_timedelta(offsets, unit="s")
    return pd.DataFrame(
        {
            "customer_id": customer_id,
            "event_timestamp": timestamps,
            "tenure_months": tenure.round(2),
            "monthly_charges": monthly_charges.round(2),
            "support_calls_30d": support_calls,
            "usage_gb_30d": usage.round(3),
            "contract_monthly": contract_monthly,
            "churned": churned,
        }
    )


def partition_path(start: datetime, home: Path | None = None) -> Path:
    """The parquet file of the partition that starts at ``start``."""
    return (home or example_home()) / "data" / "churn" / f"week={start:%Y-%m-%d}" / "part-0.parquet"


def features_path(home: Path | None = None) -> Path:
    """The parquet file Feast's FileSource reads: every partition's features, appended."""
    return (home or example_home()) / "data" / "customer_features.parquet"


def write_week(start: datetime, end: datetime, n_customers: int = 4000, seed: int = 0) -> dict[str, Any]:
    """
    Write the week's partition (idempotent: the same interval gives the same file) and rebuild
    the feature table from all partitions. Returns a summary for the task's XCom.
    """
    import pandas as pd

    frame = generate_week(start, end, n_customers, seed)
    part = partition_path(start)
    part.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(part, index=False)
    partitions = sorted(part.parent.parent.glob("week=*/part-0.parquet"))
    features = pd.concat(
        [pd.read_parquet(p, columns=["customer_id", "event_timestamp", *FEATURES]) for p in partitions]
    )
    features["event_timestamp"] = pd.to_datetime(features["event_timestamp"], utc=True)
    target = features_path()
    tmp = target.with_suffix(".tmp.parquet")
    features.to_parquet(tmp, index=False)
    tmp.replace(target)
    return {
        "partition": str(part),
        "rows": len(frame),
        "churn_rate": round(float(frame["churned"].mean()), 4),
        "mean_monthly_charges": round(float(frame["monthly_charges"].mean()), 2),
        "partitions": len(partitions),
        "window": [start.isoformat(), end.isoformat()],
    }
