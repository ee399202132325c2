"""MemoryStore: everything in dicts and heaps, for tests, scripts and single processes."""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections import deque
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from datetime import datetime

import attrs

from .._errors import JobkitError
from .._machine import due, start
from .._records import ACTIVE, AuditRecord, Job, JobStatus, Schedule
from ..abc import Change, Lease

__all__ = ["MemoryStore"]

_PENDING = JobStatus.PENDING
_SCHEDULED = JobStatus.SCHEDULED


class _SeqIndex:
    """An append-only list of sequence numbers with lazy removal, for newest-first scans."""

    __slots__ = ("dead", "seqs")

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.dead = 0


class MemoryStore:
    """A :class:`~jobkit.abc.JobStore` in process memory. Nothing survives the process.

    Claiming, expiry and listing use indexes, so their cost does not grow with the
    number of finished jobs kept. It has the optional ``claim_many``, ``apply`` and
    ``exclusive`` members; nothing in it ever awaits, so each call is atomic.
    """

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._seq_of: dict[str, int] = {}
        self._id_at: dict[int, str] = {}
        self._next_seq = 1
        self._all = _SeqIndex()
        self._by_tenant: dict[str | None, _SeqIndex] = {}
        # Claim order: (-priority, seq, id); entries are checked against _pending on pop.
        self._claim_heap: list[tuple[int, int, str]] = []
        self._pending: dict[str, tuple[int, int]] = {}
        self._expiry_heap: list[tuple[datetime, int, str]] = []
        self._deleted_heap: list[tuple[datetime, int, str]] = []
        self._due_heap: list[tuple[datetime, int, str]] = []
        self._leases: dict[str, tuple[str, datetime]] = {}
        self._audit: deque[AuditRecord] = deque()
        self._purges: dict[str, None] = {}
        #: (tenant, idempotency key) -> id of the job holding it (checked on use).
        self._keys: dict[tuple[str | None, str], str] = {}
        self._paused: set[str] = set()
        #: Claim-heap entries of paused kinds, put back when the kind resumes.
        self._parked: dict[str, list[tuple[int, int, str]]] = {}
        self._schedules: dict[tuple[str | None, str], Schedule] = {}

    def __repr__(self) -> str:
        return f"MemoryStore(jobs={len(self._jobs)})"

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    # -- jobs ------------------------------------------------------------------------

    async def insert(self, job: Job) -> Job | None:
        if job.id in self._jobs:
            raise JobkitError(f"A job with id {job.id!r} already exists.")
        if job.idempotency_key is not None:
            key = (job.tenant, job.idempotency_key)
            holder = self._jobs.get(self._keys.get(key, ""))
            if holder is not None and holder.deleted_at is None and holder.idempotency_key == key[1]:
                return holder
            self._keys[key] = job.id
        seq = self._next_seq
        self._next_seq = seq + 1
        self._jobs[job.id] = job
        self._seq_of[job.id] = seq
        self._id_at[seq] = job.id
        self._all.seqs.append(seq)
        index = self._by_tenant.get(job.tenant)
        if index is None:
            index = self._by_tenant[job.tenant] = _SeqIndex()
        index.seqs.append(seq)
        self._index(None, job, seq)
        return None

    async def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    async def replace(self, job: Job, *, expected_version: int) -> bool:
        old = self._jobs.get(job.id)
        if old is None or old.version != expected_version:
            return False
        self._replace(old, job)
        return True

    async def remove(self, job_id: str, *, expected_version: int) -> bool:
        old = self._jobs.get(job_id)
        if old is None or old.version != expected_version:
            return False
        self._remove(old)
        return True

    async def apply(self, change: Change) -> bool:
        job = change.job
        if job is not None and job.id != change.job_id:
            raise JobkitError(f"Change of {change.job_id!r} carries job {job.id!r}.")
        old = self._jobs.get(change.job_id)
        if old is None or old.version != change.expected_version:
            return False
        if job is None:
            self._remove(old)
        else:
            self._replace(old, job)
        if change.audit is not None:
            self._audit.append(change.audit)
        if change.purge is not None:
            self._purges[change.purge] = None
        return True

    @asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[bool]:
        """Always granted: a MemoryStore lives in one process."""
        yield True

    def _replace(self, old: Job, job: Job) -> None:
        self._jobs[job.id] = job
        self._index(old, job, self._seq_of[job.id])

    def _remove(self, old: Job) -> None:
        job_id = old.id
        del self._jobs[job_id]
        seq = self._seq_of.pop(job_id)
        del self._id_at[seq]
        self._pending.pop(job_id, None)
        self._leases.pop(job_id, None)
        if old.idempotency_key is not None and self._keys.get((old.tenant, old.idempotency_key)) == job_id:
            del self._keys[(old.tenant, old.idempotency_key)]
        self._all.dead += 1
        index = self._by_tenant[old.tenant]
        index.dead += 1
        self._compact(self._all)
        self._compact(index)

    def _index(self, old: Job | None, job: Job, seq: int) -> None:
        if job.status is _PENDING:
            key = (-job.priority, seq)
            if self._pending.get(job.id) != key:
                self._pending[job.id] = key
                heapq.heappush(self._claim_heap, (key[0], seq, job.id))
        elif old is not None and old.status is _PENDING:
            self._pending.pop(job.id, None)
        if job.status not in ACTIVE:
            self._leases.pop(job.id, None)
        if job.status is _SCHEDULED and job.run_at is not None and (old is None or old.run_at != job.run_at):
            heapq.heappush(self._due_heap, (job.run_at, seq, job.id))
        if job.expires_at is not None and (old is None or old.expires_at != job.expires_at):
            heapq.heappush(self._expiry_heap, (job.expires_at, seq, job.id))
        if job.deleted_at is not None and (old is None or old.deleted_at != job.deleted_at):
            heapq.heappush(self._deleted_heap, (job.deleted_at, seq, job.id))

    def _compact(self, index: _SeqIndex) -> None:
        if index.dead > 64 and index.dead * 2 > len(index.seqs):
            alive = self._id_at
            index.seqs = [s for s in index.seqs if s in alive]
            index.dead = 0

    async def claim(self, *, now: datetime, worker_id: str, lease_until: datetime) -> Job | None:
        claimed = self._claim(now, worker_id, lease_until, None, 1)
        return claimed[0] if claimed else None

    async def claim_many(
        self,
        *,
        now: datetime,
        worker_id: str,
        lease_until: datetime,
        kinds: Collection[str] | None,
        limit: int,
    ) -> list[Job]:
        if kinds is not None and not isinstance(kinds, frozenset | set):
            kinds = frozenset(kinds)
        return self._claim(now, worker_id, lease_until, kinds, limit)

    def _claim(
        self, now: datetime, worker_id: str, lease_until: datetime, kinds: Collection[str] | None, limit: int
    ) -> list[Job]:
        heap = self._claim_heap
        pending = self._pending
        jobs = self._jobs
        claimed: list[Job] = []
        passed: list[tuple[int, int, str]] = []  # pending jobs of other kinds: they stay
        if kinds is not None and not kinds:
            return claimed
        while heap and len(claimed) < limit:
            entry = heapq.heappop(heap)
            neg_priority, seq, job_id = entry
            if pending.get(job_id) != (neg_priority, seq):
                continue  # stale entry: claimed, deleted or re-prioritised since
            job = jobs[job_id]
            if job.kind in self._paused:
                self._parked.setdefault(job.kind, []).append(entry)
                continue
            if kinds is not None and job.kind not in kinds:
                passed.append(entry)
                continue
            del pending[job_id]
            job = jobs[job_id] = start(job, now)
            self._leases[job_id] = (worker_id, lease_until)
            claimed.append(job)
        for entry in passed:
            heapq.heappush(heap, entry)
        return claimed

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
        if tenant is None:
            seqs = self._all.seqs
        else:
            index = self._by_tenant.get(tenant)
            if index is None:
                return [], None
            seqs = index.seqs
        # Newest first: walk the sequence list backwards from the cursor.
        end = len(seqs) if before is None else bisect_left(seqs, before)
        id_at = self._id_at
        jobs = self._jobs
        found: list[Job] = []
        for i in range(end - 1, -1, -1):
            job_id = id_at.get(seqs[i])
            if job_id is None:
                continue
            job = jobs[job_id]
            if statuses is not None and job.status not in statuses:
                continue
            if kind is not None and job.kind != kind:
                continue
            if job.deleted_at is not None and not include_deleted:
                continue
            if len(found) == limit:
                return found, self._seq_of[found[-1].id]
            found.append(job)
        return found, None

    async def jobs_with_prefix(
        self, prefix: str, *, tenant: str | None, include_deleted: bool, limit: int
    ) -> list[Job]:
        seq_of = self._seq_of
        found = sorted(
            (
                job
                for job_id, job in self._jobs.items()
                if job_id.startswith(prefix)
                and (tenant is None or job.tenant == tenant)
                and (include_deleted or job.deleted_at is None)
            ),
            key=lambda job: seq_of[job.id],
            reverse=True,
        )
        return found[:limit]

    async def position(self, job_id: str) -> int | None:
        key = self._pending.get(job_id)
        if key is None:
            return None
        return 1 + sum(1 for other in self._pending.values() if other < key)

    async def promote_due(self, now: datetime, limit: int) -> list[Job]:
        heap = self._due_heap
        jobs = self._jobs
        promoted: list[Job] = []
        while heap and heap[0][0] <= now and len(promoted) < limit:
            run_at, _, job_id = heapq.heappop(heap)
            job = jobs.get(job_id)
            if job is None or job.status is not _SCHEDULED or job.run_at != run_at:
                continue  # stale: cancelled, removed or rescheduled since
            new = due(job)
            self._replace(job, new)
            promoted.append(new)
        return promoted

    async def next_due(self) -> datetime | None:
        heap = self._due_heap
        jobs = self._jobs
        while heap:
            run_at, _, job_id = heap[0]
            job = jobs.get(job_id)
            if job is not None and job.status is _SCHEDULED and job.run_at == run_at:
                return run_at
            heapq.heappop(heap)
        return None

    async def set_paused(self, kind: str, paused: bool) -> bool:
        if paused:
            if kind in self._paused:
                return False
            self._paused.add(kind)
            return True
        if kind not in self._paused:
            return False
        self._paused.discard(kind)
        for entry in self._parked.pop(kind, ()):
            heapq.heappush(self._claim_heap, entry)
        return True

    async def paused_kinds(self) -> frozenset[str]:
        return frozenset(self._paused)

    async def put_schedule(self, schedule: Schedule) -> None:
        self._schedules[(schedule.tenant, schedule.name)] = schedule

    async def remove_schedule(self, tenant: str | None, name: str) -> bool:
        return self._schedules.pop((tenant, name), None) is not None

    async def list_schedules(self, tenant: str | None) -> list[Schedule]:
        found = [s for s in self._schedules.values() if tenant is None or s.tenant == tenant]
        return sorted(found, key=lambda s: (s.name, s.tenant or ""))

    async def due_schedules(self, now: datetime, limit: int) -> list[Schedule]:
        found = sorted(
            (s for s in self._schedules.values() if s.next_run_at <= now), key=lambda s: s.next_run_at
        )
        return found[:limit]

    async def advance_schedule(self, schedule: Schedule, next_run_at: datetime) -> bool:
        key = (schedule.tenant, schedule.name)
        stored = self._schedules.get(key)
        if (
            stored is None
            or stored.created_at != schedule.created_at
            or stored.next_run_at != schedule.next_run_at
        ):
            return False
        self._schedules[key] = attrs.evolve(stored, next_run_at=next_run_at)
        return True

    async def next_schedule(self) -> datetime | None:
        return min((s.next_run_at for s in self._schedules.values()), default=None)

    async def expired(self, now: datetime, limit: int) -> list[Job]:
        return self._due(self._expiry_heap, now, limit, "expires_at")

    async def soft_deleted_before(self, cutoff: datetime, limit: int) -> list[Job]:
        return self._due(self._deleted_heap, cutoff, limit, "deleted_at")

    def _due(
        self, heap: list[tuple[datetime, int, str]], cutoff: datetime, limit: int, field: str
    ) -> list[Job]:
        # Stale entries (job gone or its time changed) are dropped as they surface; valid
        # ones stay in the heap until the job changes, so a failed delete is retried.
        found: list[Job] = []
        keep: list[tuple[datetime, int, str]] = []
        while heap and heap[0][0] <= cutoff and len(found) < limit:
            entry = heapq.heappop(heap)
            job = self._jobs.get(entry[2])
            if job is None or getattr(job, field) != entry[0]:
                continue
            found.append(job)
            keep.append(entry)
        for entry in keep:
            heapq.heappush(heap, entry)
        return found

    # -- leases ----------------------------------------------------------------------

    async def renew_leases(self, worker_id: str, job_ids: Sequence[str], lease_until: datetime) -> list[Job]:
        leases = self._leases
        held_jobs: list[Job] = []
        for job_id in job_ids:
            held = leases.get(job_id)
            if held is not None and held[0] == worker_id:
                leases[job_id] = (worker_id, lease_until)
                held_jobs.append(self._jobs[job_id])
        return held_jobs

    async def count_jobs(self, *, tenant: str | None, kind: str | None) -> dict[JobStatus, int]:
        found: dict[JobStatus, int] = {}
        for job in self._jobs.values():
            wanted = (tenant is None or job.tenant == tenant) and (kind is None or job.kind == kind)
            if wanted and job.deleted_at is None:
                found[job.status] = found.get(job.status, 0) + 1
        return found

    async def leases(self, limit: int) -> list[Lease]:
        held = sorted(self._leases.items(), key=lambda item: item[1][1])
        jobs = self._jobs
        found = [Lease(job=jobs[job_id], owner=owner, until=until) for job_id, (owner, until) in held]
        return found[:limit]

    async def expired_leases(self, now: datetime, limit: int) -> list[Job]:
        found = [self._jobs[job_id] for job_id, (_, until) in self._leases.items() if until < now]
        return found[:limit]

    # -- audit and purge queue -------------------------------------------------------

    async def add_audit(self, record: AuditRecord) -> None:
        self._audit.append(record)

    async def list_audit(self, *, job_id: str | None, tenant: str | None, limit: int) -> list[AuditRecord]:
        found: list[AuditRecord] = []
        for record in reversed(self._audit):
            if job_id is not None and record.job_id != job_id:
                continue
            if tenant is not None and record.tenant != tenant:
                continue
            found.append(record)
            if len(found) == limit:
                break
        return found

    async def remove_audit_before(self, cutoff: datetime) -> int:
        audit = self._audit
        removed = 0
        while audit and audit[0].at < cutoff:
            audit.popleft()
            removed += 1
        return removed

    async def add_purge(self, prefix: str) -> None:
        self._purges[prefix] = None

    async def pending_purges(self, limit: int) -> list[str]:
        return list(self._purges)[:limit]

    async def remove_purge(self, prefix: str) -> None:
        self._purges.pop(prefix, None)
