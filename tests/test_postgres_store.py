"""PostgresStore: the conformance suite, schema and migrations, grouped execution, the
notifier, and the store through the manager."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from jobkit.stores.postgres import PostgresStore
from jobkit.testing import JobStoreSuite
from pgserver import new_schema

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(pg_dsn: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(pg_dsn, schema=new_schema())
    await store.open()
    yield store
    await store.close()


class TestConformance(JobStoreSuite):
    pass
