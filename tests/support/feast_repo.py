"""Create real Feast feature repos with generated parquet data, for tests and benchmarks.

``create_feature_repo(directory, ...)`` writes ``feature_store.yaml`` (local provider, file
registry, parquet offline store, SQLite or Redis online store), a ``features.py`` with one
entity and N feature views, and one parquet file per feature view. It does not run
``feast apply``. ``FeatureRepo`` knows what it generated and answers "what should the online
store hold for these entities after materializing this window" from the data itself.

Each feature view ``fv_<i>`` has features ``score`` (Float64) and ``count`` (Int64) keyed by
``entity_id``. Event timestamps are evenly spaced and unique within a view, so the latest row
per entity is never ambiguous.
"""

from __future__ import annotations

import shutil
import textwrap
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

DEFAULT_START = datetime(2024, 1, 1, tzinfo=timezone.utc)
DEFAULT_END = datetime(2024, 1, 3, tzinfo=timezone.utc)
FEATURES = ("score", "count")


@dataclass
class FeatureRepo:
    """A generated feature repo."""

    path: Path
    project: str
    feature_views: list[str]
    n_entities: int
    rows_per_view: int
    start: datetime
    end: datetime
    online_store: str
    redis_connection_string: str | None = None
    parquet: dict[str, Path] = field(default_factory=dict)

    @property
    def yaml_path(self) -> Path:
        return self.path / "feature_store.yaml"

    @property
    def yaml_text(self) -> str:
        return self.yaml_path.read_text()

    @property
    def registry_path(self) -> Path:
        return self.path / "data" / "registry.db"

    @property
    def online_db_path(self) -> Path:
        return self.path / "data" / "online.db"

    @property
    def total_rows(self) -> int:
        return self.rows_per_view * len(self.feature_views)

    def connection_json(self, *, password: str | None = None, **extra: Any) -> str:
        """``AIRFLOW_CONN_*`` value (JSON form) of a ``feast`` connection to this repo."""
        import json

        conn: dict[str, Any] = {"conn_type": "feast", "extra": {"repo_path": str(self.path), **extra}}
        if password:
            conn["password"] = password
        return json.dumps(conn)

    def feature_refs(self, views: list[str] | None = None) -> list[str]:
        return [f"{fv}:{feat}" for fv in (views or self.feature_views) for feat in FEATURES]

    def dataframe(self, view: str) -> Any:
        import pandas as pd

        return pd.read_parquet(self.parquet[view])

    def expected_latest(
        self, view: str, start: datetime | None = None, end: datetime | None = None
    ) -> dict[int, dict[str, Any]]:
        """Latest ``{entity_id: {feature: value}}`` among rows with start <= event_timestamp <= end."""
        df = self.dataframe(view)
        start = start or self.start
        end = end or self.end
        df = df[(df["event_timestamp"] >= start) & (df["event_timestamp"] <= end)]
        df = df.sort_values("event_timestamp").groupby("entity_id").tail(1)
        return {
            int(row.entity_id): {"score": float(row.score), "count": int(row.count)}
            for row in df.itertuples(index=False)
        }

    def copy_to(self, directory: Path | str) -> FeatureRepo:
        """Copy definitions, yaml and data (not the registry or online store) to ``directory``.

        Parquet paths in ``features.py`` are absolute, so the copy reads the same data.
        A Redis repo keeps pointing at the same server; use a different project for isolation.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name in ("feature_store.yaml", "features.py"):
            shutil.copy(self.path / name, directory / name)
        (directory / "data").mkdir(exist_ok=True)
        return FeatureRepo(
            path=directory,
            project=self.project,
            feature_views=list(self.feature_views),
            n_entities=self.n_entities,
            rows_per_view=self.rows_per_view,
            start=self.start,
            end=self.end,
            online_store=self.online_store,
            redis_connection_string=self.redis_connection_string,
            parquet=dict(self.parquet),
        )


def feature_store_yaml(
    project: str,
    *,
    online_store: str = "sqlite",
    redis_connection_string: str | None = None,
    registry_path: str = "data/registry.db",
    online_path: str = "data/online.db",
) -> str:
    """The text of a ``feature_store.yaml`` for the local provider."""
    if online_store == "sqlite":
        online = f"online_store:\n  type: sqlite\n  path: {online_path}\n"
    elif online_store == "redis":
        if not redis_connection_string:
            raise ValueError("online_store='redis' needs redis_connection_string")
        online = f'online_store:\n  type: redis\n  connection_string: "{redis_connection_string}"\n'
    else:
        raise ValueError(f"online_store must be 'sqlite' or 'redis', got {online_store!r}")
    return (
        f"project: {project}\n"
        f"provider: local\n"
        f"registry:\n  registry_type: file\n  path: {registry_path}\n  cache_ttl_seconds: 0\n"
        f"{online}"
        f"offline_store:\n  type: file\n"
        f"entity_key_serialization_version: 3\n"
    )


def _definitions(views: list[str], parquet: dict[str, Path]) -> str:
    parts = [
        textwrap.dedent(
            """\
            from datetime import timedelta

            from feast import Entity, FeatureView, Field, FileSource, ValueType
            from feast.types import Float64, Int64

            entity = Entity(name="entity", join_keys=["entity_id"], value_type=ValueType.INT64)
            """
        )
    ]
    for view in views:
        parts.append(
            textwrap.dedent(
                f"""
                {view}_source = FileSource(
                    name="{view}_source",
                    path={str(parquet[view])!r},
                    timestamp_field="event_timestamp",
                    created_timestamp_column="created",
                )
                {view} = FeatureView(
                    name="{view}",
                    entities=[entity],
                    ttl=timedelta(days=3650),
                    schema=[Field(name="score", dtype=Float64), Field(name="count", dtype=Int64)],
                    online=True,
                    source={view}_source,
                )
                """
            )
        )
    return "".join(parts)


def create_feature_repo(
    directory: Path | str,
    *,
    project: str = "mlops_test",
    n_views: int = 2,
    rows: int = 2000,
    n_entities: int = 100,
    start: datetime = DEFAULT_START,
    end: datetime = DEFAULT_END,
    online_store: str = "sqlite",
    redis_connection_string: str | None = None,
    seed: int = 0,
) -> FeatureRepo:
    """
    Write a feature repo with generated parquet data into ``directory``.

    :param project: Feast project name (use distinct names to share one Redis server).
    :param n_views: Number of feature views (``fv_0`` ... ``fv_<n-1>``).
    :param rows: Total rows, split evenly over the feature views.
    :param n_entities: Entity ids are ``1..n_entities``.
    :param start: First event timestamp (tz-aware).
    :param end: Event timestamps are spread evenly over ``[start, end)``.
    :param online_store: ``"sqlite"`` or ``"redis"``.
    :param redis_connection_string: ``host:port`` of the Redis server (redis only).
    :param seed: Seed of the random entity ids and values.
    """
    import numpy as np
    import pandas as pd

    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware")
    directory = Path(directory)
    (directory / "data").mkdir(parents=True, exist_ok=True)
    views = [f"fv_{i}" for i in range(n_views)]
    rows_per_view = rows // n_views
    rng = np.random.default_rng(seed)
    span_us = int((end - start).total_seconds() * 1_000_000)
    step_us = max(span_us // max(rows_per_view, 1), 1)
    parquet: dict[str, Path] = {}
    for index, view in enumerate(views):
        # Unique, evenly spaced timestamps; a per-view offset keeps views distinct.
        offsets = np.arange(rows_per_view, dtype="int64") * step_us + index
        timestamps = pd.to_datetime(int(start.timestamp() * 1_000_000) + offsets, unit="us", utc=True)
        frame = pd.DataFrame(
            {
                "entity_id": rng.integers(1, n_entities + 1, size=rows_per_view, dtype="int64"),
                "event_timestamp": timestamps,
                "created": timestamps,
                "score": rng.random(rows_per_view).round(6),
                "count": rng.integers(0, 1_000_000, size=rows_per_view, dtype="int64"),
            }
        )
        path = (directory / "data" / f"{view}.parquet").resolve()
        frame.to_parquet(path, index=False)
        parquet[view] = path
    (directory / "feature_store.yaml").write_text(
        feature_store_yaml(
            project, online_store=online_store, redis_connection_string=redis_connection_string
        )
    )
    (directory / "features.py").write_text(_definitions(views, parquet))
    return FeatureRepo(
        path=directory.resolve(),
        project=project,
        feature_views=views,
        n_entities=n_entities,
        rows_per_view=rows_per_view,
        start=start,
        end=end,
        online_store=online_store,
        redis_connection_string=redis_connection_string,
        parquet=parquet,
    )


def online_values(
    store: Any, repo: FeatureRepo, entity_ids: list[int], views: list[str] | None = None
) -> dict:
    """``{feature_ref: [values...]}`` read with ``get_online_features`` for ``entity_ids``."""
    refs = repo.feature_refs(views)
    response = store.get_online_features(
        features=refs, entity_rows=[{"entity_id": int(e)} for e in entity_ids], full_feature_names=True
    ).to_dict()
    return {ref: response[ref.replace(":", "__")] for ref in refs}


def sqlite_online_snapshot(repo: FeatureRepo) -> dict[str, list[tuple]]:
    """Every row of every table of a SQLite online store, sorted (to compare two stores)."""
    import sqlite3

    conn = sqlite3.connect(repo.online_db_path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        snapshot = {}
        for table in sorted(tables):
            rows = conn.execute(f'SELECT entity_key, feature_name, value, event_ts FROM "{table}"').fetchall()
            # Table names carry the project; compare by the feature view part.
            snapshot[table.split("_", 2)[-1] if table.startswith(repo.project) else table] = sorted(rows)
        return snapshot
    finally:
        conn.close()
