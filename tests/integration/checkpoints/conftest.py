"""Fixtures of the checkpoint tests: a real S3 API (moto's server) for each module."""

from __future__ import annotations

from tests.support.moto_server import moto_s3  # noqa: F401  (a fixture)
