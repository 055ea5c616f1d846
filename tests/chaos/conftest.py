"""Fixtures of the chaos suite: one Airflow on PostgreSQL with every real service a scenario needs.

``stack`` starts, once for the suite: PostgreSQL (Debian's), a real ``mlflow server`` behind a
fault proxy, Redis with a password, a moto S3 server, then ``airflow db migrate`` and the four
Airflow components. Every secret they use is random for the run and listed in
``ChaosServices.secrets``, which ``test_secrets.py`` searches for in everything the suite produced.

Each scenario records a row in :data:`LEDGER`; the table is printed in pytest's terminal summary
and written to ``$CHAOS_REPORT`` (default ``build/chaos-report.md``). ``CHAOS_REPETITIONS``
scales every scenario's repetitions (CI uses the defaults; a soak run sets, say, 15).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.chaos.fault_proxy import FaultProxy
from tests.chaos.ledger import LEDGER
from tests.chaos.stack import ChaosStack
from tests.conftest import REPO_ROOT, docker_available, docker_required
from tests.support.mlflow_server import start_mlflow_server
from tests.support.moto_server import REGION, running_moto_server
from tests.support.postgres_server import postgres_bin_dir, postgres_server
from tests.support.redis_server import redis_server, redis_server_binary

if TYPE_CHECKING:
    from collections.abc import Iterator

DAGS = Path(__file__).parent / "dags"


def repetitions(default: int) -> int:
    """How many times a scenario repeats: ``CHAOS_REPETITIONS`` when set, else ``default``."""
    value = os.environ.get("CHAOS_REPETITIONS")
    return max(1, int(value)) if value else default


@dataclass
class ChaosServices:
    """The services behind the stack, and every secret they were given."""

    stack: ChaosStack
    mlflow_url: str
    proxy: FaultProxy
    redis_address: str
    s3_endpoint: str
    markers: Path
    #: The metadata database (PostgreSQL), for counts the REST API does not show (triggers).
    database_url: str
    secrets: dict[str, str] = field(default_factory=dict)
    #: REST and plugin responses the scenarios fetched, searched by the secrets scenario.
    responses: list[tuple[str, Any]] = field(default_factory=list)

    @property
    def libpq_url(self) -> str:
        return self.database_url.replace("postgresql+psycopg2://", "postgresql://")

    def capture_triggers(self) -> list[tuple[str, str]]:
        """
        Every trigger row now in the metadata database, kwargs decrypted with the stack's Fernet
        key (as the triggerer reads them); kept in :attr:`responses` for the secrets scenario.
        """
        import psycopg2
        from cryptography.fernet import Fernet

        fernet = Fernet(self.stack.env["AIRFLOW__CORE__FERNET_KEY"].encode())

        def readable(kwargs: str) -> str:
            # Airflow stores the kwargs Fernet-encrypted, or as plain JSON (as 3.3 does here).
            try:
                json.loads(kwargs)
                return kwargs
            except ValueError:
                return fernet.decrypt(kwargs.encode()).decode()

        with psycopg2.connect(self.libpq_url) as conn, conn.cursor() as cur:
            cur.execute("SELECT classpath, kwargs FROM trigger")
            rows = [(str(c), readable(str(k))) for c, k in cur.fetchall()]
        self.responses.extend((f"trigger {c}", k) for c, k in rows)
        return rows


def _need(condition: bool, what: str) -> None:
    if condition:
        return
    if docker_required():
        pytest.fail(f"the chaos suite needs {what} (CI installs it)")
    pytest.skip(f"the chaos suite needs {what}")


@pytest.fixture(scope="session")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosServices]:
    _need(postgres_bin_dir() is not None, "PostgreSQL (apt-get install -y postgresql)")
    _need(redis_server_binary() is not None, "redis-server")
    _need(docker_available(), "a Docker engine")
    home = tmp_path_factory.mktemp("chaos-airflow-home")
    markers = home / "markers"
    markers.mkdir()
    os.chmod(markers, 0o777)
    token = "mlflow-tok-" + secrets.token_hex(12)
    redis_password = "redis-pw-" + secrets.token_hex(12)
    aws_key = "AKIACHAOS" + secrets.token_hex(6).upper()
    aws_secret = "aws-secret-" + secrets.token_hex(16)
    env_secret = "env-secret-" + secrets.token_hex(12)
    mlflow = start_mlflow_server(home / "mlflow")
    try:
        with (
            postgres_server() as pg,
            redis_server(password=redis_password) as redis,
            running_moto_server() as moto,
            FaultProxy(mlflow.port) as proxy,
        ):
            extra = {
                "MLOPS_CHAOS_MARKERS": str(markers),
                "MLOPS_CHAOS_MLFLOW_DIRECT": mlflow.url,
                "MLOPS_CHAOS_REDIS": redis.address,
                "MLOPS_CHAOS_FEAST_ROOT": str(home / "feast"),
                "AIRFLOW_CONN_MLFLOW_CHAOS": json.dumps(
                    {"conn_type": "mlflow", "host": proxy.url, "password": token}
                ),
                "AIRFLOW_CONN_AWS_CHAOS": json.dumps(
                    {
                        "conn_type": "aws",
                        "login": aws_key,
                        "password": aws_secret,
                        "extra": {"endpoint_url": moto.endpoint_url, "region_name": REGION},
                    }
                ),
                "AIRFLOW_CONN_FEAST_CHAOS_SENSORS": json.dumps(
                    {
                        "conn_type": "feast",
                        "password": redis_password,
                        "extra": {"repo_path": str(home / "feast" / "sensors")},
                    }
                ),
                "AIRFLOW_VAR_CHAOS_API_SECRET": env_secret,
                "AIRFLOW_VAR_CHAOS_REDIS_PASSWORD": redis_password,
                "MLOPS_CHAOS_S3_ENDPOINT": moto.endpoint_url,
                "MLOPS_TEST_IMAGE": os.environ.get("MLOPS_TEST_IMAGE", "mlops-base:bookworm"),
                "PYTHONPATH": str(REPO_ROOT),
            }
            stack = ChaosStack(home, DAGS, pg.sqlalchemy_url, extra)
            stack.migrate()
            stack.start_all()
            services = ChaosServices(
                stack=stack,
                mlflow_url=mlflow.url,
                proxy=proxy,
                redis_address=redis.address,
                s3_endpoint=moto.endpoint_url,
                markers=markers,
                database_url=pg.sqlalchemy_url,
                secrets={
                    "MLflow token": token,
                    "Redis password": redis_password,
                    "AWS access key": aws_key,
                    "AWS secret key": aws_secret,
                    "secret passed through env": env_secret,
                },
            )
            try:
                yield services
            finally:
                stack.stop_all()
    finally:
        mlflow.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A soak run's scenarios take longer than the suite's 900 s per test: scale the limit."""
    scale = max(1, int(os.environ.get("CHAOS_REPETITIONS") or 1))
    for item in items:
        if item.get_closest_marker("chaos") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(900 + 600 * scale))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not LEDGER.rows and not LEDGER.notes:
        return
    text = LEDGER.render()
    terminalreporter.write_sep("=", "chaos suite")
    terminalreporter.write_line(text)
    report = Path(os.environ.get("CHAOS_REPORT", REPO_ROOT / "build" / "chaos-report.md"))
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(text + "\n")
