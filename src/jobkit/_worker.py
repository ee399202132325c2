"""The worker pool: where a job gets claimed, run, stopped and concluded.

One producer loop claims as many jobs as there are free slots in one store call and hands
them to the runners; it then waits on one wake-up signal (a submit, a finished job, a note
from another process, or the poll timer). A run calls the handler with its context,
watches the timeout, forces a handler that ignores its token past ``cancel_grace``,
removes the scratch directory, and writes the :class:`~jobkit._machine.Outcome`. The
heartbeat renews the leases of the running jobs and learns of cancels written elsewhere;
cancel notes stop a job at once.
"""

from __future__ import annotations

import functools
import inspect
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

import anyio

from . import _machine as machine
from ._context import JobContext, SyncJobContext, remove_scratch
from ._core import Core, scheduled_data
from ._errors import InvalidInput, InvalidState, JobCancelled
from ._log import get_logger
from ._machine import Outcome, OutcomeKind
from ._records import ACTIVE, EventType, Job, JobStatus, Retry
from ._token import CancelSource, CancelToken
from ._validate import artifact_key, json_value, safe_text
from .abc import BatchClaimer, Note, NoteKind

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from ._telemetry import RunTelemetry, Tracker

__all__ = ["AsyncHandler", "Handler", "Result", "SyncHandler", "WorkerPool", "is_async"]

log = get_logger("jobkit")

#: What a handler may return: the job's result, stored as JSON. Typing the return this way
#: lets mypy tell the two handler kinds apart: a coroutine is none of these, so an
#: ``async def`` taking a :class:`SyncJobContext` is a type error, as is a sync ``def``
#: taking a :class:`JobContext` or a handler without the context parameter.
Result = None | bool | int | float | str | Sequence[Any] | Mapping[str, Any]
AsyncHandler = Callable[[JobContext, Any], Awaitable[Result]]
SyncHandler = Callable[[SyncJobContext, Any], Result]
Handler = AsyncHandler | SyncHandler


def is_async(fn: Callable[..., Any]) -> bool:
    """True for a coroutine function (also behind partials) or an object with an async ``__call__``."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - async callable objects
    return call is not None and inspect.iscoroutinefunction(call)


def _seconds(value: timedelta) -> str:
    return f"{value.total_seconds():g}s"


class _Lost(Exception):
    """The job is no longer this run's: recovered (and maybe claimed) elsewhere."""


class _Unrecordable(Exception):
    """The outcome could not be turned into the next job."""


CONCLUDE_TRIES = 12
RECHECK_GAP = 0.005
#: Cancel notes remembered for jobs that may be claimed here but not started yet.
EARLY_CANCELS = 1000
LOST_REASON = "The job is no longer running here (its lease was lost)."
_UNRECORDABLE = "The job's outcome could not be recorded (see the jobkit log)."


class _Run:
    """One job running here; the :class:`~jobkit._context.RunPort` of its context."""

    __slots__ = (
        "context",
        "force_scope",
        "handler",
        "is_async",
        "job",
        "lost",
        "pool",
        "scope",
        "telemetry",
        "token",
        "watchers",
    )

    def __init__(self, pool: WorkerPool, job: Job, handler: Handler | None, is_async: bool) -> None:
        self.pool = pool
        self.job = job
        self.handler = handler
        self.is_async = is_async
        self.token = CancelToken()
        self.scope: anyio.CancelScope | None = None
        self.watchers: list[anyio.CancelScope] | None = None
        self.force_scope: anyio.CancelScope | None = None
        self.lost = False  # the job is no longer this run's: nothing more may be written
        self.context = JobContext(self)
        self.telemetry: RunTelemetry | None = None

    def reread(self, job: Job | None, job_id: str) -> Job:
        """The re-read rule of the run's own writes: the job must still be active, same attempt.

        :raises _Lost: it is not (recovered, deleted, or claimed again elsewhere).
        """
        if job is None or job.status not in ACTIVE or job.attempts != self.job.attempts:
            raise _Lost(job_id)
        return job

    def learn(self, job: Job) -> None:
        """Take a newer copy of the job (from a cancel or the heartbeat), if it is this attempt's."""
        if job.attempts == self.job.attempts and job.version > self.job.version:
            self.job = job

    async def _update(self, step: Callable[[Job], Job]) -> Job:
        await self.pool.core.turns.wait_clear(self.job.id)
        try:
            _, new = await self.pool.core.write(self.job, step, reread=self.reread)
        except _Lost:
            self.pool.lose(self)
            raise JobCancelled(LOST_REASON, CancelSource.USER) from None
        if isinstance(new, Job):
            self.job = new
        return self.job

    async def report_progress(self, fraction: float | None, message: str | None) -> None:
        new = await self._update(lambda job: machine.report_progress(job, fraction, message))
        self.pool.core.publish(EventType.PROGRESS, new, {"progress": fraction, "message": message})

    async def store_result(self, value: Any) -> None:
        value = json_value(value, "result")
        await self._update(lambda job: machine.store_result(job, value))

    async def put_artifact(self, name: str, data: bytes) -> None:
        # Fenced: a run that lost its job (recovered, deleted, or claimed again elsewhere)
        # must not leave files under a prefix that is no longer its own.
        key = artifact_key(self.job.id, name)
        core = self.pool.core
        await self._check_ours()
        await core.blobs.put(key, data)
        try:
            await self._check_ours()
        except JobCancelled:
            await core.blobs.delete(key)
            raise

    async def _check_ours(self) -> None:
        if not self.lost:
            try:
                self.reread(await self.pool.core.store.get(self.job.id), self.job.id)
            except _Lost:
                self.pool.lose(self)
        if self.lost:
            raise JobCancelled(LOST_REASON, CancelSource.USER)


class WorkerPool:
    """Claims and runs up to ``concurrency`` jobs at once for one manager."""

    def __init__(
        self,
        core: Core,
        handlers: dict[str, tuple[Handler, bool]],
        *,
        concurrency: int,
        worker_id: str,
        lease: timedelta,
        poll: float,
        cancel_grace: float | None,
        retries: dict[str, Retry] | None = None,
        telemetry: Tracker | None = None,
    ) -> None:
        self.core = core
        self.telemetry = telemetry
        self._handlers = handlers
        self._retries = {} if retries is None else retries
        self._concurrency = concurrency
        self._worker_id = worker_id
        self._lease = lease
        self._poll = poll
        self._cancel_grace = cancel_grace
        self.running: dict[str, _Run] = {}
        self._busy = 0  # claimed and not yet concluded
        self._more = True  # the store may hold jobs we could claim
        self._wakes = 0  # WAKE notes so far: one arriving during a claim is not lost
        self._wake = anyio.Event()
        self._recheck = anyio.Event()  # re-read the running jobs (another process wrote)
        self._open = False
        self._tg: TaskGroup | None = None
        self._ready: deque[Job] = deque()  # claimed, waiting for a runner
        self._parked: list[anyio.Event] = []  # runners with nothing to do
        self._filling = False
        self._filled = anyio.Event()  # set when the claim under way (if any) returned
        self._kinds: Collection[str] = handlers.keys()
        self._limiter = anyio.CapacityLimiter(max(1, concurrency))
        self._batch = isinstance(core.store, BatchClaimer)
        #: Cancel notes for jobs not running here (yet), newest last.
        self._early_cancels: dict[str, None] = {}
        self.done = anyio.Event()

    # -- notes -------------------------------------------------------------------------

    def on_note(self, note: Note) -> None:
        kind = note.kind
        if kind is NoteKind.WAKE:
            self._more = True
            self._wakes += 1
            self._wake.set()
        elif kind is NoteKind.CANCEL:
            run = self.running.get(note.job_id or "")
            if run is not None:
                if note.job is not None:
                    run.learn(note.job)
                self.stop(run, run.job.cancel_reason, CancelSource.USER)  # cancelled: say so
            else:
                if note.job_id is not None:
                    # Maybe claimed here and not started yet: the start re-checks it.
                    early = self._early_cancels
                    early[note.job_id] = None
                    if len(early) > EARLY_CANCELS:
                        del early[next(iter(early))]
                if note.job is None:
                    self._recheck.set()
        elif kind is NoteKind.CHANGED and note.job_id is None and self.running:
            # Another process changed the store: it may have cancelled one of ours.
            self._recheck.set()

    def poke(self) -> None:
        """The poll tick: look at the store again, whatever the notes said."""
        self._more = True
        self._wakes += 1
        self._wake.set()

    # -- the producer ------------------------------------------------------------------

    def start(self, tg: TaskGroup) -> None:
        """Start claiming and running jobs in ``tg`` (and the heartbeat, when there are workers)."""
        self._tg = tg
        self._open = True
        tg.start_soon(self._run)
        if self._concurrency:
            tg.start_soon(self._heartbeat)
            tg.start_soon(self._watch_running)

    async def _run(self) -> None:
        try:
            async with anyio.create_task_group() as runners:
                for _ in range(self._concurrency):
                    runners.start_soon(self._runner)
                await self._produce()
        finally:
            self.done.set()

    async def _fill(self) -> None:
        """Claim up to the free slots in one store call and hand the jobs to idle runners."""
        free = self._concurrency - self._busy
        if free <= 0 or self._filling or not self._open:
            return
        core = self.core
        now = core.clock()
        lease_until = now + self._lease
        wakes = self._wakes
        self._filling = True
        self._filled = filled = anyio.Event()
        try:
            if self._batch:
                jobs: list[Job] = await core.store.claim_many(  # type: ignore[attr-defined]
                    now=now, worker_id=self._worker_id, lease_until=lease_until, kinds=self._kinds, limit=free
                )
            else:
                jobs = []
                while len(jobs) < free:
                    job = await core.store.claim(now=now, worker_id=self._worker_id, lease_until=lease_until)
                    if job is None:
                        break
                    jobs.append(job)
        except Exception:
            log.exception("claim failed; retrying", store=repr(core.store))
            self._more = False  # the poll timer tries again
            return
        finally:
            self._filling = False
            filled.set()
        if self._closing():  # the pool closed during the claim: put the jobs back
            for job in jobs:
                await self._execute(job)
            return
        self._more = len(jobs) == free or wakes != self._wakes
        self._busy += len(jobs)
        self._ready.extend(jobs)
        parked = self._parked
        for _ in range(min(len(jobs), len(parked))):
            parked.pop().set()

    def _closing(self) -> bool:
        return not self._open

    async def _produce(self) -> None:
        """Fill the free slots whenever there may be work; else wait for one wake-up signal."""
        while self._open:
            if self._more and self._busy < self._concurrency:
                if self._filling:  # a runner is claiming (a store call in a thread, say)
                    await self._filled.wait()
                    continue
                await self._fill()
                if self._more:
                    await anyio.lowlevel.checkpoint()
                    continue
            # A note, a freed slot, or the manager's poll tick (another process may have
            # submitted) wakes us; a runner fills for itself while it is busy.
            await self._wake.wait()
            self._wake = anyio.Event()

    async def _runner(self) -> None:
        done = 0
        ready = self._ready
        while True:
            if ready:
                job = ready.popleft()
            elif not self._open:
                return
            elif self._more and not self._filling and self._busy < self._concurrency:
                await self._fill()  # busy and the store may hold more: no need to park
                continue
            else:
                event = anyio.Event()
                self._parked.append(event)
                await event.wait()
                continue
            try:
                await self._execute(job)
            finally:
                self._busy -= 1
                self._wake.set()  # a slot is free: the producer may have to watch for work
            done += 1
            if done % 16 == 0:
                # Handlers and stores that never suspend would otherwise keep the loop
                # to this runner: let other tasks (web requests, the sweeper) run.
                await anyio.lowlevel.checkpoint()

    async def close(self) -> None:
        """Stop claiming, interrupt the running jobs (they go back to pending) and wait for them."""
        self._open = False
        self._wake.set()
        for event in self._parked:
            event.set()
        self._parked.clear()
        if self._filling:
            # A claim under way must not see (and take again) the jobs interrupted below.
            await self._filled.wait()
        for run in list(self.running.values()):
            self.stop(run, "The job manager is shutting down.", CancelSource.SHUTDOWN)
        await self.done.wait()

    # -- running one job ---------------------------------------------------------------

    async def _execute(self, job: Job) -> None:
        entry = self._handlers.get(job.kind)
        handler, is_async_ = entry if entry is not None else (None, False)
        run = _Run(self, job, handler, is_async_)
        if not self._open:  # claimed just before shutdown: put it back untouched
            await self._conclude(run, machine.INTERRUPTED_OUTCOME)
            return
        self.running[job.id] = run
        if job.id in self._early_cancels:
            del self._early_cancels[job.id]
            self._recheck.set()  # a cancel note came before the run started: re-read it
        self.core.publish(EventType.STARTED, job)
        if self.telemetry is not None:
            run.telemetry = self.telemetry.run_started(job)
        try:
            outcome = await self._call_handler(run)
        except BaseException:
            # The manager itself is being torn down: put the job back, then re-raise.
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await self._conclude(run, machine.INTERRUPTED_OUTCOME)
            if run.telemetry is not None:
                run.telemetry.end(run.job, machine.INTERRUPTED_OUTCOME, run.lost)
            raise
        finally:
            self.running.pop(job.id, None)
            for scope in run.watchers or ():
                scope.cancel()
            if run.force_scope is not None:
                run.force_scope.cancel()
            scratch = run.context._cleanup()
            if scratch is not None:
                await anyio.to_thread.run_sync(remove_scratch, scratch)
        await self._conclude(run, outcome)
        if run.telemetry is not None:
            run.telemetry.end(run.job, outcome, run.lost)

    async def _call_handler(self, run: _Run) -> Outcome:
        job = run.job
        if run.handler is None:
            return Outcome.failed(f"No handler is registered for kind {job.kind!r}.")
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
                        return self._outcome_of_stop(run)
            else:
                result = await anyio.to_thread.run_sync(
                    _call_sync, run.handler, SyncJobContext(run.context), job.payload, limiter=self._limiter
                )
        except JobCancelled:
            return self._outcome_of_stop(run)
        except Exception as exc:
            if run.token.cancelled:
                return self._outcome_of_stop(run)
            log.warning("job failed", job_id=job.id, kind=job.kind, tenant=job.tenant, exc_info=exc)
            return self._failure(run, exc, safe_text(f"{type(exc).__name__}: {exc}"))
        try:
            return Outcome.completed(json_value(result, "result"))
        except InvalidInput as exc:
            return Outcome.failed(exc.message)

    def _outcome_of_stop(self, run: _Run) -> Outcome:
        source = run.token.source
        if source is CancelSource.SHUTDOWN:
            return machine.INTERRUPTED_OUTCOME
        if source is CancelSource.TIMEOUT:
            timeout = run.job.timeout
            error = f"timed out after {_seconds(timeout)}" if timeout else "timed out"
            return self._failure(run, TimeoutError(error), error)  # a timeout is a failure
        return machine.CANCELLED_OUTCOME

    def _failure(self, run: _Run, exc: BaseException, error: str) -> Outcome:
        """A failure, with the wait before the next attempt when a Retry covers it (the job's,
        else the handler's here); the machine decides whether attempts remain."""
        job = run.job
        if run.telemetry is not None:
            run.telemetry.failed(exc)
        retry, bound = job.retry, None
        if retry is None:
            retry = self._retries.get(job.kind)
            if retry is None:
                return Outcome.failed(error)
            bound = retry.attempts  # submitted where the handler's Retry was not known
        if not retry.covers(exc):
            return Outcome.failed(error)
        import random  # a retry's jitter: not on `import jobkit`'s path

        return Outcome.failed(error, retry.delay(job.attempts, random.random()), bound)

    async def _conclude(self, run: _Run, outcome: Outcome) -> None:
        """Write the outcome; never raises.

        A store error is logged and retried with backoff. An outcome that cannot be turned
        into a job (a bug, or a stored job that breaks the rules) fails the job with a clear
        error instead. Past the retries the job is left to lease recovery.
        """
        core = self.core

        def decide(job: Job) -> Job:
            try:
                return machine.conclude(job, outcome, core.clock(), core.retention)
            except InvalidState:
                raise
            except Exception as exc:
                raise _Unrecordable(exc) from exc

        delay = 0.01
        for _ in range(CONCLUDE_TRIES):
            try:
                _, new = await core.write(run.job, decide, reread=run.reread)
            except (_Lost, InvalidState):
                return  # recovered (and maybe claimed again) elsewhere: not ours to write
            except _Unrecordable:
                log.exception("job outcome could not be recorded; failing the job", job_id=run.job.id)
                if outcome.kind is OutcomeKind.FAILED and outcome.error == _UNRECORDABLE:
                    return  # not even a failure can be written: leave it to lease recovery
                outcome = Outcome.failed(_UNRECORDABLE)
                continue
            except Exception:
                log.exception("could not record job outcome; retrying", job_id=run.job.id, delay=delay)
                await anyio.sleep(delay)
                delay = min(delay * 2, self._poll)
                continue
            assert isinstance(new, Job)
            run.job = new
            if new.status is JobStatus.SCHEDULED:
                core.announce(new, EventType.SCHEDULED, scheduled_data(new))
            else:
                core.announce(new, machine.event_for(new))
            return
        log.error("gave up recording job outcome; lease recovery will handle it", job_id=run.job.id)

    # -- stopping ----------------------------------------------------------------------

    def _watch(self, run: _Run, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        assert self._tg is not None
        scope = anyio.CancelScope()
        if run.watchers is None:
            run.watchers = []
        run.watchers.append(scope)
        self._tg.start_soon(_scoped, scope, fn, *args)

    async def _timeout_after(self, run: _Run, timeout: timedelta) -> None:
        await anyio.sleep(timeout.total_seconds())
        self.stop(run, f"timed out after {_seconds(timeout)}", CancelSource.TIMEOUT)

    def stop(self, run: _Run, reason: str | None, source: CancelSource) -> None:
        """Set the run's token; force an async handler after ``cancel_grace``."""
        if not run.token._set(reason, source):
            return
        if run.telemetry is not None:
            run.telemetry.stopping(reason, source)
        if run.is_async and self._cancel_grace is not None and self._tg is not None:
            scope = anyio.CancelScope()
            run.force_scope = scope
            self._tg.start_soon(_scoped, scope, self._force_after, run, self._cancel_grace)

    @staticmethod
    async def _force_after(run: _Run, grace: float) -> None:
        await anyio.sleep(grace)
        if run.scope is not None:
            log.info("forcing cancellation", job_id=run.job.id, grace=grace)
            run.scope.cancel()

    # -- leases ------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        """Renew our leases every ``min(poll_interval, lease_duration / 3)``; learn of cancels
        and of jobs recovered elsewhere."""
        interval = min(self._poll, self._lease.total_seconds() / 3)
        core = self.core
        while True:
            await anyio.sleep(interval)
            if not self.running:
                continue
            sent = list(self.running)
            try:
                held = await core.store.renew_leases(self._worker_id, sent, core.clock() + self._lease)
            except Exception:
                log.exception("lease renewal failed; retrying")
                continue
            still = {job.id: job for job in held}
            for job_id in sent:
                run = self.running.get(job_id)
                if run is not None:  # else finished meanwhile
                    self._take_news(run, still.get(job_id))

    async def _watch_running(self) -> None:
        """When another process wrote to the store, re-read our running jobs (reads only: a
        renewal is a write, and would wake the other processes in turn), at most every
        ``RECHECK_GAP`` seconds."""
        store = self.core.store
        while True:
            await self._recheck.wait()
            self._recheck = anyio.Event()
            for job_id in list(self.running):
                run = self.running.get(job_id)
                if run is None:
                    continue
                try:
                    job = await store.get(job_id)
                except Exception:
                    log.exception("could not re-read a running job; the heartbeat will", job_id=job_id)
                    break
                self._take_news(run, job)
            await anyio.sleep(RECHECK_GAP)

    def _take_news(self, run: _Run, job: Job | None) -> None:
        """What the store says of a running job: gone or another attempt (recovered
        elsewhere: stop it, write nothing more), or cancelled (stop it)."""
        if job is None or job.attempts != run.job.attempts:
            self.lose(run)
            return
        if job.status not in ACTIVE:
            return  # finished: its run is concluding
        run.learn(job)
        if job.status is JobStatus.CANCELLING:
            self.stop(run, job.cancel_reason, CancelSource.USER)

    def lose(self, run: _Run) -> None:
        """The run's job is no longer its own: tell the handler, and fence its writes."""
        if not run.lost:
            run.lost = True
            log.warning("job lost its lease; stopping its run", job_id=run.job.id)
            self.stop(run, LOST_REASON, CancelSource.USER)


def _call_sync(fn: Handler, context: SyncJobContext, payload: Any) -> Any:
    return cast(SyncHandler, fn)(context, payload)


async def _scoped(scope: anyio.CancelScope, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
    with scope:
        await fn(*args)
