"""Every built-in store passes the JobStore conformance suite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from jobkit.abc import JobStore
from jobkit.stores import MemoryStore, SQLiteStore
from jobkit.testing import JobStoreSuite


class TestMemoryStore(JobStoreSuite):
    @pytest.fixture
    async def store(self) -> AsyncIterator[JobStore]:
        store = MemoryStore()
        await store.open()
        yield store
        await store.close()


class TestSQLiteStore(JobStoreSuite):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[JobStore]:
        store = SQLiteStore(tmp_path / "jobs.db")
        await store.open()
        yield store
        await store.close()
