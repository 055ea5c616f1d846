"""Reusable real-service helpers for tests (servers on loopback, feature repos)."""

from __future__ import annotations
