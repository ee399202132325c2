"""The PostgreSQL cluster of a test session (one per xdist worker), and a schema per test.

Locally, tests needing PostgreSQL skip when it is not installed; under ``CI=true`` they
fail (``make test`` installs it).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from jobkit.testing._pgserver import ClusterUnavailable, PostgresCluster, start_cluster

__all__ = ["new_schema", "pg_cluster", "pg_dsn", "postgres_or_fail"]


def postgres_or_fail(reason: str) -> None:
    """Skip locally, fail under CI: a test needing the server must never pass unnoticed."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"PostgreSQL needed under CI=true: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL not available: {reason}")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """A throwaway cluster for the session, stopped and removed at its end."""
    try:
        cluster = start_cluster()
    except ClusterUnavailable as exc:
        postgres_or_fail(str(exc))
        raise  # unreachable: skip/fail raise
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def pg_dsn(pg_cluster: PostgresCluster) -> str:
    return pg_cluster.dsn


def new_schema() -> str:
    """A schema name nobody used yet in this cluster."""
    return f"t_{uuid.uuid4().hex[:16]}"
