"""JobManager: the facade. Each public method loads the job (tenant-scoped), authorizes the
actor, and makes one call into a role: the core (compare-and-swap writes, events, audit),
the deleter, the sweeper or the worker pool."""

from __future__ import annotations

import builtins
import enum
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from . import _machine as machine
from ._context import remove_stale_scratch
from ._core import Core, scheduled_data
from ._deleter import Deleter
from ._errors import (
    ArtifactNotFound,
    InvalidInput,
    InvalidState,
    JobkitError,
    JobNotFound,
    PermissionDenied,
)
from ._events import EventHub, EventStream
from ._log import get_logger
from ._notify import LocalNotifier, Waiters
from ._policies import Action, DefaultAuthorizer, DeletePolicy, Retention
from ._records import (
    ACTIVE,
    Actor,
    AuditAction,
    AuditRecord,
    EventType,
    Job,
    JobStatus,
    Page,
    Retry,
    Schedule,
    SweepReport,
    new_id,
    to_duration,
)
from ._sweeper import SWEEPER, Sweeper
from ._validate import (
    MAX_TEXT_LENGTH,
    MIN_ID_PREFIX,
    artifact_key,
    artifact_prefix,
    check_id_prefix,
    check_idempotency_key,
    check_job_id,
    check_kind,
    check_labels,
    check_limit,
    check_max_attempts,
    check_name,
    check_optional_text,
    check_priority,
    check_run_at,
    check_statuses,
    check_tenant,
    decode_cursor,
    encode_cursor,
    json_value,
)
from ._worker import Handler, WorkerPool, is_async
from .abc import (
    Authorizer,
    BlobStore,
    Change,
    JobStore,
    Note,
    NoteKind,
    Notifier,
    PrefixFinder,
    SignalingStore,
    StatusCounter,
)
from .telemetry import Telemetry

if TYPE_CHECKING:
    from ._telemetry import Tracker

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

__all__ = ["SWEEPER", "Handler", "JobManager"]

log = get_logger("jobkit")

H = TypeVar("H", bound=Handler)


_ACTION_PHRASES = {
    Action.SUBMIT: "submit jobs",
    Action.READ: "read this job",
    Action.CANCEL: "cancel jobs",
    Action.DELETE: "delete jobs",
    Action.DELETE_ARTIFACT: "delete artifacts",
    Action.SET_PRIORITY: "change job priorities (admins only)",
    Action.RETRY: "retry jobs",
    Action.PAUSE: "pause or resume kinds (admins only)",
    Action.SCHEDULE: "create or remove schedules (admins only)",
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


def _tracker(option: object) -> Tracker | None:
    """The telemetry of a manager (see :mod:`jobkit.telemetry`): for None, called at start,
    and only when the host has imported OpenTelemetry (else it cannot have configured an
    SDK, and jobkit imports nothing)."""
    if option is False:
        return None
    if option is not None and option is not True and not isinstance(option, Telemetry):
        raise InvalidInput("telemetry must be None, a bool or a jobkit.telemetry.Telemetry.")
    loaded = sys.modules
    if option is None and "opentelemetry.trace" not in loaded and "opentelemetry.metrics" not in loaded:
        return None
    try:
        from ._telemetry import Tracker
    except ImportError:
        if option is None:
            return None  # not installed: nothing imported, nothing to pay
        raise InvalidInput(
            "telemetry needs opentelemetry-api: install the extra, pip install 'jobkit[otel]'."
        ) from None
    return Tracker(option if isinstance(option, Telemetry) else Telemetry(), auto=option is None)


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
    :param telemetry: OpenTelemetry spans and metrics (``jobkit[otel]``): None to report
        them when ``opentelemetry-api`` is installed and an SDK is configured when the
        manager starts, False never, True or a :class:`~jobkit.telemetry.Telemetry` always
        (docs/telemetry.md).
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
        telemetry: Telemetry | bool | None = None,
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
        self._delete_policy = delete_policy
        self._authorizer: Authorizer = authorizer if authorizer is not None else DefaultAuthorizer()
        self._sweep_interval = to_duration(sweep_interval)
        if self._sweep_interval is not None and self._sweep_interval <= timedelta(0):
            raise InvalidInput("sweep_interval must be positive (or None to sweep on demand).")
        grace = to_duration(cancel_grace)
        self._clock = clock or _utcnow
        lease = to_duration(lease_duration)
        poll = to_duration(poll_interval)
        if lease is None or lease <= timedelta(0) or poll is None or poll <= timedelta(0):
            raise InvalidInput("lease_duration and poll_interval must be positive.")
        self._poll = poll.total_seconds()
        self._telemetry_option = telemetry
        self._telemetry = None if telemetry is None else _tracker(telemetry)
        self._handlers: dict[str, tuple[Handler, bool]] = {}
        self._retries: dict[str, Retry] = {}
        self._declared: set[str] = set()
        self._state = _State.NEW
        store_ = self._store
        self._notifier: Notifier = (
            store_.notifier() if isinstance(store_, SignalingStore) else LocalNotifier()
        )
        self._core = core = Core(
            self._store,
            self._blobs,
            clock=self._clock,
            retention=retention,
            delete_policy=delete_policy,
            notifier=self._notifier,
        )
        self._hub = EventHub(self._clock, self._notifier)
        self._waiters = Waiters()
        self._pool = WorkerPool(
            core,
            self._handlers,
            concurrency=concurrency,
            worker_id=new_id(6),
            lease=lease,
            poll=self._poll,
            cancel_grace=None if grace is None else grace.total_seconds(),
            retries=self._retries,
            telemetry=self._telemetry,
        )
        self._deleter = Deleter(core)
        self._sweeper = Sweeper(
            core,
            self._deleter,
            audit_retention=to_duration(audit_retention),
            is_ours=self._pool.running.__contains__,
            retry_for=self._retries.get,
        )
        core.timer_hint = self._sweeper.hint
        self._stack: AsyncExitStack | None = None
        self._tg: TaskGroup | None = None

    def __repr__(self) -> str:
        return (
            f"JobManager(store={self._store!r}, concurrency={self._concurrency}, state={self._state.value})"
        )

    # -- handlers ----------------------------------------------------------------------

    def handler(self, kind: str, *, retry: Retry | None = None) -> Callable[[H], H]:
        """Decorator registering a handler for ``kind``: ``async def h(ctx, payload)`` or a sync def.

        :param retry: retry failed jobs of this kind (a submit's own ``retry`` wins).
        """

        def decorate(fn: H) -> H:
            self.register(kind, fn, retry=retry)
            return fn

        return decorate

    def register(self, kind: str, fn: Handler, *, retry: Retry | None = None) -> None:
        """Register ``fn`` as the handler of ``kind``. A sync function runs in a worker thread.

        :param retry: retry failed jobs of this kind (a submit's own ``retry`` wins).
        :raises InvalidInput: ``kind`` is empty or already has a handler; ``retry`` is not a
            :class:`Retry`.
        """
        check_kind(kind)
        if not callable(fn):
            raise InvalidInput(f"The handler for {kind!r} must be callable.")
        if kind in self._handlers:
            raise InvalidInput(f"A handler for {kind!r} is already registered.")
        if retry is not None and not isinstance(retry, Retry):
            raise InvalidInput("retry must be a jobkit.Retry or None.")
        self._handlers[kind] = (fn, is_async(fn))
        if retry is not None:
            self._retries[kind] = retry

    def declare(self, kind: str) -> None:
        """Let this manager submit ``kind`` without running it: another process has its handler
        (a web process in front of ``jobkit worker``, say). Such jobs stay pending here.

        :raises InvalidInput: ``kind`` is empty or not valid text.
        """
        self._declared.add(check_kind(kind))

    @property
    def kinds(self) -> frozenset[str]:
        """The kinds with a registered handler."""
        return frozenset(self._handlers)

    @property
    def declared(self) -> frozenset[str]:
        """The kinds given to :meth:`declare`: submitted here, run by another process."""
        return frozenset(self._declared)

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> JobManager:
        if self._state is not _State.NEW:
            raise JobkitError("A JobManager can be started only once; create a new one.")
        # What a running manager uses of anyio, loaded now rather than by `import jobkit`.
        import anyio.lowlevel
        import anyio.to_thread

        async with AsyncExitStack() as stack:
            await self._store.open()
            stack.push_async_callback(self._store.close)
            await self._blobs.open()
            stack.push_async_callback(self._blobs.close)
            await anyio.to_thread.run_sync(remove_stale_scratch)
            self._tg = tg = await stack.enter_async_context(anyio.create_task_group())
            self._state = _State.RUNNING
            notifier = self._notifier
            stack.callback(notifier.listen(self._core.on_note))
            stack.callback(notifier.listen(self._pool.on_note))
            stack.callback(notifier.listen(self._waiters.on_note))
            tg.start_soon(notifier.run)
            tg.start_soon(self._tick)
            tg.start_soon(self._sweeper.run_timers, self._poll)
            if self._telemetry_option is None:
                self._telemetry = self._pool.telemetry = _tracker(None)
            if (tracker := self._telemetry) is not None:
                if tracker.start():
                    stack.callback(tracker.stop)
                    tg.start_soon(tracker.count_pending_forever, self._store)
                else:  # nothing to report to: no cost per job
                    self._telemetry = self._pool.telemetry = None
            self._pool.start(tg)
            if self._sweep_interval is not None:
                tg.start_soon(self._sweeper.run_forever, self._sweep_interval.total_seconds(), self._is_open)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        if self._state is not _State.RUNNING or self._stack is None:
            return
        self._state = _State.CLOSING
        try:
            await self._pool.close()
            assert self._tg is not None
            self._tg.cancel_scope.cancel()
        finally:
            self._hub.close()
            self._state = _State.CLOSED
            self._waiters.wake_all()
            stack, self._stack = self._stack, None
            await stack.__aexit__(*exc_info)

    async def _tick(self) -> None:
        """One timer for every poll: idle workers and waiters look at the store again, in case
        another process changed it without a note reaching us."""
        while True:
            await anyio.sleep(self._poll)
            self._pool.poke()
            self._waiters.poke()

    def _is_open(self) -> bool:
        return self._state is _State.RUNNING

    def _check_open(self) -> None:
        if self._state is not _State.RUNNING:
            if self._state is _State.NEW:
                raise JobkitError("The JobManager is not started: use it inside `async with jobs:`.")
            raise JobkitError("The JobManager is closed: create a new one and enter `async with` again.")

    # -- access control ----------------------------------------------------------------

    def _authorize(self, actor: Actor | None, action: Action, job: Job | None) -> None:
        if actor is None:
            return
        if not self._authorizer.allows(actor, action, job):
            raise PermissionDenied(f"Actor {actor.id!r} is not allowed to {_ACTION_PHRASES[action]}.")

    def _visible(self, job: Job | None, job_id: str, actor: Actor | None, include_deleted: bool) -> Job:
        """``job`` as ``actor`` may see it: another tenant's (or a missing) job is not found, a
        soft-deleted one only with ``include_deleted`` and the right to read deleted jobs."""
        if job is None or (actor is not None and actor.tenant is not None and job.tenant != actor.tenant):
            raise JobNotFound(job_id)
        if job.deleted_at is not None:
            if not include_deleted:
                raise JobNotFound(job_id)
            self._authorize(actor, Action.READ_DELETED, job)
        return job

    @staticmethod
    def _check_actor(actor: Actor | None) -> None:
        if actor is not None and not isinstance(actor, Actor):
            raise InvalidInput("actor must be a jobkit.Actor or None.")

    @classmethod
    def _check_ids(cls, job_id: str, actor: Actor | None) -> None:
        check_job_id(job_id)
        cls._check_actor(actor)

    def _check_runnable(self, kind: str) -> str:
        """A kind this manager may submit: it has a handler here, or is declared."""
        check_kind(kind)
        if kind not in self._handlers and kind not in self._declared:
            known = ", ".join(sorted({*self._handlers, *self._declared})) or "none registered"
            raise InvalidInput(
                f"Unknown job kind {kind!r} (known: {known}). Register a handler for it, or "
                "declare(kind) when another process runs it."
            )
        return kind

    async def _load(self, job_id: str, actor: Actor | None, *, include_deleted: bool = False) -> Job:
        self._check_ids(job_id, actor)
        return self._visible(await self._store.get(job_id), job_id, actor, include_deleted)

    def _recent(self, job_id: str, actor: Actor | None) -> Job | None:
        """An unfinished job this process wrote lately, if the actor may see it; None to read
        the store. A finished one is always read again: it may have been deleted since."""
        self._check_ids(job_id, actor)
        job = self._core.recent.get(job_id)
        if job is None or job.is_terminal or job.deleted_at is not None:
            return None
        return self._visible(job, job_id, actor, include_deleted=False)

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
        run_at: datetime | None = None,
        delay: timedelta | float | None = None,
        retry: Retry | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Store a new job and wake a worker: ``pending``, or ``scheduled`` with ``run_at`` or
        ``delay``.

        :param ttl: how long the job is kept once finished (overrides the Retention).
        :param timeout: stop the job (and fail it) when it runs longer.
        :param max_attempts: how many times the job may start (a lost worker, a Retry).
        :param run_at: when to run it (an aware datetime; in the past: at once).
        :param delay: run it this long from now (instead of ``run_at``).
        :param retry: retry failures (instead of the handler's Retry); sets ``max_attempts``.
        :param idempotency_key: while a job with this key exists in the actor's tenant, return
            it instead of storing another one (also across processes and concurrent submits).
        :raises InvalidInput: unknown or empty kind, payload not JSON, bad priority,
            negative ttl, naive ``run_at``, both ``run_at`` and ``delay``, ``max_attempts``
            other than ``retry.attempts``, a reused key with another kind or payload, ...
            Nothing is stored.
        """
        job, _ = await self.submit_once(
            kind, payload, actor=actor, priority=priority, ttl=ttl, timeout=timeout,
            max_attempts=max_attempts, labels=labels, run_at=run_at, delay=delay, retry=retry,
            idempotency_key=idempotency_key,
        )  # fmt: skip
        return job

    async def submit_once(
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
        run_at: datetime | None = None,
        delay: timedelta | float | None = None,
        retry: Retry | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[Job, bool]:
        """:meth:`submit`, also telling whether the job is new: ``(job, True)`` when it was
        stored, ``(existing job, False)`` when its idempotency key was taken (what
        ``POST /jobs`` answers with 201 or 200)."""
        self._check_open()
        self._check_runnable(kind)
        payload = json_value(payload)
        check_priority(priority)
        ttl_value = to_duration(ttl)
        timeout_value = to_duration(timeout)
        if timeout_value is not None and timeout_value <= timedelta(0):
            raise InvalidInput("timeout must be positive.")
        check_max_attempts(max_attempts)
        check_labels(labels)
        if idempotency_key is not None:
            check_idempotency_key(idempotency_key)
        if retry is not None and not isinstance(retry, Retry):
            raise InvalidInput("retry must be a jobkit.Retry or None.")
        if retry is not None and max_attempts not in (1, retry.attempts):
            raise InvalidInput(
                f"max_attempts={max_attempts} conflicts with retry.attempts={retry.attempts}: "
                "give one of them (a Retry sets max_attempts)."
            )
        now = self._clock()
        # The common submit (at once, no key, the host) pays for none of the options' checks.
        when = None if run_at is None and delay is None else self._when(now, run_at, delay)
        if actor is not None:
            self._check_actor(actor)
        self._authorize(actor, Action.SUBMIT, None)
        if retry is None and self._retries:
            retry = self._retries.get(kind)
        job = Job(
            id=new_id(),
            kind=kind,
            status=JobStatus.PENDING if when is None else JobStatus.SCHEDULED,
            payload=payload,
            tenant=None if actor is None else actor.tenant,
            priority=priority,
            created_at=now,
            max_attempts=max_attempts if retry is None else max(max_attempts, retry.attempts),
            ttl=ttl_value,
            timeout=timeout_value,
            labels=labels,
            run_at=when,
            idempotency_key=idempotency_key,
            retry=retry,
        )
        if self._telemetry is None:
            holder = await self._store.insert(job)
        else:  # in a submit span, whose trace context the job carries
            job, holder = await self._telemetry.insert(self._store, job)
        if holder is not None:
            if holder.kind != job.kind or holder.payload != job.payload:
                what = "kind" if holder.kind != job.kind else "payload"
                raise InvalidInput(
                    f"The idempotency key {idempotency_key!r} belongs to job {holder.id} with another "
                    f"{what}: use a new key for a different job."
                )
            return holder, False
        if job.status is JobStatus.SCHEDULED:
            self._core.announce(job, EventType.SUBMITTED, scheduled_data(job))
        else:
            self._core.announce(job, EventType.SUBMITTED)
        return job, True

    @staticmethod
    def _when(now: datetime, run_at: datetime | None, delay: timedelta | float | None) -> datetime | None:
        """The ``run_at`` of a new job (None: pending at once)."""
        if run_at is not None and delay is not None:
            raise InvalidInput("Give run_at or delay, not both.")
        if run_at is not None:
            return check_run_at(run_at, now)
        wait = to_duration(delay)
        return None if wait is None else now + wait

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
        tenant: str | None = None,
        id_prefix: str | None = None,
    ) -> Page:
        """A page of jobs, newest first; pass ``page.next_cursor`` back for the next one.

        Paging never repeats or skips a job while jobs are being added. ``tenant`` narrows
        the listing to one tenant: the host and actors without a tenant may name any, a
        tenant's actor only its own. ``id_prefix`` keeps the jobs whose id starts with it
        (hexadecimal, any case): at most ``limit`` of them, on one page.

        :raises InvalidInput: unknown status, limit outside 1..1000, malformed cursor,
            tenant or id prefix, a cursor together with ``id_prefix``.
        :raises PermissionDenied: a tenant's actor naming another tenant.
        """
        self._check_open()
        statuses = check_statuses(status)
        if kind is not None:
            check_kind(kind)
        check_limit(limit)
        before = decode_cursor(cursor)
        prefix = None if id_prefix is None else check_id_prefix(id_prefix)
        if prefix is not None and cursor is not None:
            raise InvalidInput("A listing by id prefix has one page: pass no cursor with id_prefix.")
        scope = self._scope(actor, tenant)
        self._authorize(actor, Action.READ, None)
        if include_deleted:
            self._authorize(actor, Action.READ_DELETED, None)
        if prefix is not None:
            found = await self._with_prefix(
                prefix, scope, include_deleted, limit, statuses=statuses, kind=kind
            )
            return Page(tuple(found), None)
        jobs, next_before = await self._store.list_jobs(
            tenant=scope,
            statuses=statuses,
            kind=kind,
            include_deleted=include_deleted,
            before=before,
            limit=limit,
        )
        return Page(tuple(jobs), None if next_before is None else encode_cursor(next_before))

    async def resolve(self, id_or_prefix: str, *, actor: Actor | None = None) -> str:
        """The full id of a job given by its id or by a unique start of it (at least
        4 hexadecimal characters, any case), among the jobs the actor may see; soft-deleted
        jobs are left out. Operators type the short ids the console and the CLI show.

        :raises JobNotFound: no visible job has that id or prefix.
        :raises InvalidInput: the prefix is malformed, or starts several jobs' ids.
        """
        self._check_open()
        self._check_ids(id_or_prefix, actor)
        self._authorize(actor, Action.READ, None)
        with suppress(JobNotFound):  # a whole id: itself, under the usual visibility rules
            return self._visible(await self._store.get(id_or_prefix), id_or_prefix, actor, False).id
        prefix = check_id_prefix(id_or_prefix, MIN_ID_PREFIX)
        found = await self._with_prefix(prefix, None if actor is None else actor.tenant, False, 6)
        if not found:
            raise JobNotFound(id_or_prefix)
        if len(found) > 1:
            shown = ", ".join(job.id[: len(prefix) + 4] + "…" for job in found[:5])
            raise InvalidInput(
                f"The id prefix {id_or_prefix!r} starts several jobs' ids ({shown}): give more characters."
            )
        return found[0].id

    def _scope(self, actor: Actor | None, tenant: str | None) -> str | None:
        """The tenant a listing or count covers: ``tenant`` when the actor may name it,
        else the actor's own (None: every tenant)."""
        self._check_actor(actor)
        if tenant is None:
            return None if actor is None else actor.tenant
        check_tenant(tenant)
        if actor is not None and actor.tenant is not None and tenant != actor.tenant:
            raise PermissionDenied(f"Actor {actor.id!r} may only see the jobs of tenant {actor.tenant!r}.")
        return tenant

    async def _with_prefix(
        self,
        prefix: str,
        tenant: str | None,
        include_deleted: bool,
        limit: int,
        *,
        statuses: frozenset[JobStatus] | None = None,
        kind: str | None = None,
    ) -> builtins.list[Job]:
        """Up to ``limit`` jobs whose id starts with ``prefix``, newest first, filtered."""

        store = self._store
        if isinstance(store, PrefixFinder):
            filtered = statuses is not None or kind is not None
            found = await store.jobs_with_prefix(
                prefix, tenant=tenant, include_deleted=include_deleted, limit=1000 if filtered else limit
            )  # few jobs share a prefix: the filters apply here
        else:  # page through the store: slower, the same answer
            found, before = [], None
            while True:
                jobs, before = await store.list_jobs(
                    tenant=tenant,
                    statuses=statuses,
                    kind=kind,
                    include_deleted=include_deleted,
                    before=before,
                    limit=1000,
                )
                found += [job for job in jobs if job.id.startswith(prefix)]
                if before is None or len(found) >= limit:
                    break
        kept = (job for job in found if statuses is None or job.status in statuses)
        return [job for job in kept if kind is None or job.kind == kind][:limit]

    async def counts(
        self, *, actor: Actor | None = None, kind: str | None = None, tenant: str | None = None
    ) -> dict[JobStatus, int]:
        """How many of the actor's visible jobs (soft-deleted ones left out) have each status,
        every status included, optionally of one ``kind`` and one ``tenant`` (as in :meth:`list`).

        :raises InvalidInput: a malformed kind or tenant.
        :raises PermissionDenied: a tenant's actor naming another tenant.
        """
        self._check_open()
        if kind is not None:
            check_kind(kind)
        tenant = self._scope(actor, tenant)
        self._authorize(actor, Action.READ, None)
        store = self._store
        if isinstance(store, StatusCounter):
            found = await store.count_jobs(tenant=tenant, kind=kind)
        else:  # page through the store: slower, the same answer
            found, before = {}, None
            while True:
                jobs, before = await store.list_jobs(
                    tenant=tenant, statuses=None, kind=kind, include_deleted=False, before=before, limit=1000
                )
                for job in jobs:
                    found[job.status] = found.get(job.status, 0) + 1
                if before is None:
                    break
        return {status: found.get(status, 0) for status in JobStatus}

    async def cancel(self, job_id: str, *, actor: Actor | None = None, reason: str | None = None) -> Job:
        """Cancel a job: a pending one at once, a running one at its next checkpoint.

        Cancelling a ``cancelling`` job again changes nothing.

        :raises InvalidState: the job has already finished.
        """
        self._check_open()
        check_optional_text(reason, "cancel reason", MAX_TEXT_LENGTH)
        job = await self._load(job_id, actor)
        self._authorize(actor, Action.CANCEL, job)
        core = self._core
        actor_id = self._actor_id(actor)

        def decide(job: Job) -> Change | None:
            new = machine.cancel(job, core.clock(), core.retention, reason)
            if new is job:
                return None
            details = {"from_status": job.status.value, "to_status": new.status.value, "reason": reason}
            audit = core.audit_record(AuditAction.CANCEL, actor_id, new, details)
            return Change(job_id=job.id, expected_version=job.version, job=new, audit=audit)

        async with core.turns.hold(job.id):
            job, change = await core.write(job, decide)
        if not isinstance(change, Change):
            return job
        assert change.job is not None
        assert change.audit is not None
        core.log_audit(change.audit, job.kind)
        core.announce(change.job, machine.event_for(change.job), {"reason": reason})
        if self._telemetry is not None and change.job.status is JobStatus.CANCELLED:
            self._telemetry.cancelled_waiting(change.job)
        return change.job

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
        await self._deleter.delete(
            job, self._actor_id(actor), AuditAction.DELETE, self._delete_policy.deletable
        )

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
        self._core.publish(EventType.ARTIFACT_DELETED, job, {"name": name})
        record = self._core.audit_record(
            AuditAction.DELETE_ARTIFACT, self._actor_id(actor), job, {"name": name}
        )
        await self._core.record(record, job.kind)

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
        async with self._core.turns.hold(job.id):
            job, new = await self._core.write(job, lambda job: machine.set_priority(job, priority))
        assert not isinstance(new, Change)
        position = await self._store.position(job_id)
        if new is None:
            if position is None:  # claimed in the meantime: nothing was written
                raise InvalidState("Cannot change priority of a running job.")
            return job, position
        if position is None:
            # The new priority was stored, then a worker took the job: the change happened
            # (and is audited); the job was next to run and has started.
            position = 1
        data = {"from": job.priority, "to": priority, "position": position}
        self._core.publish(EventType.PRIORITY_CHANGED, new, data)
        record = self._core.audit_record(AuditAction.SET_PRIORITY, self._actor_id(actor), new, data)
        await self._core.record(record, new.kind)
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
        # Registered before the first read, so a finish while we read is not missed.
        waiter = self._waiters.add(job_id)
        try:
            job = self._recent(job_id, actor)
            if job is None:  # not written here lately (or already finished): read it
                job = await self._load(job_id, actor)
            self._authorize(actor, Action.READ, job)
            if job.is_terminal:
                return job
            with anyio.fail_after(None if limit is None else limit.total_seconds()):
                while True:
                    await self._waiters.wait(waiter)
                    self._check_open()
                    if waiter.job is not None:
                        return waiter.job
                    job = await self._load(job_id, actor)
                    if job.is_terminal:
                        return job
        finally:
            self._waiters.discard(job_id, waiter)

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

    async def retry(self, job_id: str, *, actor: Actor | None = None, run_at: datetime | None = None) -> Job:
        """Give a failed or cancelled job one more attempt: back to ``pending`` (``scheduled``
        with ``run_at``); its last error and result stay until the next outcome. Audited.

        :raises InvalidState: the job is not failed or cancelled (a completed job: submit a
            new one).
        :raises InvalidInput: a naive ``run_at``.
        """
        self._check_open()
        when = None if run_at is None else check_run_at(run_at, self._clock())
        job = await self._load(job_id, actor)
        self._authorize(actor, Action.RETRY, job)
        core = self._core
        actor_id = self._actor_id(actor)

        def decide(job: Job) -> Change:
            new = machine.retry(job, core.clock(), when)
            details = {
                "from_status": job.status.value,
                "to_status": new.status.value,
                "run_at": None if when is None else when.isoformat(),
                "max_attempts": new.max_attempts,
            }
            audit = core.audit_record(AuditAction.RETRY, actor_id, new, details)
            return Change(job_id=job.id, expected_version=job.version, job=new, audit=audit)

        async with core.turns.hold(job.id):
            job, change = await core.write(job, decide)
        assert isinstance(change, Change)
        assert change.job is not None
        assert change.audit is not None
        new = change.job
        core.log_audit(change.audit, job.kind)
        if new.status is JobStatus.SCHEDULED:
            core.announce(new, EventType.SCHEDULED, {**scheduled_data(new), "reason": "retry"})
        else:
            core.announce(new, EventType.REQUEUED, {"reason": "retry"})
        return new

    # -- kinds -------------------------------------------------------------------------

    async def _known_kind(self, kind: str) -> str:
        """A kind this process knows, or one the store has jobs of (a CLI pausing a worker's kind)."""
        check_kind(kind)
        if kind in self._handlers or kind in self._declared:
            return kind
        if kind in await self._store.paused_kinds():
            return kind
        jobs, _ = await self._store.list_jobs(
            tenant=None, statuses=None, kind=kind, include_deleted=True, before=None, limit=1
        )
        if not jobs:
            raise InvalidInput(
                f"Unknown job kind {kind!r}: no handler, declaration or job of that kind here."
            )
        return kind

    async def pause(self, kind: str, *, actor: Actor | None = None) -> None:
        """Stop every manager sharing the store from starting jobs of ``kind`` (running ones
        go on) until :meth:`resume`. Stored: it holds across processes and restarts. Audited.

        :raises InvalidInput: an unknown kind.
        :raises PermissionDenied: the actor is not an admin (by default).
        """
        await self._set_paused(kind, True, actor)

    async def resume(self, kind: str, *, actor: Actor | None = None) -> None:
        """Let jobs of a paused ``kind`` start again, in every process. Audited."""
        await self._set_paused(kind, False, actor)

    async def _set_paused(self, kind: str, paused: bool, actor: Actor | None) -> None:
        self._check_open()
        self._check_actor(actor)
        await self._known_kind(kind)
        self._authorize(actor, Action.PAUSE, None)
        changed = await self._store.set_paused(kind, paused)
        action = AuditAction.PAUSE if paused else AuditAction.RESUME
        tenant = None if actor is None else actor.tenant
        record = self._core.audit_record(
            action, self._actor_id(actor), None, {"kind": kind, "changed": changed}, tenant=tenant
        )
        await self._core.record(record, kind)
        if changed and not paused:
            self._notifier.notify(Note(kind=NoteKind.WAKE))  # its jobs may start now, anywhere

    async def paused(self, *, actor: Actor | None = None) -> frozenset[str]:
        """The kinds paused now, in every process sharing the store."""
        self._check_open()
        self._check_actor(actor)
        self._authorize(actor, Action.READ, None)
        return await self._store.paused_kinds()

    # -- schedules ---------------------------------------------------------------------

    async def schedule(
        self,
        name: str,
        kind: str,
        payload: Any = None,
        *,
        cron: str,
        timezone: str = "UTC",
        actor: Actor | None = None,
        priority: int = 0,
    ) -> Schedule:
        """Create (or replace) the tenant's schedule ``name``: a job of ``kind`` at every fire
        time of ``cron`` (five fields) in ``timezone`` (IANA). The sweeper fires it, once per
        fire time however many processes run; missed fire times make one job. Audited.

        :raises InvalidInput: malformed cron, unknown time zone, unknown kind, bad name or
            payload. Needs ``jobkit[cron]``.
        :raises PermissionDenied: the actor is not an admin (by default).
        """
        from ._cron import check_cron, next_fire

        self._check_open()
        check_name(name)
        self._check_runnable(kind)
        payload = json_value(payload)
        check_priority(priority)
        check_cron(cron, timezone)
        self._check_actor(actor)
        self._authorize(actor, Action.SCHEDULE, None)
        now = self._clock()
        item = Schedule(
            name=name,
            kind=kind,
            payload=payload,
            cron=cron,
            timezone=timezone,
            tenant=None if actor is None else actor.tenant,
            priority=priority,
            next_run_at=next_fire(cron, timezone, now),
            created_at=now,
        )
        await self._store.put_schedule(item)
        details = {"name": name, "kind": kind, "cron": cron, "timezone": timezone, "priority": priority}
        record = self._core.audit_record(
            AuditAction.SCHEDULE, self._actor_id(actor), None, details, tenant=item.tenant
        )
        await self._core.record(record, kind)
        self._sweeper.hint(item.next_run_at)
        return item

    async def unschedule(self, name: str, *, actor: Actor | None = None) -> None:
        """Remove the tenant's schedule ``name`` (jobs it fired stay). Audited.

        :raises JobNotFound: no schedule of that name in the actor's tenant.
        """
        self._check_open()
        check_name(name)
        self._check_actor(actor)
        self._authorize(actor, Action.SCHEDULE, None)
        tenant = None if actor is None else actor.tenant
        if not await self._store.remove_schedule(tenant, name):
            raise JobNotFound(name, f"No schedule named {name!r}.")
        record = self._core.audit_record(
            AuditAction.UNSCHEDULE, self._actor_id(actor), None, {"name": name}, tenant=tenant
        )
        await self._core.record(record, None)

    async def schedules(self, *, actor: Actor | None = None) -> builtins.list[Schedule]:
        """The schedules of the actor's tenant (the host: every tenant's), by name."""
        self._check_open()
        self._check_actor(actor)
        self._authorize(actor, Action.READ, None)
        return await self._store.list_schedules(None if actor is None else actor.tenant)

    # -- sweeping ----------------------------------------------------------------------

    async def sweep(self) -> SweepReport:
        """Expire, purge, retry deferred artifact deletes, recover lost jobs, trim the audit.

        Its cost grows with the work to do, not with the number of jobs kept.
        """
        self._check_open()
        return await self._sweeper.sweep()
