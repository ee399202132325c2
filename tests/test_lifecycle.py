"""Workers, priorities, failures, shutdown and the manager's own lifecycle."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from jobkit import (
    CancelSource,
    InvalidInput,
    InvalidState,
    JobContext,
    JobkitError,
    JobStatus,
    SyncJobContext,
)
from managers import ManagerFactory, stored

pytestmark = pytest.mark.anyio


class TestWorkers:
    async def test_never_more_than_concurrency_handlers(self, make_manager: ManagerFactory) -> None:
        """At most `concurrency` handlers run at once, and all jobs complete."""
        jobs = make_manager(concurrency=3)
        running = peak = 0
        full = anyio.Event()  # the first handlers hold on until `concurrency` of them run at once

        @jobs.handler("busy")
        async def busy(ctx: JobContext, payload: Any) -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            if running == 3:
                full.set()
            with anyio.fail_after(5):
                await full.wait()
            for _ in range(5):
                await ctx.checkpoint()
            running -= 1

        async with jobs:
            ids = [(await jobs.submit("busy")).id for _ in range(30)]
            for job_id in ids:
                assert (await jobs.wait(job_id, timeout=5)).status is JobStatus.COMPLETED
        assert peak == 3

    async def test_higher_priority_first_then_fifo(self, make_manager: ManagerFactory) -> None:
        """Jobs run by priority (high first), FIFO among equals."""
        store = make_manager.new_store()
        order: list[str] = []
        all_ran = anyio.Event()

        async def record(ctx: JobContext, payload: Any) -> None:
            order.append(payload)
            if len(order) == 5:
                all_ran.set()

        setup = make_manager(store=store, concurrency=0)
        setup.register("rec", record)
        async with setup:
            for name, priority in [("low-1", -1), ("mid-1", 0), ("high-1", 5), ("mid-2", 0), ("high-2", 5)]:
                await setup.submit("rec", name, priority=priority)
        runner = make_manager(store=store, concurrency=1)
        runner.register("rec", record)
        async with runner:
            with anyio.fail_after(5):
                await all_ran.wait()
        assert order == ["high-1", "high-2", "mid-1", "mid-2", "low-1"]

    async def test_set_priority_reorders_and_returns_position(self, make_manager: ManagerFactory) -> None:
        """Boosting a pending job moves it up; its new 1-based position is returned."""
        jobs = make_manager(concurrency=0)
        jobs.register("x", _noop)
        async with jobs:
            ids = [(await jobs.submit("x")).id for _ in range(5)]
            assert [await jobs.position(i) for i in ids] == [1, 2, 3, 4, 5]
            job, position = await jobs.set_priority(ids[3], 10)
            assert (job.priority, position) == (10, 1)
            assert [await jobs.position(i) for i in ids] == [2, 3, 4, 1, 5]
            _, position = await jobs.set_priority(ids[0], -1)
            assert position == 5
            [record, *_] = await jobs.audit(ids[0])
            assert record.details == {"from": 0, "to": -1, "position": 5}

    async def test_set_priority_of_running_job_is_invalid_state(self, make_manager: ManagerFactory) -> None:
        """Only pending jobs can change priority."""
        jobs = make_manager(concurrency=1)
        started, release = anyio.Event(), anyio.Event()

        @jobs.handler("block")
        async def block(ctx: JobContext, payload: Any) -> None:
            started.set()
            await release.wait()

        async with jobs:
            job = await jobs.submit("block")
            await started.wait()
            with pytest.raises(InvalidState) as raised:
                await jobs.set_priority(job.id, 10)
            assert raised.value.message == "Cannot change priority of a running job."
            assert await jobs.position(job.id) is None
            release.set()

    async def test_failing_handler_becomes_failed_job(self, make_manager: ManagerFactory) -> None:
        """An exception in a handler fails the job with its message; the manager keeps going."""
        jobs = make_manager()

        @jobs.handler("boom")
        async def boom(ctx: JobContext, payload: Any) -> None:
            await ctx.set_result({"partial": 1})
            raise ValueError("disk full")

        jobs.register("ok", _noop)
        async with jobs:
            failed = await jobs.wait((await jobs.submit("boom")).id, timeout=5)
            ok = await jobs.wait((await jobs.submit("ok")).id, timeout=5)
        assert (failed.status, failed.error) == (JobStatus.FAILED, "ValueError: disk full")
        assert failed.result == {"partial": 1}
        assert ok.status is JobStatus.COMPLETED

    async def test_non_json_result_fails_the_job(self, make_manager: ManagerFactory) -> None:
        """A handler returning something that is not JSON fails with a clear error."""
        jobs = make_manager()

        @jobs.handler("bad")
        async def bad(ctx: JobContext, payload: Any) -> object:
            return {1, 2}

        async with jobs:
            job = await jobs.wait((await jobs.submit("bad")).id, timeout=5)
        assert job.status is JobStatus.FAILED
        assert job.error is not None
        assert "JSON" in job.error

    async def test_sync_handler_runs_in_a_thread_with_full_context(
        self, make_manager: ManagerFactory
    ) -> None:
        """A sync handler reports progress, writes artifacts and returns a result from its thread."""
        jobs = make_manager()

        @jobs.handler("sync")
        def sync(ctx: SyncJobContext, payload: Any) -> dict[str, Any]:
            ctx.progress(0.5, "half")
            ctx.put_artifact("out.txt", "from a thread")
            (ctx.scratch / "f").write_text("x")
            return {"thread": threading.current_thread() is not threading.main_thread()}

        async with jobs:
            job = await jobs.wait((await jobs.submit("sync")).id, timeout=5)
            assert await jobs.read_artifact(job.id, "out.txt") == b"from a thread"
        assert job.result == {"thread": True}
        assert job.progress_message == "half"

    async def test_wait_times_out(self, make_manager: ManagerFactory) -> None:
        """wait() raises TimeoutError when the job does not finish in time."""
        jobs = make_manager(concurrency=0)
        jobs.register("x", _noop)
        async with jobs:
            job = await jobs.submit("x")
            with pytest.raises(TimeoutError):
                await jobs.wait(job.id, timeout=0.01)


async def _noop(ctx: JobContext, payload: Any) -> None:
    return None


class TestShutdown:
    async def test_running_jobs_go_back_to_pending_and_run_again(self, make_manager: ManagerFactory) -> None:
        """On exit, running jobs see source=shutdown and return to pending; the next start runs them."""
        store = make_manager.new_store()
        sources: list[Any] = []
        started = anyio.Event()
        runs = 0

        async def long(ctx: JobContext, payload: Any) -> str:
            nonlocal runs
            runs += 1
            if runs == 1:
                started.set()
                await ctx.token.wait()
                sources.append(ctx.token.source)
                await ctx.checkpoint()
            return "second run"

        first = make_manager(store=store)
        first.register("long", long)
        async with first:
            job = await first.submit("long")
            await started.wait()
        interrupted = await stored(store, job.id)
        assert interrupted is not None
        assert interrupted.status is JobStatus.PENDING
        assert interrupted.attempts == 1
        assert sources == [CancelSource.SHUTDOWN]
        second = make_manager(store=store)
        second.register("long", long)
        async with second:
            final = await second.wait(job.id, timeout=5)
        assert (final.status, final.result, final.attempts) == (JobStatus.COMPLETED, "second run", 2)

    async def test_cancelling_job_ends_cancelled_on_shutdown(self, make_manager: ManagerFactory) -> None:
        """A job already cancelling when the manager stops ends cancelled."""
        store = make_manager.new_store()
        jobs = make_manager(store=store)
        started, stop = anyio.Event(), anyio.Event()

        @jobs.handler("slow")
        async def slow(ctx: JobContext, payload: Any) -> None:
            started.set()
            await stop.wait()
            await ctx.checkpoint()

        async with jobs:
            job = await jobs.submit("slow")
            await started.wait()
            await jobs.cancel(job.id)
            stop.set()
        final = await stored(store, job.id)
        assert final is not None
        assert final.status is JobStatus.CANCELLED

    async def test_shutdown_forces_after_grace_and_leaves_nothing_behind(
        self, make_manager: ManagerFactory
    ) -> None:
        """Exit respects cancel_grace: ignoring handlers are forced; no task, thread or temp dir stays."""
        store = make_manager.new_store()
        jobs = make_manager(store=store, cancel_grace=0.05, concurrency=4)
        sync_done = threading.Event()
        started = anyio.Event()
        count = 0
        scratch: list[Path] = []

        @jobs.handler("deaf")
        async def deaf(ctx: JobContext, payload: Any) -> None:
            nonlocal count
            scratch.append(ctx.scratch)
            count += 1
            if count == 2:
                started.set()
            await anyio.sleep(3600)

        @jobs.handler("polite")
        def polite(ctx: SyncJobContext, payload: Any) -> None:
            try:
                ctx.token.wait_blocking()
                ctx.checkpoint()
            finally:
                sync_done.set()

        threads_before = {t for t in threading.enumerate() if t.is_alive()}
        with anyio.fail_after(10):
            async with jobs, jobs.subscribe() as events:
                a = await jobs.submit("deaf")
                b = await jobs.submit("deaf")
                c = await jobs.submit("polite")
                await started.wait()
                async for event in events:
                    if (event.type, event.job_id) == ("started", c.id):
                        break
        assert sync_done.is_set(), "the sync handler returned before exit finished"
        for job_id in (a.id, b.id, c.id):
            job = await stored(store, job_id)
            assert job is not None
            assert job.status is JobStatus.PENDING
        assert not any(p.exists() for p in scratch)
        assert not list(Path(tempfile.gettempdir()).glob(f"jobkit-{a.id[:12]}-*"))
        leftover = {t for t in threading.enumerate() if t.is_alive()} - threads_before
        assert all(not t.name.startswith("jobkit") for t in leftover)

    async def test_methods_on_a_closed_or_unstarted_manager_say_what_to_do(
        self, make_manager: ManagerFactory
    ) -> None:
        """Calling the API outside `async with` raises JobkitError with the fix."""
        jobs = make_manager()
        jobs.register("x", _noop)
        with pytest.raises(JobkitError, match="async with"):
            await jobs.submit("x")
        async with jobs:
            pass
        with pytest.raises(JobkitError, match="closed"):
            await jobs.list()
        with pytest.raises(JobkitError, match="only once"):
            async with jobs:
                pass

    async def test_register_rejects_duplicates_and_bad_handlers(self, make_manager: ManagerFactory) -> None:
        """A kind has one handler; handlers must be callable; kinds must be non-empty."""
        jobs = make_manager()
        jobs.register("x", _noop)
        with pytest.raises(InvalidInput, match="already"):
            jobs.register("x", _noop)
        with pytest.raises(InvalidInput):
            jobs.register("", _noop)
        with pytest.raises(InvalidInput):
            jobs.register("y", "not callable")  # type: ignore[arg-type]
        assert jobs.kinds == {"x"}
