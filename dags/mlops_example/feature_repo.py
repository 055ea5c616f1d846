"""The example's Feast feature repo: local provider, parquet offline store, SQLite online store."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

from mlops_example import FEATURE_VIEW, example_home
from mlops_example.data import features_path

if TYPE_CHECKING:
    from pathlib import Path

PROJECT = "mlops_example"


def repo_path(home: Path | None = None) -> Path:
    return (home or example_home()) / "feature_repo"


def write_feature_repo(home: Path | None = None) -> Path:
    """Write ``feature_store.yaml`` and the feature definitions; return the repo directory."""
    home = home or example_home()
    repo = repo_path(home)
    (repo / "data").mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(
        textwrap.dedent(
            f"""\
            project: {PROJECT}
            provider: local
            registry: {repo / "data" / "registry.db"}
            online_store:
              type: sqlite
              path: {repo / "data" / "online.db"}
            offline_store:
              type: file
            entity_key_serialization_version: 3
            """
        )
    )
    (repo / "features.py").write_text(
        textwrap.dedent(
            f"""\
            from datetime import timedelta

            from feast import Entity, FeatureView, Field, FileSource
            from feast.types import Float64, Int64

            customer = Entity(name="customer", join_keys=["customer_id"])

            source = FileSource(
                name="customer_source",
                path={str(features_path(home))!r},
                timestamp_field="event_timestamp",
            )

            {FEATURE_VIEW} = FeatureView(
                name={FEATURE_VIEW!r},
                entities=[customer],
                ttl=timedelta(days=30),
                schema=[
                    Field(name="tenure_months", dtype=Float64),
                    Field(name="monthly_charges", dtype=Float64),
                    Field(name="support_calls_30d", dtype=Int64),
                    Field(name="usage_gb_30d", dtype=Float64),
                    Field(name="contract_monthly", dtype=Int64),
                ],
                source=source,
                online=True,
            )
            """
        )
    )
    return repo
