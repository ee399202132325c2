"""Schedule scaling: 1,000 due jobs promoted among 10,000 scheduled jobs, then among 1,000,000.

The scheduled jobs wait for a ``run_at`` a day or more away (time from a FakeClock); each
round stores 1,000 more whose ``run_at`` passed a second ago and times how long it takes
to make them pending: once through the store's ``promote_due()`` alone, once through a
whole ``await jobs.sweep()`` (whose ``promoted`` must be 1,000). Best of a few rounds per
size; the two sizes live side by side and their rounds alternate, so a busy machine slows
both alike. On MemoryStore and on SQLiteStore (a file in a temporary folder, filled with
one ``executemany`` of the store's own rows: setup is not timed).

Floors, measured in the same run: popping 1,000 entries off a plain ``heapq`` holding the
future ones (for memory); the same "due rows become pending" update by hand on a bare
SQLite table with a partial index on ``run_at`` (for SQLite).

Target: time(1M) / time(10k) <= 1.5 (promoting costs what is due, not what waits).

    .venv/bin/python bench/schedule_scaling.py [--backend asyncio|trio]
"""

from __future__ import annotations

import gc
import heapq
import sqlite3
import tempfile
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path

import _common
import anyio
import anyio.to_thread

from jobkit import Job, JobManager, JobStatus
from jobkit.abc import JobStore
from jobkit.stores import MemoryStore, SQLiteStore
from jobkit.stores import _sqlite as sqlite_rows
from jobkit.testing import FakeClock

SMALL = 10_000
LARGE = 1_000_000
DUE = 1_000
ROUNDS = 7
TARGET_RATIO = 1.5
#: Long enough that the manager's timers never wake by themselves during the benchmark.
POLL = 3600.0


def scheduled_job(job_id: str, created: datetime, run_at: datetime) -> Job:
    """A delayed submit as the manager stores it (datetimes shared to keep memory low)."""
    return Job(
        id=job_id,
        kind="bench",
        status=JobStatus.SCHEDULED,
        payload=None,
        created_at=created,
        run_at=run_at,
    )


class Fixture:
    """A manager over a store holding ``waiting`` scheduled jobs that are not due for a day."""

    def __init__(self, waiting: int, make_store: Callable[[], JobStore]) -> None:
        self.waiting = waiting
        self.clock = FakeClock()
        self.store = make_store()
        # No workers (promoted jobs stay pending), no periodic sweep, timers that sleep an hour:
        # only the timed calls promote.
        self.jobs = JobManager(
            self.store, concurrency=0, sweep_interval=None, poll_interval=POLL, clock=self.clock
        )
        now = self.clock()
        self.created = now - timedelta(hours=1)
        self.later = now + timedelta(days=1)
        self.due_at = now - timedelta(seconds=1)
        self.rounds = 0
        self.best_promote = float("inf")
        self.best_sweep = float("inf")
        self.setup = 0.0

    async def fill(self) -> None:
        began = _common.now()
        if isinstance(self.store, SQLiteStore):
            await anyio.to_thread.run_sync(self._fill_sqlite)
        else:
            insert = self.store.insert
            created, later = self.created, self.later
            step = timedelta(microseconds=1)
            for i in range(self.waiting):
                await insert(scheduled_job(f"{i:032x}", created, later + i * step))
        self.setup = _common.now() - began

    def _fill_sqlite(self) -> None:
        assert isinstance(self.store, SQLiteStore)
        template = sqlite_rows._row(scheduled_job("", self.created, self.later))
        first = sqlite_rows._micros(self.later)
        assert first is not None
        head, tail = template[1:22], template[23:]
        rows = ((f"{i:032x}", *head, first + i, *tail) for i in range(self.waiting))
        conn = sqlite3.connect(self.store.path, isolation_level=None)
        try:
            conn.execute("BEGIN")
            conn.executemany(sqlite_rows._INSERT, rows)
            conn.execute("COMMIT")
        finally:
            conn.close()

    async def add_due(self) -> None:
        """Store DUE jobs whose run_at passed (through the store: no timer hears of them)."""
        r = self.rounds
        self.rounds += 1
        for i in range(DUE):
            await self.store.insert(scheduled_job(f"d{r:03d}{i:028x}", self.created, self.due_at))
        gc.collect()

    async def time_promote(self) -> None:
        await self.add_due()
        began = _common.now()
        promoted = await self.store.promote_due(self.clock(), DUE)
        self.best_promote = min(self.best_promote, _common.now() - began)
        if len(promoted) != DUE:
            raise RuntimeError(f"promoted {len(promoted)} jobs, expected {DUE}")

    async def time_sweep(self) -> None:
        await self.add_due()
        began = _common.now()
        report = await self.jobs.sweep()
        self.best_sweep = min(self.best_sweep, _common.now() - began)
        if report.promoted != DUE:
            raise RuntimeError(f"the sweep promoted {report.promoted} jobs, expected {DUE}")

    async def check_waiting(self) -> None:
        counts = await self.jobs.counts()
        if counts[JobStatus.SCHEDULED] != self.waiting:
            raise RuntimeError(f"{counts[JobStatus.SCHEDULED]} jobs still scheduled, expected {self.waiting}")


async def measure(make_store: Callable[[], JobStore]) -> tuple[Fixture, Fixture]:
    """Both sizes side by side, their rounds alternating so machine noise hits both alike."""
    small, large = Fixture(SMALL, make_store), Fixture(LARGE, make_store)
    for fixture in (small, large):
        await fixture.store.open()  # creates the schema before a bulk fill
        await fixture.fill()
    async with small.jobs, large.jobs:
        for _ in range(ROUNDS):
            for fixture in (small, large):
                await fixture.time_promote()
            for fixture in (small, large):
                await fixture.time_sweep()
        await small.check_waiting()
        await large.check_waiting()
    return small, large


def heap_floor(waiting: int) -> float:
    """Best time to pop DUE due entries off a heap that also holds ``waiting`` future ones."""
    heap = [(1, i) for i in range(waiting)]  # sorted, hence already a heap
    best = float("inf")
    for r in range(ROUNDS):
        for i in range(DUE):
            heapq.heappush(heap, (0, -(r * DUE + i)))
        began = _common.now()
        for _ in range(DUE):
            heapq.heappop(heap)
        best = min(best, _common.now() - began)
    return best


def sqlite_floor(folder: Path, waiting: int) -> float:
    """Best time for one hand-written "due rows become pending" update on a bare table."""
    conn = sqlite3.connect(folder / f"floor-{waiting}.db", isolation_level=None)
    conn.execute(f"PRAGMA page_size={sqlite_rows.PAGE_SIZE}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, status TEXT NOT NULL, run_at INTEGER)")
    conn.execute("CREATE INDEX t_due ON t (run_at) WHERE status = 'scheduled'")
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO t (status, run_at) VALUES ('scheduled', ?)", ((10**9 + i,) for i in range(waiting))
    )
    conn.execute("COMMIT")
    best = float("inf")
    for _ in range(ROUNDS):
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO t (status, run_at) VALUES ('scheduled', 0)", ((),) * DUE)
        conn.execute("COMMIT")
        began = _common.now()
        conn.execute("BEGIN")
        changed = conn.execute(
            "UPDATE t SET status = 'pending', run_at = NULL WHERE seq IN (SELECT seq FROM t "
            "WHERE status = 'scheduled' AND run_at <= 1 ORDER BY run_at, seq LIMIT ?) RETURNING seq",
            (DUE,),
        ).fetchall()
        conn.execute("COMMIT")
        best = min(best, _common.now() - began)
        if len(changed) != DUE:
            raise RuntimeError(f"the floor promoted {len(changed)} rows, expected {DUE}")
    conn.close()
    return best


def report(name: str, small: Fixture, large: Fixture, floor: tuple[float, float], floor_name: str) -> None:
    ms = 1000
    for what, s, big in (
        ("promote_due", small.best_promote, large.best_promote),
        ("sweep()", small.best_sweep, large.best_sweep),
    ):
        _common.line(
            name,
            f"{what:<11} among {SMALL:,}: {s * ms:7.2f} ms   among {LARGE:,}: {big * ms:7.2f} ms"
            f"   ratio {big / s:.2f}",
        )
    floor_small, floor_large = floor
    _common.line(
        "floor",
        f"{floor_name}, {SMALL:,}: {floor_small * ms:.3f} ms   {LARGE:,}: {floor_large * ms:.3f} ms"
        f"   ratio {floor_large / floor_small:.2f}",
    )
    ratio = large.best_promote / small.best_promote
    sweep_ratio = large.best_sweep / small.best_sweep
    ok = max(ratio, sweep_ratio) <= TARGET_RATIO
    _common.line(
        "ratio",
        f"time(1M) / time(10k) = {ratio:.2f} (promote_due), {sweep_ratio:.2f} (sweep)  "
        f"(target <= {TARGET_RATIO:g}: {_common.verdict(ok)})",
    )
    _common.line("setup", f"{small.setup:.1f} s / {large.setup:.1f} s to store the waiting jobs (not timed)")


def run(backend: str, fn: Callable[[], Awaitable[tuple[Fixture, Fixture]]]) -> tuple[Fixture, Fixture]:
    return anyio.run(fn, backend=backend)


def main() -> None:
    args = _common.parse_args(__doc__.splitlines()[0])
    _common.quiet_logs()
    _common.header(f"schedule scaling: {DUE:,} due jobs made pending, best of {ROUNDS}", args.backend)

    small, large = run(args.backend, lambda: measure(MemoryStore))
    report("memory", small, large, (heap_floor(SMALL), heap_floor(LARGE)), "heapq pops")
    del small, large
    gc.collect()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        names = iter(("small.db", "large.db"))
        small, large = run(args.backend, lambda: measure(lambda: SQLiteStore(folder / next(names))))
        floor = (sqlite_floor(folder, SMALL), sqlite_floor(folder, LARGE))
        report("sqlite", small, large, floor, "bare UPDATE")
        del small, large


if __name__ == "__main__":
    main()
