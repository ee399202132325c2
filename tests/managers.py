"""The `make_manager` fixture's factory: JobManagers on the store kind a test is running on."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from jobkit import Job, JobManager
from jobkit.abc import JobStore
from jobkit.stores import MemoryStore, SQLiteStore
from pgserver import new_schema

StoreKind = Literal["memory", "sqlite", "postgres"]
STORE_KINDS: tuple[StoreKind, ...] = ("memory", "sqlite", "postgres")


class ManagerFactory:
    """``make_manager(**kwargs)`` builds a JobManager the way the tests want one.

    ``sweep_interval`` defaults to None (tests sweep by hand), every other keyword goes to
    JobManager unchanged, and each call gets a fresh store of :attr:`kind` (a new SQLite
    file per call) unless ``store=`` is passed. ``handlers={kind: handler}`` registers
    handlers on the new manager. :meth:`new_store` gives a fresh store for a test that
    shares one between managers.
    """

    def __init__(self, kind: StoreKind, directory: Path, dsn: str | None = None) -> None:
        self.kind = kind
        self._directory = directory
        self._dsn = dsn
        self._numbers = itertools.count(1)

    def __repr__(self) -> str:
        return f"ManagerFactory({self.kind!r})"

    def new_store(self) -> JobStore:
        """A fresh, empty store of this factory's kind."""
        if self.kind == "memory":
            return MemoryStore()
        if self.kind == "postgres":
            from jobkit.stores.postgres import PostgresStore

            assert self._dsn is not None
            return PostgresStore(self._dsn, schema=new_schema())  # empty, like a new file
        return SQLiteStore(self._directory / f"jobs-{next(self._numbers)}.db")

    def __call__(self, *, handlers: Mapping[str, Callable[..., Any]] = {}, **kwargs: Any) -> JobManager:
        kwargs.setdefault("sweep_interval", None)
        if kwargs.get("store") is None:
            kwargs["store"] = self.new_store()
        jobs = JobManager(**kwargs)
        for job_kind, handler in handlers.items():
            jobs.register(job_kind, handler)
        return jobs


async def stored(store: JobStore, job_id: str) -> Job | None:
    """The job as ``store`` holds it, read after the manager that used it has closed it."""
    await store.open()
    try:
        return await store.get(job_id)
    finally:
        await store.close()
