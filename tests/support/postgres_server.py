"""Start Debian's PostgreSQL on a free loopback port: the chaos suite's Airflow metadata database.

CI installs the Debian package ``postgresql``; its binaries are under
``/usr/lib/postgresql/<major>/bin``. The cluster lives in a temporary directory, listens on
127.0.0.1 only, trusts loopback connections and is removed when stopped. PostgreSQL refuses to
run as root, so as root the server runs as the ``postgres`` user the package creates.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tests.support.ports import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator


def postgres_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<major>/bin`` that has ``initdb``, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


@dataclass
class PostgresServer:
    """A running PostgreSQL cluster with one database."""

    process: subprocess.Popen[bytes]
    port: int
    database: str
    user: str
    workdir: Path

    @property
    def sqlalchemy_url(self) -> str:
        """The URL for ``[database] sql_alchemy_conn`` (psycopg2; Airflow derives asyncpg from it)."""
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # smart shutdown
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _as_server_user(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def start_postgres(*, database: str = "airflow", max_connections: int = 200) -> PostgresServer:
    """Create a cluster in a temporary directory and start it on a free loopback port."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed: apt-get install -y postgresql")
    workdir = Path(tempfile.mkdtemp(prefix="mlops-postgres-"))
    data = workdir / "data"
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres", "postgres")
    user = "postgres" if os.geteuid() == 0 else os.environ.get("USER", "postgres")
    subprocess.run(
        _as_server_user(
            [str(bin_dir / "initdb"), "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8", "--no-sync"]
        ),
        check=True,
        capture_output=True,
    )
    port = free_port()
    log = open(workdir / "postgres.log", "wb")
    process = subprocess.Popen(
        _as_server_user(
            [
                str(bin_dir / "postgres"),
                "-D",
                str(data),
                "-p",
                str(port),
                "-h",
                "127.0.0.1",
                "-k",
                str(workdir),
                "-c",
                f"max_connections={max_connections}",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = PostgresServer(process, port, database, user, workdir)
    deadline = time.monotonic() + 60
    while True:
        ready = subprocess.run(
            [str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True
        )
        if ready.returncode == 0:
            break
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"PostgreSQL did not start: {(workdir / 'postgres.log').read_text()[-2000:]}")
        time.sleep(0.3)
    subprocess.run(
        [str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", user, database],
        check=True,
        capture_output=True,
    )
    return server


@contextmanager
def postgres_server(**kwargs: object) -> Iterator[PostgresServer]:
    """A PostgreSQL cluster for the duration of the block."""
    server = start_postgres(**kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()
