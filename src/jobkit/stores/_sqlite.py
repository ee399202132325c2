"""SQLiteStore: jobs in one SQLite file, shared safely by several processes.

Python's own ``sqlite3`` in WAL mode, driven from anyio worker threads so it works on
asyncio and trio. Calls that arrive while a transaction is running are grouped into the
next one (group commit): one thread hop and one commit for many operations, each in its
own savepoint so one failing operation never undoes another.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import attrs

from .._errors import BackendError, JobkitError
from .._records import EMPTY_MAPPING, AuditAction, AuditRecord, Job, JobStatus, build_job

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

T = TypeVar("T")

#: ``PRAGMA application_id`` of a jobkit database ("jobk").
APPLICATION_ID = 0x6A6F626B

_COLUMNS = (
    "id", "kind", "status", "payload", "tenant", "priority", "progress", "progress_message",
    "result", "error", "cancel_reason", "created_at", "started_at", "finished_at",
    "expires_at", "deleted_at", "version", "attempts", "max_attempts", "ttl", "timeout",
    "labels",
)  # fmt: skip
if tuple(field.name for field in attrs.fields(Job)) != _COLUMNS:  # pragma: no cover
    raise ImportError("jobkit.stores._sqlite: _COLUMNS must list Job's fields in order")
_SELECT = ", ".join(_COLUMNS)
_ACTIVE = ("running", "cancelling")

# Forward migrations: MIGRATIONS[n] takes a database from schema n to n + 1.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        status TEXT NOT NULL,
        payload TEXT NOT NULL,
        tenant TEXT,
        priority INTEGER NOT NULL,
        progress REAL,
        progress_message TEXT,
        result TEXT NOT NULL,
        error TEXT,
        cancel_reason TEXT,
        created_at INTEGER NOT NULL,
        started_at INTEGER,
        finished_at INTEGER,
        expires_at INTEGER,
        deleted_at INTEGER,
        version INTEGER NOT NULL,
        attempts INTEGER NOT NULL,
        max_attempts INTEGER NOT NULL,
        ttl INTEGER,
        timeout INTEGER,
        labels TEXT,
        lease_owner TEXT,
        lease_until INTEGER
    );
    CREATE INDEX jobs_claim ON jobs (status, priority DESC, seq);
    CREATE INDEX jobs_tenant ON jobs (tenant, seq);
    CREATE INDEX jobs_tenant_status ON jobs (tenant, status, seq);
    CREATE INDEX jobs_status ON jobs (status, seq);
    CREATE INDEX jobs_kind ON jobs (kind, seq);
    CREATE INDEX jobs_expiry ON jobs (expires_at) WHERE expires_at IS NOT NULL;
    CREATE INDEX jobs_deleted ON jobs (deleted_at) WHERE deleted_at IS NOT NULL;
    CREATE INDEX jobs_lease ON jobs (lease_until) WHERE lease_until IS NOT NULL;
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        at INTEGER NOT NULL,
        action TEXT NOT NULL,
        actor_id TEXT,
        tenant TEXT,
        job_id TEXT NOT NULL,
        details TEXT NOT NULL
    );
    CREATE INDEX audit_at ON audit (at);
    CREATE INDEX audit_job ON audit (job_id, seq);
    CREATE INDEX audit_tenant ON audit (tenant, seq);
    CREATE TABLE purges (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        prefix TEXT NOT NULL UNIQUE
    );
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_dumps = json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(",", ":")).encode
_loads = json.loads


def _micros(value: datetime | None) -> int | None:
    if value is None:
        return None
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _time(value: int | None) -> datetime | None:
    return None if value is None else _EPOCH + timedelta(microseconds=value)


def _span(value: timedelta | None) -> int | None:
    return None if value is None else (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds


def _duration(value: int | None) -> timedelta | None:
    return None if value is None else timedelta(microseconds=value)


def _row(job: Job) -> tuple[Any, ...]:
    return (
        job.id, job.kind, job.status.value, _dumps(job.payload), job.tenant, job.priority,
        job.progress, job.progress_message, _dumps(job.result), job.error, job.cancel_reason,
        _micros(job.created_at), _micros(job.started_at), _micros(job.finished_at),
        _micros(job.expires_at), _micros(job.deleted_at), job.version, job.attempts,
        job.max_attempts, _span(job.ttl), _span(job.timeout),
        _dumps(dict(job.labels)) if job.labels else None,
    )  # fmt: skip


_STATUS = {status.value: status for status in JobStatus}


def _job(row: Sequence[Any]) -> Job:
    return build_job((
        row[0], row[1], _STATUS[row[2]], _loads(row[3]), row[4], row[5], row[6], row[7],
        _loads(row[8]), row[9], row[10], _time(row[11]), _time(row[12]), _time(row[13]),
        _time(row[14]), _time(row[15]), row[16], row[17], row[18], _duration(row[19]),
        _duration(row[20]), MappingProxyType(_loads(row[21])) if row[21] else EMPTY_MAPPING,
    ))  # fmt: skip


class _Op:
    __slots__ = ("args", "done", "error", "fn", "result")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn  # an operation of more than one statement is marked `fn.multi = True`
        self.args = args
        self.result: Any = None
        self.error: BaseException | None = None
        self.done: anyio.Event | None = None


class SQLiteStore:
    """A :class:`~jobkit.abc.JobStore` in one SQLite file; several processes may share it.

    :param path: the database file; created (with its schema) if missing.
    :param busy_timeout: seconds to wait for another process's write lock.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 10.0) -> None:
        self.path = os.fspath(path)
        self._busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._queue: list[_Op] = []
        self._draining = False

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    # -- connection and schema -----------------------------------------------------------

    async def open(self) -> None:
        if self._conn is None:
            self._conn = await anyio.to_thread.run_sync(self._connect)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await anyio.to_thread.run_sync(conn.close)

    def _fail(self, problem: str) -> JobkitError:
        return JobkitError(f"Cannot use {self.path!r} as a jobkit database: {problem}")

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise self._fail(str(exc)) from exc
        try:
            self._check_and_migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _check_and_migrate(self, conn: sqlite3.Connection) -> None:
        # Read before writing anything: a foreign or corrupt file must stay untouched.
        try:
            application_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise self._fail(f"the file is not a SQLite database or is corrupt ({exc}).") from exc
        if application_id != APPLICATION_ID and (application_id != 0 or tables):
            raise self._fail("it is a database of another application, not a jobkit database.")
        if version > SCHEMA_VERSION:
            raise self._fail(
                f"it was written by a newer jobkit (schema {version}; this jobkit knows up to "
                f"{SCHEMA_VERSION}). Upgrade jobkit to open it."
            )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            if version < SCHEMA_VERSION:
                conn.execute("BEGIN IMMEDIATE")
                # Re-read under the write lock: another process may have migrated meanwhile.
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                for step in MIGRATIONS[version:]:
                    for statement in step.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            if conn.in_transaction:
                conn.rollback()
            raise self._fail(str(exc)) from exc

    # -- group commit ----------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._conn is None:
            raise JobkitError(f"{self!r} is not open: the JobManager opens it in `async with`.")
        op = _Op(fn, args)
        self._queue.append(op)
        if self._draining:
            op.done = anyio.Event()
            try:
                await op.done.wait()
            except anyio.get_cancelled_exc_class():
                if op in self._queue:  # not started: withdraw it
                    self._queue.remove(op)
                else:  # running now: let it finish so the caller's view stays true
                    with anyio.CancelScope(shield=True):
                        await op.done.wait()
                raise
        else:
            await self._drain()
        if op.error is not None:
            raise op.error
        return op.result  # type: ignore[no-any-return]

    async def _drain(self) -> None:
        """Run queued operations, batch after batch, until the queue is empty."""
        self._draining = True
        try:
            # Shielded: the waiters of a batch must hear its outcome even if we are cancelled.
            with anyio.CancelScope(shield=True):
                while self._queue:
                    batch, self._queue = self._queue, []
                    await anyio.to_thread.run_sync(self._run_batch, batch)
                    for op in batch:
                        if op.done is not None:
                            op.done.set()
        finally:
            self._draining = False

    def _run_batch(self, batch: list[_Op]) -> None:
        conn = self._conn
        assert conn is not None
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            error = BackendError(f"SQLite store {self.path!r} is unavailable: {exc}")
            for op in batch:
                op.error = error
            return
        for op in batch:
            conn.execute("SAVEPOINT op")
            try:
                op.result = op.fn(conn, *op.args)
            except Exception as exc:
                conn.execute("ROLLBACK TO op")
                op.error = exc if isinstance(exc, JobkitError) else BackendError(f"SQLite error: {exc}")
            conn.execute("RELEASE op")
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.rollback()
            error = BackendError(f"SQLite commit failed for {self.path!r}: {exc}")
            for op in batch:
                op.error, op.result = error, None

    # -- jobs ------------------------------------------------------------------------------

    async def insert(self, job: Job) -> None:
        await self._run(_insert, _row(job))

    async def get(self, job_id: str) -> Job | None:
        return await self._run(_get, job_id)

    async def replace(self, job: Job, *, expected_version: int) -> bool:
        active = job.status.value in _ACTIVE
        return await self._run(_replace, (*_changes(job), active, active, job.id, expected_version))

    async def remove(self, job_id: str, *, expected_version: int) -> bool:
        return await self._run(_remove, job_id, expected_version)

    async def claim(self, *, now: datetime, worker_id: str, lease_until: datetime) -> Job | None:
        return await self._run(_claim, _micros(now), worker_id, _micros(lease_until))

    async def list_jobs(
        self,
        *,
        tenant: str | None,
        statuses: Collection[JobStatus] | None,
        kind: str | None,
        include_deleted: bool,
        before: int | None,
        limit: int,
    ) -> tuple[list[Job], int | None]:
        where: list[str] = []
        params: list[Any] = []
        if tenant is not None:
            where.append("tenant = ?")
            params.append(tenant)
        if statuses is not None:
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            params.extend(s.value for s in statuses)
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        if not include_deleted:
            where.append("deleted_at IS NULL")
        if before is not None:
            where.append("seq < ?")
            params.append(before)
        sql = f"SELECT seq, {_SELECT} FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ?"
        params.append(limit + 1)
        rows = await self._run(_fetch, sql, tuple(params))
        jobs = [_job(row[1:]) for row in rows[:limit]]
        next_before = rows[limit - 1][0] if len(rows) > limit else None
        return jobs, next_before

    async def position(self, job_id: str) -> int | None:
        return await self._run(_position, job_id)

    async def expired(self, now: datetime, limit: int) -> list[Job]:
        rows = await self._run(
            _fetch,
            f"SELECT {_SELECT} FROM jobs WHERE expires_at <= ? ORDER BY expires_at LIMIT ?",
            (_micros(now), limit),
        )
        return [_job(row) for row in rows]

    async def soft_deleted_before(self, cutoff: datetime, limit: int) -> list[Job]:
        rows = await self._run(
            _fetch,
            f"SELECT {_SELECT} FROM jobs WHERE deleted_at <= ? ORDER BY deleted_at LIMIT ?",
            (_micros(cutoff), limit),
        )
        return [_job(row) for row in rows]

    async def renew_leases(self, worker_id: str, job_ids: Sequence[str], lease_until: datetime) -> list[Job]:
        return await self._run(_renew, worker_id, tuple(job_ids), _micros(lease_until))

    async def expired_leases(self, now: datetime, limit: int) -> list[Job]:
        rows = await self._run(
            _fetch,
            f"SELECT {_SELECT} FROM jobs WHERE lease_until < ? "
            "AND status IN ('running', 'cancelling') ORDER BY lease_until LIMIT ?",
            (_micros(now), limit),
        )
        return [_job(row) for row in rows]

    # -- audit and purge queue -------------------------------------------------------------

    async def add_audit(self, record: AuditRecord) -> None:
        await self._run(
            _execute,
            "INSERT INTO audit (id, at, action, actor_id, tenant, job_id, details) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                record.id, _micros(record.at), record.action.value, record.actor_id,
                record.tenant, record.job_id, _dumps(dict(record.details)),
            ),
        )  # fmt: skip

    async def list_audit(self, *, job_id: str | None, tenant: str | None, limit: int) -> list[AuditRecord]:
        where: list[str] = []
        params: list[Any] = []
        if job_id is not None:
            where.append("job_id = ?")
            params.append(job_id)
        if tenant is not None:
            where.append("tenant = ?")
            params.append(tenant)
        sql = "SELECT id, at, action, actor_id, tenant, job_id, details FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ?"
        params.append(limit)
        rows = await self._run(_fetch, sql, tuple(params))
        return [
            AuditRecord(
                id=r[0], at=_time(r[1]), action=AuditAction(r[2]), actor_id=r[3],  # type: ignore[arg-type]
                tenant=r[4], job_id=r[5], details=_loads(r[6]),
            )
            for r in rows
        ]  # fmt: skip

    async def remove_audit_before(self, cutoff: datetime) -> int:
        return await self._run(_execute, "DELETE FROM audit WHERE at < ?", (_micros(cutoff),))

    async def add_purge(self, prefix: str) -> None:
        await self._run(_execute, "INSERT OR IGNORE INTO purges (prefix) VALUES (?)", (prefix,))

    async def pending_purges(self, limit: int) -> list[str]:
        rows = await self._run(_fetch, "SELECT prefix FROM purges ORDER BY seq LIMIT ?", (limit,))
        return [row[0] for row in rows]

    async def remove_purge(self, prefix: str) -> None:
        await self._run(_execute, "DELETE FROM purges WHERE prefix = ?", (prefix,))


# Operations, run in the store's thread inside a transaction.

_INSERT = f"INSERT INTO jobs ({_SELECT}) VALUES ({', '.join('?' * len(_COLUMNS))})"
# What replace() writes: the fields that change over a job's life. The others (id, kind,
# payload, tenant, created_at, max_attempts, ttl, timeout, labels) are fixed at insert, so
# their indexes are never touched by an update.
_MUTABLE = (
    "status", "priority", "progress", "progress_message", "result", "error", "cancel_reason",
    "started_at", "finished_at", "expires_at", "deleted_at", "version", "attempts",
)  # fmt: skip
_UPDATE = (
    "UPDATE jobs SET "
    + ", ".join(f"{c} = ?" for c in _MUTABLE)
    + ", lease_owner = CASE WHEN ? THEN lease_owner END"
    + ", lease_until = CASE WHEN ? THEN lease_until END"
    + " WHERE id = ? AND version = ?"
)
_CLAIM = (
    "UPDATE jobs SET status = 'running', started_at = ?, attempts = attempts + 1, "
    "progress = NULL, progress_message = NULL, version = version + 1, "
    "lease_owner = ?, lease_until = ? "
    "WHERE seq = (SELECT seq FROM jobs WHERE status = 'pending' ORDER BY priority DESC, seq LIMIT 1) "
    f"RETURNING {_SELECT}"
)


def _insert(conn: sqlite3.Connection, row: tuple[Any, ...]) -> None:
    try:
        conn.execute(_INSERT, row)
    except sqlite3.IntegrityError:
        raise JobkitError(f"A job with id {row[0]!r} already exists.") from None


def _get(conn: sqlite3.Connection, job_id: str) -> Job | None:
    row = conn.execute(f"SELECT {_SELECT} FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return None if row is None else _job(row)


def _changes(job: Job) -> tuple[Any, ...]:
    return (
        job.status.value, job.priority, job.progress, job.progress_message, _dumps(job.result),
        job.error, job.cancel_reason, _micros(job.started_at), _micros(job.finished_at),
        _micros(job.expires_at), _micros(job.deleted_at), job.version, job.attempts,
    )  # fmt: skip


def _replace(conn: sqlite3.Connection, values: tuple[Any, ...]) -> bool:
    return conn.execute(_UPDATE, values).rowcount == 1


def _remove(conn: sqlite3.Connection, job_id: str, expected: int) -> bool:
    cursor = conn.execute("DELETE FROM jobs WHERE id = ? AND version = ?", (job_id, expected))
    return cursor.rowcount == 1


def _claim(conn: sqlite3.Connection, now: int, worker_id: str, lease_until: int) -> Job | None:
    row = conn.execute(_CLAIM, (now, worker_id, lease_until)).fetchone()
    return None if row is None else _job(row)


def _position(conn: sqlite3.Connection, job_id: str) -> int | None:
    row = conn.execute(
        "SELECT priority, seq FROM jobs WHERE id = ? AND status = 'pending'", (job_id,)
    ).fetchone()
    if row is None:
        return None
    ahead = conn.execute(
        "SELECT count(*) FROM jobs WHERE status = 'pending' AND (priority > ? OR (priority = ? AND seq < ?))",
        (row[0], row[0], row[1]),
    ).fetchone()[0]
    return int(ahead) + 1


def _renew(conn: sqlite3.Connection, worker_id: str, job_ids: tuple[str, ...], lease_until: int) -> list[Job]:
    found: list[Job] = []
    for start in range(0, len(job_ids), 500):
        chunk = job_ids[start : start + 500]
        marks = ", ".join("?" * len(chunk))
        conn.execute(
            f"UPDATE jobs SET lease_until = ? WHERE lease_owner = ? AND id IN ({marks}) "
            "AND status IN ('running', 'cancelling')",
            (lease_until, worker_id, *chunk),
        )
        rows = conn.execute(
            f"SELECT {_SELECT} FROM jobs WHERE lease_owner = ? AND id IN ({marks}) "
            "AND status IN ('running', 'cancelling')",
            (worker_id, *chunk),
        ).fetchall()
        found.extend(_job(row) for row in rows)
    return found


_position.multi = True  # type: ignore[attr-defined]
_renew.multi = True  # type: ignore[attr-defined]


def _fetch(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[Any]:
    return conn.execute(sql, params).fetchall()


def _execute(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> int:
    return conn.execute(sql, params).rowcount
