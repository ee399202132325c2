"""PostgresStore: the conformance suite, configuration, schema and migrations, grouped
execution, exclusive sections, the LISTEN/NOTIFY notifier, and real processes sharing one
schema (every job once, cross-process cancel, events, wake-ups, recovery, double sweeps)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import attrs
import psycopg
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from jobkit import JobContext, JobkitError, JobManager, JobStatus
from jobkit._errors import BackendError, InvalidInput
from jobkit._machine import start as _start
from jobkit._records import AuditAction, EventType, Job, JobEvent
from jobkit.abc import Change, Note, NoteKind
from jobkit.stores import open_store
from jobkit.stores import postgres as pg
from jobkit.stores._postgres_notify import MAX_PAYLOAD, PostgresNotifier, event_payload
from jobkit.stores.postgres import SCHEMA_VERSION, PostgresStore, migrate
from jobkit.testing import JobStoreSuite
from jobkit.testing._store_suite import T0, audit_record, make_job
from pgserver import new_schema

pytestmark = pytest.mark.anyio

HERE = Path(__file__).parent


@pytest.fixture
def schema() -> str:
    return new_schema()


@pytest.fixture
async def store(pg_dsn: str, schema: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(pg_dsn, schema=schema)
    await store.open()
    yield store
    await store.close()


class TestConformance(JobStoreSuite):
    pass


def machine_start(job: Job) -> Job:
    return _start(job, T0)


def sql(dsn: str, query: str, params: tuple[Any, ...] = ()) -> list[Any]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []


class TestConfiguration:
    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"dsn": ""}, "connection string"),
            ({"schema": "bad-name"}, "schema name"),
            ({"schema": "1st"}, "schema name"),
            ({"min_connections": 0}, "min_connections"),
            ({"max_connections": True}, "max_connections"),
            ({"min_connections": 5, "max_connections": 2}, "below min_connections"),
            ({"statement_timeout": 0}, "statement_timeout"),
            ({"groups": 0}, "groups"),
        ],
    )
    def test_bad_arguments_are_invalid_input(self, kwargs: dict[str, Any], message: str) -> None:
        kwargs = {"dsn": "postgresql://localhost/db", **kwargs}
        with pytest.raises(InvalidInput, match=message):
            PostgresStore(**kwargs)

    def test_open_store_reads_the_url(self) -> None:
        store = open_store(
            "postgresql://u@db.example:5433/app?schema=queue&max_connections=4&sslmode=disable"
        )
        assert isinstance(store, PostgresStore)
        assert (store.schema, store.max_connections) == ("queue", 4)
        assert store.dsn == "postgresql://u@db.example:5433/app?sslmode=disable"
        assert open_store("postgres://h/db").schema == "jobkit"  # type: ignore[attr-defined]

    @pytest.mark.parametrize(
        ("url", "message"),
        [
            ("postgresql://h/db?schema=a&schema=b", "twice"),
            ("postgresql://h/db?max_connections=lots", "positive integer"),
            ("postgresql://h/db?schema=no-dashes", "schema name"),
        ],
    )
    def test_bad_urls_are_invalid_input(self, url: str, message: str) -> None:
        with pytest.raises(InvalidInput, match=message):
            open_store(url)

    async def test_unreachable_server_is_a_clear_error(self) -> None:
        """A refused connection fails open() at once, saying why; the store stays closed."""
        store = PostgresStore("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2", min_connections=1)
        with pytest.raises(BackendError, match="Cannot open PostgresStore"), anyio.fail_after(20):
            await store.open()
        with pytest.raises(JobkitError, match="not open"):
            await store.get("x")

    async def test_sessions_carry_timeouts_and_the_application_name(self, store: PostgresStore) -> None:
        def show() -> tuple[Any, ...]:
            with store.pool.connection() as conn:
                row = conn.execute(
                    "SELECT current_setting('statement_timeout'), "
                    "current_setting('idle_in_transaction_session_timeout'), "
                    "current_setting('application_name'), current_setting('TimeZone')"
                ).fetchone()
                assert row is not None
                return tuple(row)

        assert await anyio.to_thread.run_sync(show) == (
            "30s",
            "1min",
            store.application_name + " pool",
            "UTC",
        )


class TestSchema:
    async def test_tables_live_in_the_named_schema_with_hot_friendly_jobs(
        self, store: PostgresStore, pg_dsn: str, schema: str
    ) -> None:
        tables = {
            r[0] for r in sql(pg_dsn, "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))
        }
        assert tables == {
            "jobs", "audit", "purges", "listeners", "schema_version", "paused_kinds", "schedules"
        }  # fmt: skip
        [[options]] = sql(
            pg_dsn, "SELECT reloptions FROM pg_class WHERE oid = %s::regclass", (f"{schema}.jobs",)
        )
        assert options == ["fillfactor=80"]
        indexes = sql(
            pg_dsn,
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'jobs' AND schemaname = %s",
            (schema,),
        )
        # No index on lease_until: renewing a lease stays a HOT update.
        assert not [name for name, definition in indexes if "lease_until" in definition]
        claim = next(d for n, d in indexes if n == "jobs_claim")
        assert "WHERE (status = 'pending'::text)" in claim

    def test_concurrent_migrators_all_succeed(self, pg_dsn: str, schema: str) -> None:
        """Eight processes' worth of connections migrating one fresh schema at once: none fails."""
        errors: list[BaseException] = []
        found: list[int] = []
        barrier = threading.Barrier(8)

        def migrator() -> None:
            try:
                with psycopg.connect(pg_dsn, autocommit=True) as conn:
                    barrier.wait()
                    found.append(migrate(conn, schema))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=migrator) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        assert sorted(found) == [0] + [SCHEMA_VERSION] * 7  # one migrated, the others found it done
        assert sql(pg_dsn, f'SELECT version FROM "{schema}".schema_version') == [(SCHEMA_VERSION,)]

    async def test_a_newer_schema_is_refused(self, store: PostgresStore, pg_dsn: str, schema: str) -> None:
        await store.close()
        sql(pg_dsn, f'UPDATE "{schema}".schema_version SET version = 99')
        newer = PostgresStore(pg_dsn, schema=schema)
        with pytest.raises(JobkitError, match="version 99, newer than this jobkit"):
            await newer.open()

    async def test_a_failing_step_leaves_nothing(
        self, pg_dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(pg, "MIGRATIONS", (pg.MIGRATIONS[0] + "; SELECT no_such_function()",))
        store = PostgresStore(pg_dsn, schema=schema)
        with pytest.raises(BackendError, match="no_such_function"):
            await store.open()
        assert sql(pg_dsn, "SELECT nspname FROM pg_namespace WHERE nspname = %s", (schema,)) == []

    async def test_a_schema_1_database_is_upgraded_with_every_row_kept(
        self, pg_dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A schema written by the first migration only (jobs of every status, audit rows,
        purge entries) is migrated to the current version: every row reads back as it was,
        and the new columns, tables and indexes work on it."""
        with monkeypatch.context() as old:
            old.setattr(pg, "MIGRATIONS", pg.MIGRATIONS[:1])
            old.setattr(pg, "SCHEMA_VERSION", 1)
            with psycopg.connect(pg_dsn, autocommit=True) as conn:
                assert pg.migrate(conn, schema) == 0
        s = f'"{schema}"'
        assert sql(pg_dsn, f"SELECT version FROM {s}.schema_version") == [(1,)]
        old_columns = pg._COLUMNS[:22]  # the jobs table of schema 1 (no run_at, key, retry)
        assert "run_at" not in {
            r[0]
            for r in sql(
                pg_dsn,
                "SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
                "AND table_name = 'jobs'",
                (schema,),
            )
        }
        jobs = [
            make_job(tenant="acme", labels={"a": "b"}, ttl=timedelta(seconds=5), priority=3),
            make_job(),
            attrs.evolve(make_job(), status=JobStatus.RUNNING, started_at=T0, attempts=1, version=2),
            attrs.evolve(
                make_job(tenant="acme"),
                status=JobStatus.FAILED,
                started_at=T0,
                finished_at=T0,
                expires_at=T0 + timedelta(days=7),
                error="boom",
                attempts=1,
                version=3,
            ),
        ]
        insert = (
            f"INSERT INTO {s}.jobs ({', '.join(old_columns)}) VALUES ({', '.join(['%s'] * len(old_columns))})"
        )
        records = [audit_record(job.id, tenant=job.tenant) for job in jobs]
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            for job in jobs:
                conn.execute(insert, pg._row(job)[:22])
            conn.execute(
                f"UPDATE {s}.jobs SET lease_owner = 'w', lease_until = %s WHERE id = %s",
                (T0, jobs[2].id),
            )
            for record in records:
                conn.execute(
                    f"INSERT INTO {s}.audit (id, at, action, actor_id, tenant, job_id, details) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    pg._audit_row(record),
                )
            conn.execute(f"INSERT INTO {s}.purges (prefix) VALUES ('jobs/gone/')")
        store = PostgresStore(pg_dsn, schema=schema)
        await store.open()
        try:
            assert sql(pg_dsn, f"SELECT version FROM {s}.schema_version") == [(SCHEMA_VERSION,)]
            for job in jobs:
                assert await store.get(job.id) == job
            listed, _ = await store.list_jobs(
                tenant=None, statuses=None, kind=None, include_deleted=True, before=None, limit=10
            )
            assert [job.id for job in listed] == [job.id for job in reversed(jobs)]
            [lease] = await store.leases(10)
            assert (lease.job, lease.owner, lease.until) == (jobs[2], "w", T0)
            assert await store.list_audit(job_id=None, tenant=None, limit=10) == records[::-1]
            assert await store.pending_purges(10) == ["jobs/gone/"]
            # What schema 2 adds works on the migrated rows.
            keyed = make_job(idempotency_key="k", tenant="acme")
            assert await store.insert(keyed) is None
            assert await store.insert(make_job(idempotency_key="k", tenant="acme")) == keyed
            later = make_job(status=JobStatus.SCHEDULED, run_at=T0)
            await store.insert(later)
            assert [job.id for job in await store.promote_due(T0, 10)] == [later.id]
            await store.add_audit(audit_record(None, action=AuditAction.PAUSE))
            assert await store.set_paused("work", True)
            assert await store.claim(now=T0, worker_id="w", lease_until=T0) is None
            assert await store.paused_kinds() == frozenset({"work"})
        finally:
            await store.close()

    async def test_promote_due_reads_only_due_jobs_through_the_run_at_index(
        self, store: PostgresStore, pg_dsn: str, schema: str
    ) -> None:
        """With thousands of jobs scheduled later and pending, promoting the few due ones
        scans the partial run_at index and reads no more rows than it promotes."""
        later = T0 + timedelta(days=1)
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            rows = [pg._row(make_job(status=JobStatus.SCHEDULED, run_at=later)) for _ in range(3000)]
            rows += [pg._row(make_job()) for _ in range(2000)]
            due_jobs = [
                make_job(status=JobStatus.SCHEDULED, run_at=T0 - timedelta(seconds=i)) for i in range(7)
            ]
            rows += [pg._row(job) for job in due_jobs]
            with conn.cursor() as cursor:
                cursor.executemany(store._sql.insert, rows)
            conn.execute(f'ANALYZE "{schema}".jobs')
        with psycopg.connect(pg_dsn) as conn:  # a transaction, rolled back: nothing promoted
            [[plan]] = conn.execute(
                "EXPLAIN (ANALYZE, FORMAT JSON) " + store._sql.promote, (T0, 100)
            ).fetchall()
            conn.rollback()

        def scans(node: dict[str, Any]) -> list[dict[str, Any]]:
            found = [node] if node.get("Relation Name") == "jobs" else []
            for child in node.get("Plans", []):
                found += scans(child)
            return found

        reads = [n for n in scans(plan[0]["Plan"]) if n["Node Type"] != "ModifyTable"]
        due = [n for n in reads if n.get("Index Name") == "jobs_due"]
        assert due, reads
        assert all(n["Node Type"] in ("Index Scan", "Index Only Scan") for n in due)
        assert sum(n["Actual Rows"] * n["Actual Loops"] for n in due) == 7
        assert not [n for n in reads if n["Node Type"] == "Seq Scan"]
        promoted = await store.promote_due(T0, 100)
        assert [job.id for job in promoted] == [job.id for job in reversed(due_jobs)]  # earliest first
        assert await store.next_due() == later


class TestScheduling:
    async def test_a_paused_kind_holds_for_claims_through_another_store(
        self, pair: tuple[PostgresStore, PostgresStore]
    ) -> None:
        """A kind paused through one store (process) is not claimed through another, by
        claim or claim_many, until it is resumed there."""
        mine, theirs = pair
        report, mail = make_job(kind="report", priority=5), make_job(kind="mail")
        for job in (report, mail):
            await mine.insert(job)
        assert await mine.set_paused("report", True)
        assert await theirs.paused_kinds() == frozenset({"report"})
        assert await theirs.set_paused("report", True) is False  # already paused, by the other
        got = await theirs.claim(now=T0, worker_id="w", lease_until=T0)
        assert got is not None
        assert got.id == mail.id
        assert await theirs.claim(now=T0, worker_id="w", lease_until=T0) is None
        assert await theirs.claim_many(now=T0, worker_id="w", lease_until=T0, kinds=["report"], limit=5) == []
        assert await mine.set_paused("report", False)
        assert await theirs.claim_many(now=T0, worker_id="w", lease_until=T0, kinds=None, limit=5) == [
            machine_start(report)
        ]

    async def test_an_insert_that_waited_on_the_keys_holder_returns_it(
        self, store: PostgresStore, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The holder of a key is inserted by a transaction still open: the store's insert
        waits for it, and once it commits (after the insert's snapshot was taken) the
        insert tries again and returns the holder; nothing else is stored."""
        holder = make_job(idempotency_key="k", tenant="t")
        tries: list[str] = []
        run = store._run
        monkeypatch.setattr(
            store, "_run", lambda sql, *args, **kw: (tries.append(sql), run(sql, *args, **kw))[1]
        )
        conn = await anyio.to_thread.run_sync(lambda: psycopg.connect(pg_dsn))
        try:
            await anyio.to_thread.run_sync(conn.execute, store._sql.insert, pg._row(holder))
            answer: list[Any] = []

            async def insert() -> None:
                answer.append(await store.insert(make_job(idempotency_key="k", tenant="t")))

            async with anyio.create_task_group() as tg:
                tg.start_soon(insert)
                # No event tells when a server session waits on a lock: look until it does.
                with anyio.fail_after(10):
                    while not sql(
                        pg_dsn,
                        "SELECT 1 FROM pg_stat_activity WHERE application_name = %s "
                        "AND wait_event_type = 'Lock'",
                        (store.application_name + " pool",),
                    ):
                        await anyio.sleep(0.01)
                await anyio.to_thread.run_sync(conn.commit)
        finally:
            await anyio.to_thread.run_sync(conn.close)
        assert answer == [holder]
        assert tries.count(store._sql.insert_keyed) == 2  # the first did not see the holder
        jobs, _ = await store.list_jobs(
            tenant="t", statuses=None, kind=None, include_deleted=True, before=None, limit=10
        )
        assert jobs == [holder]

    async def test_keyed_inserts_in_opposite_orders_never_deadlock(self, pg_dsn: str, schema: str) -> None:
        """Two stores insert the same 300 keys at once, one in the reverse order of the other:
        a keyed insert runs in a transaction of its own (it may wait on another's row), so no
        two of them wait on each other, and every key is stored once."""

        def deadlocks() -> int:
            [[count]] = sql(
                pg_dsn, "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
            )
            return int(count)

        before = deadlocks()
        stores = [PostgresStore(pg_dsn, schema=schema) for _ in range(2)]
        for s in stores:
            await s.open()
        try:
            async with anyio.create_task_group() as tg:
                for n in range(300):
                    tg.start_soon(stores[0].insert, make_job(idempotency_key=f"k{n}"))
                    tg.start_soon(stores[1].insert, make_job(idempotency_key=f"k{299 - n}"))
        finally:
            for s in stores:
                await s.close()  # a session's statistics are reported by the time it ends
        assert sql(pg_dsn, f'SELECT count(DISTINCT idempotency_key), count(*) FROM "{schema}".jobs') == [
            (300, 300)
        ]
        assert deadlocks() == before


class TestGroupedExecution:
    async def test_concurrent_writes_share_transactions_and_keep_their_own_cas(
        self, store: PostgresStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        jobs = [make_job() for _ in range(40)]
        sizes: list[int] = []
        execute = store._execute
        monkeypatch.setattr(store, "_execute", lambda group: (sizes.append(len(group)), execute(group))[1])
        results: list[bool] = []

        async def write(job: Any, expected: int) -> None:
            new = attrs.evolve(job, priority=5, version=job.version + 1)
            results.append(await store.replace(new, expected_version=expected))

        async with anyio.create_task_group() as tg:
            for job in jobs:
                tg.start_soon(store.insert, job)
        async with anyio.create_task_group() as tg:
            for job in jobs:
                tg.start_soon(write, job, job.version)
                tg.start_soon(write, job, job.version)  # the same CAS twice: one must lose
        assert max(sizes) > 1  # grouped
        assert sorted(Counter(results).items()) == [(False, 40), (True, 40)]
        for job in jobs:
            stored = await store.get(job.id)
            assert stored is not None
            assert stored.priority == 5
            assert stored.version == job.version + 1

    async def test_a_failing_statement_fails_only_its_caller(self, store: PostgresStore) -> None:
        taken = make_job()
        await store.insert(taken)
        outcomes: dict[str, BaseException | None] = {}

        async def insert(job: Any) -> None:
            try:
                await store.insert(job)
                outcomes[job.id] = None
            except JobkitError as exc:
                outcomes[job.id] = exc

        others = [make_job() for _ in range(10)]
        async with anyio.create_task_group() as tg:
            for job in others[:5]:
                tg.start_soon(insert, job)
            tg.start_soon(insert, attrs.evolve(taken))
            for job in others[5:]:
                tg.start_soon(insert, job)
        assert isinstance(outcomes[taken.id], JobkitError)
        assert "already exists" in str(outcomes[taken.id])
        assert all(outcomes[job.id] is None for job in others)
        for job in others:
            assert await store.get(job.id) is not None

    async def test_a_killed_connection_is_replaced_before_use(
        self, store: PostgresStore, pg_dsn: str
    ) -> None:
        job = make_job()
        await store.insert(job)
        killed = sql(
            pg_dsn,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s "
            "AND pid <> pg_backend_pid()",
            (store.application_name + " pool",),
        )
        assert killed
        with anyio.fail_after(10):  # pg_terminate_backend only signals: wait until they are gone
            while sql(
                pg_dsn,
                "SELECT 1 FROM pg_stat_activity WHERE application_name = %s",
                (store.application_name + " pool",),
            ):
                await anyio.sleep(0.01)
        outcomes: list[str] = []
        for _ in range(3):
            try:
                outcomes.append("ok" if await store.get(job.id) == job else "wrong")
            except BackendError:
                outcomes.append("error")
        assert outcomes == ["ok"] * 3  # the dead connections were noticed before use

    async def test_a_broken_statement_is_a_backend_error(self, store: PostgresStore) -> None:
        with pytest.raises(BackendError, match="no_such_table"):
            await store._run("SELECT * FROM no_such_table", ())
        assert await store.get("missing") is None  # the pool still works


class TestAtomicAndExclusive:
    async def test_apply_writes_audit_and_purge_only_when_the_cas_hits(self, store: PostgresStore) -> None:
        job = make_job()
        await store.insert(job)
        new = attrs.evolve(job, priority=3, version=job.version + 1)
        lost = Change(
            job_id=job.id, expected_version=job.version + 7, job=new, audit=audit_record(job.id), purge="p/"
        )
        assert await store.apply(lost) is False
        assert await store.list_audit(job_id=job.id, tenant=None, limit=10) == []
        assert await store.pending_purges(10) == []

    async def test_another_store_is_refused_while_one_holds_the_section(
        self, store: PostgresStore, pg_dsn: str, schema: str
    ) -> None:
        other = PostgresStore(pg_dsn, schema=schema)
        elsewhere = PostgresStore(pg_dsn, schema=new_schema())
        await other.open()
        await elsewhere.open()
        try:
            async with store.exclusive("jobkit.sweeper") as mine:
                assert mine
                async with other.exclusive("jobkit.sweeper") as theirs:
                    assert theirs is False
                async with other.exclusive("another") as theirs:
                    assert theirs is True
                async with elsewhere.exclusive("jobkit.sweeper") as theirs:
                    assert theirs is True  # another schema: another lock
            async with other.exclusive("jobkit.sweeper") as theirs:
                assert theirs is True
        finally:
            await other.close()
            await elsewhere.close()


class Recorder:
    """Notes a notifier delivered; wait_for() waits on an event until enough match."""

    def __init__(self) -> None:
        self.notes: list[Note] = []
        self._arrived = anyio.Event()

    def __call__(self, note: Note) -> None:
        self.notes.append(note)
        self._arrived.set()

    def count(self, want: Callable[[Note], bool]) -> int:
        return sum(1 for note in self.notes if want(note))

    async def wait_for(self, want: Callable[[Note], bool], count: int = 1, timeout: float = 10.0) -> None:
        with anyio.fail_after(timeout):
            while self.count(want) < count:
                self._arrived = anyio.Event()
                await self._arrived.wait()


def kind(k: NoteKind) -> Callable[[Note], bool]:
    return lambda note: note.kind is k


def an_event(job_id: str, data: dict[str, Any] | None = None) -> JobEvent:
    return JobEvent(
        type=EventType.COMPLETED, job_id=job_id, tenant="acme", status=JobStatus.COMPLETED, at=T0,
        data={"n": 1} if data is None else data,
    )  # fmt: skip


@pytest.fixture
async def pair(pg_dsn: str, schema: str) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two stores on one schema, as two processes would have."""
    stores = (PostgresStore(pg_dsn, schema=schema), PostgresStore(pg_dsn, schema=schema))
    for s in stores:
        await s.open()
    yield stores
    for s in stores:
        await s.close()


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait (checking every few ms) until ``check()``; for state another task changes."""
    with anyio.fail_after(timeout):
        while not check():
            await anyio.sleep(0.005)


class TestNotifier:
    async def test_wakes_cancels_and_events_cross_stores(
        self, pair: tuple[PostgresStore, PostgresStore]
    ) -> None:
        mine, theirs = pair
        sender, listener = mine.notifier(), theirs.notifier()
        got, events, own = Recorder(), Recorder(), Recorder()
        listener.listen(got)
        sender.listen(own)
        async with anyio.create_task_group() as tg:
            tg.start_soon(sender.run)
            tg.start_soon(listener.run)
            await until(lambda: sender.healthy and listener.healthy)
            # Each got one WAKE (and CHANGED) on connecting: what came before is unknown.
            assert own.count(kind(NoteKind.WAKE)) == got.count(kind(NoteKind.WAKE)) == 1
            # A wake-up reaches the other process, not our own listeners a second time.
            sender.notify(Note(kind=NoteKind.WAKE))
            await got.wait_for(kind(NoteKind.WAKE), count=2)
            # Events only once the other process listens; then they arrive as sent.
            sender.notify(Note(kind=NoteKind.EVENT, event=an_event("unheard")))
            stop = listener.listen(events, events=True)
            await until(lambda: sender.wants_events)
            sender.notify(Note(kind=NoteKind.EVENT, event=an_event("heard")))
            big = an_event("big", {"blob": "x" * 10_000})
            sender.notify(Note(kind=NoteKind.EVENT, event=big))
            await events.wait_for(lambda n: n.event is not None and n.event.job_id == "big")
            assert [n.event.job_id for n in events.notes if n.event] == ["heard", "big"]
            assert events.notes[0].event == an_event("heard")
            assert dict(events.notes[1].event.data) == {"truncated": True}  # type: ignore[union-attr]
            stop()
            await until(lambda: not sender.wants_events)
            # A cancel written by one store reaches the other with the job as written.
            job = make_job()
            await mine.insert(job)
            running = await mine.claim(now=T0, worker_id="w", lease_until=T0 + timedelta(minutes=1))
            assert running is not None
            cancelling = attrs.evolve(
                running, status=JobStatus.CANCELLING, cancel_reason="stop!", version=running.version + 1
            )
            assert await mine.replace(cancelling, expected_version=running.version)
            await got.wait_for(kind(NoteKind.CANCEL))
            note = next(n for n in got.notes if n.kind is NoteKind.CANCEL)
            assert note.job_id == job.id
            assert note.job is not None
            assert note.job.cancel_reason == "stop!"
            tg.cancel_scope.cancel()
        assert own.count(kind(NoteKind.WAKE)) == 2  # on connecting, and the local delivery

    async def test_a_lost_cancel_sends_no_note(self, pair: tuple[PostgresStore, PostgresStore]) -> None:
        mine, theirs = pair
        listener = theirs.notifier()
        got = Recorder()
        listener.listen(got)
        job = make_job()
        await mine.insert(job)
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.run)
            await until(lambda: listener.healthy)
            cancelling = attrs.evolve(job, status=JobStatus.CANCELLING, version=job.version + 1)
            assert not await mine.replace(cancelling, expected_version=job.version + 5)
            assert not await mine.apply(Change(job_id=job.id, expected_version=99, job=cancelling))
            listener.notify(Note(kind=NoteKind.WAKE))  # a marker after them
            await until(lambda: bool(listener._ping_sent == 0 and listener.connects))
            await mine.replace(attrs.evolve(job, version=job.version + 1), expected_version=job.version)
            other = attrs.evolve(job, status=JobStatus.CANCELLING, version=job.version + 2)
            assert await mine.apply(Change(job_id=job.id, expected_version=job.version + 1, job=other))
            await got.wait_for(kind(NoteKind.CANCEL))
            assert got.count(kind(NoteKind.CANCEL)) == 1
            tg.cancel_scope.cancel()

    async def test_payloads_stay_under_the_notify_limit(self) -> None:
        event = an_event("j" * 100, {"text": "é" * 5000})
        payload = event_payload("origin", 1, event)
        assert len(payload.encode()) <= MAX_PAYLOAD
        assert '"truncated":true' in payload
        small = event_payload("origin", 2, an_event("j"))
        assert '"n":1' in small

    async def test_a_lost_listener_reconnects_rechecks_and_marks_subscriptions(
        self, store: PostgresStore, pg_dsn: str
    ) -> None:
        notifier: PostgresNotifier = store.notifier()
        notes, events = Recorder(), Recorder()
        notifier.listen(notes)
        notifier.listen(events, events=True)
        async with anyio.create_task_group() as tg:
            tg.start_soon(notifier.run)
            await until(lambda: notifier.healthy and notifier._listening_events)
            sql(
                pg_dsn,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                (store.application_name + " listener",),
            )
            # One re-check on connecting, one after reconnecting.
            await notes.wait_for(lambda n: n.kind is NoteKind.CHANGED and n.job_id is None, count=2)
            assert notifier.connects == 2
            await events.wait_for(lambda n: n.event is not None and n.event.type is EventType.OVERFLOW)
            assert notes.count(kind(NoteKind.WAKE)) >= 2
            # It works again: a wake from another store arrives.
            other = PostgresStore(pg_dsn, schema=store.schema)
            await other.open()
            try:
                sender = other.notifier()
                tg.start_soon(sender.run)
                await until(lambda: sender.healthy and notifier.healthy)
                before = notes.count(kind(NoteKind.WAKE))
                sender.notify(Note(kind=NoteKind.WAKE))
                await notes.wait_for(kind(NoteKind.WAKE), count=before + 1)
            finally:
                tg.cancel_scope.cancel()
                await other.close()

    async def test_a_silent_listener_is_detected_by_its_probe(
        self, store: PostgresStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A probe that never comes back (a half-open connection) makes it reconnect."""
        from jobkit.stores import _postgres_notify

        monkeypatch.setattr(_postgres_notify, "PING_EVERY", 0.05)
        monkeypatch.setattr(_postgres_notify, "PING_TIMEOUT", 0.2)
        notifier = store.notifier()
        sent: list[str] = []

        async def swallow(payloads: list[tuple[str, str]]) -> None:
            sent.extend(p for _, p in payloads)  # probes go nowhere

        monkeypatch.setattr(PostgresNotifier, "_notify_all", lambda self, payloads: swallow(payloads))
        async with anyio.create_task_group() as tg:
            tg.start_soon(notifier.run)
            await until(lambda: notifier.connects >= 2)
            tg.cancel_scope.cancel()
        assert any(p.startswith("p ") for p in sent)


async def _hang(ctx: JobContext, payload: Any) -> None:
    while True:
        await ctx.checkpoint()
        await anyio.sleep(0.005)


class TestThroughManagers:
    async def test_a_cancel_in_one_manager_stops_the_handler_in_another(
        self, pg_dsn: str, schema: str
    ) -> None:
        front = JobManager(
            PostgresStore(pg_dsn, schema=schema), concurrency=0, sweep_interval=None, poll_interval=0.05
        )
        back = JobManager(PostgresStore(pg_dsn, schema=schema), sweep_interval=None, poll_interval=30)
        started = anyio.Event()

        async def hang(ctx: JobContext, payload: Any) -> None:
            started.set()
            await _hang(ctx, payload)

        back.register("hang", hang)
        front.declare("hang")
        async with front, back:
            job = await front.submit("hang")
            with anyio.fail_after(5):  # the wake-up, not back's 30 s poll
                await started.wait()
            await front.cancel(job.id, reason="enough")
            done = await front.wait(job.id, timeout=5)
        assert done.status is JobStatus.CANCELLED
        assert done.cancel_reason == "enough"


# -- real processes --------------------------------------------------------------------


class Worker:
    """A tests/postgres_worker.py process, read line by line."""

    def __init__(self, process: Process) -> None:
        self.process = process
        assert process.stdout is not None
        self._out = BufferedByteReceiveStream(process.stdout)

    async def line(self, timeout: float = 30.0) -> str:
        with anyio.fail_after(timeout):
            return (await self._out.receive_until(b"\n", 65536)).decode()

    async def expect(self, word: str, timeout: float = 30.0) -> list[str]:
        """The next line starting with ``word``, split (other lines are skipped)."""
        with anyio.fail_after(timeout):
            while True:
                parts = (await self.line(timeout)).split(" ")
                if parts[0] == word:
                    return parts

    async def say(self, text: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send(text.encode())


async def start_worker(mode: str, backend: str, dsn: str, schema: str, *args: str, **env: str) -> Worker:
    import os

    process = await anyio.open_process(
        [sys.executable, str(HERE / "postgres_worker.py"), mode, backend, dsn, schema, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, **env},
    )
    return Worker(process)


async def stop_worker(worker: Worker) -> None:
    with anyio.CancelScope(shield=True):
        if worker.process.returncode is None:
            worker.process.terminate()
            with anyio.move_on_after(10):
                await worker.process.wait()
            if worker.process.returncode is None:
                worker.process.kill()
                await worker.process.wait()
        await worker.process.aclose()


class TestProcesses:
    @pytest.mark.timeout(180)
    async def test_three_processes_run_each_of_6000_jobs_exactly_once(
        self, pg_dsn: str, schema: str, tmp_path: Path, anyio_backend: str
    ) -> None:
        front = JobManager(PostgresStore(pg_dsn, schema=schema), concurrency=0, sweep_interval=None)
        front.declare("mark")
        async with front:
            ids: list[str] = []

            async def submit(n: int) -> None:
                for _ in range(n):
                    ids.append((await front.submit("mark")).id)

            async with anyio.create_task_group() as tg:
                for _ in range(20):
                    tg.start_soon(submit, 300)
        outs = [tmp_path / f"out{i}" for i in range(3)]
        workers = [await start_worker("drain", anyio_backend, pg_dsn, schema, str(out)) for out in outs]
        try:
            with anyio.fail_after(150):
                for worker in workers:
                    await worker.process.wait()
        finally:
            for worker in workers:
                await stop_worker(worker)
        assert [w.process.returncode for w in workers] == [0, 0, 0]
        runs = Counter(line for out in outs for line in out.read_text().split())
        assert set(runs) == set(ids)
        assert len(ids) == 6000
        assert max(runs.values()) == 1
        assert sum(1 for out in outs if out.read_text()) == 3  # every process took part
        rows = sql(pg_dsn, f'SELECT status, attempts, count(*) FROM "{schema}".jobs GROUP BY 1, 2')
        assert rows == [("completed", 1, 6000)]

    @pytest.mark.timeout(90)
    async def test_a_submit_wakes_an_idle_process_and_its_cancel_stops_the_handler_there(
        self, pg_dsn: str, schema: str, anyio_backend: str
    ) -> None:
        """B polls every 30 s and renews leases every 20 s: the start and the stop both come
        through LISTEN/NOTIFY."""
        worker = await start_worker("serve", anyio_backend, pg_dsn, schema)
        front = JobManager(
            PostgresStore(pg_dsn, schema=schema), concurrency=0, sweep_interval=None, poll_interval=0.05
        )
        front.declare("hang")
        try:
            await worker.expect("ready")
            async with front:
                await anyio.sleep(0.3)  # B is idle, its first claims long done
                started = time.perf_counter()
                job = await front.submit("hang")
                assert (await worker.expect("started", timeout=5))[1] == job.id
                wake = time.perf_counter() - started
                started = time.perf_counter()
                await front.cancel(job.id, reason="from-A")
                assert (await worker.expect("stopped", timeout=5))[1:] == [job.id, "from-A\n"[:-1]]
                stop = time.perf_counter() - started
                done = await front.wait(job.id, timeout=10)
            assert done.status is JobStatus.CANCELLED
            assert wake < 3.0, wake
            assert stop < 3.0, stop
        finally:
            await stop_worker(worker)

    @pytest.mark.timeout(90)
    async def test_subscribe_in_one_process_sees_anothers_events(
        self, pg_dsn: str, schema: str, anyio_backend: str
    ) -> None:
        worker = await start_worker("serve", anyio_backend, pg_dsn, schema)
        front = JobManager(PostgresStore(pg_dsn, schema=schema), concurrency=0, sweep_interval=None)
        front.declare("mark")
        try:
            await worker.expect("ready")
            async with front, front.subscribe() as events:
                await worker.expect("peers", timeout=10)  # B knows someone listens
                job = await front.submit("mark")
                seen: list[str] = []
                with anyio.fail_after(10):
                    async for event in events:
                        if event.job_id == job.id:
                            seen.append(event.type)
                        if event.type == "completed":
                            break
            assert seen == ["submitted", "started", "completed"]
        finally:
            await stop_worker(worker)

    @pytest.mark.timeout(90)
    async def test_a_job_of_a_killed_process_is_recovered_by_another(
        self, pg_dsn: str, schema: str, anyio_backend: str
    ) -> None:
        doomed = await start_worker("serve", anyio_backend, pg_dsn, schema, LEASE="1")
        front = JobManager(PostgresStore(pg_dsn, schema=schema), concurrency=0, sweep_interval=None)
        front.declare("hang")
        rescuer: Worker | None = None
        try:
            await doomed.expect("ready")
            async with front:
                job = await front.submit("hang", max_attempts=2)
                assert (await doomed.expect("started"))[1:] == [job.id, "1\n"[:-1]]
                doomed.process.send_signal(signal.SIGKILL)
                await doomed.process.wait()
                rescuer = await start_worker("serve", anyio_backend, pg_dsn, schema, LEASE="1", SWEEP="0.2")
                assert (await rescuer.expect("started", timeout=30))[1:] == [job.id, "2"]
                recovered = await front.get(job.id)
            assert recovered.status is JobStatus.RUNNING
            assert recovered.attempts == 2
            audit = sql(pg_dsn, f'SELECT action FROM "{schema}".audit WHERE job_id = %s', (job.id,))
            assert audit == [("recover",)]
        finally:
            await stop_worker(doomed)
            if rescuer is not None:
                await stop_worker(rescuer)

    @pytest.mark.timeout(90)
    async def test_two_processes_sweeping_at_once_never_double_act(
        self, pg_dsn: str, schema: str, anyio_backend: str
    ) -> None:
        """With the sweeper's lock disabled, two processes sweep the same 200 lost leases,
        100 expired jobs and purge entries at once: each is handled exactly once."""
        store = PostgresStore(pg_dsn, schema=schema)
        await store.open()
        try:
            past = datetime.now(UTC) - timedelta(days=1)
            lost = [
                attrs.evolve(make_job(), status=JobStatus.RUNNING, started_at=past, attempts=1, version=2)
                for _ in range(200)
            ]
            for job in lost:
                await store.insert(job)
            sql(pg_dsn, f"UPDATE \"{schema}\".jobs SET lease_owner = 'dead', lease_until = %s", (past,))
            expired = [
                attrs.evolve(
                    make_job(),
                    status=JobStatus.COMPLETED,
                    started_at=past,
                    finished_at=past,
                    attempts=1,
                    version=2,
                    expires_at=past,
                )
                for _ in range(100)
            ]
            for job in expired:
                await store.insert(job)
        finally:
            await store.close()
        sweepers = [await start_worker("sweep", anyio_backend, pg_dsn, schema) for _ in range(2)]
        try:
            for sweeper in sweepers:
                await sweeper.expect("ready")
            for sweeper in sweepers:
                await sweeper.say("go\n")
            reports = [json.loads(await sweeper.line(60)) for sweeper in sweepers]
        finally:
            for sweeper in sweepers:
                await stop_worker(sweeper)
        assert sum(r["recovered"] for r in reports) == 200
        assert sum(r["expired"] for r in reports) == 100
        actions = Counter(
            (job_id, action) for job_id, action in sql(pg_dsn, f'SELECT job_id, action FROM "{schema}".audit')
        )
        assert max(actions.values()) == 1
        assert Counter(action for _, action in actions) == {"recover": 200, "expire": 100}

    @pytest.mark.timeout(90)
    async def test_processes_inserting_one_key_at_once_store_exactly_one_job(
        self, pg_dsn: str, schema: str, anyio_backend: str
    ) -> None:
        """Four processes insert a job for each of 40 idempotency keys at the same moment:
        per key exactly one job is stored (with or without a tenant), and every process got
        that job's id back."""
        keys = 40
        inserters = [await start_worker("insert", anyio_backend, pg_dsn, schema, str(keys)) for _ in range(4)]
        try:
            for inserter in inserters:
                await inserter.expect("ready")
            for inserter in inserters:
                await inserter.say("go\n")
            answers = [json.loads(await inserter.line(60)) for inserter in inserters]
        finally:
            for inserter in inserters:
                await stop_worker(inserter)
        stored = {
            (tenant, key): job_id
            for job_id, tenant, key in sql(pg_dsn, f'SELECT id, tenant, idempotency_key FROM "{schema}".jobs')
        }
        assert len(stored) == keys
        for n in range(keys):
            key = f"key-{n}"
            [job_id] = {answer[key][0] for answer in answers}
            assert stored["t" if n % 2 == 0 else None, key] == job_id
            assert sum(answer[key][1] for answer in answers) == 1  # one process stored it


class TestFallback:
    async def test_without_a_listener_polling_still_starts_and_cancels_within_poll_interval(
        self, pg_dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A listener that never connects (NOTIFY lost): the poll timer claims and the
        heartbeat finds the cancel, each within about poll_interval."""

        async def refuse(self: PostgresNotifier) -> None:
            raise OSError("no listener today")

        monkeypatch.setattr(PostgresNotifier, "_connect", refuse)
        poll = 0.2
        front = JobManager(
            PostgresStore(pg_dsn, schema=schema), concurrency=0, sweep_interval=None, poll_interval=poll
        )
        back = JobManager(PostgresStore(pg_dsn, schema=schema), sweep_interval=None, poll_interval=poll)
        stopped = anyio.Event()

        started = anyio.Event()

        async def hang(ctx: JobContext, payload: Any) -> None:
            started.set()
            try:
                await _hang(ctx, payload)
            finally:
                stopped.set()

        back.register("hang", hang)
        front.declare("hang")
        async with front, back:
            job = await front.submit("hang")
            with anyio.fail_after(poll * 10):
                await started.wait()
            await front.cancel(job.id)
            with anyio.fail_after(poll * 10):
                await stopped.wait()
            assert not back._notifier.healthy  # type: ignore[attr-defined]
