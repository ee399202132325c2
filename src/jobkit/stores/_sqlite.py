"""SQLiteStore: jobs in one SQLite file, shared safely by several processes.

Python's own ``sqlite3`` in WAL mode, on asyncio and trio. Operations run on the event
loop's thread, grouped: an operation first yields once (a cancel-shielded checkpoint) so
that the operations other ready tasks start meanwhile join it, then the whole group runs
in one transaction (group commit; an operation alone runs in autocommit mode). Inline work
never waits for another process's lock, and never runs long: the connection's busy timeout
is 0 there, and a group that finds the database locked, or still runs after
``INLINE_BUDGET`` seconds, is undone and runs again in a worker thread (which waits up to
``busy_timeout`` for locks).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from types import MappingProxyType, MemberDescriptorType
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread
import attrs

from .._errors import BackendError, JobkitError
from .._records import EMPTY_MAPPING, AuditAction, AuditRecord, Job, JobStatus, Retry, Schedule
from ..abc import Lease

if TYPE_CHECKING:
    from ..abc import Change
    from ._sqlite_notify import SQLiteNotifier

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]

T = TypeVar("T")

#: ``PRAGMA application_id`` of a jobkit database ("jobk").
APPLICATION_ID = 0x6A6F626B
#: Page size of new database files. Every commit writes each page it changed to the WAL,
#: so small pages make the small transactions of a job queue much cheaper (measured: about
#: a third less time per job than 4 KiB pages). Existing files keep their page size.
PAGE_SIZE = 1024

#: WAL size at which a commit checkpoints it into the database file.
WAL_CHECKPOINT_BYTES = 4 * 1024 * 1024

_COLUMNS = (
    "id", "kind", "status", "payload", "tenant", "priority", "progress", "progress_message",
    "result", "error", "cancel_reason", "created_at", "started_at", "finished_at",
    "expires_at", "deleted_at", "version", "attempts", "max_attempts", "ttl", "timeout",
    "labels", "run_at", "idempotency_key", "retry",
)  # fmt: skip
if tuple(field.name for field in attrs.fields(Job)) != _COLUMNS:  # pragma: no cover
    raise ImportError("jobkit.stores._sqlite: _COLUMNS must list Job's fields in order")
_SELECT = ", ".join(_COLUMNS)
#: After this many store calls in a row, one yields to the event loop (see ``_run``).
INLINE_STREAK = 32
_ACTIVE = ("running", "cancelling")

# The jobs table as schema 2 has it (schema 1 had AUTOINCREMENT on seq: see MIGRATIONS[1]).
_JOBS_TABLE = """
    CREATE TABLE {name} (
        seq INTEGER PRIMARY KEY,
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
    )
"""

# Forward migrations: MIGRATIONS[n] takes a database from schema n to n + 1. Each is a script
# of statements, one or more lines each; the steps run in one transaction.
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
    # Schema 2: a leaner write path, and the tables of cross-process events.
    # - jobs.seq without AUTOINCREMENT (which costs a write to sqlite_sequence per insert);
    #   SQLite can only drop it by rebuilding the table. `seq_floor` keeps seq from going
    #   back below a value once handed out, as AUTOINCREMENT did (see _INSERT).
    # - the claim index holds pending jobs only: starting and finishing jobs no longer move
    #   entries in it. The listing indexes stay (tenant, tenant+status, status, kind); the
    #   tenant ones hold only jobs with a tenant (listing by tenant always names one), so
    #   jobs without a tenant cost two indexes less.
    """
    """
    + _JOBS_TABLE.format(name="jobs_v2")
    + """;
    INSERT INTO jobs_v2 SELECT * FROM jobs;
    CREATE TABLE seq_floor (name TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
    INSERT INTO seq_floor SELECT 'jobs', coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'jobs';
    DROP TABLE jobs;
    DELETE FROM sqlite_sequence WHERE name = 'jobs';
    ALTER TABLE jobs_v2 RENAME TO jobs;
    CREATE TRIGGER jobs_seq_floor AFTER DELETE ON jobs
        WHEN old.seq > coalesce((SELECT max(seq) FROM jobs), 0)
        BEGIN INSERT OR REPLACE INTO seq_floor VALUES ('jobs', old.seq); END;
    CREATE INDEX jobs_claim ON jobs (status, priority DESC, seq, kind) WHERE status = 'pending';
    CREATE INDEX jobs_tenant ON jobs (tenant, seq) WHERE tenant IS NOT NULL;
    CREATE INDEX jobs_tenant_status ON jobs (tenant, status, seq) WHERE tenant IS NOT NULL;
    CREATE INDEX jobs_status ON jobs (status, seq);
    CREATE INDEX jobs_kind ON jobs (kind, seq);
    CREATE INDEX jobs_expiry ON jobs (expires_at) WHERE expires_at IS NOT NULL;
    CREATE INDEX jobs_deleted ON jobs (deleted_at) WHERE deleted_at IS NOT NULL;
    CREATE INDEX jobs_lease ON jobs (lease_until) WHERE lease_until IS NOT NULL;
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        origin TEXT NOT NULL,
        at INTEGER NOT NULL,
        body TEXT NOT NULL
    );
    CREATE TABLE listeners (
        origin TEXT PRIMARY KEY,
        expires_at INTEGER NOT NULL
    ) WITHOUT ROWID
    """,
    # Schema 3: scheduled jobs, retries, idempotency keys, paused kinds, cron schedules.
    # - jobs.run_at (due time of a scheduled job, indexed for scheduled jobs only, so promoting
    #   costs what is due), jobs.idempotency_key (unique per tenant among jobs not
    #   soft-deleted; '' stands for "no tenant", which no actor can have), jobs.retry (JSON);
    # - audit.job_id may be NULL (actions on a kind or a schedule): SQLite cannot drop a
    #   NOT NULL, so the table is rebuilt, rows and sequence kept;
    # - paused_kinds and schedules.
    """
    ALTER TABLE jobs ADD COLUMN run_at INTEGER;
    ALTER TABLE jobs ADD COLUMN idempotency_key TEXT;
    ALTER TABLE jobs ADD COLUMN retry TEXT;
    CREATE INDEX jobs_due ON jobs (run_at) WHERE status = 'scheduled';
    CREATE UNIQUE INDEX jobs_idempotency ON jobs (coalesce(tenant, ''), idempotency_key)
        WHERE idempotency_key IS NOT NULL AND deleted_at IS NULL;
    CREATE TABLE audit_v3 (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        at INTEGER NOT NULL,
        action TEXT NOT NULL,
        actor_id TEXT,
        tenant TEXT,
        job_id TEXT,
        details TEXT NOT NULL
    );
    INSERT INTO audit_v3 SELECT * FROM audit;
    DROP TABLE audit;
    ALTER TABLE audit_v3 RENAME TO audit;
    CREATE INDEX audit_at ON audit (at);
    CREATE INDEX audit_job ON audit (job_id, seq);
    CREATE INDEX audit_tenant ON audit (tenant, seq);
    CREATE TABLE paused_kinds (
        kind TEXT PRIMARY KEY,
        at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE schedules (
        tenant_key TEXT NOT NULL,
        name TEXT NOT NULL,
        tenant TEXT,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        cron TEXT NOT NULL,
        timezone TEXT NOT NULL,
        priority INTEGER NOT NULL,
        next_run_at INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (tenant_key, name)
    ) WITHOUT ROWID;
    CREATE INDEX schedules_next ON schedules (next_run_at)
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_timedelta = timedelta
_dumps_json = json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(",", ":")).encode
_loads_json = json.loads

#: Longest a group runs on the event loop's thread; longer ones move to a worker thread.
INLINE_BUDGET = 0.005
#: SQLite virtual-machine steps between two looks at the clock while running inline.
_PROGRESS_STEPS = 2000
# sqlite3 result codes (the low byte of an extended code) after which inline work moves to
# a worker thread: another connection holds a lock (the thread waits for it), or the
# progress handler stopped a group past its budget.
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_INTERRUPT = 9


def _statements(script: str) -> list[str]:
    """The statements of a migration script (a statement ends at the line ending it)."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        statements.append(buffer.strip())
    return statements


def _dumps(value: Any) -> str:
    return "null" if value is None else _dumps_json(value)


def _loads(text: str) -> Any:
    return None if text == "null" else _loads_json(text)


def _micros(value: datetime | None) -> int | None:
    if value is None:
        return None
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _time(value: int | None) -> datetime | None:
    return None if value is None else _EPOCH + _timedelta(0, 0, value)


def _span(value: timedelta | None) -> int | None:
    return None if value is None else (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds


def _duration(value: int | None) -> timedelta | None:
    return None if value is None else _timedelta(0, 0, value)


def _row(job: Job) -> tuple[Any, ...]:
    return (
        job.id, job.kind, job.status.value, _dumps(job.payload), job.tenant, job.priority,
        job.progress, job.progress_message, _dumps(job.result), job.error, job.cancel_reason,
        _micros(job.created_at), _micros(job.started_at), _micros(job.finished_at),
        _micros(job.expires_at), _micros(job.deleted_at), job.version, job.attempts,
        job.max_attempts, _span(job.ttl), _span(job.timeout),
        _dumps(dict(job.labels)) if job.labels else None, _micros(job.run_at),
        job.idempotency_key, None if job.retry is None else _dumps(job.retry.to_json()),
    )  # fmt: skip


@functools.lru_cache(maxsize=256)
def _retry(text: str) -> Retry:
    return Retry.from_json(_loads_json(text))


_STATUS = {status.value: status for status in JobStatus}
_new = object.__new__


def _setters() -> tuple[Callable[[Job, Any], None], ...]:
    # A slotted attrs class keeps each field in a slot; its descriptor's __set__ writes it
    # directly (past the frozen __setattr__), which is about twice as fast as
    # object.__setattr__. Fall back to that when the class is not slotted.
    found: list[Callable[[Job, Any], None]] = []
    for name in _COLUMNS:
        descriptor = Job.__dict__.get(name)
        if isinstance(descriptor, MemberDescriptorType):
            found.append(descriptor.__set__)
        else:  # pragma: no cover - attrs always slots Job
            found.append(functools.partial(_set_field, name=name))
    return tuple(found)


def _set_field(job: Job, value: Any, *, name: str) -> None:  # pragma: no cover - see _setters
    object.__setattr__(job, name, value)


(
    _s_id, _s_kind, _s_status, _s_payload, _s_tenant, _s_priority, _s_progress, _s_message,
    _s_result, _s_error, _s_reason, _s_created, _s_started, _s_finished, _s_expires,
    _s_deleted, _s_version, _s_attempts, _s_max_attempts, _s_ttl, _s_timeout, _s_labels,
    _s_run_at, _s_key, _s_retry,
) = _setters()  # fmt: skip


def _job(row: Sequence[Any]) -> Job:
    """The Job of a row of ``_SELECT`` columns, built without converters (trusted values)."""
    job: Job = _new(Job)
    epoch, span = _EPOCH, _timedelta
    _s_id(job, row[0])
    _s_kind(job, row[1])
    _s_status(job, _STATUS[row[2]])
    _s_payload(job, _loads(row[3]))
    _s_tenant(job, row[4])
    _s_priority(job, row[5])
    _s_progress(job, row[6])
    _s_message(job, row[7])
    _s_result(job, _loads(row[8]))
    _s_error(job, row[9])
    _s_reason(job, row[10])
    _s_created(job, epoch + span(0, 0, row[11]))
    value = row[12]
    _s_started(job, None if value is None else epoch + span(0, 0, value))
    value = row[13]
    _s_finished(job, None if value is None else epoch + span(0, 0, value))
    value = row[14]
    _s_expires(job, None if value is None else epoch + span(0, 0, value))
    value = row[15]
    _s_deleted(job, None if value is None else epoch + span(0, 0, value))
    _s_version(job, row[16])
    _s_attempts(job, row[17])
    _s_max_attempts(job, row[18])
    value = row[19]
    _s_ttl(job, None if value is None else span(0, 0, value))
    value = row[20]
    _s_timeout(job, None if value is None else span(0, 0, value))
    value = row[21]
    _s_labels(job, MappingProxyType(_loads_json(value)) if value else EMPTY_MAPPING)
    value = row[22]
    _s_run_at(job, None if value is None else epoch + span(0, 0, value))
    _s_key(job, row[23])
    value = row[24]
    _s_retry(job, None if value is None else _retry(value))
    return job


def _audit_row(record: AuditRecord) -> tuple[Any, ...]:
    return (
        record.id, _micros(record.at), record.action.value, record.actor_id, record.tenant,
        record.job_id, _dumps(dict(record.details)),
    )  # fmt: skip


def _others_ready() -> bool:
    """Could yielding now let another task run, and so start a store operation?

    On asyncio the loop's run queue says so; when it is empty a yield would gather nothing
    (and costs as much as a small query), so it is skipped. Elsewhere (trio runs its ready
    tasks in batches that no public API shows) always yield.
    """
    loop = asyncio._get_running_loop()
    if loop is not None:
        ready = getattr(loop, "_ready", None)  # the run queue of CPython's event loops
        return ready is None or len(ready) > 0
    return True


def _is_busy(exc: BaseException) -> bool:
    """True for "another connection holds a lock"."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)


def _must_move(exc: BaseException) -> bool:
    """True when inline work must move to a worker thread: locked, or past its budget."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_INTERRUPT)


class _Busy(Exception):
    """Inline work met another connection's lock or ran too long; the group must run in a thread."""


class _Op:
    __slots__ = ("args", "error", "fn", "result")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.result: Any = None
        self.error: BaseException | None = None


def job_filter(
    *,
    tenant: str | None,
    statuses: Collection[JobStatus] | None = None,
    kind: str | None,
    include_deleted: bool = False,
    before: int | None = None,
    id_prefix: str | None = None,
    mark: str = "?",
) -> tuple[str, list[Any]]:
    """The ``WHERE`` clause (empty when nothing filters) and its parameters of a jobs query,
    with ``mark`` as the parameter placeholder (``?`` here, ``%s`` for PostgreSQL)."""
    where: list[str] = []
    params: list[Any] = []
    if tenant is not None:
        where.append(f"tenant = {mark}")
        params.append(tenant)
    if statuses is not None:
        where.append(f"status IN ({', '.join([mark] * len(statuses))})")
        params.extend(s.value for s in statuses)
    if kind is not None:
        where.append(f"kind = {mark}")
        params.append(kind)
    if not include_deleted:
        where.append("deleted_at IS NULL")
    if before is not None:
        where.append(f"seq < {mark}")
        params.append(before)
    if id_prefix is not None:
        # The range walks the id index; the exact test keeps any collation honest.
        where.append(f"id >= {mark} AND id < {mark} AND substr(id, 1, {len(id_prefix)}) = {mark}")
        params.extend((id_prefix, id_prefix + "g", id_prefix))
    return (" WHERE " + " AND ".join(where) if where else ""), params


class SQLiteStore:
    """A :class:`~jobkit.abc.JobStore` in one SQLite file; several processes may share it.

    Operations run on the event loop's thread, grouped into shared transactions (see the
    module docstring); a group that would wait for another process's lock, or run longer
    than ``INLINE_BUDGET``, runs in a worker thread instead. It has the optional members
    too: ``claim_many``, ``apply`` (one transaction), ``exclusive`` (always granted) and
    ``notifier`` (wake-ups, changes and events between processes sharing the file, see
    :class:`~jobkit.stores._sqlite_notify.SQLiteNotifier`).

    One store serves one manager: managers sharing a store object share its connection,
    and a connection does not see its own commits as changes, so their notifiers would
    not hear each other (give each manager its own ``SQLiteStore`` on the file).

    :param path: the database file; created (with its schema) if missing.
    :param busy_timeout: seconds to wait for another process's write lock (in a worker
        thread: the event loop never waits for it).
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 10.0) -> None:
        self.path = os.fspath(path)
        self._busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._queue: list[_Op] = []
        # Set when the group holding the queued operations has run (made by the first
        # operation that has to wait for it).
        self._queue_done: anyio.Event | None = None
        self._draining = False
        # True while a worker thread uses the connection (the loop thread must not).
        self._in_thread = False
        # While a group runs inline: when it must stop (perf_counter); 0.0 otherwise.
        self._deadline = 0.0
        self._streak = 0  # calls since the last one that yielded to the loop

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    # -- connection and schema -----------------------------------------------------------

    async def open(self) -> None:
        if self._conn is None:
            self._conn = await anyio.to_thread.run_sync(self._connect)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with anyio.CancelScope(shield=True):  # a cancelled caller must not skip the close
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
            conn.execute("PRAGMA busy_timeout=0")  # inline work never waits (see _execute)
            conn.set_progress_handler(self._past_deadline, _PROGRESS_STEPS)
            # Checkpoint when the WAL holds about 4 MiB, whatever the page size (SQLite's
            # default of 1,000 pages assumes 4 KiB pages; with 1 KiB pages it would
            # checkpoint, and fsync, four times as often).
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            conn.execute(f"PRAGMA wal_autocheckpoint={max(1000, WAL_CHECKPOINT_BYTES // page_size)}")
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
            if not tables:
                conn.execute(f"PRAGMA page_size={PAGE_SIZE}")  # only takes effect on a new file
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            if version < SCHEMA_VERSION:
                conn.execute("BEGIN IMMEDIATE")
                # Re-read under the write lock: another process may have migrated meanwhile.
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                for step in MIGRATIONS[version:]:
                    for statement in _statements(step):
                        conn.execute(statement)
                conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            if conn.in_transaction:
                conn.rollback()
            raise self._fail(str(exc)) from exc

    # -- grouped execution -----------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` with the operations other tasks start meanwhile."""
        if self._conn is None:
            raise JobkitError(f"{self!r} is not open: the JobManager opens it in `async with`.")
        # Every call is a cancellation point, also when it runs inline and never waits, and
        # every INLINE_STREAK-th call in a row that did not wait yields to the loop: a loop of
        # store calls stays interruptible by a timeout and never starves other tasks.
        self._streak += 1
        if self._streak >= INLINE_STREAK:
            self._streak = 0
            await anyio.lowlevel.checkpoint()
        else:
            await anyio.lowlevel.checkpoint_if_cancelled()
        op = _Op(fn, args)
        alone = not self._draining and not _others_ready()
        if alone and self._execute([op], inline=True):
            # Nothing else could run before this operation is done: it is a group of one.
            if op.error is not None:
                raise op.error
            return op.result  # type: ignore[no-any-return]
        self._queue.append(op)
        if self._draining:
            # Another task runs the operations: wait for the group ours lands in.
            done = self._queue_done
            if done is None:
                done = self._queue_done = anyio.Event()
            try:
                await done.wait()
            except anyio.get_cancelled_exc_class():
                if op in self._queue:  # not started: withdraw it
                    self._queue.remove(op)
                else:  # running now: let it finish so the caller's view stays true
                    with anyio.CancelScope(shield=True):
                        await done.wait()
                raise
        else:
            await self._drain(gather=not alone)  # alone: it was tried inline already
        if op.error is not None:
            raise op.error
        return op.result  # type: ignore[no-any-return]

    async def _drain(self, *, gather: bool = True) -> None:
        """Run queued operations, group after group, until the queue is empty.

        Between the last look at the queue and ``_draining = False`` nothing awaits, so
        an operation queued while draining is always run. Without ``gather``, the queue
        holds one operation that could not run inline: it goes to a thread at once.
        """
        self._draining = True
        inline = gather
        try:
            # Let the other ready tasks queue their operations: they join this group.
            if gather and _others_ready():
                await anyio.lowlevel.cancel_shielded_checkpoint()
                self._streak = 0
            while self._queue:
                batch, self._queue = self._queue, []
                done, self._queue_done = self._queue_done, None
                try:
                    if not (inline and self._execute(batch, inline=True)):
                        await self._execute_in_thread(batch)
                    inline = True
                except BaseException as exc:
                    for op in batch:
                        if op.error is None:
                            op.result, op.error = None, BackendError(f"SQLite store {self.path!r}: {exc!r}")
                    raise
                finally:
                    if done is not None:
                        done.set()
        except BaseException:
            # Interrupted in an unusual way (KeyboardInterrupt...): nobody would run the
            # queued operations, so fail them.
            self._fail_queued(BackendError(f"SQLite store {self.path!r}: interrupted."))
            raise
        finally:
            self._draining = False

    async def _execute_in_thread(self, batch: list[_Op]) -> None:
        self._in_thread = True
        try:
            # Shielded: the waiters must hear the outcome even if we are cancelled.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._execute_waiting, batch)
        except BaseException:
            error = BackendError(f"SQLite store {self.path!r}: interrupted; the outcome is unknown.")
            for op in batch:
                op.result, op.error = None, error
            raise
        finally:
            self._in_thread = False

    def _fail_queued(self, error: BackendError) -> None:
        queued, self._queue = self._queue, []
        done, self._queue_done = self._queue_done, None
        for op in queued:
            op.error = error
        if done is not None:
            done.set()

    def _past_deadline(self) -> bool:
        """SQLite's progress handler: True stops the statement (SQLITE_INTERRUPT)."""
        deadline = self._deadline
        return deadline != 0.0 and time.perf_counter() > deadline

    def _execute_waiting(self, batch: list[_Op]) -> None:
        """In a worker thread: run ``batch``, waiting up to busy_timeout for locks."""
        conn = self._conn
        assert conn is not None
        conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout * 1000)}")
        try:
            self._execute(batch, inline=False)
        finally:
            conn.execute("PRAGMA busy_timeout=0")

    def _execute(self, batch: list[_Op], *, inline: bool) -> bool:
        """Run ``batch``: one transaction when it writes (one autocommit statement alone).

        Each operation gets its result or its error. Returns False (and leaves nothing
        written) when ``inline`` and another connection holds a lock, or the group ran
        past ``INLINE_BUDGET``.
        """
        conn = self._conn
        assert conn is not None
        # The budget applies to reads and to statements inside a transaction, never to a
        # write in autocommit mode nor to COMMIT: SQLite may report the interruption after
        # the commit happened, and the work would then be done twice.
        try:
            if all(op.fn in _READS for op in batch):
                if inline:
                    self._deadline = time.perf_counter() + INLINE_BUDGET
                for op in batch:
                    self._one(conn, op, inline)
            elif len(batch) == 1 and batch[0].fn in _SINGLE:
                self._one(conn, batch[0], inline)
            else:
                # The operations of a group are concurrent: any order is a valid one. New
                # jobs go first and claims last, so a claim sees the jobs submitted with it.
                self._transaction(conn, sorted(batch, key=_group_order), inline)
        except _Busy:
            for op in batch:
                op.result = op.error = None
            return False
        finally:
            self._deadline = 0.0
        return True

    def _one(self, conn: sqlite3.Connection, op: _Op, inline: bool) -> None:
        try:
            op.result = op.fn(conn, *op.args)
        except JobkitError as exc:
            op.error = exc
        except Exception as exc:
            if inline and _must_move(exc):
                raise _Busy from None
            op.error = self._error(exc)

    def _transaction(self, conn: sqlite3.Connection, batch: list[_Op], inline: bool) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            if inline and _must_move(exc):
                raise _Busy from None
            error = BackendError(f"SQLite store {self.path!r} is unavailable: {exc}")
            for op in batch:
                op.error = error
            return
        if inline:
            self._deadline = time.perf_counter() + INLINE_BUDGET
        try:
            for op in batch:
                single = op.fn in _SINGLE
                if not single:
                    conn.execute("SAVEPOINT op")
                try:
                    op.result = op.fn(conn, *op.args)
                except Exception as exc:
                    if inline and _must_move(exc):
                        raise _Busy from None
                    # One statement that fails changes nothing (SQLite undoes it); several
                    # are undone through their savepoint.
                    if not single and conn.in_transaction:
                        conn.execute("ROLLBACK TO op")
                    op.error = exc if isinstance(exc, JobkitError) else self._error(exc)
                    if not conn.in_transaction:  # SQLite rolled everything back (I/O, full)
                        for other in batch:
                            other.result, other.error = None, other.error or op.error
                        return
                if not single:
                    conn.execute("RELEASE op")
            self._deadline = 0.0
            conn.execute("COMMIT")
        except _Busy:
            self._deadline = 0.0  # never interrupt the rollback
            if conn.in_transaction:
                conn.rollback()
            raise
        except sqlite3.Error as exc:
            self._deadline = 0.0
            if conn.in_transaction:
                conn.rollback()
            if inline and _must_move(exc):
                raise _Busy from None
            error = BackendError(f"SQLite commit failed for {self.path!r}: {exc}")
            for op in batch:
                op.error, op.result = error, None

    def _error(self, exc: Exception) -> BackendError:
        return BackendError(f"SQLite error in {self.path!r}: {exc}")

    # -- jobs ------------------------------------------------------------------------------

    async def insert(self, job: Job) -> Job | None:
        holder = await self._run(_insert, _row(job))
        return None if holder is None else _job(holder)

    async def get(self, job_id: str) -> Job | None:
        row = await self._run(_get, job_id)
        return None if row is None else _job(row)

    async def replace(self, job: Job, *, expected_version: int) -> bool:
        return await self._run(_replace, _update_values(job, job.id, expected_version))

    async def remove(self, job_id: str, *, expected_version: int) -> bool:
        return await self._run(_remove, job_id, expected_version)

    async def claim(self, *, now: datetime, worker_id: str, lease_until: datetime) -> Job | None:
        rows = await self._run(_claim, _CLAIM_ONE, (_micros(now), worker_id, _micros(lease_until), 1))
        return _job(rows[0][2:]) if rows else None

    async def claim_many(
        self,
        *,
        now: datetime,
        worker_id: str,
        lease_until: datetime,
        kinds: Collection[str] | None,
        limit: int,
    ) -> list[Job]:
        if limit <= 0:
            return []
        params: tuple[Any, ...] = (_micros(now), worker_id, _micros(lease_until))
        if kinds is None:
            sql = _CLAIM_ONE if limit == 1 else _CLAIM_MANY
        else:
            kinds = tuple(dict.fromkeys(kinds))
            if not kinds:
                return []
            sql = _claim_kinds_sql(len(kinds))
            params += kinds
        rows = await self._run(_claim, sql, (*params, limit))
        # RETURNING gives no order: put the jobs back in claim order.
        rows.sort(key=_claim_order)
        return [_job(row[2:]) for row in rows]

    async def apply(self, change: Change) -> bool:
        job = change.job
        if job is not None and job.id != change.job_id:
            raise JobkitError(f"Change of {change.job_id!r} carries job {job.id!r}.")
        audit = change.audit
        return await self._run(
            _apply,
            change.job_id,
            change.expected_version,
            None if job is None else _update_values(job, job.id, change.expected_version),
            None if audit is None else _audit_row(audit),
            change.purge,
        )

    @asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[bool]:
        """Always granted: with SQLite, correctness never depends on one holder (every
        change is a compare-and-swap), and several processes may sweep at once."""
        yield True

    def notifier(self) -> SQLiteNotifier:
        """A notifier that reaches the other processes (and stores) sharing this file."""
        from ._sqlite_notify import SQLiteNotifier

        return SQLiteNotifier(self)

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
        where, params = job_filter(
            tenant=tenant, statuses=statuses, kind=kind, include_deleted=include_deleted, before=before
        )
        sql = f"SELECT seq, {_SELECT} FROM jobs{where} ORDER BY seq DESC LIMIT ?"
        params.append(limit + 1)
        rows = await self._run(_fetch, sql, tuple(params))
        jobs = [_job(row[1:]) for row in rows[:limit]]
        next_before = rows[limit - 1][0] if len(rows) > limit else None
        return jobs, next_before

    async def jobs_with_prefix(
        self, prefix: str, *, tenant: str | None, include_deleted: bool, limit: int
    ) -> list[Job]:
        where, params = job_filter(
            tenant=tenant, kind=None, include_deleted=include_deleted, id_prefix=prefix
        )
        sql = f"SELECT {_SELECT} FROM jobs{where} ORDER BY seq DESC LIMIT ?"
        params.append(limit)
        return [_job(row) for row in await self._run(_fetch, sql, tuple(params))]

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
        ids = tuple(dict.fromkeys(job_ids))
        if not ids:
            return []
        rows: list[Any] = []
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows += await self._run(_renew, worker_id, chunk, _micros(lease_until))
        return [_job(row) for row in rows]

    async def count_jobs(self, *, tenant: str | None, kind: str | None) -> dict[JobStatus, int]:
        where, params = job_filter(tenant=tenant, kind=kind)
        sql = f"SELECT status, count(*) FROM jobs{where} GROUP BY status"
        return {_STATUS[status]: count for status, count in await self._run(_fetch, sql, tuple(params))}

    async def leases(self, limit: int) -> list[Lease]:
        rows = await self._run(
            _fetch,
            f"SELECT {_SELECT}, lease_owner, lease_until FROM jobs WHERE lease_until IS NOT NULL "
            "AND status IN ('running', 'cancelling') ORDER BY lease_until LIMIT ?",
            (limit,),
        )
        return [Lease(job=_job(row), owner=row[-2], until=_time(row[-1])) for row in rows]  # type: ignore[arg-type]

    async def expired_leases(self, now: datetime, limit: int) -> list[Job]:
        rows = await self._run(
            _fetch,
            f"SELECT {_SELECT} FROM jobs WHERE lease_until < ? "
            "AND status IN ('running', 'cancelling') ORDER BY lease_until LIMIT ?",
            (_micros(now), limit),
        )
        return [_job(row) for row in rows]

    # -- scheduled jobs, paused kinds, schedules --------------------------------------------

    async def promote_due(self, now: datetime, limit: int) -> list[Job]:
        rows = await self._run(_promote, _micros(now), limit)
        return [_job(row) for row in rows]

    async def next_due(self) -> datetime | None:
        rows = await self._run(_fetch, _NEXT_DUE, ())
        return _time(rows[0][0])

    async def set_paused(self, kind: str, paused: bool) -> bool:
        params: tuple[Any, ...] = (kind,)
        sql = "DELETE FROM paused_kinds WHERE kind = ?"
        if paused:
            sql = "INSERT OR IGNORE INTO paused_kinds VALUES (?, ?)"
            params = (kind, _micros(datetime.now(UTC)))
        return await self._run(_execute_sql, sql, params) == 1

    async def paused_kinds(self) -> frozenset[str]:
        return frozenset(row[0] for row in await self._run(_fetch, "SELECT kind FROM paused_kinds", ()))

    async def put_schedule(self, schedule: Schedule) -> None:
        await self._run(_execute_sql, _PUT_SCHEDULE, _schedule_row(schedule))

    async def remove_schedule(self, tenant: str | None, name: str) -> bool:
        sql = "DELETE FROM schedules WHERE tenant_key = ? AND name = ?"
        return await self._run(_execute_sql, sql, (tenant or "", name)) == 1

    async def list_schedules(self, tenant: str | None) -> list[Schedule]:
        params: tuple[Any, ...]
        if tenant is None:
            sql, params = f"SELECT {_SCHEDULE_COLUMNS} FROM schedules ORDER BY name, tenant_key", ()
        else:
            sql = f"SELECT {_SCHEDULE_COLUMNS} FROM schedules WHERE tenant_key = ? ORDER BY name"
            params = (tenant,)
        return [_schedule(row) for row in await self._run(_fetch, sql, params)]

    async def due_schedules(self, now: datetime, limit: int) -> list[Schedule]:
        sql = f"SELECT {_SCHEDULE_COLUMNS} FROM schedules WHERE next_run_at <= ? ORDER BY next_run_at LIMIT ?"
        return [_schedule(row) for row in await self._run(_fetch, sql, (_micros(now), limit))]

    async def advance_schedule(self, schedule: Schedule, next_run_at: datetime) -> bool:
        sql = (
            "UPDATE schedules SET next_run_at = ? WHERE tenant_key = ? AND name = ? "
            "AND created_at = ? AND next_run_at = ?"
        )
        params = (
            _micros(next_run_at), schedule.tenant or "", schedule.name,
            _micros(schedule.created_at), _micros(schedule.next_run_at),
        )  # fmt: skip
        return await self._run(_execute_sql, sql, params) == 1

    async def next_schedule(self) -> datetime | None:
        rows = await self._run(_fetch, "SELECT min(next_run_at) FROM schedules", ())
        return _time(rows[0][0])

    # -- audit and purge queue -------------------------------------------------------------

    async def add_audit(self, record: AuditRecord) -> None:
        await self._run(_execute_sql, _INSERT_AUDIT, _audit_row(record))

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
        return await self._run(_execute_sql, "DELETE FROM audit WHERE at < ?", (_micros(cutoff),))

    async def add_purge(self, prefix: str) -> None:
        await self._run(_execute_sql, _INSERT_PURGE, (prefix,))

    async def pending_purges(self, limit: int) -> list[str]:
        rows = await self._run(_fetch, "SELECT prefix FROM purges ORDER BY seq LIMIT ?", (limit,))
        return [row[0] for row in rows]

    async def remove_purge(self, prefix: str) -> None:
        await self._run(_execute_sql, "DELETE FROM purges WHERE prefix = ?", (prefix,))


# Operations: fn(conn, *args), run on the loop thread (or, when the database is locked, in
# a worker thread), inside a transaction when grouped with writes. They return raw rows;
# the async methods convert them once the transaction is over.

F = TypeVar("F", bound=Callable[..., Any])
#: Operations of one statement: alone they run in autocommit mode, in a group without a
#: savepoint (a failing statement changes nothing). Any other operation (several
#: statements, or a function this module does not know) runs in a transaction, in a group
#: inside its own savepoint.
_SINGLE: set[Callable[..., Any]] = set()
#: Operations that only read: a group of them needs no transaction.
_READS: set[Callable[..., Any]] = set()


def operation(*, single: bool = True, reads: bool = False) -> Callable[[F], F]:
    """Declare a store operation of one statement (``single``) and/or one that only ``reads``."""

    def declare(fn: F) -> F:
        if single:
            _SINGLE.add(fn)
        if reads:
            _READS.add(fn)
        return fn

    return declare


# seq: one more than the largest seq ever handed out (seq_floor remembers deleted ones).
_INSERT = (
    f"INSERT INTO jobs (seq, {_SELECT}) VALUES ("
    "max(coalesce((SELECT max(seq) FROM jobs), 0), "
    "coalesce((SELECT seq FROM seq_floor WHERE name = 'jobs'), 0)) + 1, "
    f"{', '.join('?' * len(_COLUMNS))})"
)
_INSERT_AUDIT = (
    "INSERT INTO audit (id, at, action, actor_id, tenant, job_id, details) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_PURGE = "INSERT OR IGNORE INTO purges (prefix) VALUES (?)"
# What replace() writes: the fields that change over a job's life. The others (id, kind,
# payload, tenant, created_at, ttl, timeout, labels, idempotency_key, retry) are fixed at
# insert, so their indexes are never touched by an update.
_MUTABLE = (
    "status", "priority", "progress", "progress_message", "result", "error", "cancel_reason",
    "started_at", "finished_at", "expires_at", "deleted_at", "version", "attempts",
    "max_attempts", "run_at",
)  # fmt: skip
_UPDATE = (
    "UPDATE jobs SET "
    + ", ".join(f"{c} = ?" for c in _MUTABLE)
    + ", lease_owner = CASE WHEN ? THEN lease_owner END"
    + ", lease_until = CASE WHEN ? THEN lease_until END"
    + " WHERE id = ? AND version = ?"
)
_START = (
    "UPDATE jobs SET status = 'running', started_at = ?, attempts = attempts + 1, "
    "progress = NULL, progress_message = NULL, version = version + 1, "
    "lease_owner = ?, lease_until = ? "
)
# Paused kinds are left out (a small table, read once per claim).
_NOT_PAUSED = "AND kind NOT IN (SELECT kind FROM paused_kinds) "
_CLAIM_ONE = (
    _START + "WHERE seq = (SELECT seq FROM jobs WHERE status = 'pending' "
    f"{_NOT_PAUSED}ORDER BY priority DESC, seq LIMIT ?) RETURNING priority, seq, {_SELECT}"
)
_CLAIM_MANY = (
    _START + "WHERE seq IN (SELECT seq FROM jobs WHERE status = 'pending' "
    f"{_NOT_PAUSED}ORDER BY priority DESC, seq LIMIT ?) RETURNING priority, seq, {_SELECT}"
)


def _claim_kinds_sql(count: int) -> str:
    return (
        _START + "WHERE seq IN (SELECT seq FROM jobs WHERE status = 'pending' "
        f"AND kind IN ({', '.join('?' * count)}) {_NOT_PAUSED}ORDER BY priority DESC, seq LIMIT ?) "
        f"RETURNING priority, seq, {_SELECT}"
    )


def _group_order(op: _Op) -> int:
    return 0 if op.fn is _insert else 2 if op.fn is _claim else 1


def _claim_order(row: Sequence[Any]) -> tuple[int, int]:
    return -row[0], row[1]


def _update_values(job: Job, job_id: str, expected: int) -> tuple[Any, ...]:
    active = job.status.value in _ACTIVE
    return (
        job.status.value, job.priority, job.progress, job.progress_message, _dumps(job.result),
        job.error, job.cancel_reason, _micros(job.started_at), _micros(job.finished_at),
        _micros(job.expires_at), _micros(job.deleted_at), job.version, job.attempts,
        job.max_attempts, _micros(job.run_at), active, active, job_id, expected,
    )  # fmt: skip


_KEY_HOLDER = (
    f"SELECT {_SELECT} FROM jobs WHERE coalesce(tenant, '') = coalesce(?, '') "
    "AND idempotency_key = ? AND deleted_at IS NULL"
)


@operation()
def _insert(conn: sqlite3.Connection, row: tuple[Any, ...]) -> Any:
    """None when stored; the row of the job holding the idempotency key when that is taken."""
    try:
        conn.execute(_INSERT, row)
    except sqlite3.IntegrityError:
        key = row[23]
        if key is not None:
            holder = conn.execute(_KEY_HOLDER, (row[4], key)).fetchone()
            if holder is not None:
                return holder
        raise JobkitError(f"A job with id {row[0]!r} already exists.") from None
    return None


_GET = f"SELECT {_SELECT} FROM jobs WHERE id = ?"


@operation(reads=True)
def _get(conn: sqlite3.Connection, job_id: str) -> Any:
    return conn.execute(_GET, (job_id,)).fetchone()


@operation()
def _replace(conn: sqlite3.Connection, values: tuple[Any, ...]) -> bool:
    return conn.execute(_UPDATE, values).rowcount == 1


@operation()
def _remove(conn: sqlite3.Connection, job_id: str, expected: int) -> bool:
    cursor = conn.execute("DELETE FROM jobs WHERE id = ? AND version = ?", (job_id, expected))
    return cursor.rowcount == 1


@operation()
def _claim(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[Any]:
    # fetchall: the statement runs to its end, so its (autocommit) commit happens here and
    # any error surfaces here.
    return conn.execute(sql, params).fetchall()


@operation(single=False)
def _apply(
    conn: sqlite3.Connection,
    job_id: str,
    expected: int,
    values: tuple[Any, ...] | None,
    audit: tuple[Any, ...] | None,
    purge: str | None,
) -> bool:
    if values is None:
        cursor = conn.execute("DELETE FROM jobs WHERE id = ? AND version = ?", (job_id, expected))
    else:
        cursor = conn.execute(_UPDATE, values)
    if cursor.rowcount != 1:
        return False
    if audit is not None:
        conn.execute(_INSERT_AUDIT, audit)
    if purge is not None:
        conn.execute(_INSERT_PURGE, (purge,))
    return True


_POSITION = (
    "SELECT 1 + (SELECT count(*) FROM jobs AS ahead WHERE ahead.status = 'pending' "
    "AND (ahead.priority > job.priority OR (ahead.priority = job.priority AND ahead.seq < job.seq))) "
    "FROM jobs AS job WHERE job.id = ? AND job.status = 'pending'"
)


@operation(reads=True)
def _position(conn: sqlite3.Connection, job_id: str) -> int | None:
    row = conn.execute(_POSITION, (job_id,)).fetchone()
    return None if row is None else int(row[0])


@operation()
def _renew(conn: sqlite3.Connection, worker_id: str, job_ids: tuple[str, ...], lease_until: int) -> list[Any]:
    marks = ", ".join("?" * len(job_ids))
    return conn.execute(
        f"UPDATE jobs SET lease_until = ? WHERE lease_owner = ? AND id IN ({marks}) "
        f"AND status IN ('running', 'cancelling') RETURNING {_SELECT}",
        (lease_until, worker_id, *job_ids),
    ).fetchall()


# INDEXED BY: left to itself, SQLite picks jobs_status (every scheduled job, then a sort);
# jobs_due holds scheduled jobs only, in run_at (then seq) order: the cost is what is due.
_DUE = (
    "SELECT seq FROM jobs INDEXED BY jobs_due WHERE status = 'scheduled' AND run_at <= ? "
    "ORDER BY run_at, seq LIMIT ?"
)
_NEXT_DUE = "SELECT min(run_at) FROM jobs INDEXED BY jobs_due WHERE status = 'scheduled'"


@operation(single=False)
def _promote(conn: sqlite3.Connection, now: int, limit: int) -> list[Any]:
    """Scheduled jobs due at ``now`` made pending (machine.due), earliest first."""
    order = [row[0] for row in conn.execute(_DUE, (now, limit))]
    if not order:
        return []
    marks = ", ".join("?" * len(order))
    rows = conn.execute(
        "UPDATE jobs SET status = 'pending', run_at = NULL, version = version + 1 "
        f"WHERE seq IN ({marks}) AND status = 'scheduled' RETURNING seq, {_SELECT}",
        order,
    ).fetchall()
    place = {seq: i for i, seq in enumerate(order)}
    rows.sort(key=lambda row: place[row[0]])
    return [row[1:] for row in rows]


_SCHEDULE_COLUMNS = "name, kind, payload, cron, timezone, tenant, priority, next_run_at, created_at"
_PUT_SCHEDULE = (
    f"INSERT OR REPLACE INTO schedules (tenant_key, {_SCHEDULE_COLUMNS}) VALUES ({', '.join('?' * 10)})"
)


def _schedule_row(schedule: Schedule) -> tuple[Any, ...]:
    return (
        schedule.tenant or "", schedule.name, schedule.kind, _dumps(schedule.payload), schedule.cron,
        schedule.timezone, schedule.tenant, schedule.priority, _micros(schedule.next_run_at),
        _micros(schedule.created_at),
    )  # fmt: skip


def _schedule(row: Sequence[Any]) -> Schedule:
    return Schedule(
        name=row[0], kind=row[1], payload=_loads(row[2]), cron=row[3], timezone=row[4],
        tenant=row[5], priority=row[6], next_run_at=_EPOCH + _timedelta(0, 0, row[7]),
        created_at=_EPOCH + _timedelta(0, 0, row[8]),
    )  # fmt: skip


@operation(reads=True)
def _fetch(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[Any]:
    return conn.execute(sql, params).fetchall()


@operation(single=False)  # may touch many rows: in a transaction, so the budget applies
def _execute_sql(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> int:
    return conn.execute(sql, params).rowcount
