"""Fixtures of the parity table: a fake kubeconfig for the pod builder, and no container left behind."""

from __future__ import annotations

import subprocess

import pytest

# Only the file: KUBECONFIG is set inside the fixtures that need it, never for the whole session
# (the live suite in tests/integration/kubernetes runs when KUBECONFIG is set).
from tests.unit.kubernetes.conftest import fake_kubeconfig  # noqa: F401 (a fixture)

#: The DAGs whose containers the parity tests start (names begin with mlops-<dag id>).
PARITY_DAG_IDS = ("mlops_parity", "parity_mapped")


def remove_parity_containers() -> list[str]:
    """Remove every container a parity DAG started (by its dag_id label or its name); return their ids."""
    ids: set[str] = set()
    for dag_id in PARITY_DAG_IDS:
        for selector in (f"label=airflow-mlops.dag_id={dag_id}", f"name=mlops-{dag_id.replace('_', '-')}"):
            out = subprocess.run(
                ["docker", "ps", "-aq", "--filter", selector], capture_output=True, text=True, timeout=60
            )
            ids.update(out.stdout.split())
    if ids:
        subprocess.run(["docker", "rm", "-f", *sorted(ids)], capture_output=True, timeout=120)
    return sorted(ids)


@pytest.fixture(scope="module")
def no_containers_left(base_image):
    """Remove the parity DAGs' containers before and after; the operators should leave none."""
    remove_parity_containers()
    left: list[str] = []
    yield left
    left.extend(remove_parity_containers())
