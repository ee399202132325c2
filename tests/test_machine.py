"""The pure job state machine: which status changes are legal, and what each one records.

A hypothesis state machine holds a few Job records, moves time forward and applies
random events to them. Illegal events must raise InvalidState and leave the job as it
was; legal ones must lead where the lifecycle table says. After every step the
lifecycle's invariants are checked on every job. Plain tests below walk every cell of the
lifecycle table (docs: DESIGN "Job lifecycle") and pin the messages a user sees.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from jobkit import EventType, InvalidState, Job, JobStatus, Retention
from jobkit import _machine as machine

S = JobStatus.SCHEDULED
P = JobStatus.PENDING
R = JobStatus.RUNNING
C = JobStatus.CANCELLING
COMPLETED = JobStatus.COMPLETED
FAILED = JobStatus.FAILED
CANCELLED = JobStatus.CANCELLED
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED})
ACTIVE = frozenset({R, C})

START = datetime(2030, 1, 1, tzinfo=UTC)
MAX_JOBS = 4

# Retention values and ttls: None (keep forever), zero, or anything up to a few years,
# given as a timedelta or as a number of seconds (Retention converts).
_spans = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=1000))
keeps = st.one_of(st.none(), st.just(timedelta(0)), _spans)
retention_values = st.one_of(keeps, st.integers(0, 10**8), st.floats(0, 1e8))
steps = st.one_of(
    st.just(timedelta(0)),
    st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3)),
)
# A job is picked by index and an aim; mostly the pick is among the jobs the event is
# legal for (when there are any), so that deep paths (running, cancelling) are reached.
picks = st.tuples(st.integers(0, MAX_JOBS - 1), st.integers(0, 3))
priorities = st.integers(-1_000_000, 1_000_000)
json_values = st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=3))
delays = st.one_of(st.none(), steps)  # None: now; else how long from now
# priority, ttl, max_attempts, delay (a delayed submit is scheduled)
job_settings = st.tuples(priorities, keeps, st.integers(1, 3), delays)
messages = st.one_of(st.none(), st.text(max_size=10))

STAGE = {S: 0, P: 0, R: 1, C: 2, COMPLETED: 3, FAILED: 3, CANCELLED: 3}

# What each event does from each status, with attempts left; a status missing from a row is
# illegal (InvalidState). DESIGN's columns: due, start, cancel, finish ok (complete), finish
# error (fail without a covering Retry, fail_retrying with one), observed cancel,
# interrupted (shutdown), lease lost, retry (management: retry, retry_at with a run_at).
TABLE: dict[str, dict[JobStatus, JobStatus]] = {
    "due": {S: P},
    "start": {P: R},
    "cancel": {S: CANCELLED, P: CANCELLED, R: C, C: C},
    "complete": {R: COMPLETED, C: COMPLETED},
    "fail": {R: FAILED, C: FAILED},
    "fail_retrying": {R: S, C: FAILED},
    "observe_cancel": {R: CANCELLED, C: CANCELLED},
    "interrupt": {R: P, C: CANCELLED},
    "lose_lease": {R: P, C: CANCELLED},
    "retry": {FAILED: P, CANCELLED: P},
    "retry_at": {FAILED: S, CANCELLED: S},
    "set_priority": {P: P},
    "report_progress": {R: R, C: C},
    "store_result": {R: R, C: C},
}
# The cells that differ when no attempts are left (attempts >= max_attempts).
EXHAUSTED: dict[str, dict[JobStatus, JobStatus]] = {
    "fail_retrying": {R: FAILED},
    "lose_lease": {R: FAILED},
}
MANUAL_RETRIES = frozenset({"retry", "retry_at"})
# The event that announces a job that has just moved to a status.
ANNOUNCED = {
    S: EventType.SCHEDULED,
    P: EventType.REQUEUED,
    R: EventType.STARTED,
    C: EventType.CANCELLING,
    COMPLETED: EventType.COMPLETED,
    FAILED: EventType.FAILED,
    CANCELLED: EventType.CANCELLED,
}


def expected_status(event: str, job: Job) -> JobStatus | None:
    """Where ``event`` takes ``job`` by the lifecycle table; None when it is illegal."""
    if event in MANUAL_RETRIES and job.deleted_at is not None:
        return None
    if job.attempts >= job.max_attempts and job.status in EXHAUSTED.get(event, {}):
        return EXHAUSTED[event][job.status]
    return TABLE[event].get(job.status)


JobSettings = tuple[int, timedelta | None, int, timedelta | None]


def some_job_active(state: JobLifecycle) -> bool:
    """Events only a running job can take are tried (on any job) once some job runs."""
    return any(job.status in ACTIVE for job in state.jobs)


class JobLifecycle(RuleBasedStateMachine):
    """A few jobs driven through random events at random, forward-moving times."""

    def __init__(self) -> None:
        super().__init__()
        self.now = START
        self.retention = Retention()
        self.jobs: list[Job] = []
        # Per job (same index): every status it has had with the event that brought it, in
        # order, and how often it started.
        self.history: list[list[tuple[JobStatus, str]]] = []
        self.starts: list[int] = []
        self.versions: list[int] = []
        self.last = 0  # the index of the job the last event went to
        self.submitted = 0

    # -- setup ---------------------------------------------------------------------------

    @initialize(
        completed=retention_values,
        failed=retention_values,
        cancelled=retention_values,
        first=st.lists(job_settings, min_size=1, max_size=MAX_JOBS),
    )
    def setup(self, completed: Any, failed: Any, cancelled: Any, first: list[JobSettings]) -> None:
        self.retention = Retention(completed=completed, failed=failed, cancelled=cancelled)
        for chosen in first:
            self.add_job_at(chosen)

    def add_job_at(self, settings: JobSettings) -> None:
        priority, ttl, max_attempts, delay = settings
        job = Job(
            id=f"job-{self.submitted}",
            kind="k",
            status="pending" if delay is None else "scheduled",
            created_at=self.now,
            priority=priority,
            ttl=ttl,
            max_attempts=max_attempts,
            run_at=None if delay is None else self.now + delay,
        )
        self.submitted += 1
        self.jobs.append(job)
        self.history.append([(job.status, "submit")])
        self.starts.append(0)
        self.versions.append(job.version)

    @precondition(lambda self: len(self.jobs) < MAX_JOBS)
    @rule(dt=steps, settings=job_settings)
    def submit(self, dt: timedelta, settings: JobSettings) -> None:
        self.now += dt
        self.add_job_at(settings)

    @precondition(lambda self: len(self.jobs) > 1 and any(job.is_terminal for job in self.jobs))
    @rule(pick=picks)
    def hard_delete(self, pick: tuple[int, int]) -> None:
        """A finished job passes the default delete check and its record goes (making room)."""
        i = self.choose(pick, lambda job: job.is_terminal)
        if not self.jobs[i].is_terminal:
            return
        machine.check_deletable(self.jobs[i], TERMINAL)
        for records in (self.jobs, self.history, self.starts, self.versions):
            del records[i]

    @rule(dt=steps)
    def tick(self, dt: timedelta) -> None:
        self.now += dt

    # -- applying an event ---------------------------------------------------------------

    def choose(self, pick: tuple[int, int], legal: Callable[[Job], bool]) -> int:
        """The index of the job ``pick`` designates.

        ``aim`` 0 takes any job; 1 any job where ``legal`` holds; 2 and 3 the legal job
        furthest along the lifecycle (cancelling before running before pending).
        """
        index, aim = pick
        candidates = [i for i, job in enumerate(self.jobs) if legal(job)] if aim else []
        if aim >= 2 and candidates:
            furthest = max(STAGE[self.jobs[i].status] for i in candidates)
            candidates = [i for i in candidates if STAGE[self.jobs[i].status] == furthest]
        candidates = candidates or list(range(len(self.jobs)))
        return candidates[index % len(candidates)]

    def apply(
        self, pick: tuple[int, int], dt: timedelta, event: str, call: Callable[[Job], Job]
    ) -> tuple[Job, Job] | None:
        """Apply ``event`` to a job at a later time; return (old, new) when it was legal."""
        i = self.last = self.choose(pick, lambda job: expected_status(event, job) is not None)
        self.now += dt
        old = self.jobs[i]
        if event == "due" and old.run_at is not None:
            self.now = max(self.now, old.run_at)  # the store hands a job over once its time came
        expected = expected_status(event, old)
        if expected is None:
            before = attrs.asdict(old, recurse=False)
            with pytest.raises(InvalidState):
                call(old)
            assert attrs.asdict(old, recurse=False) == before, f"a refused {event} changed the job"
            return None
        new = call(old)
        assert new.status is expected, f"{event} from {old.status} gave {new.status}, not {expected}"
        if new.status is not old.status:
            assert machine.event_for(new) is ANNOUNCED[new.status]
        self.record(i, old, new, event)
        return old, new

    def record(self, i: int, old: Job, new: Job, event: str) -> None:
        if new is old:
            assert new.version == self.versions[i]
        else:
            assert new.version == old.version + 1, "version must grow by one on every change"
        unchanged = {"id", "kind", "payload", "tenant", "created_at", "ttl", "timeout", "labels", "retry"}
        if event not in MANUAL_RETRIES:
            unchanged.add("max_attempts")
        for name in unchanged:
            assert getattr(new, name) == getattr(old, name), f"{name} changed"
        if new.status is not old.status:
            self.history[i].append((new.status, event))
        self.jobs[i] = new
        self.versions[i] = new.version

    # -- the events ----------------------------------------------------------------------

    @precondition(lambda self: any(job.status is S for job in self.jobs))
    @rule(pick=picks, dt=steps)
    def due(self, pick: tuple[int, int], dt: timedelta) -> None:
        done = self.apply(pick, dt, "due", machine.due)
        if done:
            old, new = done
            assert old.run_at is not None
            assert old.run_at <= self.now
            assert new.run_at is None
            assert new.priority == old.priority, "a due job keeps its priority"
            assert new.attempts == old.attempts
            assert new.error == old.error
            assert new.result == old.result

    @rule(pick=picks, dt=steps)
    def start(self, pick: tuple[int, int], dt: timedelta) -> None:
        done = self.apply(pick, dt, "start", lambda job: machine.start(job, self.now))
        if done:
            old, new = done
            self.starts[self.last] += 1
            assert new.started_at == self.now
            assert new.attempts == old.attempts + 1
            assert new.progress is None
            assert new.progress_message is None

    @rule(pick=picks, dt=steps, reason=messages)
    def cancel(self, pick: tuple[int, int], dt: timedelta, reason: str | None) -> None:
        done = self.apply(
            pick, dt, "cancel", lambda job: machine.cancel(job, self.now, self.retention, reason)
        )
        if done:
            old, new = done
            if old.status is C:
                assert new is old, "cancelling a cancelling job again changes nothing"
            else:
                assert new.cancel_reason == reason
            if old.status in (S, P):
                assert new.finished_at == self.now
                assert new.run_at is None
            if old.status is R:
                assert new.finished_at is None

    @precondition(some_job_active)
    @rule(pick=picks, dt=steps, result=json_values)
    def complete(self, pick: tuple[int, int], dt: timedelta, result: Any) -> None:
        done = self.apply(
            pick, dt, "complete", lambda job: machine.complete(job, self.now, self.retention, result)
        )
        if done:
            _, new = done
            assert new.result == result
            assert new.progress == 1.0
            assert new.error is None, "a completed job has no error (an earlier attempt's is cleared)"
            assert new.finished_at == self.now

    @precondition(some_job_active)
    @rule(pick=picks, dt=steps, error=st.text(min_size=1, max_size=10))
    def fail(self, pick: tuple[int, int], dt: timedelta, error: str) -> None:
        """A failure no Retry covers: final."""
        self.failure(pick, dt, error, None)

    @precondition(some_job_active)
    @rule(pick=picks, dt=steps, error=st.text(min_size=1, max_size=10), retry_after=steps)
    def fail_retrying(self, pick: tuple[int, int], dt: timedelta, error: str, retry_after: timedelta) -> None:
        """A failure a Retry covers: the worker computed the wait (``retry_after``)."""
        self.failure(pick, dt, error, retry_after)

    def failure(
        self, pick: tuple[int, int], dt: timedelta, error: str, retry_after: timedelta | None
    ) -> None:
        done = self.apply(
            pick,
            dt,
            "fail" if retry_after is None else "fail_retrying",
            lambda job: machine.fail(job, self.now, self.retention, error, retry_after),
        )
        if done:
            old, new = done
            assert new.error == error, "error holds the last failure"
            assert new.result == old.result, "a partial result is kept when the job fails"
            assert new.attempts == old.attempts
            if new.status is S:
                assert retry_after is not None
                assert old.attempts < old.max_attempts, "scheduled again although no attempts remain"
                assert new.run_at == self.now + retry_after
                assert new.finished_at is None
                assert new.started_at == old.started_at
                assert new.progress is None
                assert new.progress_message is None
            else:
                assert new.finished_at == self.now

    @precondition(lambda self: any(job.is_terminal for job in self.jobs))
    @rule(pick=picks, dt=steps, delay=delays)
    def retry(self, pick: tuple[int, int], dt: timedelta, delay: timedelta | None) -> None:
        """A manual retry, now (pending) or for later (scheduled)."""

        def call(job: Job) -> Job:
            return machine.retry(job, self.now, None if delay is None else self.now + delay)

        done = self.apply(pick, dt, "retry" if delay is None else "retry_at", call)
        if done:
            old, new = done
            assert new.run_at == (None if delay is None else self.now + delay)
            assert new.max_attempts == max(old.max_attempts, old.attempts + 1)
            assert new.attempts == old.attempts
            assert new.finished_at is None, "a revived job has not finished"
            assert new.expires_at is None, "a revived job does not expire"
            assert new.error == old.error, "the last error is kept until the next outcome"
            assert new.result == old.result, "the last result is kept until the next outcome"
            assert new.started_at == old.started_at
            assert new.cancel_reason is None

    @precondition(some_job_active)
    @rule(pick=picks, dt=steps)
    def observe_cancel(self, pick: tuple[int, int], dt: timedelta) -> None:
        done = self.apply(
            pick,
            dt,
            "observe_cancel",
            lambda job: machine.observe_cancel(job, self.now, self.retention),
        )
        if done:
            old, new = done
            assert new.result == old.result, "a partial result is kept when the job is cancelled"
            assert new.finished_at == self.now

    @precondition(some_job_active)
    @rule(pick=picks, dt=steps)
    def interrupt(self, pick: tuple[int, int], dt: timedelta) -> None:
        done = self.apply(pick, dt, "interrupt", lambda job: machine.interrupt(job, self.now, self.retention))
        if done:
            old, new = done
            if new.status is P:
                assert new.started_at == old.started_at
                assert new.attempts == old.attempts
                assert new.progress is None

    @precondition(some_job_active)
    @rule(pick=picks, dt=steps)
    def lose_lease(self, pick: tuple[int, int], dt: timedelta) -> None:
        done = self.apply(
            pick, dt, "lose_lease", lambda job: machine.lose_lease(job, self.now, self.retention)
        )
        if done:
            old, new = done
            if new.status is P:
                assert old.attempts < old.max_attempts, "requeued although no attempts remain"
                assert new.attempts == old.attempts
            if old.status is R and new.status is FAILED:
                assert old.attempts >= old.max_attempts
                assert new.error == machine.WORKER_LOST

    @rule(pick=picks, priority=priorities)
    def set_priority(self, pick: tuple[int, int], priority: int) -> None:
        done = self.apply(pick, timedelta(0), "set_priority", lambda job: machine.set_priority(job, priority))
        if done:
            old, new = done
            assert new.priority == priority
            if priority == old.priority:
                assert new is old, "setting the same priority changes nothing"

    @precondition(some_job_active)
    @rule(pick=picks, fraction=st.one_of(st.none(), st.floats(0, 1)), message=messages)
    def report_progress(self, pick: tuple[int, int], fraction: float | None, message: str | None) -> None:
        done = self.apply(
            pick,
            timedelta(0),
            "report_progress",
            lambda job: machine.report_progress(job, fraction, message),
        )
        if done:
            _, new = done
            assert new.progress == fraction
            assert new.progress_message == message

    @precondition(some_job_active)
    @rule(pick=picks, result=json_values)
    def store_result(self, pick: tuple[int, int], result: Any) -> None:
        done = self.apply(pick, timedelta(0), "store_result", lambda job: machine.store_result(job, result))
        if done:
            assert done[1].result == result

    @rule(pick=picks, dt=steps)
    def mark_deleted(self, pick: tuple[int, int], dt: timedelta) -> None:
        i = self.choose(pick, lambda job: job.is_terminal and job.deleted_at is None)
        self.now += dt
        old = self.jobs[i]
        if not old.is_terminal:
            with pytest.raises(InvalidState):
                machine.mark_deleted(old, self.now)
            return
        if old.deleted_at is not None:
            return  # soft-deleted jobs are hidden from delete: the manager never gets here
        new = machine.mark_deleted(old, self.now)
        assert new.status is old.status
        assert new.deleted_at == self.now
        assert new.expires_at is None, "a soft-deleted job no longer expires"
        assert new.finished_at == old.finished_at
        self.record(i, old, new, "mark_deleted")

    @rule(pick=picks, deletable=st.frozensets(st.sampled_from(list(JobStatus))))
    def check_deletable(self, pick: tuple[int, int], deletable: frozenset[JobStatus]) -> None:
        job = self.jobs[self.choose(pick, lambda job: True)]
        if job.status in deletable and job.status not in ACTIVE:
            assert machine.check_deletable(job, deletable) is None
        else:
            with pytest.raises(InvalidState):
                machine.check_deletable(job, deletable)

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def terminal_is_left_only_by_a_manual_retry(self) -> None:
        for history in self.history:
            for (before, _), (after, event) in pairwise(history):
                if before in TERMINAL:
                    assert event in MANUAL_RETRIES, f"{before} was left by {event}: {history}"
                    assert before is not COMPLETED, f"a completed job was revived: {history}"
                    assert after in (S, P)

    @invariant()
    def run_at_iff_scheduled(self) -> None:
        for job in self.jobs:
            assert (job.run_at is not None) == (job.status is S)

    @invariant()
    def waiting_jobs_have_an_attempt_left(self) -> None:
        """Every way to scheduled or pending but a shutdown leaves one more start allowed.

        ``attempts`` counts starts, and a shutdown gives the job back without a decision (it
        may run again past ``max_attempts``; the next failure or lost lease then ends it).
        A manual retry raises ``max_attempts`` when the attempts were used up.
        """
        for job, history in zip(self.jobs, self.history, strict=True):
            status, event = history[-1]
            assert status is job.status
            if status is S or (status is P and event != "interrupt"):
                assert job.attempts < job.max_attempts, f"{job.attempts}/{job.max_attempts}: {history}"
            if status is P and event == "interrupt":
                assert job.attempts >= 1

    @invariant()
    def finished_iff_terminal(self) -> None:
        for job in self.jobs:
            assert (job.finished_at is not None) == job.is_terminal

    @invariant()
    def started_iff_ran(self) -> None:
        for job, starts in zip(self.jobs, self.starts, strict=True):
            assert job.attempts == starts, "attempts counts starts"
            assert (job.started_at is not None) == (starts > 0)

    @invariant()
    def versions_match_changes(self) -> None:
        for job, version in zip(self.jobs, self.versions, strict=True):
            assert job.version == version

    @invariant()
    def cancelling_only_follows_running(self) -> None:
        for history in self.history:
            statuses = [status for status, _ in history]
            for before, after in pairwise(statuses):
                if after is C:
                    assert before is R, f"cancelling followed {before}: {statuses}"

    @invariant()
    def expiry_follows_retention(self) -> None:
        for job in self.jobs:
            if not job.is_terminal or job.deleted_at is not None:
                assert job.expires_at is None
                continue
            assert job.finished_at is not None
            keep = job.ttl if job.ttl is not None else self.retention.for_status(job.status)
            assert job.expires_at == (None if keep is None else job.finished_at + keep)

    @invariant()
    def times_are_ordered(self) -> None:
        for job in self.jobs:
            moments = [job.created_at, job.started_at, job.finished_at, job.deleted_at]
            known = [m for m in moments if m is not None]
            assert known == sorted(known)
            assert known[-1] <= self.now
            for moment in known:
                assert moment.tzinfo is not None
            if job.run_at is not None:
                assert job.run_at.tzinfo is not None
                assert job.run_at >= max(m for m in (job.created_at, job.started_at) if m is not None)


# Fewer, longer runs than hypothesis' default: revived jobs, retry waits and restarts after
# them lie deep in a run.
JobLifecycle.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestJobLifecycle = JobLifecycle.TestCase


# -- plain examples ----------------------------------------------------------------------


def job_in(status: JobStatus, **changes: Any) -> Job:
    """A job that has reached ``status`` (with the timestamps the lifecycle would give it)."""
    values: dict[str, Any] = {"id": "j", "kind": "k", "status": status, "created_at": START}
    if status not in (S, P):
        values.update(started_at=START, attempts=1)
    if status is S:
        values.update(run_at=START + timedelta(minutes=1))
    if status in TERMINAL:
        values.update(finished_at=START)
    values.update(changes)
    return Job(**values)


LATER = START + timedelta(minutes=5)
EVENTS: dict[str, Callable[[Job], Job]] = {
    "due": machine.due,
    "start": lambda job: machine.start(job, START),
    "cancel": lambda job: machine.cancel(job, START, Retention()),
    "complete": lambda job: machine.complete(job, START, Retention()),
    "fail": lambda job: machine.fail(job, START, Retention(), "boom"),
    "fail_retrying": lambda job: machine.fail(job, START, Retention(), "boom", timedelta(seconds=5)),
    "observe_cancel": lambda job: machine.observe_cancel(job, START, Retention()),
    "interrupt": lambda job: machine.interrupt(job, START, Retention()),
    "lose_lease": lambda job: machine.lose_lease(job, START, Retention()),
    "retry": lambda job: machine.retry(job, START),
    "retry_at": lambda job: machine.retry(job, START, LATER),
    "set_priority": lambda job: machine.set_priority(job, 7),
    "report_progress": lambda job: machine.report_progress(job, 0.5, "half"),
    "store_result": lambda job: machine.store_result(job, {"partial": True}),
}


class TestTable:
    def test_the_table_has_every_event_and_status(self) -> None:
        """Every event is tried; every status appears in some row; the table names no other event."""
        assert set(EVENTS) == set(TABLE)
        assert set(EXHAUSTED) <= set(TABLE)
        assert {status for row in TABLE.values() for status in row} | set(TERMINAL) == set(JobStatus)
        assert set(ANNOUNCED) == set(JobStatus)

    @pytest.mark.parametrize("left", [True, False], ids=["attempts left", "no attempts left"])
    @pytest.mark.parametrize("status", list(JobStatus))
    @pytest.mark.parametrize("event", sorted(EVENTS))
    def test_every_cell_of_the_lifecycle_table(self, event: str, status: JobStatus, left: bool) -> None:
        """Each event from each status leads where the table says, or is InvalidState changing nothing."""
        attempts = 1 if status not in (S, P) or not left else 0
        job = job_in(status, attempts=attempts, max_attempts=attempts + 1 if left else attempts)
        expected = expected_status(event, job)
        if expected is None:
            before = attrs.asdict(job, recurse=False)
            with pytest.raises(InvalidState):
                EVENTS[event](job)
            assert attrs.asdict(job, recurse=False) == before
            return
        new = EVENTS[event](job)
        assert new.status is expected
        assert (new.run_at is not None) == (new.status is S)
        assert (new.finished_at is not None) == new.is_terminal
        if new.status is not status:
            assert new.version == job.version + 1
            assert machine.event_for(new) is ANNOUNCED[new.status]

    @pytest.mark.parametrize(
        ("status", "attempts", "max_attempts", "expected"),
        [(R, 1, 2, S), (R, 2, 2, FAILED), (R, 3, 2, FAILED), (C, 1, 2, FAILED)],
    )
    def test_finish_error_under_a_retry_is_scheduled_while_attempts_remain(
        self, status: JobStatus, attempts: int, max_attempts: int, expected: JobStatus
    ) -> None:
        """Under a covering Retry a running job with attempts left waits for run_at; else it fails."""
        job = job_in(
            status, attempts=attempts, max_attempts=max_attempts, result={"partial": 1}, progress=0.5
        )
        now = START + timedelta(seconds=1)
        new = machine.fail(job, now, Retention(failed=timedelta(days=1)), "boom", timedelta(seconds=30))
        assert new.status is expected
        assert new.error == "boom"
        assert new.result == {"partial": 1}
        assert new.attempts == attempts
        if expected is S:
            assert new.run_at == now + timedelta(seconds=30)
            assert new.finished_at is None
            assert new.expires_at is None
            assert new.progress is None
        else:
            assert new.run_at is None
            assert new.finished_at == now
            assert new.expires_at == now + timedelta(days=1)

    @pytest.mark.parametrize(
        ("attempts", "handler_attempts", "expected", "bound"),
        [(1, 3, S, 3), (2, 3, S, 3), (3, 3, FAILED, 1), (1, None, FAILED, 1), (1, 1, FAILED, 1)],
    )
    def test_a_handler_retry_raises_the_bound(
        self, attempts: int, handler_attempts: int | None, expected: JobStatus, bound: int
    ) -> None:
        """A handler's Retry the submit did not know of lets a job with max_attempts 1 wait again."""
        job = job_in(R, attempts=attempts, max_attempts=1)
        outcome = machine.Outcome.failed("boom", timedelta(seconds=5), handler_attempts)
        new = machine.conclude(job, outcome, LATER, Retention())
        assert new.status is expected
        assert new.max_attempts == bound
        assert new.attempts == attempts
        lower = machine.fail(
            job_in(R, attempts=1, max_attempts=5), LATER, Retention(), "boom", timedelta(0), 2
        )
        assert (lower.status, lower.max_attempts) == (S, 5), "a handler's Retry never lowers the bound"

    def test_a_retry_wait_past_the_last_datetime_is_capped(self) -> None:
        """run_at = now + retry_after never overflows: it is kept at the last representable moment."""
        now = datetime.max.replace(tzinfo=UTC) - timedelta(days=1)
        new = machine.fail(job_in(R, max_attempts=2), now, Retention(), "boom", timedelta(days=36_525))
        assert new.run_at == datetime.max.replace(tzinfo=UTC)

    def test_cancel_of_a_scheduled_job_is_immediate(self) -> None:
        """A scheduled job is cancelled at once: no run_at, finished and expiring by its retention."""
        job = job_in(S, error="boom")
        new = machine.cancel(job, LATER, Retention(cancelled=timedelta(hours=1)), "not needed")
        assert new.status is CANCELLED
        assert new.run_at is None
        assert new.finished_at == LATER
        assert new.expires_at == LATER + timedelta(hours=1)
        assert new.cancel_reason == "not needed"
        assert new.error == "boom"

    def test_due_keeps_priority_and_the_last_error(self) -> None:
        """A due job becomes pending with its priority; the failure it waits after stays visible."""
        job = job_in(S, priority=9, attempts=1, max_attempts=3, error="boom", started_at=START)
        new = machine.due(job)
        assert (new.status, new.run_at, new.priority, new.error) == (P, None, 9, "boom")
        assert new.attempts == 1

    @pytest.mark.parametrize(("attempts", "expected"), [(1, P), (2, FAILED), (3, FAILED)])
    def test_lost_lease_requeues_only_while_attempts_remain(self, attempts: int, expected: JobStatus) -> None:
        """A running job whose worker is lost goes back to pending only while attempts < max_attempts."""
        job = job_in(R, attempts=attempts, max_attempts=2)
        new = machine.lose_lease(job, START + timedelta(seconds=1), Retention())
        assert new.status is expected
        if expected is FAILED:
            assert new.error == "worker lost"
            assert new.finished_at == START + timedelta(seconds=1)
        else:
            assert new.finished_at is None
            assert new.started_at == job.started_at


class TestManualRetry:
    @pytest.mark.parametrize(("attempts", "max_attempts", "raised"), [(1, 3, 3), (3, 3, 4), (5, 3, 6)])
    @pytest.mark.parametrize("status", [FAILED, CANCELLED])
    def test_one_more_attempt(self, status: JobStatus, attempts: int, max_attempts: int, raised: int) -> None:
        """max_attempts is raised only when the attempts were used up; finished_at and expires_at go."""
        job = job_in(
            status,
            attempts=attempts,
            max_attempts=max_attempts,
            error="boom",
            result={"partial": 1},
            cancel_reason="stop",
            expires_at=START + timedelta(days=1),
            version=4,
        )
        new = machine.retry(job, LATER)
        assert new.status is P
        assert new.max_attempts == raised
        assert new.attempts == attempts
        assert (new.finished_at, new.expires_at, new.run_at) == (None, None, None)
        assert (new.error, new.result) == ("boom", {"partial": 1}), "kept until the next outcome"
        assert new.version == 5
        assert machine.event_for(new) is EventType.REQUEUED
        later = machine.retry(job, LATER, LATER + timedelta(hours=1))
        assert later.status is S
        assert later.run_at == LATER + timedelta(hours=1)
        assert machine.event_for(later) is EventType.SCHEDULED

    def test_a_revived_job_runs_and_ends_again(self) -> None:
        """failed -> retry -> pending -> running -> failed: a second finish, with its own times."""
        job = job_in(FAILED, attempts=1, max_attempts=1, error="first")
        job = machine.start(machine.retry(job, LATER), LATER)
        assert job.attempts == 2
        done = machine.fail(job, LATER + timedelta(seconds=1), Retention(failed=None), "second")
        assert (done.status, done.error, done.finished_at) == (FAILED, "second", LATER + timedelta(seconds=1))

    def test_completed_says_submit_a_new_job(self) -> None:
        """A completed job is not retried: the message says to submit a new one."""
        with pytest.raises(InvalidState) as caught:
            machine.retry(job_in(COMPLETED), LATER)
        assert str(caught.value) == "Cannot retry a completed job: it succeeded. Submit a new job instead."

    @pytest.mark.parametrize("status", [S, P, R, C])
    def test_unfinished_jobs_name_their_status(self, status: JobStatus) -> None:
        """Only failed and cancelled jobs are retried; the message names the status."""
        with pytest.raises(
            InvalidState, match=f"^Cannot retry a {status.value} job: only failed and cancelled"
        ):
            machine.retry(job_in(status), LATER)

    @pytest.mark.parametrize("status", [FAILED, CANCELLED])
    def test_a_deleted_job_is_not_retried(self, status: JobStatus) -> None:
        with pytest.raises(InvalidState, match=r"^Cannot retry a deleted job\.$"):
            machine.retry(machine.mark_deleted(job_in(status), START), LATER)

    @pytest.mark.parametrize("status", [P, R, C, COMPLETED, FAILED, CANCELLED])
    def test_only_scheduled_jobs_become_due(self, status: JobStatus) -> None:
        with pytest.raises(
            InvalidState, match=rf"^Cannot make a {status.value} job due: only scheduled jobs wait\.$"
        ):
            machine.due(job_in(status))


class TestCancelMessages:
    @pytest.mark.parametrize("status", sorted(TERMINAL))
    def test_cancelling_a_finished_job_names_status_and_what_to_do(self, status: JobStatus) -> None:
        """Cancelling a terminal job is InvalidState naming its status and suggesting delete."""
        with pytest.raises(InvalidState) as caught:
            machine.cancel(job_in(status), START, Retention())
        message = str(caught.value)
        assert status.value in message
        assert "already finished" in message
        assert "Delete it instead" in message
        assert caught.value.code == "invalid_state"

    def test_cancel_of_cancelling_job_is_the_same_job(self) -> None:
        """Cancelling a cancelling job again returns it unchanged (same version, same reason)."""
        job = job_in(C, cancel_reason="first", version=3)
        assert machine.cancel(job, START + timedelta(hours=1), Retention(), "second") is job


class TestPriorityMessages:
    def test_running_job_priority_cannot_change(self) -> None:
        """set_priority on a running job raises the exact message."""
        with pytest.raises(InvalidState) as caught:
            machine.set_priority(job_in(R), 5)
        assert str(caught.value) == "Cannot change priority of a running job."

    @pytest.mark.parametrize("status", [C, COMPLETED, FAILED, CANCELLED])
    def test_only_pending_jobs_change_priority(self, status: JobStatus) -> None:
        """Any status but pending refuses a priority change and names the status."""
        with pytest.raises(InvalidState, match=f"Cannot change priority of a {status.value} job."):
            machine.set_priority(job_in(status), 5)


class TestDeletable:
    def test_running_job_says_use_cancel(self) -> None:
        """A running job cannot be deleted: the message says to cancel it."""
        with pytest.raises(InvalidState) as caught:
            machine.check_deletable(job_in(R), TERMINAL)
        assert str(caught.value) == "Cannot delete running job. Use cancel instead."

    def test_cancelling_job_says_cancellation_in_progress(self) -> None:
        """A cancelling job cannot be deleted while cancellation is in progress."""
        with pytest.raises(InvalidState) as caught:
            machine.check_deletable(job_in(C), TERMINAL)
        assert str(caught.value) == "Cannot delete job while cancellation is in progress."

    @pytest.mark.parametrize("status", [R, C])
    def test_active_jobs_refused_even_if_listed_as_deletable(self, status: JobStatus) -> None:
        """Running and cancelling are never deletable, whatever set the caller passes."""
        with pytest.raises(InvalidState):
            machine.check_deletable(job_in(status), frozenset(JobStatus))

    def test_pending_allowed_when_deletable(self) -> None:
        """With pending in deletable, a pending job may be deleted."""
        assert machine.check_deletable(job_in(P), TERMINAL | {P}) is None

    def test_pending_refused_by_default(self) -> None:
        """With the default deletable set, a pending job must be cancelled instead."""
        with pytest.raises(InvalidState, match="Use cancel instead"):
            machine.check_deletable(job_in(P), TERMINAL)

    @pytest.mark.parametrize("status", sorted(TERMINAL))
    def test_terminal_job_outside_policy_names_status(self, status: JobStatus) -> None:
        """A finished job the policy does not allow deleting is refused, naming its status."""
        with pytest.raises(InvalidState, match=f"Cannot delete {status.value} job"):
            machine.check_deletable(job_in(status), TERMINAL - {status})

    @pytest.mark.parametrize("status", sorted(TERMINAL))
    def test_terminal_jobs_deletable_by_default(self, status: JobStatus) -> None:
        """Finished jobs pass the default check."""
        assert machine.check_deletable(job_in(status), TERMINAL) is None


class TestExpiry:
    def test_ttl_overrides_retention(self) -> None:
        """A job's own ttl decides its expiry over the Retention for its status."""
        job = machine.start(job_in(P, ttl=timedelta(seconds=30)), START)
        done = machine.complete(job, START + timedelta(seconds=5), Retention(completed=None))
        assert done.expires_at == START + timedelta(seconds=35)

    def test_retention_none_keeps_forever(self) -> None:
        """Retention None for the status (and no ttl) means the job never expires."""
        job = machine.start(job_in(P), START)
        assert machine.fail(job, START, Retention(failed=None), "boom").expires_at is None

    def test_mark_deleted_refuses_active_jobs(self) -> None:
        """Soft-deleting a job that has not finished raises InvalidState."""
        for status in (P, R, C):
            with pytest.raises(InvalidState):
                machine.mark_deleted(job_in(status), START)


# -- conclude: the outcome of a run --------------------------------------------------------

outcomes = st.one_of(
    st.builds(machine.Outcome.completed, json_values),
    st.builds(machine.Outcome.failed, st.text(min_size=1, max_size=10)),
    st.builds(machine.Outcome.failed, st.text(min_size=1, max_size=10), steps),
    st.just(machine.CANCELLED_OUTCOME),
    st.just(machine.INTERRUPTED_OUTCOME),
)
CONCLUDED = {
    machine.OutcomeKind.COMPLETED: {R: COMPLETED, C: COMPLETED},
    machine.OutcomeKind.FAILED: {R: FAILED, C: FAILED},
    machine.OutcomeKind.CANCELLED: {R: CANCELLED, C: CANCELLED},
    machine.OutcomeKind.INTERRUPTED: {R: P, C: CANCELLED},
}


class TestConclude:
    @settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
    @given(
        status=st.sampled_from(list(JobStatus)),
        outcome=outcomes,
        keep=keeps,
        step=steps,
        attempts=st.integers(1, 3),
    )
    def test_every_outcome_from_every_status_is_legal_or_invalid_state(
        self, status: JobStatus, outcome: machine.Outcome, keep: Any, step: timedelta, attempts: int
    ) -> None:
        """conclude gives the job the lifecycle table says, or InvalidState; never another error."""
        job = job_in(status, attempts=attempts, max_attempts=3, result={"partial": 1})
        now = START + step
        expected = CONCLUDED[outcome.kind].get(status)
        retrying = outcome.retry_after is not None and status is R and attempts < job.max_attempts
        if retrying:
            expected = S
        if expected is None:
            with pytest.raises(InvalidState):
                machine.conclude(job, outcome, now, Retention(completed=keep, failed=keep, cancelled=keep))
            return
        new = machine.conclude(job, outcome, now, Retention(completed=keep, failed=keep, cancelled=keep))
        assert new.status is expected
        assert new.version == job.version + 1
        assert new.attempts == job.attempts
        assert machine.event_for(new).value == {P: "requeued"}.get(new.status, new.status.value)
        if expected in TERMINAL:
            assert new.finished_at == now
            assert new.expires_at == (None if keep is None else now + keep)
        else:
            assert new.finished_at is None
            assert new.expires_at is None
        if expected is S:
            assert outcome.retry_after is not None
            assert new.run_at == now + outcome.retry_after
            assert new.error == outcome.error
        else:
            assert new.run_at is None
        if expected is COMPLETED:
            assert new.result == outcome.result
            assert new.progress == 1.0
        else:
            assert new.result == {"partial": 1}  # a partial result outlives the run
        if expected is FAILED:
            assert new.error == outcome.error
