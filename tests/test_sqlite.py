"""SQLiteStore specifics: schema checks, indexes, durability, processes sharing one file."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from jobkit import (
    DeletePolicy,
    InvalidInput,
    JobContext,
    JobkitError,
    JobManager,
    JobStatus,
)
from jobkit.stores import MemoryStore, SQLiteStore, open_store
from jobkit.stores._sqlite import SCHEMA_VERSION
from jobkit.testing import FakeClock
from managers import ManagerFactory

pytestmark = [
    pytest.mark.anyio,
    # make_manager(store=SQLiteStore(db)): these managers share one file with each other and with workers.
    pytest.mark.store("sqlite", reason="these tests are about SQLiteStore itself"),
]

WORKER = Path(__file__).with_name("sqlite_worker.py")


async def _noop(ctx: JobContext, payload: Any) -> Any:
    return payload


HANDLERS = {"mark": _noop, "hang": _noop, "elsewhere": _noop}  # the worker script runs mark and hang


class TestOpening:
    async def test_new_file_gets_the_current_schema(self, tmp_path: Path) -> None:
        """A new database is created with WAL mode and the current schema version."""
        store = SQLiteStore(tmp_path / "jobs.db")
        await store.open()
        await store.close()
        conn = sqlite3.connect(tmp_path / "jobs.db")
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()

    async def test_newer_schema_is_refused(self, tmp_path: Path) -> None:
        """A file written by a newer jobkit is refused with a clear error naming the path."""
        path = tmp_path / "jobs.db"
        store = SQLiteStore(path)
        await store.open()
        await store.close()
        conn = sqlite3.connect(path)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
        conn.close()
        with pytest.raises(JobkitError, match="newer jobkit") as raised:
            await SQLiteStore(path).open()
        assert str(path) in str(raised.value)

    async def test_foreign_database_is_refused_and_untouched(self, tmp_path: Path) -> None:
        """Another application's SQLite file raises JobkitError and is not modified."""
        path = tmp_path / "other.db"
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO customers (name) VALUES ('ada')")
        conn.commit()
        conn.close()
        before = path.read_bytes()
        with pytest.raises(JobkitError, match="not a jobkit database") as raised:
            await SQLiteStore(path).open()
        assert str(path) in str(raised.value)
        assert path.read_bytes() == before
        assert not Path(str(path) + "-wal").exists()

    async def test_corrupt_file_is_refused_and_untouched(self, tmp_path: Path) -> None:
        """A file that is not a database raises JobkitError with the path and stays as it was."""
        path = tmp_path / "jobs.db"
        path.write_bytes(b"this is not a database" * 100)
        before = path.read_bytes()
        with pytest.raises(JobkitError, match="not a SQLite database or is corrupt") as raised:
            await SQLiteStore(path).open()
        assert str(path) in str(raised.value)
        assert path.read_bytes() == before

    async def test_unreachable_path_is_refused(self, tmp_path: Path) -> None:
        """A path in a missing folder raises JobkitError naming it."""
        path = tmp_path / "missing" / "jobs.db"
        with pytest.raises(JobkitError) as raised:
            await SQLiteStore(path).open()
        assert str(path) in str(raised.value)

    async def test_store_urls(self, tmp_path: Path) -> None:
        """open_store understands memory:// and sqlite:/// (relative and absolute)."""
        assert isinstance(open_store("memory://"), MemoryStore)
        absolute = open_store(f"sqlite:///{tmp_path}/jobs.db")
        assert isinstance(absolute, SQLiteStore)
        assert absolute.path == f"{tmp_path}/jobs.db"
        relative = open_store("sqlite:///data/jobs.db")
        assert isinstance(relative, SQLiteStore)
        assert relative.path == "data/jobs.db"
        for bad in ("sqlite://", "sqlite://host/jobs.db", "redis://x", "", "jobs.db"):
            with pytest.raises(InvalidInput):
                open_store(bad)


class TestIndexes:
    async def test_hot_queries_use_indexes(self, tmp_path: Path) -> None:
        """The claim, listing, expiry and lease queries are served by indexes, not table scans."""
        store = SQLiteStore(tmp_path / "jobs.db")
        await store.open()
        await store.close()
        conn = sqlite3.connect(tmp_path / "jobs.db")
        queries = {
            "claim": "SELECT seq FROM jobs WHERE status = 'pending' ORDER BY priority DESC, seq LIMIT 1",
            "tenant": "SELECT * FROM jobs WHERE tenant = 'a' AND deleted_at IS NULL "
            "ORDER BY seq DESC LIMIT 51",
            "status": "SELECT * FROM jobs WHERE status IN ('failed') ORDER BY seq DESC LIMIT 51",
            "expiry": "SELECT * FROM jobs WHERE expires_at <= 5 ORDER BY expires_at LIMIT 10",
            "lease": "SELECT * FROM jobs WHERE lease_until < 5 AND status IN ('running', 'cancelling') "
            "ORDER BY lease_until LIMIT 10",
        }
        for name, sql in queries.items():
            plan = " ".join(row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + sql))
            assert "USING INDEX" in plan or "USING COVERING INDEX" in plan, (name, plan)
            assert "SCAN jobs" not in plan.replace("USING INDEX", ""), (name, plan)
            if name in ("claim", "tenant", "expiry"):
                assert "TEMP B-TREE" not in plan, (name, plan)
        conn.close()


class TestDurability:
    async def test_jobs_audit_and_purge_queue_survive_a_restart(
        self, tmp_path: Path, make_manager: ManagerFactory
    ) -> None:
        """Everything the manager wrote is there after reopening the file."""
        path = tmp_path / "jobs.db"

        class BrokenBlobs:
            async def open(self) -> None: ...
            async def close(self) -> None: ...
            async def put(self, key: str, data: bytes) -> None: ...
            async def get(self, key: str) -> bytes:
                raise KeyError(key)

            async def list(self, prefix: str) -> list[str]:
                raise OSError("down")

            async def list_page(
                self, prefix: str, *, after: str | None = None, limit: int = 1000
            ) -> list[str]:
                return []

            async def delete(self, key: str) -> bool:
                return False

            async def delete_prefix(self, prefix: str) -> int:
                raise OSError("down")

        jobs = make_manager(store=SQLiteStore(path), blobs=BrokenBlobs(), handlers={"mark": _noop})
        async with jobs:
            kept = await jobs.wait(
                (await jobs.submit("mark", {"keep": True}, labels={"a": "b"})).id, timeout=5
            )
            gone = await jobs.wait((await jobs.submit("mark", 2)).id, timeout=5)
            await jobs.delete(gone.id)
        again = make_manager(store=SQLiteStore(path), handlers=HANDLERS)
        async with again:
            assert await again.get(kept.id) == kept
            [record] = await again.audit(gone.id)
            assert (record.action, record.details["artifacts_deleted"]) == ("delete", None)  # unknown
        store = SQLiteStore(path)
        await store.open()
        assert await store.pending_purges(10) == [f"jobs/{gone.id}/"]
        await store.close()


def _spawn(db: Path, out: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    return subprocess.Popen([sys.executable, str(WORKER), str(db), str(out)], env=env)


class TestProcesses:
    async def test_two_processes_run_every_job_exactly_once(
        self, tmp_path: Path, make_manager: ManagerFactory
    ) -> None:
        """Two worker processes sharing one file run 1,000 jobs, each exactly once."""
        db = tmp_path / "jobs.db"
        submitter = make_manager(store=SQLiteStore(db), handlers=HANDLERS, concurrency=0)
        async with submitter:
            ids = [(await submitter.submit("mark", i)).id for i in range(1000)]
        outs = [tmp_path / "a.txt", tmp_path / "b.txt"]
        workers = [_spawn(db, out) for out in outs]
        for worker in workers:
            assert await anyio.to_thread.run_sync(lambda w=worker: w.wait(120)) == 0
        runs = Counter(line for out in outs for line in out.read_text().split())
        assert set(runs) == set(ids)
        assert set(runs.values()) == {1}
        check = make_manager(store=SQLiteStore(db), handlers=HANDLERS, concurrency=0)
        async with check:
            page = await check.list(status="completed", limit=1000)
            assert len(page.items) == 1000

    @pytest.mark.parametrize("max_attempts", [1, 2])
    async def test_killed_worker_job_is_recovered(
        self, tmp_path: Path, max_attempts: int, make_manager: ManagerFactory
    ) -> None:
        """A worker killed by SIGKILL mid-job: its job is recovered when the lease expires
        (failed 'worker lost', or pending again while attempts remain); nothing else is lost."""
        db = tmp_path / "jobs.db"
        out = tmp_path / "out.txt"
        submitter = make_manager(store=SQLiteStore(db), handlers=HANDLERS, concurrency=0)
        async with submitter:
            victim = await submitter.submit("hang", max_attempts=max_attempts)
        worker = _spawn(db, out)
        started = Path(str(out) + ".started")
        try:
            with anyio.fail_after(30):
                while not started.exists():
                    await anyio.sleep(0.01)
            async with submitter_again(make_manager, db) as jobs:
                # A kind the worker process cannot run: it must stay pending, untouched.
                bystander = await jobs.submit("elsewhere", "wait for me", priority=-1)
        finally:
            worker.send_signal(signal.SIGKILL)
            await anyio.to_thread.run_sync(worker.wait)
        assert started.read_text() == victim.id
        later = FakeClock(datetime.now(UTC) + timedelta(hours=1))
        recovering = make_manager(store=SQLiteStore(db), handlers=HANDLERS, concurrency=0, clock=later)
        async with recovering:
            assert (await recovering.get(victim.id)).status is JobStatus.RUNNING
            report = await recovering.sweep()
            assert report.recovered == 1
            job = await recovering.get(victim.id)
            if max_attempts == 1:
                assert (job.status, job.error) == (JobStatus.FAILED, "worker lost")
            else:
                assert job.status is JobStatus.PENDING
                assert job.attempts == 1
            assert (await recovering.get(bystander.id)).status is JobStatus.PENDING
            [record] = await recovering.audit(victim.id)
            assert record.action == "recover"
            assert (await recovering.sweep()).recovered == 0
        if max_attempts == 2:
            runner = make_manager(store=SQLiteStore(db), handlers=HANDLERS, concurrency=1)
            async with runner:
                final = await runner.wait(victim.id, timeout=10)
                assert (final.status, final.attempts) == (JobStatus.COMPLETED, 2)

    async def test_cancel_from_another_process_reaches_the_worker(
        self, tmp_path: Path, make_manager: ManagerFactory
    ) -> None:
        """A cancel written by another process stops the running handler (via the heartbeat)."""
        db = tmp_path / "jobs.db"
        out = tmp_path / "out.txt"
        admin = make_manager(store=SQLiteStore(db), handlers=HANDLERS, concurrency=0, poll_interval=0.05)
        async with admin:
            job = await admin.submit("hang")
            worker = _spawn(db, out)
            try:
                started = Path(str(out) + ".started")
                with anyio.fail_after(30):
                    while not started.exists():
                        await anyio.sleep(0.01)
                cancelling = await admin.cancel(job.id, reason="from the CLI")
                assert cancelling.status is JobStatus.CANCELLING
                final = await admin.wait(job.id, timeout=30)
                assert (final.status, final.cancel_reason) == (JobStatus.CANCELLED, "from the CLI")
                assert await anyio.to_thread.run_sync(lambda: worker.wait(30)) == 0
            finally:
                if worker.poll() is None:
                    worker.kill()
                    worker.wait()


def submitter_again(make_manager: ManagerFactory, db: Path) -> JobManager:
    return make_manager(store=SQLiteStore(db), handlers=HANDLERS, concurrency=0, delete_policy=DeletePolicy())
