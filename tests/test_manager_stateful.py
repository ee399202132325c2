"""The job lifecycle, property-tested through a real JobManager.

A hypothesis state machine drives a manager that runs on an event loop in a background
thread (asyncio or trio): it submits (at once or delayed), cancels, deletes, retries,
re-prioritises, releases and expires jobs, keeps a model of what every job must be, and
after each step checks the lifecycle's promises against what the manager shows.

Handlers are controlled by the test: ``instant`` completes and ``failing`` fails at once
(each writes one artifact first); ``flaky`` fails every time under a Retry, so it is
scheduled again 30 s (of the fake clock) after each failure until its attempts are used
up; ``gate`` runs until the test releases it and stops at once on cancel; ``stubborn``
runs until released and ignores cancellation, so it stays ``cancelling`` and then
completes. After each step the test waits (bounded) until the manager has done what the
model says it must, so every observation is of a settled state.

The store and blob backends come from one factory, ``make_backends``: the same machine
runs on any store by passing another factory.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import TaskStatus
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    RuleBasedStateMachine,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from jobkit import (
    SWEEPER,
    Actor,
    AuditRecord,
    EventType,
    InvalidState,
    Job,
    JobContext,
    JobEvent,
    JobManager,
    JobNotFound,
    JobStatus,
    PermissionDenied,
    Retention,
    Retry,
    SyncJobContext,
)
from jobkit.abc import BlobStore, JobStore
from jobkit.blobs import FileBlobStore, MemoryBlobStore
from jobkit.stores import MemoryStore, SQLiteStore
from jobkit.testing import FakeClock

Backends = tuple[JobStore, BlobStore]
#: Every job (None: not found), its queue position, the job list, counts() and the audit trail.
Snapshot = tuple[
    dict[str, Job | None], dict[str, int | None], list[str], dict[JobStatus, int], list[AuditRecord]
]

CONCURRENCY = 2
RETENTION = Retention(completed=60, failed=120, cancelled=180)
#: Bound on every wait for the manager (seconds of real time); never reached when all is well.
WAIT = 10.0
KINDS = ("instant", "failing", "flaky", "gate", "stubborn")
#: ``flaky`` fails every time; each failure but the last schedules it again BACKOFF later.
BACKOFF = 30
FLAKY_RETRY = Retry(attempts=3, backoff=BACKOFF, factor=1, jitter=0)
ERRORS = {"failing": "RuntimeError: boom", "flaky": "RuntimeError: again"}
#: Kinds whose handler writes one artifact before it returns or raises.
WRITERS = frozenset({"instant", "failing"})
#: Kinds whose handler blocks until the test releases it.
GATED = frozenset({"gate", "stubborn"})
ADMIN = Actor("root", roles={"admin"})
USER = Actor("someone")
ACTIVE = frozenset({JobStatus.RUNNING, JobStatus.CANCELLING})
DELETE_MESSAGES = {
    JobStatus.SCHEDULED: "Cannot delete scheduled job. Use cancel instead.",
    JobStatus.PENDING: "Cannot delete pending job. Use cancel instead.",
    JobStatus.RUNNING: "Cannot delete running job. Use cancel instead.",
    JobStatus.CANCELLING: "Cannot delete job while cancellation is in progress.",
}


def make_backends() -> Backends:
    """A fresh store and blob store for one run of the machine."""
    return MemoryStore(), MemoryBlobStore()


@dataclasses.dataclass
class Expected:
    """What the model says one job is."""

    id: str
    kind: str
    seq: int
    priority: int
    ttl: timedelta | None
    status: JobStatus = JobStatus.PENDING
    #: When a scheduled job becomes due (None unless scheduled).
    run_at: datetime | None = None
    ran: bool = False
    #: Starts so far, and the bound on them.
    attempts: int = 0
    max_attempts: int = 1
    error: str | None = None
    cancel_reason: str | None = None
    released: bool = False
    gone: bool = False
    #: Manual retries so far, and how many of them the last observation already knew of.
    retries: int = 0
    retries_seen: int = 0
    #: Audit records the job must have, as (action, actor id) -> count.
    audit: Counter[tuple[str, str | None]] = dataclasses.field(default_factory=Counter)
    #: Every status observed, in order, and the last job observed.
    history: list[JobStatus] = dataclasses.field(default_factory=list)
    last: Job | None = None

    @property
    def key(self) -> tuple[int, int]:
        """Claim order: highest priority first, then oldest."""
        return (-self.priority, self.seq)


class ManagerLifecycle(RuleBasedStateMachine):
    """A model of every job, checked against a live manager after each step."""

    job_ids = Bundle("job_ids")

    def __init__(
        self,
        backend: str,
        backends: Callable[[], Backends] = make_backends,
        inside: Counter[str] | None = None,
    ) -> None:
        super().__init__()
        #: Handlers currently running, by kind (shared across runs, to find leaked threads).
        self.inside: Counter[str] = Counter() if inside is None else inside
        self.clock = FakeClock()
        store, self.blobs = backends()
        self.manager = JobManager(
            store,
            self.blobs,
            concurrency=CONCURRENCY,
            retention=RETENTION,
            sweep_interval=None,
            clock=self.clock,
        )
        self.manager.register("instant", self._instant)
        self.manager.register("failing", self._failing)
        self.manager.register("flaky", self._flaky, retry=FLAKY_RETRY)
        self.manager.register("gate", self._gate)
        self.manager.register("stubborn", self._stubborn)
        self.model: dict[str, Expected] = {}
        self._lock = threading.Lock()
        self._wakes: dict[str, threading.Event] = {}
        self._started: dict[str, threading.Event] = {}
        self._closing = False
        #: Every event the manager published, by job (filled by a task on the manager's loop).
        self._events: dict[str, list[JobEvent]] = {}
        self._heard = threading.Condition()
        self._portal_cm: AbstractContextManager[BlockingPortal] = start_blocking_portal(backend)
        self.portal = self._portal_cm.__enter__()
        try:
            self._manager_cm: AbstractContextManager[JobManager] = self.portal.wrap_async_context_manager(
                self.manager
            )
            self._manager_cm.__enter__()
            try:
                self._collector, _ = self.portal.start_task(self._collect)
            except BaseException:
                self._manager_cm.__exit__(None, None, None)
                raise
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            raise

    def teardown(self) -> None:
        with self._lock:
            self._closing = True
            for wake in self._wakes.values():
                wake.set()
        try:
            self._manager_cm.__exit__(None, None, None)
            self._collector.result(WAIT)  # the stream ends with the manager
        finally:
            self._portal_cm.__exit__(None, None, None)

    # -- handlers (run by the manager) --------------------------------------------------

    async def _instant(self, ctx: JobContext, payload: Any) -> Any:
        await ctx.put_artifact("out.txt", b"done")
        return payload

    async def _failing(self, ctx: JobContext, payload: Any) -> Any:
        await ctx.put_artifact("partial.txt", b"half")
        raise RuntimeError("boom")

    async def _flaky(self, ctx: JobContext, payload: Any) -> Any:
        raise RuntimeError("again")

    def _gate(self, ctx: SyncJobContext, payload: Any) -> Any:
        """Runs until released; a cancel wakes it and its checkpoint stops it."""
        wake = self._event(self._wakes, ctx.job.id)
        unregister = ctx.token.on_cancel(wake.set)
        with self._running("gate"):
            self._event(self._started, ctx.job.id).set()
            try:
                if not wake.wait(3 * WAIT):
                    raise RuntimeError("the test never released this gate")
            finally:
                unregister()
            ctx.checkpoint()
            return payload

    def _stubborn(self, ctx: SyncJobContext, payload: Any) -> Any:
        """Runs until released, whatever its token says, then returns normally."""
        with self._running("stubborn"):
            self._event(self._started, ctx.job.id).set()
            if not self._event(self._wakes, ctx.job.id).wait(3 * WAIT):
                raise RuntimeError("the test never released this job")
            return payload

    @contextmanager
    def _running(self, kind: str) -> Iterator[None]:
        with self._lock:
            self.inside[kind] += 1
        try:
            yield
        finally:
            with self._lock:
                self.inside[kind] -= 1

    def _event(self, events: dict[str, threading.Event], job_id: str) -> threading.Event:
        with self._lock:
            event = events.get(job_id)
            if event is None:
                event = events[job_id] = threading.Event()
                if self._closing and events is self._wakes:
                    event.set()
            return event

    async def _collect(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Record every event until the manager closes (which ends the stream)."""
        async with self.manager.subscribe(buffer=100_000) as stream:
            task_status.started()
            async for event in stream:
                with self._heard:
                    self._events.setdefault(event.job_id, []).append(event)
                    self._heard.notify_all()

    def _concluded(self, m: Expected) -> bool:
        """The events say the job's last start (if any) has ended and it is ``m.status``."""
        events = self._events.get(m.id, [])
        starts = sum(1 for event in events if event.type is EventType.STARTED)
        return starts == m.attempts and bool(events) and events[-1].status is m.status

    def _forget_run(self, job_id: str) -> None:
        """A retried job runs again: its handler gets fresh events to start and to wake."""
        with self._lock:
            self._wakes.pop(job_id, None)
            self._started.pop(job_id, None)

    # -- talking to the manager ---------------------------------------------------------

    def call(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``await fn(*args, **kwargs)`` on the manager's loop and return the result."""
        return self.portal.call(functools.partial(fn, *args, **kwargs))

    def live(self) -> Iterator[Expected]:
        return (m for m in self.model.values() if not m.gone)

    def newest_first(self) -> list[Expected]:
        return sorted(self.live(), key=lambda m: m.seq, reverse=True)

    def schedule(self) -> None:
        """What free workers do: take pending jobs by priority, then age, until all are busy."""
        busy = sum(1 for m in self.live() if m.status in ACTIVE)
        for m in sorted((m for m in self.live() if m.status is JobStatus.PENDING), key=lambda m: m.key):
            if busy >= CONCURRENCY:
                break
            m.ran = True
            m.attempts += 1
            if m.kind in ERRORS:
                m.error = ERRORS[m.kind]
            if m.kind == "failing":
                m.status = JobStatus.FAILED
            elif m.kind == "flaky":
                if m.attempts < m.max_attempts:
                    m.status = JobStatus.SCHEDULED
                    m.run_at = self.clock.now + timedelta(seconds=BACKOFF)
                else:
                    m.status = JobStatus.FAILED
            elif m.kind == "instant" or m.released:
                m.status = JobStatus.COMPLETED
            else:
                m.status = JobStatus.RUNNING
                busy += 1

    def settle(self) -> None:
        """Update the model's schedule, then wait (bounded) until the manager has caught up."""
        self.schedule()
        for m in self.live():
            if m.status in ACTIVE:
                assert self._event(self._started, m.id).wait(WAIT), f"{m.kind} job {m.id} never started"
        finished = [m.id for m in self.live() if m.status.is_terminal]
        if finished:
            self.call(self._wait_all, finished)
        waiting = [m for m in self.live() if m.status is JobStatus.SCHEDULED]
        with self._heard:
            for m in waiting:
                assert self._heard.wait_for(functools.partial(self._concluded, m), WAIT), (
                    f"{m.kind} job {m.id} never became {m.status.value} after {m.attempts} starts"
                )

    async def _wait_all(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            await self.manager.wait(job_id, timeout=WAIT)

    async def _snapshot(self) -> Snapshot:
        jobs: dict[str, Job | None] = {}
        positions: dict[str, int | None] = {}
        for job_id, m in self.model.items():
            try:
                jobs[job_id] = await self.manager.get(job_id, include_deleted=m.gone)
            except JobNotFound:
                jobs[job_id] = None
            else:
                positions[job_id] = await self.manager.position(job_id)
        page = await self.manager.list(limit=1000)
        assert page.next_cursor is None
        counts = await self.manager.counts()
        records = await self.manager.audit(limit=1000)
        return jobs, positions, [job.id for job in page], counts, records

    async def _all_pages(
        self, statuses: frozenset[JobStatus] | None, kind: str | None, limit: int
    ) -> list[str]:
        found: list[str] = []
        cursor = None
        while True:
            page = await self.manager.list(status=statuses, kind=kind, limit=limit, cursor=cursor)
            assert len(page) <= limit
            found.extend(job.id for job in page)
            if page.next_cursor is None:
                return found
            assert len(page) == limit
            cursor = page.next_cursor

    def position(self, target: Expected) -> int:
        pending = [m for m in self.live() if m.status is JobStatus.PENDING]
        return 1 + sum(1 for m in pending if m.key < target.key)

    def observe(self, m: Expected, job: Job) -> None:
        """Check one observation of a job against everything seen of it before."""
        previous = m.last
        if previous is not None:
            assert job.version >= previous.version, "version went down"
            if job != previous:
                assert job.version > previous.version, f"changed without a new version: {previous} -> {job}"
            if previous.status.is_terminal:
                if m.retries == m.retries_seen:
                    assert job == previous, f"a finished job changed without a retry: {previous} -> {job}"
                else:
                    # The retry's own answer is observed first: the job is waiting again.
                    assert job.status in (JobStatus.PENDING, JobStatus.SCHEDULED), "a retry did not revive"
        if job.status is JobStatus.CANCELLING:
            assert JobStatus.RUNNING in m.history, "cancelling without having been seen running"
        assert (job.run_at is not None) == (job.status is JobStatus.SCHEDULED), "run_at iff scheduled"
        assert job.attempts <= job.max_attempts
        assert (job.finished_at is not None) == job.is_terminal
        if job.is_terminal:
            keep = job.ttl if job.ttl is not None else RETENTION.for_status(job.status)
            assert keep is not None
            assert job.finished_at is not None
            assert job.expires_at == job.finished_at + keep
        else:
            assert job.expires_at is None, "expires_at on an unfinished job"
        m.history.append(job.status)
        m.last = job
        m.retries_seen = m.retries

    # -- rules --------------------------------------------------------------------------

    @rule(
        target=job_ids,
        specs=st.lists(
            st.tuples(st.sampled_from(KINDS), st.integers(-2, 2), st.sampled_from([None, 0, 30, 600])),
            min_size=1,
            max_size=3,
        ),
    )
    def submit(self, specs: list[tuple[str, int, int | None]]) -> MultipleResults[str]:
        """Submit one to three jobs, letting the workers settle after each."""
        ids = []
        for kind, priority, ttl in specs:
            payload = {"n": len(self.model)}
            job: Job = self.call(self.manager.submit, kind, payload, priority=priority, ttl=ttl)
            assert job.status is JobStatus.PENDING
            assert job.started_at is job.finished_at is job.expires_at is None
            assert job.created_at == self.clock.now
            m = self.expect(job, kind, priority, ttl)
            self.observe(m, job)
            self.settle()
            ids.append(job.id)
        return multiple(*ids)

    def expect(self, job: Job, kind: str, priority: int, ttl: int | None) -> Expected:
        """Add a just submitted job to the model."""
        m = Expected(
            id=job.id,
            kind=kind,
            seq=len(self.model),
            priority=priority,
            ttl=None if ttl is None else timedelta(seconds=ttl),
            status=job.status,
            run_at=job.run_at,
            max_attempts=FLAKY_RETRY.attempts if kind == "flaky" else 1,
        )
        assert job.max_attempts == m.max_attempts
        self.model[job.id] = m
        return m

    @rule(
        target=job_ids,
        kind=st.sampled_from(KINDS),
        priority=st.integers(-2, 2),
        ttl=st.sampled_from([None, 0, 30, 600]),
        delay=st.sampled_from([1, 30, 90, 600]),
    )
    def submit_later(self, kind: str, priority: int, ttl: int | None, delay: int) -> str:
        """Submit a job that waits ``delay`` seconds, scheduled until then."""
        job: Job = self.call(
            self.manager.submit, kind, {"n": len(self.model)}, priority=priority, ttl=ttl, delay=delay
        )
        assert job.status is JobStatus.SCHEDULED
        assert job.run_at == self.clock.now + timedelta(seconds=delay)
        assert job.started_at is job.finished_at is job.expires_at is None
        m = self.expect(job, kind, priority, ttl)
        self.observe(m, job)
        return job.id

    @rule(job_id=job_ids, reason=st.sampled_from([None, "changed my mind"]))
    def cancel(self, job_id: str, reason: str | None) -> None:
        m = self.model[job_id]
        if m.gone:
            with pytest.raises(JobNotFound):
                self.call(self.manager.cancel, job_id, reason=reason)
            return
        if m.status.is_terminal:
            with pytest.raises(InvalidState):
                self.call(self.manager.cancel, job_id, reason=reason)
            return
        before = m.status
        job: Job = self.call(self.manager.cancel, job_id, reason=reason)
        if before in (JobStatus.PENDING, JobStatus.SCHEDULED):
            assert job.status is JobStatus.CANCELLED
            m.status = JobStatus.CANCELLED
            m.run_at = None
        elif before is JobStatus.RUNNING:
            assert job.status is JobStatus.CANCELLING
            # A gate stops at its checkpoint; a stubborn job keeps running.
            m.status = JobStatus.CANCELLED if m.kind == "gate" else JobStatus.CANCELLING
        else:
            assert job == m.last, "cancelling a cancelling job again changes nothing"
        if before is not JobStatus.CANCELLING:
            assert job.cancel_reason == reason
            m.cancel_reason = reason
            m.audit["cancel", None] += 1
        self.observe(m, job)
        self.settle()

    @rule(job_id=job_ids)
    def delete(self, job_id: str) -> None:
        m = self.model[job_id]
        if m.gone:
            with pytest.raises(JobNotFound):
                self.call(self.manager.delete, job_id)
            return
        if not m.status.is_terminal:
            with pytest.raises(InvalidState) as raised:
                self.call(self.manager.delete, job_id)
            assert raised.value.message == DELETE_MESSAGES[m.status]
            return
        self.call(self.manager.delete, job_id)
        m.gone = True
        m.audit["delete", None] += 1
        assert self.call(self.blobs.list, f"jobs/{job_id}/") == []

    @rule(job_id=job_ids, later=st.booleans())
    def retry(self, job_id: str, later: bool) -> None:
        """A manual retry: a failed or cancelled job waits again (``later``: BACKOFF from now)."""
        m = self.model[job_id]
        run_at = self.clock.now + timedelta(seconds=BACKOFF) if later else None
        if m.gone:
            with pytest.raises(JobNotFound):
                self.call(self.manager.retry, job_id, run_at=run_at)
            return
        if m.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
            with pytest.raises(InvalidState) as raised:
                self.call(self.manager.retry, job_id, run_at=run_at)
            if m.status is JobStatus.COMPLETED:
                assert "Submit a new job" in raised.value.message
            return
        self._forget_run(job_id)
        job: Job = self.call(self.manager.retry, job_id, run_at=run_at)
        m.status = JobStatus.PENDING if run_at is None else JobStatus.SCHEDULED
        m.run_at = run_at
        m.max_attempts = max(m.max_attempts, m.attempts + 1)
        m.cancel_reason = None
        m.released = False
        m.retries += 1
        m.audit["retry", None] += 1
        assert job.status is m.status
        assert job.run_at == run_at
        assert job.finished_at is job.expires_at is None, "a revived job still looks finished"
        assert job.max_attempts == m.max_attempts
        assert job.error == m.error, "the last error goes only with the next outcome"
        self.observe(m, job)
        self.settle()

    def unreleased(self) -> list[str]:
        gated = (m for m in self.live() if m.kind in GATED and not m.released and not m.status.is_terminal)
        return [m.id for m in sorted(gated, key=lambda m: m.seq)]

    @precondition(lambda self: bool(self.unreleased()))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        m = self.model[data.draw(st.sampled_from(self.unreleased()), label="job_id")]
        m.released = True
        self._event(self._wakes, m.id).set()
        if m.status in ACTIVE:
            # Returning normally completes the job, even while it is cancelling.
            m.status = JobStatus.COMPLETED
        self.settle()

    @rule(job_id=job_ids, priority=st.integers(-2, 2), admin=st.booleans())
    def set_priority(self, job_id: str, priority: int, admin: bool) -> None:
        m = self.model[job_id]
        actor = ADMIN if admin else USER
        if m.gone:
            with pytest.raises(JobNotFound):
                self.call(self.manager.set_priority, job_id, priority, actor=actor)
            return
        if not admin:
            with pytest.raises(PermissionDenied):
                self.call(self.manager.set_priority, job_id, priority, actor=actor)
            return
        if m.status is not JobStatus.PENDING:
            with pytest.raises(InvalidState):
                self.call(self.manager.set_priority, job_id, priority, actor=actor)
            return
        job, position = self.call(self.manager.set_priority, job_id, priority, actor=actor)
        assert job.priority == priority
        assert job.status is JobStatus.PENDING
        if priority != m.priority:
            m.audit["set_priority", ADMIN.id] += 1
        m.priority = priority
        assert position == self.position(m)
        self.observe(m, job)
        self.settle()

    @rule(seconds=st.sampled_from([0, 1, 30, 31, 60, 121, 600]))
    def advance_and_sweep(self, seconds: int) -> None:
        now = self.clock.advance(seconds)
        due = []
        for m in self.live():
            assert m.last is not None
            if m.status.is_terminal and m.last.expires_at is not None and m.last.expires_at <= now:
                due.append(m)
        promoting = [m for m in self.live() if m.run_at is not None and m.run_at <= now]
        report = self.call(self.manager.sweep)
        # The manager's timers promote at the (fake) time too, maybe before this sweep did: a
        # job they ran and finished with ttl 0 at once may then expire in this very sweep.
        racing = [m for m in promoting if m.ttl == timedelta(0)]
        if racing:
            present = self.call(self._present, [m.id for m in racing])
            for m in racing:
                if m.id not in present:
                    m.ran = True
                    due.append(m)
        assert report.promoted <= len(promoting)
        assert report.expired == len(due)
        assert report.artifacts_deleted == sum(1 for m in due if m.ran and m.kind in WRITERS)
        assert report.recovered == 0, "a job of a live worker was recovered"
        for m in due:
            m.gone = True
            m.audit["expire", SWEEPER] += 1
            assert self.call(self.blobs.list, f"jobs/{m.id}/") == []
        for m in promoting:
            m.status = JobStatus.PENDING
            m.run_at = None
        self.settle()

    async def _present(self, job_ids: list[str]) -> set[str]:
        present = set()
        for job_id in job_ids:
            try:
                await self.manager.get(job_id)
            except JobNotFound:
                continue
            present.add(job_id)
        return present

    @rule(
        statuses=st.none() | st.frozensets(st.sampled_from(list(JobStatus)), min_size=1),
        kind=st.none() | st.sampled_from(KINDS),
        limit=st.integers(1, 4),
    )
    def list_pages(self, statuses: frozenset[JobStatus] | None, kind: str | None, limit: int) -> None:
        expected = [
            m.id
            for m in self.newest_first()
            if (statuses is None or m.status in statuses) and (kind is None or m.kind == kind)
        ]
        assert self.call(self._all_pages, statuses, kind, limit) == expected

    # -- invariants ---------------------------------------------------------------------

    @invariant()
    def every_job_is_what_the_model_says(self) -> None:
        jobs, positions, listed, counts, records = self.call(self._snapshot)
        for m in self.model.values():
            job = jobs[m.id]
            if m.gone:
                assert job is None, "a deleted or expired job came back"
                continue
            assert job is not None, f"{m.kind} job {m.id} vanished"
            self.observe(m, job)
            assert job.status is m.status
            assert job.priority == m.priority
            assert job.ttl == m.ttl
            assert job.run_at == m.run_at
            assert (job.started_at is not None) == m.ran
            assert job.attempts == m.attempts
            assert job.max_attempts == m.max_attempts
            assert job.deleted_at is None
            assert job.error == m.error
            assert job.cancel_reason == m.cancel_reason
            assert job.result == (job.payload if job.status is JobStatus.COMPLETED else None)
            assert positions[m.id] == (self.position(m) if m.status is JobStatus.PENDING else None)
            if m.ran and m.kind in WRITERS:
                names = self.call(self.manager.artifacts, m.id)
                assert names == (["out.txt"] if m.kind == "instant" else ["partial.txt"])
        assert listed == [m.id for m in self.newest_first()]
        expected_counts = Counter(m.status for m in self.live())
        assert counts == {status: expected_counts[status] for status in JobStatus}
        audit: dict[str, Counter[tuple[str, str | None]]] = {}
        for record in records:
            audit.setdefault(record.job_id, Counter())[str(record.action), record.actor_id] += 1
        assert audit == {m.id: m.audit for m in self.model.values() if m.audit}


SETTINGS = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def run_lifecycle(backend: str, backends: Callable[[], Backends] = make_backends) -> None:
    """Run the state machine against a manager on ``backend`` over the given store and blobs."""
    before = set(threading.enumerate())
    inside: Counter[str] = Counter()

    class Machine(ManagerLifecycle):
        def __init__(self) -> None:
            super().__init__(backend, backends, inside)

    run_state_machine_as_test(Machine, settings=SETTINGS)
    assert +inside == Counter(), f"handlers still running after the manager closed: {inside}"
    # Trio keeps idle worker threads cached (daemons); anything else must have ended.
    leaked = [t for t in set(threading.enumerate()) - before if not t.daemon]
    assert leaked == [], f"threads left running: {leaked}"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
class TestLifecycleThroughManager:
    def test_memory_store_keeps_every_lifecycle_promise(self, backend: str) -> None:
        """Any mix of submits, cancels, deletes, releases, priority changes and sweeps keeps the lifecycle."""
        run_lifecycle(backend)

    def test_sqlite_and_files_keep_every_lifecycle_promise(self, backend: str, tmp_path: Path) -> None:
        """The same property test on SQLiteStore and FileBlobStore (a fresh file per example)."""
        runs = itertools.count()

        def sqlite_backends() -> Backends:
            run = next(runs)
            return SQLiteStore(tmp_path / f"jobs{run}.db"), FileBlobStore(tmp_path / f"blobs{run}")

        run_lifecycle(backend, sqlite_backends)

    def test_postgres_and_files_keep_every_lifecycle_promise(
        self, backend: str, tmp_path: Path, pg_dsn: str
    ) -> None:
        """The same property test on PostgresStore (a fresh schema per example) and FileBlobStore."""
        from jobkit.stores.postgres import PostgresStore
        from pgserver import new_schema

        runs = itertools.count()

        def postgres_backends() -> Backends:
            run = next(runs)
            return PostgresStore(pg_dsn, schema=new_schema()), FileBlobStore(tmp_path / f"blobs{run}")

        run_lifecycle(backend, postgres_backends)
