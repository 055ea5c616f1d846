"""The live Kubernetes suite runs against the cluster named by KUBECONFIG, and is skipped without one.

See the README section "Run the live suite on kind" for a throw-away cluster.
Settings: MLOPS_K8S_NAMESPACE (default ``default``), MLOPS_EXAMPLE_IMAGE (an image the cluster can
run, default ``mlops-base:bookworm``, e.g. loaded with ``kind load docker-image``) and
MLOPS_LIVE_GPUS (GPUs per trial, default 0: kind has none).
"""

from __future__ import annotations

import os

import pytest

SKIP_REASON = (
    "KUBECONFIG is not set: the live Kubernetes suite needs a cluster "
    "(see 'Run the live suite on kind' in the README)"
)


@pytest.fixture(scope="session")
def kubeconfig() -> str:
    path = os.environ.get("KUBECONFIG", "")
    if not path:
        pytest.skip(SKIP_REASON)
    first = path.split(os.pathsep)[0]
    if not os.path.exists(first):
        pytest.fail(f"KUBECONFIG names {first!r}, which does not exist")
    return first


@pytest.fixture(scope="session")
def namespace() -> str:
    return os.environ.get("MLOPS_K8S_NAMESPACE", "default")
