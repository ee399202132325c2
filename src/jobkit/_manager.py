"""JobManager: the orchestrator. Load (tenant-scoped) -> authorize -> pure transition ->
store (compare-and-swap) -> events and audit -> artifacts."""

from __future__ import annotations

import builtins
import enum
import functools
import inspect
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

import anyio
import anyio.lowlevel
import anyio.to_thread
import attrs
import structlog
from anyio.abc import TaskGroup

from . import _machine as machine
from ._context import JobContext, SyncJobContext, remove_scratch
from ._errors import (
    ArtifactNotFound,
    BackendError,
    InvalidInput,
    InvalidState,
    JobCancelled,
    JobkitError,
    JobNotFound,
    PermissionDenied,
)
from ._events import EventHub, EventStream
from ._policies import Action, DefaultAuthorizer, DeleteMode, DeletePolicy, Retention
from ._records import (
    ACTIVE,
    TERMINAL,
    Actor,
    AuditAction,
    AuditRecord,
    EventType,
    Job,
    JobEvent,
    JobStatus,
    Page,
    SweepReport,
    to_duration,
)
from ._token import CancelSource, CancelToken
from ._validate import (
    artifact_key,
    artifact_prefix,
    check_job_id,
    check_kind,
    check_labels,
    check_limit,
    check_max_attempts,
    check_priority,
    check_statuses,
    decode_cursor,
    encode_cursor,
    json_value,
)
from .abc import Authorizer, BlobStore, JobStore

__all__ = ["Handler", "JobManager", "SWEEPER"]

log = structlog.get_logger("jobkit")
audit_log = structlog.get_logger("jobkit.audit")

#: The actor id of the sweeper in audit records.
SWEEPER = "system:sweeper"
_SWEEP_BATCH = 500

AsyncHandler = Callable[[JobContext, Any], Awaitable[Any]]
SyncHandler = Callable[[SyncJobContext, Any], Any]
Handler = AsyncHandler | SyncHandler
F = TypeVar("F", bound=Callable[..., Any])

_EVENT_FOR_STATUS = {
    JobStatus.PENDING: EventType.REQUEUED,
    JobStatus.RUNNING: EventType.STARTED,
    JobStatus.CANCELLING: EventType.CANCELLING,
    JobStatus.COMPLETED: EventType.COMPLETED,
    JobStatus.FAILED: EventType.FAILED,
    JobStatus.CANCELLED: EventType.CANCELLED,
}


_ACTION_PHRASES = {
    Action.SUBMIT: "submit jobs",
    Action.READ: "read this job",
    Action.CANCEL: "cancel jobs",
    Action.DELETE: "delete jobs",
    Action.DELETE_ARTIFACT: "delete artifacts",
    Action.SET_PRIORITY: "change job priorities (admins only)",
    Action.READ_DELETED: "read deleted jobs (admins only)",
    Action.READ_AUDIT: "read the audit trail (admins only)",
}


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    CLOSING = "closing"
    CLOSED = "closed"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _is_async(fn: Callable[..., Any]) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - async callable objects
    return call is not None and inspect.iscoroutinefunction(call)


def _seconds(value: timedelta) -> str:
    seconds = value.total_seconds()
    return f"{seconds:g}s"


class _RefLock:
    """A lock shared by the callers deleting one job, dropped when the last one leaves."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = anyio.Lock()
        self.users = 0


class _Waiter:
    """One caller of :meth:`JobManager.wait`; ``job`` is set when the job finished here."""

    __slots__ = ("event", "job")

    def __init__(self) -> None:
        self.event: anyio.Event | None = None
        self.job: Job | None = None


class _Run:
    """Bookkeeping for one job running in this manager."""

    __slots__ = (
        "context",
        "force_scope",
        "handler",
        "is_async",
        "job",
        "manager",
        "scope",
        "token",
        "watchers",
    )

    def __init__(self, manager: JobManager, job: Job, handler: Handler | None, is_async: bool) -> None:
        self.manager = manager
        self.job = job
        self.handler = handler
        self.is_async = is_async
        self.token = CancelToken()
        self.scope: anyio.CancelScope | None = None
        self.watchers: list[anyio.CancelScope] | None = None
        self.force_scope: anyio.CancelScope | None = None
        self.context = JobContext(self)


class JobManager:
    """Runs jobs and manages them: cancel, delete, sweep, prioritise, audit, events.

    Use it as ``async with jobs:``; that starts ``concurrency`` workers and the sweeper,
    and on exit stops taking jobs, interrupts running ones (they go back to ``pending``)
    and waits for them, forcing async handlers after ``cancel_grace``.

    :param store: where jobs live (default: a new :class:`~jobkit.stores.MemoryStore`).
    :param blobs: where artifacts live (default: a new :class:`~jobkit.blobs.MemoryBlobStore`).
    :param concurrency: most handlers running at once (0: a manager that only manages).
    :param retention: how long finished jobs are kept.
    :param delete_policy: how :meth:`delete` and the sweeper remove jobs.
    :param authorizer: who may do what (default: :class:`DefaultAuthorizer`).
    :param sweep_interval: seconds between sweeps (None: only :meth:`sweep` on demand).
    :param cancel_grace: after a cancel, how long an async handler may ignore its token
        before it is cancelled through its cancel scope (None: never forced).
    :param audit_retention: how long audit records are kept.
    :param clock: returns the current time, timezone-aware UTC.
    :param lease_duration: how long a worker's claim on a job lasts without a heartbeat.
    :param poll_interval: how often idle workers and waiters re-check a store shared with
        other processes.
    """

    def __init__(
        self,
        store: JobStore | None = None,
        blobs: BlobStore | None = None,
        *,
        concurrency: int = 10,
        retention: Retention = Retention(),  # noqa: B008 - frozen value
        delete_policy: DeletePolicy = DeletePolicy(),  # noqa: B008 - frozen value
        authorizer: Authorizer | None = None,
        sweep_interval: timedelta | float | None = 60.0,
        cancel_grace: timedelta | float | None = None,
        audit_retention: timedelta | float | None = timedelta(days=90),
        clock: Callable[[], datetime] | None = None,
        lease_duration: timedelta | float = 60.0,
        poll_interval: timedelta | float = 1.0,
    ) -> None:
        from .blobs import MemoryBlobStore
        from .stores import MemoryStore

        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 0:
            raise InvalidInput(f"concurrency must be a non-negative integer, got {concurrency!r}.")
        if not isinstance(retention, Retention):
            raise InvalidInput("retention must be a jobkit.Retention.")
        if not isinstance(delete_policy, DeletePolicy):
            raise InvalidInput("delete_policy must be a jobkit.DeletePolicy.")
        self._store: JobStore = store if store is not None else MemoryStore()
        self._blobs: BlobStore = blobs if blobs is not None else MemoryBlobStore()
        self._concurrency = concurrency
        self._retention = retention
        self._delete_policy = delete_policy
        self._authorizer: Authorizer = authorizer if authorizer is not None else DefaultAuthorizer()
        self._sweep_interval = to_duration(sweep_interval)
        if self._sweep_interval is not None and self._sweep_interval <= timedelta(0):
            raise InvalidInput("sweep_interval must be positive (or None to sweep on demand).")
        grace = to_duration(cancel_grace)
        self._cancel_grace = None if grace is None else grace.total_seconds()
        self._audit_retention = to_duration(audit_retention)
        self._clock = clock or _utcnow
        lease = to_duration(lease_duration)
        poll = to_duration(poll_interval)
        if lease is None or lease <= timedelta(0) or poll is None or poll <= timedelta(0):
            raise InvalidInput("lease_duration and poll_interval must be positive.")
        self._lease = lease
        self._poll = poll.total_seconds()
        self._handlers: dict[str, tuple[Handler, bool]] = {}
        self._worker_id = secrets.token_hex(6)
        self._state = _State.NEW
        self._hub = EventHub(self._clock)
        self._running: dict[str, _Run] = {}
        self._idle: list[anyio.Event] = []
        self._waiters: dict[str, list[_Waiter]] = {}
        self._delete_locks: dict[str, _RefLock] = {}
        self._stack: AsyncExitStack | None = None
        self._tg: TaskGroup | None = None
        self._workers_done: anyio.Event | None = None
        self._thread_limiter: anyio.CapacityLimiter | None = None

    def __repr__(self) -> str:
        return (
            f"JobManager(store={self._store!r}, concurrency={self._concurrency}, state={self._state.value})"
        )

    # -- handlers ----------------------------------------------------------------------

    def handler(self, kind: str) -> Callable[[F], F]:
        """Decorator registering a handler for ``kind``: ``async def h(ctx, payload)`` or a sync def."""

        def decorate(fn: F) -> F:
            self.register(kind, fn)
            return fn

        return decorate

    def register(self, kind: str, fn: Handler) -> None:
        """Register ``fn`` as the handler of ``kind``. A sync function runs in a worker thread.

        :raises InvalidInput: ``kind`` is empty or already has a handler.
        """
        check_kind(kind)
        if not callable(fn):
            raise InvalidInput(f"The handler for {kind!r} must be callable.")
        if kind in self._handlers:
            raise InvalidInput(f"A handler for {kind!r} is already registered.")
        self._handlers[kind] = (fn, _is_async(fn))

    @property
    def kinds(self) -> frozenset[str]:
        """The kinds with a registered handler."""
        return frozenset(self._handlers)

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> JobManager:
        if self._state is not _State.NEW:
            raise JobkitError("A JobManager can be started only once; create a new one.")
        async with AsyncExitStack() as stack:
            await self._store.open()
            stack.push_async_callback(self._store.close)
            await self._blobs.open()
            stack.push_async_callback(self._blobs.close)
            self._tg = await stack.enter_async_context(anyio.create_task_group())
            self._state = _State.RUNNING
            self._thread_limiter = anyio.CapacityLimiter(max(1, self._concurrency))
            self._workers_done = anyio.Event()
            self._tg.start_soon(self._run_workers)
            if self._sweep_interval is not None:
                self._tg.start_soon(self._sweep_forever, self._sweep_interval.total_seconds())
            if self._concurrency:
                self._tg.start_soon(self._heartbeat_forever)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._state is not _State.RUNNING or self._stack is None:
            return
        self._state = _State.CLOSING
        try:
            for event in self._idle:
                event.set()
            self._idle.clear()
            for run in list(self._running.values()):
                self._stop(run, "The job manager is shutting down.", CancelSource.SHUTDOWN)
            assert self._workers_done is not None
            assert self._tg is not None
            await self._workers_done.wait()
            self._tg.cancel_scope.cancel()
        finally:
            self._hub.close()
            self._state = _State.CLOSED
            for waiters in self._waiters.values():
                for waiter in waiters:
                    if waiter.event is not None:
                        waiter.event.set()
            stack, self._stack = self._stack, None
            await stack.__aexit__(*exc_info)  # type: ignore[arg-type]

    def _check_open(self) -> None:
        if self._state is not _State.RUNNING:
            if self._state is _State.NEW:
                raise JobkitError("The JobManager is not started: use it inside `async with jobs:`.")
            raise JobkitError("The JobManager is closed: create a new one and enter `async with` again.")

    # -- workers -----------------------------------------------------------------------

    async def _run_workers(self) -> None:
        assert self._workers_done is not None
        try:
            async with anyio.create_task_group() as tg:
                for _ in range(self._concurrency):
                    tg.start_soon(self._worker)
        finally:
            self._workers_done.set()

    async def _worker(self) -> None:
        store = self._store
        done = 0
        while self._state is _State.RUNNING:
            done += 1
            if done % 16 == 0:
                # Stores and handlers that never suspend would otherwise keep the loop to
                # this one worker: let other tasks (web requests, the sweeper) run.
                await anyio.lowlevel.checkpoint()
            now = self._clock()
            try:
                job = await store.claim(now=now, worker_id=self._worker_id, lease_until=now + self._lease)
            except Exception:
                log.exception("claim failed; retrying", store=repr(store))
                await anyio.sleep(self._poll)
                continue
            if job is None:
                await self._wait_for_work()
                continue
            await self._execute(job)
            if self._idle:
                # Other workers are idle, so every job submitted here has woken one of
                # them: join them instead of asking the store for work it does not have.
                await self._wait_for_work()

    async def _wait_for_work(self) -> None:
        if self._state is not _State.RUNNING:
            return  # closing: __aexit__ may already have woken the idle workers
        event = anyio.Event()
        self._idle.append(event)
        with anyio.move_on_after(self._poll):
            await event.wait()
        if not event.is_set():
            with suppress(ValueError):
                self._idle.remove(event)

    def _wake_worker(self) -> None:
        if self._idle:
            self._idle.pop().set()

    async def _execute(self, job: Job) -> None:
        entry = self._handlers.get(job.kind)
        handler, is_async = entry if entry is not None else (None, False)
        run = _Run(self, job, handler, is_async)
        self._running[job.id] = run
        self._publish(EventType.STARTED, job)
        if job.status is JobStatus.CANCELLING:  # defensive: a claimed job is running
            self._stop(run, job.cancel_reason, CancelSource.USER)
        try:
            outcome = await self._call_handler(run)
        except BaseException:
            # The manager itself is being torn down: put the job back, then re-raise.
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await self._conclude(run, self._interrupted)
            raise
        finally:
            self._running.pop(job.id, None)
            for scope in run.watchers or ():
                scope.cancel()
            if run.force_scope is not None:
                run.force_scope.cancel()
            scratch = run.context._cleanup()
            if scratch is not None:
                await anyio.to_thread.run_sync(remove_scratch, scratch)
        await self._conclude(run, outcome)

    async def _call_handler(self, run: _Run) -> Callable[[Job], Job]:
        job = run.job
        if run.handler is None:
            return functools.partial(self._failed, error=f"No handler is registered for kind {job.kind!r}.")
        if job.timeout is not None:
            self._watch(run, self._timeout_after, run, job.timeout)
        try:
            if run.is_async:
                handler = cast(AsyncHandler, run.handler)
                if self._cancel_grace is None:
                    result = await handler(run.context, job.payload)
                else:
                    with anyio.CancelScope() as scope:
                        run.scope = scope
                        result = await handler(run.context, job.payload)
                    if scope.cancelled_caught:
                        return self._outcome_of_stop(run, None)
            else:
                result = await anyio.to_thread.run_sync(
                    _call_sync,
                    run.handler,
                    SyncJobContext(run.context),
                    job.payload,
                    limiter=self._thread_limiter,
                )
        except JobCancelled as exc:
            return self._outcome_of_stop(run, exc)
        except Exception as exc:
            if run.token.cancelled:
                return self._outcome_of_stop(run, exc)
            log.warning("job failed", job_id=job.id, kind=job.kind, tenant=job.tenant, exc_info=exc)
            return functools.partial(self._failed, error=f"{type(exc).__name__}: {exc}")
        try:
            result = json_value(result, "result")
        except InvalidInput as exc:
            return functools.partial(self._failed, error=exc.message)
        return functools.partial(self._completed, result=result)

    def _outcome_of_stop(self, run: _Run, exc: BaseException | None) -> Callable[[Job], Job]:
        source = run.token.source
        if source is CancelSource.SHUTDOWN:
            return self._interrupted
        if source is CancelSource.TIMEOUT:
            timeout = run.job.timeout
            text = f"timed out after {_seconds(timeout)}" if timeout else "timed out"
            return functools.partial(self._failed, error=text)
        return self._observed_cancel

    # Transition builders (the clock is read when the write happens).
    def _completed(self, job: Job, result: Any) -> Job:
        return machine.complete(job, self._clock(), self._retention, result)

    def _failed(self, job: Job, error: str) -> Job:
        return machine.fail(job, self._clock(), self._retention, error)

    def _observed_cancel(self, job: Job) -> Job:
        return machine.observe_cancel(job, self._clock(), self._retention)

    def _interrupted(self, job: Job) -> Job:
        return machine.interrupt(job, self._clock(), self._retention)

    async def _conclude(self, run: _Run, transition: Callable[[Job], Job]) -> None:
        """Write the job's outcome, retrying on a concurrent change (e.g. a cancel)."""
        job = run.job
        for _ in range(100):
            new = transition(job)
            try:
                if await self._store.replace(new, expected_version=job.version):
                    break
                fresh = await self._store.get(job.id)
            except Exception:
                log.exception("could not record job outcome; retrying", job_id=job.id)
                await anyio.sleep(self._poll)
                continue
            if fresh is None or fresh.status not in ACTIVE or fresh.attempts != job.attempts:
                return  # recovered (and maybe claimed again) elsewhere: not ours to write
            job = fresh
        else:  # pragma: no cover - would need 100 concurrent writers
            log.error("gave up recording job outcome", job_id=job.id)
            return
        run.job = new
        self._publish(_EVENT_FOR_STATUS[new.status], new)
        if new.status is JobStatus.PENDING:
            self._wake_worker()
        else:
            self._notify_finished(new.id, new)

    def _watch(self, run: _Run, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        assert self._tg is not None
        scope = anyio.CancelScope()
        if run.watchers is None:
            run.watchers = []
        run.watchers.append(scope)
        self._tg.start_soon(_scoped, scope, fn, *args)

    async def _timeout_after(self, run: _Run, timeout: timedelta) -> None:
        await anyio.sleep(timeout.total_seconds())
        self._stop(run, f"timed out after {_seconds(timeout)}", CancelSource.TIMEOUT)

    def _stop(self, run: _Run, reason: str | None, source: CancelSource) -> None:
        """Set the run's token; force an async handler after ``cancel_grace``."""
        if not run.token._set(reason, source):
            return
        if run.is_async and self._cancel_grace is not None and self._tg is not None:
            scope = anyio.CancelScope()
            run.force_scope = scope
            self._tg.start_soon(_scoped, scope, self._force_after, run, self._cancel_grace)

    async def _force_after(self, run: _Run, grace: float) -> None:
        await anyio.sleep(grace)
        if run.scope is not None:
            log.info("forcing cancellation", job_id=run.job.id, grace=grace)
            run.scope.cancel()

    async def _heartbeat_forever(self) -> None:
        """Renew our leases, and learn of cancels written by other processes."""
        interval = min(self._poll, self._lease.total_seconds() / 3)
        while True:
            await anyio.sleep(interval)
            if not self._running:
                continue
            try:
                held = await self._store.renew_leases(
                    self._worker_id, list(self._running), self._clock() + self._lease
                )
            except Exception:
                log.exception("lease renewal failed; retrying")
                continue
            for job in held:
                run = self._running.get(job.id)
                if run is None or job.attempts != run.job.attempts:
                    continue
                if job.version > run.job.version:
                    run.job = job
                if job.status is JobStatus.CANCELLING:
                    self._stop(run, job.cancel_reason, CancelSource.USER)

    # -- writes from handlers ----------------------------------------------------------

    async def _update_running(self, run: _Run, change: Callable[[Job], Job]) -> Job:
        job = run.job
        while True:
            new = change(job)
            if new is job:
                return job
            if await self._store.replace(new, expected_version=job.version):
                run.job = new
                return new
            fresh = await self._store.get(job.id)
            if fresh is None or fresh.status not in ACTIVE or fresh.attempts != job.attempts:
                raise JobCancelled("The job is no longer running here (its lease was lost).", None)
            run.job = job = fresh

    async def _report_progress(self, run: _Run, fraction: float | None, message: str | None) -> None:
        new = await self._update_running(run, lambda job: machine.report_progress(job, fraction, message))
        if self._hub.streams:
            self._publish(EventType.PROGRESS, new, {"progress": fraction, "message": message})

    async def _store_result(self, run: _Run, value: Any) -> None:
        value = json_value(value, "result")
        await self._update_running(run, lambda job: machine.store_result(job, value))

    async def _put_artifact(self, run: _Run, name: str, data: bytes) -> None:
        key = artifact_key(run.job.id, name)
        await self._blobs.put(key, data)

    # -- events, audit, waiters --------------------------------------------------------

    def _publish(self, type: EventType, job: Job, data: Mapping[str, Any] | None = None) -> None:
        if self._hub.streams:
            self._hub.publish(
                JobEvent(
                    type=type,
                    job_id=job.id,
                    tenant=job.tenant,
                    status=job.status,
                    at=self._clock(),
                    data=data,
                )
            )

    async def _audit(
        self, action: AuditAction, actor_id: str | None, job: Job, details: Mapping[str, Any]
    ) -> None:
        record = AuditRecord(
            id=secrets.token_hex(16),
            at=self._clock(),
            action=action,
            actor_id=actor_id,
            tenant=job.tenant,
            job_id=job.id,
            details=details,
        )
        await self._store.add_audit(record)
        audit_log.info(
            str(action),
            job_id=job.id,
            tenant=job.tenant,
            actor=actor_id,
            kind=job.kind,
            **dict(details),
        )

    def _notify_finished(self, job_id: str, job: Job | None = None) -> None:
        """Wake the waiters of a job that finished (``job``) or was deleted (None)."""
        for waiter in self._waiters.pop(job_id, ()):
            waiter.job = job
            if waiter.event is not None:
                waiter.event.set()

    # -- access control ----------------------------------------------------------------

    def _authorize(self, actor: Actor | None, action: Action, job: Job | None) -> None:
        if actor is None:
            return
        if not self._authorizer.allows(actor, action, job):
            raise PermissionDenied(f"Actor {actor.id!r} is not allowed to {_ACTION_PHRASES[action]}.")

    async def _load(self, job_id: str, actor: Actor | None, *, include_deleted: bool = False) -> Job:
        check_job_id(job_id)
        if actor is not None and not isinstance(actor, Actor):
            raise InvalidInput("actor must be a jobkit.Actor or None.")
        job = await self._store.get(job_id)
        if job is None or (actor is not None and actor.tenant is not None and job.tenant != actor.tenant):
            raise JobNotFound(job_id)
        if job.deleted_at is not None:
            if not include_deleted:
                raise JobNotFound(job_id)
            self._authorize(actor, Action.READ_DELETED, job)
        return job

    @staticmethod
    def _actor_id(actor: Actor | None) -> str | None:
        return None if actor is None else actor.id

    # -- the public API ----------------------------------------------------------------

    async def submit(
        self,
        kind: str,
        payload: Any = None,
        *,
        actor: Actor | None = None,
        priority: int = 0,
        ttl: timedelta | float | None = None,
        timeout: timedelta | float | None = None,
        max_attempts: int = 1,
        labels: Mapping[str, str] | None = None,
    ) -> Job:
        """Store a new pending job and wake a worker.

        :param ttl: how long the job is kept once finished (overrides the Retention).
        :param timeout: stop the job (and fail it) when it runs longer.
        :param max_attempts: how many times the job may start when its worker is lost.
        :raises InvalidInput: unknown or empty kind, payload not JSON, bad priority,
            negative ttl, ... Nothing is stored.
        """
        self._check_open()
        check_kind(kind)
        if kind not in self._handlers:
            known = ", ".join(sorted(self._handlers)) or "none registered"
            raise InvalidInput(f"Unknown job kind {kind!r} (known: {known}).")
        payload = json_value(payload)
        check_priority(priority)
        ttl_value = to_duration(ttl)
        timeout_value = to_duration(timeout)
        if timeout_value is not None and timeout_value <= timedelta(0):
            raise InvalidInput("timeout must be positive.")
        check_max_attempts(max_attempts)
        check_labels(labels)
        if actor is not None:
            if not isinstance(actor, Actor):
                raise InvalidInput("actor must be a jobkit.Actor or None.")
            self._authorize(actor, Action.SUBMIT, None)
        job = Job(
            id=secrets.token_hex(16),
            kind=kind,
            status=JobStatus.PENDING,
            payload=payload,
            tenant=None if actor is None else actor.tenant,
            priority=priority,
            created_at=self._clock(),
            max_attempts=max_attempts,
            ttl=ttl_value,
            timeout=timeout_value,
            labels=labels,
        )
        await self._store.insert(job)
        self._publish(EventType.SUBMITTED, job)
        self._wake_worker()
        return job

    async def get(self, job_id: str, *, actor: Actor | None = None, include_deleted: bool = False) -> Job:
        """The job, as the actor may see it.

        :raises JobNotFound: no such job, another tenant's, or soft-deleted (unless
            ``include_deleted`` by the host or an admin).
        """
        self._check_open()
        job = await self._load(job_id, actor, include_deleted=include_deleted)
        self._authorize(actor, Action.READ, job)
        return job

    async def list(
        self,
        *,
        actor: Actor | None = None,
        status: JobStatus | str | Iterable[JobStatus | str] | None = None,
        kind: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        include_deleted: bool = False,
    ) -> Page:
        """A page of jobs, newest first; pass ``page.next_cursor`` back for the next one.

        Paging never repeats or skips a job while jobs are being added.

        :raises InvalidInput: unknown status, limit outside 1..1000, malformed cursor.
        """
        self._check_open()
        statuses = check_statuses(status)
        if kind is not None:
            check_kind(kind)
        check_limit(limit)
        before = decode_cursor(cursor)
        self._authorize(actor, Action.READ, None)
        if include_deleted:
            self._authorize(actor, Action.READ_DELETED, None)
        jobs, next_before = await self._store.list_jobs(
            tenant=None if actor is None else actor.tenant,
            statuses=statuses,
            kind=kind,
            include_deleted=include_deleted,
            before=before,
            limit=limit,
        )
        return Page(tuple(jobs), None if next_before is None else encode_cursor(next_before))

    async def cancel(self, job_id: str, *, actor: Actor | None = None, reason: str | None = None) -> Job:
        """Cancel a job: a pending one at once, a running one at its next checkpoint.

        Cancelling a ``cancelling`` job again changes nothing.

        :raises InvalidState: the job has already finished.
        """
        self._check_open()
        if reason is not None and not isinstance(reason, str):
            raise InvalidInput("reason must be a string.")
        job = await self._load(job_id, actor)
        self._authorize(actor, Action.CANCEL, job)
        while True:
            new = machine.cancel(job, self._clock(), self._retention, reason)
            if new is job:
                return job
            if await self._store.replace(new, expected_version=job.version):
                break
            job = await self._load(job_id, actor)
        run = self._running.get(job_id)
        if run is not None:
            run.job = new
            self._stop(run, reason, CancelSource.USER)
        self._publish(_EVENT_FOR_STATUS[new.status], new, {"reason": reason})
        await self._audit(
            AuditAction.CANCEL,
            self._actor_id(actor),
            new,
            {"from_status": job.status.value, "to_status": new.status.value, "reason": reason},
        )
        if new.is_terminal:
            self._notify_finished(job_id, new)
        return new

    async def delete(self, job_id: str, *, actor: Actor | None = None) -> None:
        """Delete a finished job under the :class:`DeletePolicy` (hard or soft, with artifacts).

        :raises InvalidState: the job is running or cancelling (or otherwise not deletable).
        :raises JobNotFound: no such job (also for every delete but the first of concurrent ones).
        :raises BackendError: ``on_artifact_error="fail"`` and the artifacts could not be
            deleted; the job is left as it was.
        """
        self._check_open()
        job = await self._load(job_id, actor)
        self._authorize(actor, Action.DELETE, job)
        await self._delete(
            job, self._actor_id(actor), AuditAction.DELETE, deletable=self._delete_policy.deletable
        )

    async def _delete(
        self,
        job: Job,
        actor_id: str | None,
        action: AuditAction,
        *,
        deletable: frozenset[JobStatus],
    ) -> int:
        """Delete ``job`` under the policy; return how many artifacts were deleted.

        Deletes of one job in this manager take turns, so only the one that wins removes
        (and counts) the artifacts; the compare-and-swap on the record still decides
        between processes.
        """
        lock = self._delete_locks.get(job.id)
        if lock is None:
            lock = self._delete_locks[job.id] = _RefLock()
        lock.users += 1
        try:
            async with lock.lock:
                fresh = await self._store.get(job.id)
                if fresh is None or fresh.deleted_at is not None:
                    raise JobNotFound(job.id)
                return await self._delete_now(fresh, actor_id, action, deletable=deletable)
        finally:
            lock.users -= 1
            if not lock.users:
                del self._delete_locks[job.id]

    async def _delete_now(
        self,
        job: Job,
        actor_id: str | None,
        action: AuditAction,
        *,
        deletable: frozenset[JobStatus],
    ) -> int:
        policy = self._delete_policy
        prefix = artifact_prefix(job.id)
        while True:
            machine.check_deletable(job, deletable)
            was_pending = job.status is JobStatus.PENDING
            now = self._clock()
            final = machine.cancel(job, now, self._retention, "deleted while pending") if was_pending else job
            deleted = 0
            deferred = False
            if policy.deletes_artifacts and not was_pending:
                deleted, deferred = await self._delete_artifacts(prefix)
            if policy.mode is DeleteMode.HARD:
                done = await self._store.remove(job.id, expected_version=job.version)
            else:
                done = await self._store.replace(
                    machine.mark_deleted(final, now), expected_version=job.version
                )
            if done:
                break
            fresh = await self._store.get(job.id)
            if fresh is None or fresh.deleted_at is not None:
                raise JobNotFound(job.id)
            job = fresh
        if was_pending:
            self._publish(EventType.CANCELLED, final)
            if policy.deletes_artifacts:
                deleted, deferred = await self._delete_artifacts(prefix)
        self._publish(EventType.DELETED, final, {"mode": policy.mode.value, "artifacts_deleted": deleted})
        details: dict[str, Any] = {
            "mode": policy.mode.value,
            "status": job.status.value,
            "artifacts_deleted": deleted,
        }
        if deferred:
            details["artifacts_deferred"] = True
        await self._audit(action, actor_id, final, details)
        self._notify_finished(job.id)
        return deleted

    async def _delete_artifacts(self, prefix: str) -> tuple[int, bool]:
        """Delete a job's artifacts; on failure defer them to the sweeper or raise."""
        try:
            return await self._blobs.delete_prefix(prefix), False
        except Exception as exc:
            if self._delete_policy.on_artifact_error == "fail":
                raise BackendError(
                    f"Could not delete the artifacts under {prefix!r}: {exc}. "
                    "The job was not deleted; try again."
                ) from exc
            log.warning("artifact delete failed; deferred to the sweeper", prefix=prefix, exc_info=exc)
            await self._store.add_purge(prefix)
            return 0, True

    async def artifacts(
        self, job_id: str, *, actor: Actor | None = None, include_deleted: bool = False
    ) -> builtins.list[str]:
        """The names of the job's artifacts, sorted (of a soft-deleted job with ``include_deleted``)."""
        self._check_open()
        job = await self._load(job_id, actor, include_deleted=include_deleted)
        self._authorize(actor, Action.READ, job)
        prefix = artifact_prefix(job.id)
        return [key[len(prefix) :] for key in await self._blobs.list(prefix)]

    async def read_artifact(
        self, job_id: str, name: str, *, actor: Actor | None = None, include_deleted: bool = False
    ) -> bytes:
        """The bytes of one artifact (of a soft-deleted job with ``include_deleted``).

        :raises ArtifactNotFound: the job has no artifact of that name.
        """
        self._check_open()
        job = await self._load(job_id, actor, include_deleted=include_deleted)
        key = artifact_key(job.id, name)
        self._authorize(actor, Action.READ, job)
        try:
            return await self._blobs.get(key)
        except KeyError:
            raise ArtifactNotFound(job.id, name) from None

    async def delete_artifact(self, job_id: str, name: str, *, actor: Actor | None = None) -> None:
        """Delete one artifact of a job that is not running.

        :raises ArtifactNotFound: no artifact of that name.
        :raises InvalidState: the job is running or cancelling.
        """
        self._check_open()
        job = await self._load(job_id, actor)
        key = artifact_key(job.id, name)
        self._authorize(actor, Action.DELETE_ARTIFACT, job)
        if job.status in ACTIVE:
            raise InvalidState(
                f"Cannot delete an artifact of a {job.status.value} job. Wait for it to finish or cancel it."
            )
        if not await self._blobs.delete(key):
            raise ArtifactNotFound(job.id, name)
        self._publish(EventType.ARTIFACT_DELETED, job, {"name": name})
        await self._audit(AuditAction.DELETE_ARTIFACT, self._actor_id(actor), job, {"name": name})

    async def set_priority(
        self, job_id: str, priority: int, *, actor: Actor | None = None
    ) -> tuple[Job, int]:
        """Change a pending job's priority; return the job and its new 1-based position.

        :raises InvalidState: the job is not pending.
        :raises PermissionDenied: the actor is not an admin (by default).
        """
        self._check_open()
        check_priority(priority)
        job = await self._load(job_id, actor)
        self._authorize(actor, Action.SET_PRIORITY, job)
        while True:
            new = machine.set_priority(job, priority)
            if new is job or await self._store.replace(new, expected_version=job.version):
                break
            job = await self._load(job_id, actor)
        position = await self._store.position(job_id)
        if position is None:  # claimed in the meantime
            raise InvalidState("Cannot change priority of a running job.")
        if new is not job:
            self._publish(
                EventType.PRIORITY_CHANGED,
                new,
                {"from": job.priority, "to": priority, "position": position},
            )
            await self._audit(
                AuditAction.SET_PRIORITY,
                self._actor_id(actor),
                new,
                {"from": job.priority, "to": priority, "position": position},
            )
        return new, position

    async def position(self, job_id: str, *, actor: Actor | None = None) -> int | None:
        """The job's 1-based place in the queue (1 runs next), or None when it is not pending."""
        self._check_open()
        job = await self._load(job_id, actor)
        self._authorize(actor, Action.READ, job)
        return await self._store.position(job_id)

    async def wait(
        self, job_id: str, *, timeout: timedelta | float | None = None, actor: Actor | None = None
    ) -> Job:
        """Wait until the job has finished and return it.

        :raises TimeoutError: it did not finish within ``timeout`` seconds.
        :raises JobNotFound: it does not exist, or was deleted while waiting.
        """
        self._check_open()
        limit = to_duration(timeout)
        # Registered before the first read, so a finish while we read is not missed; its
        # event is only made when we have to block.
        waiter = _Waiter()
        self._waiters.setdefault(job_id, []).append(waiter)
        try:
            job = await self._load(job_id, actor)
            if job.is_terminal:
                return job
            with anyio.fail_after(None if limit is None else limit.total_seconds()):
                while waiter.job is None:
                    self._check_open()
                    waiter.event = anyio.Event()
                    with anyio.move_on_after(self._poll):  # another process may finish it
                        await waiter.event.wait()
                    if waiter.job is None:
                        job = await self._load(job_id, actor)
                        if job.is_terminal:
                            return job
                return waiter.job
        finally:
            self._discard_waiter(job_id, waiter)

    def _discard_waiter(self, job_id: str, waiter: _Waiter) -> None:
        waiters = self._waiters.get(job_id)
        if waiters is not None and waiter in waiters:
            waiters.remove(waiter)
            if not waiters:
                del self._waiters[job_id]

    async def audit(
        self, job_id: str | None = None, limit: int = 100, *, actor: Actor | None = None
    ) -> builtins.list[AuditRecord]:
        """Audit records, newest first, optionally for one job (which may be long deleted).

        An actor with a tenant sees only its tenant's records; reading the audit trail is
        admin-only by default.
        """
        self._check_open()
        if job_id is not None:
            check_job_id(job_id)
        check_limit(limit)
        self._authorize(actor, Action.READ_AUDIT, None)
        return await self._store.list_audit(
            job_id=job_id, tenant=None if actor is None else actor.tenant, limit=limit
        )

    @asynccontextmanager
    async def subscribe(
        self, *, actor: Actor | None = None, job_id: str | None = None, buffer: int = 1000
    ) -> AsyncIterator[EventStream]:
        """Live events, filtered by the actor's tenant and optionally one job.

        A slow subscriber never blocks workers: past ``buffer`` events, it gets one
        ``overflow`` event telling how many it missed. The stream ends when the manager
        closes.
        """
        self._check_open()
        if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:
            raise InvalidInput("buffer must be a positive integer.")
        if job_id is not None:
            job = await self._load(job_id, actor)
            self._authorize(actor, Action.READ, job)
        else:
            self._authorize(actor, Action.READ, None)
        stream = self._hub.open(None if actor is None else actor.tenant, job_id, buffer)
        try:
            yield stream
        finally:
            self._hub.discard(stream)

    # -- sweeping ----------------------------------------------------------------------

    async def sweep(self) -> SweepReport:
        """Expire, purge, retry deferred artifact deletes, recover lost jobs, trim the audit.

        Its cost grows with the work to do, not with the number of jobs kept.
        """
        self._check_open()
        expired = purged = artifacts = recovered = 0
        now = self._clock()
        while batch := await self._store.expired(now, _SWEEP_BATCH):
            await anyio.lowlevel.checkpoint()  # a long sweep never starves the loop
            progressed = False
            for job in batch:
                try:
                    count = await self._expire_one(job)
                except (JobNotFound, InvalidState):
                    continue  # deleted or changed meanwhile
                if count is None:
                    continue
                progressed = True
                expired += 1
                artifacts += count
            if not progressed:
                break
        artifacts += await self._retry_purges()
        after = self._delete_policy.purge_soft_deleted_after
        if after is not None:
            while batch := await self._store.soft_deleted_before(now - after, _SWEEP_BATCH):
                progressed = False
                for job in batch:
                    count = await self._purge_one(job)
                    if count is not None:
                        progressed = True
                        purged += 1
                        artifacts += count
                if not progressed:
                    break
        while batch := await self._store.expired_leases(now, _SWEEP_BATCH):
            progressed = False
            for job in batch:
                if job.id in self._running:
                    continue  # ours and alive: the heartbeat is just late
                if await self._recover_one(job):
                    progressed = True
                    recovered += 1
            if not progressed:
                break
        removed = 0
        if self._audit_retention is not None:
            removed = await self._store.remove_audit_before(now - self._audit_retention)
        report = SweepReport(
            expired=expired,
            purged=purged,
            artifacts_deleted=artifacts,
            recovered=recovered,
            audit_removed=removed,
        )
        if expired or purged or artifacts or recovered or removed:
            log.info("swept", **attrs.asdict(report))
        return report

    async def _expire_one(self, job: Job) -> int | None:
        """Delete an expired job through the policy; the artifacts deleted, None if not now."""
        if not job.is_terminal or job.deleted_at is not None:
            return None
        try:
            # Expiry ignores `deletable`: every finished job expires.
            return await self._delete(job, SWEEPER, AuditAction.EXPIRE, deletable=TERMINAL)
        except BackendError:
            return None  # on_artifact_error="fail": keep it, retry next sweep

    async def _purge_one(self, job: Job) -> int | None:
        prefix = artifact_prefix(job.id)
        try:
            count = await self._blobs.delete_prefix(prefix)
        except Exception as exc:
            log.warning("purge could not delete artifacts; deferred", job_id=job.id, exc_info=exc)
            await self._store.add_purge(prefix)
            count = 0
        if not await self._store.remove(job.id, expected_version=job.version):
            return None
        self._publish(EventType.DELETED, job, {"mode": "purge", "artifacts_deleted": count})
        await self._audit(AuditAction.PURGE, SWEEPER, job, {"artifacts_deleted": count})
        return count

    async def _retry_purges(self) -> int:
        total = 0
        while prefixes := await self._store.pending_purges(_SWEEP_BATCH):
            done = 0
            for prefix in prefixes:
                try:
                    total += await self._blobs.delete_prefix(prefix)
                except Exception as exc:
                    log.warning("deferred artifact delete failed again", prefix=prefix, exc_info=exc)
                    continue
                await self._store.remove_purge(prefix)
                done += 1
            if done < len(prefixes):
                break
        return total

    async def _recover_one(self, job: Job) -> bool:
        new = machine.lose_lease(job, self._clock(), self._retention)
        if not await self._store.replace(new, expected_version=job.version):
            return False
        self._publish(_EVENT_FOR_STATUS[new.status], new, {"reason": machine.WORKER_LOST})
        await self._audit(
            AuditAction.RECOVER,
            SWEEPER,
            new,
            {"to_status": new.status.value, "attempts": new.attempts},
        )
        if new.status is JobStatus.PENDING:
            self._wake_worker()
        else:
            self._notify_finished(new.id, new)
        return True

    async def _sweep_forever(self, interval: float) -> None:
        while True:
            await anyio.sleep(interval)
            try:
                await self.sweep()
            except JobkitError as exc:
                if self._state is not _State.RUNNING:
                    return
                log.warning("sweep failed; retrying next interval", error=str(exc))
            except Exception:
                log.exception("sweep failed; retrying next interval")


def _call_sync(fn: Handler, context: SyncJobContext, payload: Any) -> Any:
    return cast(SyncHandler, fn)(context, payload)


async def _scoped(scope: anyio.CancelScope, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
    with scope:
        await fn(*args)
