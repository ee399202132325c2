"""PostgresStore: jobs in PostgreSQL, shared by many processes on many hosts.

Install with ``pip install 'jobkit[postgres]'`` (psycopg 3 and psycopg_pool).

jobkit runs on asyncio *and* trio, and psycopg's async connections (like asyncpg) work on
asyncio only. So the store drives libpq through psycopg's low-level ``pq`` layer in
non-blocking mode, on the event loop's own thread, waiting on each connection's socket
with :func:`anyio.wait_readable` / :func:`anyio.wait_writable` (which work on both loops);
psycopg adapts the parameters and the rows. Measured here, that is about twice as fast as
psycopg's synchronous pool called through worker threads (each statement then pays a
thread hop and waits for the GIL behind the event loop). Blocking work (connecting,
migrating, the advisory lock of :meth:`PostgresStore.exclusive`) runs in worker threads,
with psycopg's synchronous ``ConnectionPool`` for the latter.

Statements are grouped: a statement queued while others run joins the next group, and a
group runs in one transaction sent in one round trip (libpq's pipeline mode) on one of a
few connections ("lanes"). Concurrent completions, progress writes, claims and submits
share a commit, while each keeps its own compare-and-swap on ``version``; nothing is
acknowledged before it is committed. A group whose transaction fails is rolled back and
its statements run again one by one, so only the failing one fails. An insert with an
idempotency key, which may wait on another transaction's row, runs in a transaction of its
own (in the same round trip), so two groups never wait on each other's keys. Each statement is
prepared once per connection.

Tables live in their own schema (``schema=``, ``?schema=`` in a URL), created and migrated
by :meth:`PostgresStore.open` in one transaction under an advisory lock, so processes that
start at once are safe.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import anyio.to_thread

from .._errors import BackendError, InvalidInput, JobkitError
from .._records import EMPTY_MAPPING, AuditAction, AuditRecord, Job, JobStatus, Schedule
from ..abc import Lease
from ._sqlite import (
    _COLUMNS,
    _STATUS,
    _dumps,
    _loads,
    _new,
    _retry,
    _s_attempts,
    _s_created,
    _s_deleted,
    _s_error,
    _s_expires,
    _s_finished,
    _s_id,
    _s_key,
    _s_kind,
    _s_labels,
    _s_max_attempts,
    _s_message,
    _s_payload,
    _s_priority,
    _s_progress,
    _s_reason,
    _s_result,
    _s_retry,
    _s_run_at,
    _s_started,
    _s_status,
    _s_tenant,
    _s_timeout,
    _s_ttl,
    _s_version,
    _span,
    job_filter,
)

if TYPE_CHECKING:
    from datetime import datetime

    from psycopg_pool import ConnectionPool

    from ..abc import Change
    from ._postgres_notify import PostgresNotifier

__all__ = ["SCHEMA_VERSION", "PostgresStore"]

#: Seconds a new connection may take (libpq waits forever by default).
CONNECT_TIMEOUT = 10

_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,50}")
_SELECT = ", ".join(_COLUMNS)
_ACTIVE = ("running", "cancelling")
#: Most operations in one group (one transaction).
MAX_GROUP = 64
#: Audit rows deleted per statement by remove_audit_before (short transactions).
AUDIT_PRUNE_BATCH = 10_000

# Forward migrations: MIGRATIONS[n] takes a schema from version n to n + 1 ({s} is the
# quoted schema name). All steps run in one transaction, under an advisory lock.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE {s}.jobs (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id text NOT NULL UNIQUE,
        kind text NOT NULL,
        status text NOT NULL,
        payload text NOT NULL,
        tenant text,
        priority integer NOT NULL,
        progress double precision,
        progress_message text,
        result text NOT NULL,
        error text,
        cancel_reason text,
        created_at timestamptz NOT NULL,
        started_at timestamptz,
        finished_at timestamptz,
        expires_at timestamptz,
        deleted_at timestamptz,
        version integer NOT NULL,
        attempts integer NOT NULL,
        max_attempts integer NOT NULL,
        ttl bigint,
        timeout bigint,
        labels text,
        lease_owner text,
        lease_until timestamptz
    ) WITH (fillfactor = 80);
    -- Pending jobs only, in claim order: starting a job takes it out.
    CREATE INDEX jobs_claim ON {s}.jobs (priority DESC, seq) WHERE status = 'pending';
    -- Running jobs, for lease expiry. Not on lease_until: a renewal then changes no
    -- indexed column and stays a HOT update (fillfactor 80 leaves room on the page).
    CREATE INDEX jobs_active ON {s}.jobs (seq) WHERE status IN ('running', 'cancelling');
    CREATE INDEX jobs_tenant ON {s}.jobs (tenant, seq) WHERE tenant IS NOT NULL;
    CREATE INDEX jobs_tenant_status ON {s}.jobs (tenant, status, seq) WHERE tenant IS NOT NULL;
    CREATE INDEX jobs_status ON {s}.jobs (status, seq);
    CREATE INDEX jobs_kind ON {s}.jobs (kind, seq);
    CREATE INDEX jobs_expiry ON {s}.jobs (expires_at) WHERE expires_at IS NOT NULL;
    CREATE INDEX jobs_deleted ON {s}.jobs (deleted_at) WHERE deleted_at IS NOT NULL;
    CREATE TABLE {s}.audit (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id text NOT NULL UNIQUE,
        at timestamptz NOT NULL,
        action text NOT NULL,
        actor_id text,
        tenant text,
        job_id text NOT NULL,
        details text NOT NULL
    );
    CREATE INDEX audit_at ON {s}.audit (at);
    CREATE INDEX audit_job ON {s}.audit (job_id, seq);
    CREATE INDEX audit_tenant ON {s}.audit (tenant, seq) WHERE tenant IS NOT NULL;
    CREATE TABLE {s}.purges (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        prefix text NOT NULL UNIQUE
    );
    -- Processes that want other processes' events (see PostgresNotifier).
    CREATE TABLE {s}.listeners (
        origin text PRIMARY KEY,
        expires_at timestamptz NOT NULL
    )
    """,
    # Schema 2: scheduled jobs, retries, idempotency keys, paused kinds, cron schedules.
    # - jobs.run_at (when a scheduled job is due; indexed for scheduled jobs only, so
    #   promoting costs what is due), jobs.idempotency_key (unique per tenant among jobs not
    #   soft-deleted; '' stands for "no tenant", which no actor can have), jobs.retry (JSON).
    #   Columns without a default: adding them rewrites nothing.
    # - audit.job_id may be NULL (actions on a kind or a schedule);
    # - paused_kinds and schedules.
    """
    ALTER TABLE {s}.jobs
        ADD COLUMN run_at timestamptz,
        ADD COLUMN idempotency_key text,
        ADD COLUMN retry text;
    CREATE INDEX jobs_due ON {s}.jobs (run_at, seq) WHERE status = 'scheduled';
    CREATE UNIQUE INDEX jobs_idempotency ON {s}.jobs ((coalesce(tenant, '')), idempotency_key)
        WHERE idempotency_key IS NOT NULL AND deleted_at IS NULL;
    ALTER TABLE {s}.audit ALTER COLUMN job_id DROP NOT NULL;
    CREATE TABLE {s}.paused_kinds (
        kind text PRIMARY KEY,
        at timestamptz NOT NULL
    );
    CREATE TABLE {s}.schedules (
        tenant_key text NOT NULL,
        name text NOT NULL,
        tenant text,
        kind text NOT NULL,
        payload text NOT NULL,
        cron text NOT NULL,
        timezone text NOT NULL,
        priority integer NOT NULL,
        next_run_at timestamptz NOT NULL,
        created_at timestamptz NOT NULL,
        PRIMARY KEY (tenant_key, name)
    );
    CREATE INDEX schedules_next ON {s}.schedules (next_run_at)
    """,
)
#: The schema version this jobkit writes: the number of forward migrations.
SCHEMA_VERSION = len(MIGRATIONS)


def _import_psycopg() -> tuple[Any, Any]:
    try:
        import psycopg
        import psycopg_pool
    except ImportError as exc:  # pragma: no cover - the test environment has the extra
        raise ImportError(
            "jobkit.stores.postgres needs psycopg 3 and psycopg_pool: pip install 'jobkit[postgres]'"
        ) from exc
    return psycopg, psycopg_pool


def _job(row: Sequence[Any]) -> Job:
    """The Job of a row of ``_SELECT`` columns, built without converters (trusted values)."""
    job: Job = _new(Job)
    span = timedelta
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
    _s_created(job, row[11])
    _s_started(job, row[12])
    _s_finished(job, row[13])
    _s_expires(job, row[14])
    _s_deleted(job, row[15])
    _s_version(job, row[16])
    _s_attempts(job, row[17])
    _s_max_attempts(job, row[18])
    value = row[19]
    _s_ttl(job, None if value is None else span(0, 0, value))
    value = row[20]
    _s_timeout(job, None if value is None else span(0, 0, value))
    value = row[21]
    _s_labels(job, MappingProxyType(json.loads(value)) if value else EMPTY_MAPPING)
    _s_run_at(job, row[22])
    _s_key(job, row[23])
    value = row[24]
    _s_retry(job, None if value is None else _retry(value))
    return job


def _row(job: Job) -> tuple[Any, ...]:
    return (
        job.id, job.kind, job.status.value, _dumps(job.payload), job.tenant, job.priority,
        job.progress, job.progress_message, _dumps(job.result), job.error, job.cancel_reason,
        job.created_at, job.started_at, job.finished_at, job.expires_at, job.deleted_at,
        job.version, job.attempts, job.max_attempts, _span(job.ttl), _span(job.timeout),
        _dumps(dict(job.labels)) if job.labels else None, job.run_at, job.idempotency_key,
        None if job.retry is None else _dumps(job.retry.to_json()),
    )  # fmt: skip


def _update_values(job: Job, expected: int) -> tuple[Any, ...]:
    active = job.status.value in _ACTIVE
    return (
        job.status.value, job.priority, job.progress, job.progress_message, _dumps(job.result),
        job.error, job.cancel_reason, job.started_at, job.finished_at, job.expires_at,
        job.deleted_at, job.version, job.attempts, job.max_attempts, job.run_at, active, active,
        job.id, expected,
    )  # fmt: skip


def _schedule_row(schedule: Schedule) -> tuple[Any, ...]:
    return (
        schedule.tenant or "", schedule.name, schedule.kind, _dumps(schedule.payload), schedule.cron,
        schedule.timezone, schedule.tenant, schedule.priority, schedule.next_run_at,
        schedule.created_at,
    )  # fmt: skip


def _schedule(row: Sequence[Any]) -> Schedule:
    return Schedule(
        name=row[0], kind=row[1], payload=_loads(row[2]), cron=row[3], timezone=row[4],
        tenant=row[5], priority=row[6], next_run_at=row[7], created_at=row[8],
    )  # fmt: skip


def _audit_row(record: AuditRecord) -> tuple[Any, ...]:
    return (
        record.id, record.at, record.action.value, record.actor_id, record.tenant, record.job_id,
        _dumps(dict(record.details)),
    )  # fmt: skip


def _audit(row: Sequence[Any]) -> AuditRecord:
    return AuditRecord(
        id=row[0], at=row[1], action=AuditAction(row[2]), actor_id=row[3], tenant=row[4],
        job_id=row[5], details=_loads(row[6]),
    )  # fmt: skip


# How an operation's result is read from its cursor.
def _rows(cursor: Any) -> list[Any]:
    return list(cursor.fetchall())


def _one(cursor: Any) -> Any:
    return cursor.fetchone()


def _hit(cursor: Any) -> bool:
    return bool(cursor.rowcount == 1)


def _count(cursor: Any) -> int:
    return int(cursor.rowcount)


def _nothing(cursor: Any) -> None:
    return None


class _Op:
    __slots__ = ("alone", "duplicate", "error", "event", "finish", "lead", "params", "result", "sql", "state")

    def __init__(
        self,
        sql: str,
        params: Sequence[Any],
        finish: Callable[[Any], Any],
        duplicate: str | None,
        alone: bool = False,
    ):
        self.sql = sql
        self.params = params
        self.finish = finish
        self.duplicate = duplicate  # the message of a unique violation (an insert)
        # Runs in a transaction of its own, never in a group's: a statement that may wait on
        # another transaction's row (an insert with an idempotency key) would otherwise hold
        # the group's rows while it waits, and two such groups could deadlock.
        self.alone = alone
        self.result: Any = None
        self.error: BaseException | None = None
        self.event: anyio.Event | None = None
        self.state = 0  # 0 queued, 1 done
        self.lead = False  # holds a group slot: runs groups until it is done


_PLACEHOLDER = re.compile(r"%s")


def _numbered(sql: str) -> bytes:
    """``%s`` placeholders as ``$1, $2, ...`` (jobkit's own statements hold no other %)."""
    counter = iter(range(1, 10_000))
    return _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql).encode()


class _Result:
    """What an operation's ``finish`` reads: the rows and the row count of one statement."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def fetchall(self) -> list[Any]:
        return self._rows

    def fetchone(self) -> Any:
        return self._rows[0] if self._rows else None


class _Lane:
    """One connection driven from the event loop's thread: libpq in non-blocking pipeline
    mode, waiting on its socket with anyio (works on asyncio and trio, no worker thread).
    psycopg adapts the parameters and the rows."""

    def __init__(self, conn: Any, store: PostgresStore) -> None:
        from psycopg.adapt import PyFormat, Transformer

        self.conn = conn
        self.pgconn = conn.pgconn
        self.pgconn.nonblocking = 1
        self._store = store
        self._tx = Transformer(conn)
        self._text = PyFormat.TEXT
        self.broken = False
        self._prepared: dict[str, str] = {}  # statement -> its prepared name here
        self._names: dict[str, str] = {}

    def close(self) -> None:
        self.broken = True
        with contextlib.suppress(Exception):
            self.conn.close()

    def alive(self) -> bool:
        """Read what the server sent while idle (without waiting): False when it ended the session."""
        from psycopg import pq

        pg = self.pgconn
        try:
            # Twice: the first read takes a goodbye message, the second sees the end.
            pg.consume_input()
            pg.consume_input()
        except Exception:
            return False
        return bool(pg.status == pq.ConnStatus.OK and pg.transaction_status == pq.TransactionStatus.IDLE)

    async def run(self, ops: list[_Op], *, transaction: bool) -> bool:
        """Send the ops in one pipeline (in a transaction when asked, else each in an implicit
        transaction of its own); set their results.

        Each statement is prepared on the connection the first time it runs there (its
        parameters are sent as text, so the server infers their types once).

        :returns: False when a statement failed inside the transaction (rolled back; the
            ops have no result): run them again one by one.
        """
        from psycopg import pq

        pg = self.pgconn
        tx = self._tx
        text = self._text
        prepared = self._prepared
        slots: list[tuple[_Op, str, int | None, int]] = []  # op, name, prepare result, result
        sent = 0
        try:
            pg.enter_pipeline_mode()
            if transaction:
                pg.send_query_params(b"BEGIN", None)
                sent += 1
            for op in ops:
                name = prepared.get(op.sql)
                prepare_at = None
                if name is None:
                    name = f"jk{len(self._names)}"
                    self._names[name] = op.sql
                    pg.send_prepare(name.encode(), _numbered(op.sql), None)
                    prepare_at = sent
                    sent += 1
                params = op.params
                values = tx.dump_sequence(params, [text] * len(params)) if params else None
                pg.send_query_prepared(name.encode(), values)
                slots.append((op, name, prepare_at, sent))
                sent += 1
                if not transaction:
                    pg.pipeline_sync()  # a sync point ends the implicit transaction
            if transaction:
                pg.send_query_params(b"COMMIT", None)
                sent += 1
                pg.pipeline_sync()
            results = []
            for _ in range(1 if transaction else len(ops)):
                results += await self._collect()
            pg.exit_pipeline_mode()
        except BaseException:
            self.broken = True
            raise
        ok = pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK
        for op, name, prepare_at, _ in slots:
            if prepare_at is not None and results[prepare_at].status in ok:
                prepared[op.sql] = name
        if transaction:
            if all(res.status in ok for res in results):
                for op, _, _, at in slots:
                    self._finish(op, results[at])
                return True
            await self._rollback()
            return False
        for op, _, prepare_at, at in slots:
            res = results[at]
            if res.status in ok:
                self._finish(op, res)
            else:
                failed = results[prepare_at] if prepare_at is not None else res
                op.error = self._failure(op, failed if failed.status not in ok else res)
        return True

    def _finish(self, op: _Op, res: Any) -> None:
        tx = self._tx
        rows: list[Any] = []
        if res.ntuples:
            tx.set_pgresult(res)
            rows = tx.load_rows(0, res.ntuples, tuple)
        try:
            op.result = op.finish(_Result(rows, res.command_tuples or 0))
        except Exception as exc:  # pragma: no cover - a finish function's bug
            op.error = BackendError(f"PostgreSQL result unreadable: {exc!r}")

    def _failure(self, op: _Op, res: Any) -> JobkitError:
        from psycopg import pq

        state = res.error_field(pq.DiagnosticField.SQLSTATE)
        if state == b"23505" and op.duplicate:
            return JobkitError(op.duplicate)
        message = (res.error_message or b"").decode(errors="replace").strip()
        return BackendError(f"PostgreSQL error (schema {self._store.schema!r}): {message or res.status.name}")

    async def _collect(self) -> list[Any]:
        """Flush what was sent, then read results up to the pipeline's sync point."""
        from psycopg import pq

        pg = self.pgconn
        sock = pg.socket
        while pg.flush() == 1:
            await anyio.wait_writable(sock)
        results: list[Any] = []
        sync = pq.ExecStatus.PIPELINE_SYNC
        while True:
            if pg.is_busy():
                await anyio.wait_readable(sock)
                pg.consume_input()
                continue
            res = pg.get_result()
            if res is None:
                continue
            if res.status == sync:
                return results
            results.append(res)

    async def _rollback(self) -> None:
        pg = self.pgconn
        pg.enter_pipeline_mode()
        pg.send_query_params(b"ROLLBACK", None)
        pg.pipeline_sync()
        await self._collect()
        pg.exit_pipeline_mode()


def _quote(schema: str) -> str:
    return '"' + schema + '"'


class PostgresStore:
    """A :class:`~jobkit.abc.JobStore` in PostgreSQL; any number of processes and hosts may share it.

    :param dsn: a libpq connection string or ``postgresql://`` URL (without ``schema=``).
    :param schema: the PostgreSQL schema holding jobkit's tables (created when missing).
    :param min_connections: connections opened at once (up to ``groups``).
    :param max_connections: most connections the store opens: ``min(groups,
        max_connections - 1)`` for statements; exclusive sections have one or two of their own
        and the notifier's listener one more.
    :param application_name: shown in ``pg_stat_activity`` (default ``jobkit <host>:<pid>``).
    :param statement_timeout: seconds a statement may run before the server stops it.
    :param idle_in_transaction_timeout: seconds a transaction may sit idle (a bloat guard).
    :param groups: groups of statements in flight at once, each on its own connection.

    It has every optional member: ``claim_many`` (``FOR UPDATE SKIP LOCKED``), ``apply``
    (one transaction), ``exclusive`` (a session advisory lock) and ``notifier``
    (``LISTEN``/``NOTIFY``, see :class:`~jobkit.stores._postgres_notify.PostgresNotifier`).
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "jobkit",
        min_connections: int = 2,
        max_connections: int = 10,
        application_name: str | None = None,
        statement_timeout: float = 30.0,
        idle_in_transaction_timeout: float = 60.0,
        groups: int = 2,
    ) -> None:
        if not isinstance(dsn, str) or not dsn.strip():
            raise InvalidInput(
                "PostgresStore needs a connection string (dsn), e.g. postgresql://user@host/db."
            )
        if not isinstance(schema, str) or not _SCHEMA_NAME.fullmatch(schema):
            raise InvalidInput(
                f"Invalid PostgreSQL schema name {schema!r}: use letters, digits and _ "
                "(not starting with a digit, at most 51 characters)."
            )
        for name, value in (("min_connections", min_connections), ("max_connections", max_connections)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidInput(f"{name} must be a positive integer, got {value!r}.")
        if max_connections < min_connections:
            raise InvalidInput(
                f"max_connections ({max_connections}) is below min_connections ({min_connections})."
            )
        if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
            raise InvalidInput(f"groups must be a positive integer, got {groups!r}.")
        for name, seconds in (
            ("statement_timeout", statement_timeout),
            ("idle_in_transaction_timeout", idle_in_transaction_timeout),
        ):
            if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not seconds > 0:
                raise InvalidInput(f"{name} must be a positive number of seconds, got {seconds!r}.")
        self.dsn = dsn
        self.schema = schema
        self.min_connections = min_connections
        self.max_connections = max_connections
        self.application_name = application_name or f"jobkit {socket.gethostname()}:{os.getpid()}"
        self._timeouts = (int(statement_timeout * 1000), int(idle_in_transaction_timeout * 1000))
        # One connection stays free for exclusive() (which holds one for its block).
        self._groups = max(1, min(groups, max_connections - 1))
        self._pool: ConnectionPool[Any] | None = None
        self._limiter = anyio.CapacityLimiter(max_connections)
        self._queue: deque[_Op] = deque()
        self._lanes: list[_Lane] = []  # idle connections of the grouped statements
        self._running = 0  # groups in flight
        #: Names this store's writes in its notifications (see PostgresNotifier).
        self.origin = secrets.token_hex(8)
        s = _quote(schema)
        self.control_channel = f"jobkit_{schema}_ctl"
        self.event_channel = f"jobkit_{schema}_evt"
        self._sql = _Statements(s)

    def __repr__(self) -> str:
        return f"PostgresStore(schema={self.schema!r}, open={self._pool is not None})"

    # -- connections -------------------------------------------------------------------

    def connection_kwargs(self, *, role: str) -> dict[str, Any]:
        """libpq settings of every connection: timeouts, UTC, the application name."""
        from psycopg.conninfo import conninfo_to_dict

        statement, idle = self._timeouts
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "application_name": f"{self.application_name} {role}"[:63],
            "options": f"-c statement_timeout={statement} -c idle_in_transaction_session_timeout={idle} "
            "-c TimeZone=UTC",
        }
        if "connect_timeout" not in conninfo_to_dict(self.dsn):
            kwargs["connect_timeout"] = CONNECT_TIMEOUT  # connects are shielded from cancels: bound them
        return kwargs

    async def open(self) -> None:
        """Connect, then create or migrate the schema.

        :raises JobkitError: the server cannot be reached, or the schema is newer than this jobkit.
        """
        if self._pool is not None:
            return
        psycopg, psycopg_pool = _import_psycopg()
        pool = psycopg_pool.ConnectionPool(
            self.dsn,
            min_size=1,
            max_size=2,  # exclusive sections; statements run on the lanes
            kwargs=self.connection_kwargs(role="pool"),
            open=False,
            name=f"jobkit-{self.schema}",
        )
        try:
            await anyio.to_thread.run_sync(self._open_pool, pool, psycopg)
        except JobkitError:
            await self._discard(pool)
            raise
        except Exception as exc:
            await self._discard(pool)
            raise BackendError(f"Cannot open PostgresStore (schema {self.schema!r}): {exc}") from exc
        self._pool = pool

    async def _discard(self, pool: ConnectionPool[Any]) -> None:
        lanes, self._lanes = self._lanes, []
        for lane in lanes:
            lane.close()
        await anyio.to_thread.run_sync(pool.close)

    def _open_pool(self, pool: ConnectionPool[Any], psycopg: Any) -> None:
        # One direct connection first: an unreachable server fails at once, with libpq's reason.
        with psycopg.Connection.connect(self.dsn, **self.connection_kwargs(role="migrate")) as conn:
            migrate(conn, self.schema)
        pool.open(wait=True, timeout=30.0)
        for _ in range(min(self.min_connections, self._groups)):
            self._lanes.append(self._connect_lane())

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        lanes, self._lanes = self._lanes, []
        for lane in lanes:
            lane.close()
        if pool is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(pool.close)

    @property
    def pool(self) -> ConnectionPool[Any]:
        if self._pool is None:
            raise JobkitError("The PostgresStore is not open.")
        return self._pool

    # -- grouped execution -------------------------------------------------------------

    async def _run(
        self,
        sql: str,
        params: Sequence[Any],
        finish: Callable[[Any], Any] = _nothing,
        *,
        duplicate: str | None = None,
        alone: bool = False,
    ) -> Any:
        """Run one statement, grouped with the statements other tasks run meanwhile (in their
        transaction, unless ``alone``)."""
        if self._pool is None:
            raise JobkitError("The PostgresStore is not open.")
        await anyio.lowlevel.checkpoint_if_cancelled()  # the wait below is shielded
        op = _Op(sql, params, finish, duplicate, alone)
        self._queue.append(op)
        # Shielded: once queued, the statement runs; its caller learns the result.
        with anyio.CancelScope(shield=True):
            if self._running < self._groups:
                self._running += 1
                op.lead = True
            while True:
                if op.lead:  # this op holds a group slot: run groups until it is done
                    op.lead = False
                    await self._lead(op)
                if op.state == 1:
                    break
                op.event = anyio.Event()
                await op.event.wait()
        if op.error is not None:
            raise op.error
        return op.result

    async def _lead(self, op: _Op) -> None:
        """Run groups until ``op`` is done (or taken by another group); then hand this
        group slot to an operation still waiting in the queue, if any."""
        queue = self._queue
        try:
            await anyio.lowlevel.checkpoint()  # let the operations other ready tasks start join
            while op.state == 0 and queue:
                group = [queue.popleft() for _ in range(min(len(queue), MAX_GROUP))]
                try:
                    await self._execute(group)
                except Exception as exc:  # pragma: no cover - a bug: never leave callers waiting
                    for member in group:
                        member.error = BackendError(f"PostgreSQL call failed: {exc!r}")
                for member in group:
                    member.state = 1
                    if member.event is not None:
                        member.event.set()
        finally:
            self._running -= 1
            for waiting in queue:
                # Every queued op but a leader's own waits on its event (set before it yields).
                if waiting.event is not None and waiting.state == 0 and not waiting.lead:
                    waiting.lead = True
                    self._running += 1
                    waiting.event.set()
                    break

    async def _execute(self, group: list[_Op]) -> None:
        """Run a group on a free lane: alone in autocommit, else in one transaction."""
        import psycopg

        lane = self._idle_lane()
        try:
            if lane is None:
                # Shielded: a cancel while the thread connects would lose the connection it
                # returns (never closed); this way it is kept or closed below.
                with anyio.CancelScope(shield=True):
                    lane = await anyio.to_thread.run_sync(self._connect_lane)
                assert lane is not None
            shared = [op for op in group if not op.alone]
            if len(shared) < len(group):
                await lane.run([op for op in group if op.alone], transaction=False)
            if len(shared) == 1:
                await lane.run(shared, transaction=False)
            elif shared and not await lane.run(shared, transaction=True):
                # Again, each in its own transaction: only the failing statement fails.
                for op in shared:
                    op.error = op.result = None
                await lane.run(shared, transaction=False)
        except (psycopg.Error, OSError) as exc:
            if lane is not None:
                lane.close()
                lane = None
            error = BackendError(f"PostgreSQL error (schema {self.schema!r}): {exc}")
            for op in group:
                if op.state == 0 and op.error is None:
                    op.error, op.result = error, None
        finally:
            if lane is not None:
                if self._pool is None or lane.broken:
                    lane.close()
                else:
                    self._lanes.append(lane)

    def _idle_lane(self) -> _Lane | None:
        """An idle connection still alive (a server that ended it has said so by now)."""
        while self._lanes:
            lane = self._lanes.pop()
            if lane.alive():
                return lane
            lane.close()
        return None

    def _connect_lane(self) -> _Lane:
        import psycopg

        return _Lane(psycopg.Connection.connect(self.dsn, **self.connection_kwargs(role="pool")), self)

    def _error(self, exc: Exception) -> BackendError:
        return BackendError(f"PostgreSQL error (schema {self.schema!r}): {exc}")

    # -- jobs ------------------------------------------------------------------------------

    async def insert(self, job: Job) -> Job | None:
        row = _row(job)
        duplicate = f"A job with id {job.id!r} already exists."
        if job.idempotency_key is None:
            await self._run(self._sql.insert, row, duplicate=duplicate)
            return None
        params = (*row, job.tenant, job.idempotency_key)
        for _ in range(KEY_TRIES):
            found = await self._run(self._sql.insert_keyed, params, _one, duplicate=duplicate, alone=True)
            if found[0]:
                return None
            if found[1] is not None:
                return _job(found[1:])
            # The key's holder is not in this statement's snapshot (committed meanwhile), or
            # was deleted between the conflict and the read: try again.
            await anyio.lowlevel.checkpoint()
        raise BackendError(  # pragma: no cover - a holder would have to vanish 100 times over
            f"PostgreSQL error (schema {self.schema!r}): the idempotency key of job {job.id!r} "
            "stayed taken by a job that could not be read."
        )

    async def get(self, job_id: str) -> Job | None:
        row = await self._run(self._sql.get, (job_id,), _one)
        return None if row is None else _job(row)

    async def replace(self, job: Job, *, expected_version: int) -> bool:
        if job.status is JobStatus.CANCELLING:
            # The cancel note goes out in the transaction that writes `cancelling`.
            return bool(
                await self._run(
                    self._sql.update_notify,
                    (
                        *_update_values(job, expected_version),
                        self.control_channel,
                        self._cancel_payload(job.id),
                    ),
                    _hit,
                )
            )
        return bool(await self._run(self._sql.update, _update_values(job, expected_version), _hit))

    def _cancel_payload(self, job_id: str) -> str:
        return f"c {self.origin} {job_id}"

    async def remove(self, job_id: str, *, expected_version: int) -> bool:
        return bool(await self._run(self._sql.remove, (job_id, expected_version), _hit))

    async def claim(self, *, now: datetime, worker_id: str, lease_until: datetime) -> Job | None:
        jobs = await self.claim_many(
            now=now, worker_id=worker_id, lease_until=lease_until, kinds=None, limit=1
        )
        return jobs[0] if jobs else None

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
        if kinds is None:
            rows = await self._run(self._sql.claim, (limit, now, worker_id, lease_until), _rows)
        else:
            wanted = list(dict.fromkeys(kinds))
            if not wanted:
                return []
            rows = await self._run(self._sql.claim_kinds, (wanted, limit, now, worker_id, lease_until), _rows)
        rows.sort(key=_claim_order)  # RETURNING gives no order
        return [_job(row[2:]) for row in rows]

    async def apply(self, change: Change) -> bool:
        job = change.job
        if job is not None and job.id != change.job_id:
            raise JobkitError(f"Change of {change.job_id!r} carries job {job.id!r}.")
        sql, params = self._sql.apply(
            change,
            None if job is None else _update_values(job, change.expected_version),
            None if change.audit is None else _audit_row(change.audit),
            (self.control_channel, self._cancel_payload(change.job_id))
            if job is not None and job.status is JobStatus.CANCELLING
            else None,
        )
        return bool(await self._run(sql, params, _hit))

    @asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[bool]:
        """A session advisory lock on ``name`` in this schema, held on one pooled connection
        for the block; False (at once) when another session holds it."""
        key = f"jobkit:{self.schema}:{name}"
        pool = self.pool
        with anyio.CancelScope(shield=True):  # a connection taken as we are cancelled goes back
            conn = await anyio.to_thread.run_sync(pool.getconn, limiter=self._limiter)
        got = False
        try:
            got = await anyio.to_thread.run_sync(_try_lock, conn, key, limiter=self._limiter)
            yield got
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_release, pool, conn, key, got, limiter=self._limiter)

    def notifier(self) -> PostgresNotifier:
        """A notifier that reaches every process using this schema (LISTEN/NOTIFY)."""
        from ._postgres_notify import PostgresNotifier

        return PostgresNotifier(self)

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
            tenant=tenant,
            statuses=statuses,
            kind=kind,
            include_deleted=include_deleted,
            before=before,
            mark="%s",
        )
        sql = f"SELECT seq, {_SELECT} FROM {self._sql.jobs}{where} ORDER BY seq DESC LIMIT %s"
        params.append(limit + 1)
        rows = await self._run(sql, params, _rows)
        jobs = [_job(row[1:]) for row in rows[:limit]]
        next_before = rows[limit - 1][0] if len(rows) > limit else None
        return jobs, next_before

    async def jobs_with_prefix(
        self, prefix: str, *, tenant: str | None, include_deleted: bool, limit: int
    ) -> list[Job]:
        where, params = job_filter(
            tenant=tenant, kind=None, include_deleted=include_deleted, id_prefix=prefix, mark="%s"
        )
        sql = f"SELECT {_SELECT} FROM {self._sql.jobs}{where} ORDER BY seq DESC LIMIT %s"
        params.append(limit)
        return [_job(row) for row in await self._run(sql, params, _rows)]

    async def position(self, job_id: str) -> int | None:
        row = await self._run(self._sql.position, (job_id,), _one)
        return None if row is None else int(row[0])

    async def expired(self, now: datetime, limit: int) -> list[Job]:
        return [_job(row) for row in await self._run(self._sql.expired, (now, limit), _rows)]

    async def soft_deleted_before(self, cutoff: datetime, limit: int) -> list[Job]:
        return [_job(row) for row in await self._run(self._sql.soft_deleted, (cutoff, limit), _rows)]

    async def renew_leases(self, worker_id: str, job_ids: Sequence[str], lease_until: datetime) -> list[Job]:
        ids = list(dict.fromkeys(job_ids))
        if not ids:
            return []
        rows = await self._run(self._sql.renew, (lease_until, worker_id, ids), _rows)
        return [_job(row) for row in rows]

    async def count_jobs(self, *, tenant: str | None, kind: str | None) -> dict[JobStatus, int]:
        where, params = job_filter(tenant=tenant, kind=kind, mark="%s")
        sql = f"SELECT status, count(*) FROM {self._sql.jobs}{where} GROUP BY status"
        return {_STATUS[status]: count for status, count in await self._run(sql, params, _rows)}

    async def leases(self, limit: int) -> list[Lease]:
        rows = await self._run(self._sql.leases, (limit,), _rows)
        return [Lease(job=_job(row), owner=row[-2], until=row[-1]) for row in rows]

    async def expired_leases(self, now: datetime, limit: int) -> list[Job]:
        return [_job(row) for row in await self._run(self._sql.expired_leases, (now, limit), _rows)]

    # -- scheduled jobs, paused kinds, schedules --------------------------------------------

    async def promote_due(self, now: datetime, limit: int) -> list[Job]:
        if limit <= 0:
            return []
        rows = await self._run(self._sql.promote, (now, limit), _rows)
        rows.sort(key=_due_order)  # RETURNING gives no order
        return [_job(row[2:]) for row in rows]

    async def next_due(self) -> datetime | None:
        row = await self._run(self._sql.next_due, (), _one)
        return None if row is None else row[0]

    async def set_paused(self, kind: str, paused: bool) -> bool:
        sql = self._sql.pause if paused else self._sql.resume
        return bool(await self._run(sql, (kind,), _hit))

    async def paused_kinds(self) -> frozenset[str]:
        return frozenset(row[0] for row in await self._run(self._sql.paused, (), _rows))

    async def put_schedule(self, schedule: Schedule) -> None:
        await self._run(self._sql.put_schedule, _schedule_row(schedule))

    async def remove_schedule(self, tenant: str | None, name: str) -> bool:
        return bool(await self._run(self._sql.remove_schedule, (tenant or "", name), _hit))

    async def list_schedules(self, tenant: str | None) -> list[Schedule]:
        if tenant is None:
            rows = await self._run(self._sql.all_schedules, (), _rows)
        else:
            rows = await self._run(self._sql.tenant_schedules, (tenant,), _rows)
        return [_schedule(row) for row in rows]

    async def due_schedules(self, now: datetime, limit: int) -> list[Schedule]:
        return [_schedule(row) for row in await self._run(self._sql.due_schedules, (now, limit), _rows)]

    async def advance_schedule(self, schedule: Schedule, next_run_at: datetime) -> bool:
        params = (
            next_run_at, schedule.tenant or "", schedule.name, schedule.created_at,
            schedule.next_run_at,
        )  # fmt: skip
        return bool(await self._run(self._sql.advance_schedule, params, _hit))

    async def next_schedule(self) -> datetime | None:
        row = await self._run(self._sql.next_schedule, (), _one)
        return None if row is None else row[0]

    # -- audit and purge queue -------------------------------------------------------------

    async def add_audit(self, record: AuditRecord) -> None:
        await self._run(self._sql.insert_audit, _audit_row(record))

    async def list_audit(self, *, job_id: str | None, tenant: str | None, limit: int) -> list[AuditRecord]:
        where: list[str] = []
        params: list[Any] = []
        if job_id is not None:
            where.append("job_id = %s")
            params.append(job_id)
        if tenant is not None:
            where.append("tenant = %s")
            params.append(tenant)
        sql = f"SELECT id, at, action, actor_id, tenant, job_id, details FROM {self._sql.audit}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT %s"
        params.append(limit)
        return [_audit(row) for row in await self._run(sql, params, _rows)]

    async def remove_audit_before(self, cutoff: datetime) -> int:
        total = 0
        while True:  # in batches: no long transaction holds the table
            removed: int = await self._run(self._sql.prune_audit, (cutoff, AUDIT_PRUNE_BATCH), _count)
            total += removed
            if removed < AUDIT_PRUNE_BATCH:
                return total

    async def add_purge(self, prefix: str) -> None:
        await self._run(self._sql.insert_purge, (prefix,))

    async def pending_purges(self, limit: int) -> list[str]:
        rows = await self._run(self._sql.pending_purges, (limit,), _rows)
        return [row[0] for row in rows]

    async def remove_purge(self, prefix: str) -> None:
        await self._run(self._sql.remove_purge, (prefix,))


def _claim_order(row: Sequence[Any]) -> tuple[int, int]:
    return -row[0], row[1]


def _due_order(row: Sequence[Any]) -> tuple[datetime, int]:
    return row[0], row[1]


def _try_lock(conn: Any, key: str) -> bool:
    row = conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (key,)).fetchone()
    return bool(row[0])


def _release(pool: Any, conn: Any, key: str, held: bool) -> None:
    try:
        if held:
            conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,))
    except Exception:
        conn.close()  # the lock goes with the session; the pool drops a closed connection
    pool.putconn(conn)


# The statements, with the schema's tables named.
# What replace() writes: the fields that change over a job's life. The others (id, kind,
# payload, tenant, created_at, ttl, timeout, labels, idempotency_key, retry) are fixed at
# insert, so the indexes on them are never touched by an update.
_MUTABLE = (
    "status", "priority", "progress", "progress_message", "result", "error", "cancel_reason",
    "started_at", "finished_at", "expires_at", "deleted_at", "version", "attempts",
    "max_attempts", "run_at",
)  # fmt: skip
_SCHEDULE_COLUMNS = "name, kind, payload, cron, timezone, tenant, priority, next_run_at, created_at"
#: Tries of an insert whose key holder vanished between the conflict and the read.
KEY_TRIES = 100


class _Statements:
    def __init__(self, s: str) -> None:
        self.jobs = jobs = f"{s}.jobs"
        self.audit = f"{s}.audit"
        self.insert = f"INSERT INTO {jobs} ({_SELECT}) VALUES ({', '.join(['%s'] * len(_COLUMNS))})"
        self.get = f"SELECT {_SELECT} FROM {jobs} WHERE id = %s"
        self._update = (
            f"UPDATE {jobs} SET "
            + ", ".join(f"{c} = %s" for c in _MUTABLE)
            + ", lease_owner = CASE WHEN %s THEN lease_owner END"
            + ", lease_until = CASE WHEN %s THEN lease_until END"
            + " WHERE id = %s AND version = %s"
        )
        self.update = self._update
        self.update_notify = f"WITH u AS ({self._update} RETURNING id) SELECT pg_notify(%s, %s) FROM u"
        self._delete = f"DELETE FROM {jobs} WHERE id = %s AND version = %s"
        self.remove = self._delete
        start = (
            f"UPDATE {jobs} AS j SET status = 'running', started_at = %s, attempts = j.attempts + 1, "
            "progress = NULL, progress_message = NULL, version = j.version + 1, "
            "lease_owner = %s, lease_until = %s FROM next WHERE j.seq = next.seq "
            f"RETURNING j.priority, j.seq, {', '.join('j.' + c for c in _COLUMNS)}"
        )
        self.paused_kinds = paused = f"{s}.paused_kinds"
        # Paused kinds are left out (a small table, hashed once per claim).
        not_paused = f"AND kind NOT IN (SELECT kind FROM {paused}) "
        self.claim = (
            f"WITH next AS (SELECT seq FROM {jobs} WHERE status = 'pending' {not_paused}"
            "ORDER BY priority DESC, seq LIMIT %s FOR UPDATE SKIP LOCKED) " + start
        )
        self.claim_kinds = (
            f"WITH next AS (SELECT seq FROM {jobs} WHERE status = 'pending' AND kind = ANY(%s) "
            f"{not_paused}ORDER BY priority DESC, seq LIMIT %s FOR UPDATE SKIP LOCKED) " + start
        )
        # A taken key stores nothing; the holder is read in the same statement. Its snapshot
        # may predate the holder (inserted by a transaction that committed while this one
        # waited on it): then neither comes back, and the caller tries again.
        self.insert_keyed = (
            f"WITH ins AS ({self.insert} ON CONFLICT ((coalesce(tenant, '')), idempotency_key) "
            "WHERE idempotency_key IS NOT NULL AND deleted_at IS NULL DO NOTHING RETURNING seq) "
            f"SELECT (SELECT count(*) FROM ins), {', '.join('h.' + c for c in _COLUMNS)} "
            f"FROM (VALUES (1)) AS one (x) LEFT JOIN {jobs} AS h ON NOT EXISTS (SELECT 1 FROM ins) "
            "AND coalesce(h.tenant, '') = coalesce(%s::text, '') AND h.idempotency_key = %s::text "
            "AND h.deleted_at IS NULL"
        )
        # Due jobs in run_at order from the partial index jobs_due (scheduled jobs only), as
        # machine.due() makes them; a job another transaction holds is left to it.
        self.promote = (
            f"UPDATE {jobs} AS j SET status = 'pending', run_at = NULL, version = j.version + 1 "
            f"FROM (SELECT seq, run_at FROM {jobs} WHERE status = 'scheduled' AND run_at <= %s "
            "ORDER BY run_at, seq LIMIT %s FOR UPDATE SKIP LOCKED) AS due "
            f"WHERE j.seq = due.seq RETURNING due.run_at, due.seq, {', '.join('j.' + c for c in _COLUMNS)}"
        )
        self.next_due = f"SELECT min(run_at) FROM {jobs} WHERE status = 'scheduled'"
        self.pause = f"INSERT INTO {paused} (kind, at) VALUES (%s, now()) ON CONFLICT (kind) DO NOTHING"
        self.resume = f"DELETE FROM {paused} WHERE kind = %s"
        self.paused = f"SELECT kind FROM {paused}"
        self.schedules = schedules = f"{s}.schedules"
        updates = ", ".join(f"{c} = excluded.{c}" for c in _SCHEDULE_COLUMNS.split(", ")[1:])
        self.put_schedule = (
            f"INSERT INTO {schedules} (tenant_key, {_SCHEDULE_COLUMNS}) VALUES ({', '.join(['%s'] * 10)}) "
            f"ON CONFLICT (tenant_key, name) DO UPDATE SET {updates}"
        )
        self.remove_schedule = f"DELETE FROM {schedules} WHERE tenant_key = %s AND name = %s"
        # Byte order (COLLATE "C"), as the other stores sort: never the database's locale.
        self.all_schedules = (
            f'SELECT {_SCHEDULE_COLUMNS} FROM {schedules} ORDER BY name COLLATE "C", tenant_key COLLATE "C"'
        )
        self.tenant_schedules = (
            f'SELECT {_SCHEDULE_COLUMNS} FROM {schedules} WHERE tenant_key = %s ORDER BY name COLLATE "C"'
        )
        self.due_schedules = (
            f"SELECT {_SCHEDULE_COLUMNS} FROM {schedules} WHERE next_run_at <= %s "
            'ORDER BY next_run_at, name COLLATE "C", tenant_key COLLATE "C" LIMIT %s'
        )
        self.advance_schedule = (
            f"UPDATE {schedules} SET next_run_at = %s WHERE tenant_key = %s AND name = %s "
            "AND created_at = %s AND next_run_at = %s"
        )
        self.next_schedule = f"SELECT min(next_run_at) FROM {schedules}"
        self.position = (
            f"SELECT 1 + (SELECT count(*) FROM {jobs} AS ahead WHERE ahead.status = 'pending' "
            "AND (ahead.priority > job.priority OR (ahead.priority = job.priority AND ahead.seq < job.seq))) "
            f"FROM {jobs} AS job WHERE job.id = %s AND job.status = 'pending'"
        )
        self.expired = f"SELECT {_SELECT} FROM {jobs} WHERE expires_at <= %s ORDER BY expires_at LIMIT %s"
        self.soft_deleted = (
            f"SELECT {_SELECT} FROM {jobs} WHERE deleted_at <= %s ORDER BY deleted_at LIMIT %s"
        )
        self.renew = (
            f"UPDATE {jobs} SET lease_until = %s WHERE lease_owner = %s AND id = ANY(%s) "
            f"AND status IN ('running', 'cancelling') RETURNING {_SELECT}"
        )
        self.leases = (
            f"SELECT {_SELECT}, lease_owner, lease_until FROM {jobs} WHERE status IN ('running', "
            "'cancelling') AND lease_until IS NOT NULL ORDER BY lease_until LIMIT %s"
        )
        self.expired_leases = (
            f"SELECT {_SELECT} FROM {jobs} WHERE status IN ('running', 'cancelling') "
            "AND lease_until < %s ORDER BY lease_until LIMIT %s"
        )
        self._audit_columns = "id, at, action, actor_id, tenant, job_id, details"
        self.insert_audit = (
            f"INSERT INTO {self.audit} ({self._audit_columns}) VALUES (%s, %s, %s, %s, %s, %s, %s)"
        )
        self.prune_audit = (
            f"DELETE FROM {self.audit} WHERE seq IN (SELECT seq FROM {self.audit} WHERE at < %s LIMIT %s)"
        )
        self.purges = f"{s}.purges"
        self.insert_purge = f"INSERT INTO {self.purges} (prefix) VALUES (%s) ON CONFLICT (prefix) DO NOTHING"
        self.pending_purges = f"SELECT prefix FROM {self.purges} ORDER BY seq LIMIT %s"
        self.remove_purge = f"DELETE FROM {self.purges} WHERE prefix = %s"

    def apply(
        self,
        change: Change,
        values: tuple[Any, ...] | None,
        audit: tuple[Any, ...] | None,
        notify: tuple[str, str] | None,
    ) -> tuple[str, tuple[Any, ...]]:
        """One statement: the compare-and-swap, and (only when it hit) audit, purge, cancel note."""
        if values is None:
            parts = [f"WITH u AS ({self._delete} RETURNING id)"]
            params: tuple[Any, ...] = (change.job_id, change.expected_version)
        else:
            parts = [f"WITH u AS ({self._update} RETURNING id)"]
            params = values
        if audit is not None:
            parts.append(
                f", a AS (INSERT INTO {self.audit} ({self._audit_columns}) "
                "SELECT %s::text, %s::timestamptz, %s::text, %s::text, %s::text, %s::text, %s::text FROM u)"
            )
            params += audit
        if change.purge is not None:
            parts.append(
                f", p AS (INSERT INTO {self.purges} (prefix) SELECT %s::text FROM u "
                "ON CONFLICT (prefix) DO NOTHING)"
            )
            params += (change.purge,)
        if notify is not None:
            parts.append(" SELECT pg_notify(%s, %s) FROM u")
            params += notify
        else:
            parts.append(" SELECT 1 FROM u")
        return "".join(parts), params


def migrate(conn: Any, schema: str) -> int:
    """Create or migrate jobkit's tables in ``schema`` on ``conn`` (an autocommit connection).

    One transaction under an advisory transaction lock: processes starting at once wait for
    each other, and a failing step leaves nothing behind. Returns the version found before.

    :raises JobkitError: the schema is newer than this jobkit.
    """
    s = _quote(schema)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"jobkit:{schema}:migrate",))
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
        exists = conn.execute("SELECT to_regclass(%s)", (f"{s}.schema_version",)).fetchone()[0]
        if exists is None:
            conn.execute(f"CREATE TABLE {s}.schema_version (version integer NOT NULL)")
            conn.execute(f"INSERT INTO {s}.schema_version VALUES (0)")
            found = 0
        else:
            found = int(conn.execute(f"SELECT version FROM {s}.schema_version").fetchone()[0])
        if found > SCHEMA_VERSION:
            raise JobkitError(
                f"The PostgreSQL schema {schema!r} has jobkit schema version {found}, newer than this "
                f"jobkit ({SCHEMA_VERSION}): upgrade jobkit."
            )
        for step in MIGRATIONS[found:]:
            conn.execute(step.format(s=s))
        if found < SCHEMA_VERSION:
            conn.execute(f"UPDATE {s}.schema_version SET version = %s", (SCHEMA_VERSION,))
    return found
