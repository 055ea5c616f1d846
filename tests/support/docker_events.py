"""What the Docker engine did in a time window: the containers created, read from ``docker events``."""

from __future__ import annotations

import subprocess


def created_containers(since: float, until: float, **labels: str) -> list[str]:
    """
    Return the ids of the containers created between ``since`` and ``until`` (epoch seconds).

    :param labels: Only containers with these labels, e.g. ``{"airflow-mlops.dag_id": "my_dag"}``
        (pass them as ``**{...}``: label names hold dots).
    """
    args = ["docker", "events", "--since", f"{since:.3f}", "--until", f"{until:.3f}"]
    args += ["--filter", "type=container", "--filter", "event=create", "--format", "{{.Actor.ID}}"]
    for name, value in labels.items():
        args += ["--filter", f"label={name}={value}"]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=60)
    return out.stdout.split()
