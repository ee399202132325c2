"""Cancellation: pending and running jobs, grace, sync handlers, subprocesses, scratch, timeouts."""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from jobkit import (
    CancelSource,
    InvalidState,
    JobContext,
    JobManager,
    JobStatus,
    SyncJobContext,
)
from managers import ManagerFactory

pytestmark = pytest.mark.anyio


class TestPending:
    async def test_cancel_pending_is_immediate(self, make_manager: ManagerFactory) -> None:
        """A pending job is cancelled at once and never runs."""
        jobs = make_manager(concurrency=0)
        ran = []

        @jobs.handler("noop")
        async def noop(ctx: JobContext, payload: Any) -> None:
            ran.append(payload)

        async with jobs:
            job = await jobs.submit("noop", 1)
            cancelled = await jobs.cancel(job.id, reason="not needed")
            assert cancelled.status is JobStatus.CANCELLED
            assert cancelled.cancel_reason == "not needed"
            assert cancelled.finished_at is not None
            assert cancelled.started_at is None
            assert (await jobs.wait(job.id, timeout=1)).status is JobStatus.CANCELLED
        assert ran == []

    async def test_cancel_terminal_job_is_invalid_state(self, make_manager: ManagerFactory) -> None:
        """Cancelling a finished job raises InvalidState naming its status."""
        jobs = make_manager()
        jobs.register("noop", _noop)
        async with jobs:
            job = await jobs.submit("noop")
            await jobs.wait(job.id, timeout=5)
            with pytest.raises(InvalidState, match="completed"):
                await jobs.cancel(job.id)


async def _noop(ctx: JobContext, payload: Any) -> None:
    return None


class TestRunning:
    async def test_running_job_stops_at_checkpoint_and_keeps_partial_result(
        self, make_manager: ManagerFactory
    ) -> None:
        """cancel -> cancelling; the handler stops at its next checkpoint; the job ends
        cancelled with its reason and the partial result kept."""
        jobs = make_manager()
        started = anyio.Event()
        done_steps: list[int] = []

        @jobs.handler("count")
        async def count(ctx: JobContext, payload: Any) -> None:
            deadline = math.inf
            for i in range(1_000_000):
                done_steps.append(i)
                await ctx.set_result({"done": i})
                if i == 3:
                    started.set()
                    deadline = anyio.current_time() + 2
                await ctx.checkpoint()
                if anyio.current_time() > deadline:
                    # Bounds the test: the job fails, so a cancel() that never ends raises InvalidState.
                    raise AssertionError("the cancel did not reach the handler within 2 s")

        async with jobs:
            job = await jobs.submit("count")
            await started.wait()
            cancelling = await jobs.cancel(job.id, reason="enough")
            assert cancelling.status is JobStatus.CANCELLING
            again = await jobs.cancel(job.id, reason="twice")
            assert again.status is JobStatus.CANCELLING
            assert again.cancel_reason == "enough", "a second cancel changes nothing"
            final = await jobs.wait(job.id, timeout=5)
            assert [r for r in await _audit(jobs) if r == "cancel"] == ["cancel"]
        assert final.status is JobStatus.CANCELLED
        assert final.cancel_reason == "enough"
        assert final.result == {"done": done_steps[-1]}
        assert final.started_at is not None
        assert final.finished_at is not None

    async def test_handler_finishing_while_cancelling_completes(self, make_manager: ManagerFactory) -> None:
        """A handler that returns normally after a cancel ends completed: the work happened."""
        jobs = make_manager()
        started, release = anyio.Event(), anyio.Event()

        @jobs.handler("stubborn")
        async def stubborn(ctx: JobContext, payload: Any) -> str:
            started.set()
            await release.wait()
            return "finished anyway"

        async with jobs:
            job = await jobs.submit("stubborn")
            await started.wait()
            await jobs.cancel(job.id)
            release.set()
            final = await jobs.wait(job.id, timeout=5)
        assert final.status is JobStatus.COMPLETED
        assert final.result == "finished anyway"

    async def test_token_reports_source_and_reason(self, make_manager: ManagerFactory) -> None:
        """The token tells the handler who stopped it and why."""
        jobs = make_manager()
        started = anyio.Event()
        seen: dict[str, Any] = {}

        @jobs.handler("watch")
        async def watch(ctx: JobContext, payload: Any) -> None:
            started.set()
            await ctx.token.wait()
            seen.update(source=ctx.token.source, reason=ctx.token.reason)
            ctx.token.raise_if_cancelled()

        async with jobs:
            job = await jobs.submit("watch")
            await started.wait()
            await jobs.cancel(job.id, reason="user said so")
            assert (await jobs.wait(job.id, timeout=5)).status is JobStatus.CANCELLED
        assert seen == {"source": CancelSource.USER, "reason": "user said so"}

    async def test_grace_forces_an_async_handler_that_ignores_the_token(
        self, make_manager: ManagerFactory
    ) -> None:
        """With cancel_grace, an async handler that never checkpoints is cancelled through its scope."""
        jobs = make_manager(cancel_grace=0.05)
        started = anyio.Event()

        @jobs.handler("deaf")
        async def deaf(ctx: JobContext, payload: Any) -> None:
            await ctx.set_result("partial")
            started.set()
            await anyio.sleep(3600)

        async with jobs:
            job = await jobs.submit("deaf")
            await started.wait()
            await jobs.cancel(job.id)
            with anyio.fail_after(5):
                final = await jobs.wait(job.id)
        assert final.status is JobStatus.CANCELLED
        assert final.result == "partial"

    async def test_sync_handler_sees_the_token_from_its_thread(self, make_manager: ManagerFactory) -> None:
        """A sync handler in a worker thread observes cancellation through its context."""
        jobs = make_manager()
        started = threading.Event()
        thread_names: list[str] = []

        @jobs.handler("loop")
        def loop(ctx: SyncJobContext, payload: Any) -> None:
            thread_names.append(threading.current_thread().name)
            ctx.set_result({"partial": True})
            started.set()
            while True:
                ctx.checkpoint()
                ctx.token.wait_blocking()

        async with jobs:
            job = await jobs.submit("loop")
            with anyio.fail_after(5):
                await anyio.to_thread.run_sync(started.wait)
            await jobs.cancel(job.id)
            final = await jobs.wait(job.id, timeout=5)
        assert final.status is JobStatus.CANCELLED
        assert final.result == {"partial": True}
        assert thread_names
        assert thread_names[0] != threading.main_thread().name


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); look at its state.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"


_SLEEPER = [sys.executable, "-c", "import os, sys, time; print(os.getpid(), flush=True); time.sleep(600)"]
_STUBBORN = [
    sys.executable,
    "-c",
    "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print(os.getpid(), flush=True); time.sleep(600)",
]


class TestProcesses:
    @pytest.mark.parametrize("argv", [_SLEEPER, _STUBBORN], ids=["terminates", "ignores-sigterm"])
    async def test_run_process_child_is_gone_after_cancel(
        self, argv: list[str], make_manager: ManagerFactory
    ) -> None:
        """ctx.run_process terminates (then kills) its child on cancel: the process is gone afterwards."""
        jobs = make_manager()

        @jobs.handler("render")
        async def render(ctx: JobContext, payload: Any) -> None:
            await ctx.run_process(argv, terminate_grace=0.2)

        async with jobs:
            job = await jobs.submit("render")
            pid = await _read_pid_of_child(jobs, job.id)
            assert _pid_alive(pid)
            await jobs.cancel(job.id)
            final = await jobs.wait(job.id, timeout=10)
        assert final.status is JobStatus.CANCELLED
        assert not _pid_alive(pid)

    async def test_sync_run_process_child_is_gone_after_cancel(self, make_manager: ManagerFactory) -> None:
        """The sync context's run_process also terminates its child on cancel."""
        jobs = make_manager()

        @jobs.handler("render")
        def render(ctx: SyncJobContext, payload: Any) -> None:
            ctx.run_process(_STUBBORN, terminate_grace=0.2)

        async with jobs:
            job = await jobs.submit("render")
            pid = await _read_pid_of_child(jobs, job.id)
            await jobs.cancel(job.id)
            final = await jobs.wait(job.id, timeout=10)
        assert final.status is JobStatus.CANCELLED
        assert not _pid_alive(pid)

    async def test_run_process_returns_output(self, make_manager: ManagerFactory) -> None:
        """run_process captures stdout and stderr and feeds input."""
        jobs = make_manager()

        @jobs.handler("echo")
        async def echo(ctx: JobContext, payload: Any) -> str:
            done = await ctx.run_process(
                [sys.executable, "-c", "import sys; sys.stdout.write(sys.stdin.read().upper())"],
                input=b"hello",
            )
            return done.stdout.decode()

        async with jobs:
            job = await jobs.submit("echo")
            final = await jobs.wait(job.id, timeout=10)
        assert final.result == "HELLO"


async def _read_pid_of_child(jobs: JobManager, job_id: str) -> int:
    """Find the child process of this test process that runs the sleeper."""
    with anyio.fail_after(10):
        while True:
            for pid in _children(os.getpid()):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                if b"time.sleep(600)" in cmdline and _pid_alive(pid):
                    return pid
            await anyio.sleep(0.01)


def _children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[1]) == parent:
            found.append(int(entry.name))
    return found


class TestScratch:
    @pytest.mark.parametrize("outcome", ["completed", "failed", "cancelled", "forced"])
    async def test_scratch_is_removed_after_every_outcome(
        self, outcome: str, make_manager: ManagerFactory
    ) -> None:
        """ctx.scratch exists during the job and is gone afterwards, however the job ends."""
        jobs = make_manager(cancel_grace=0.05)
        paths: list[Path] = []
        started = anyio.Event()

        @jobs.handler("work")
        async def work(ctx: JobContext, payload: Any) -> None:
            (ctx.scratch / "tmp.bin").write_bytes(b"x" * 100)
            assert (ctx.scratch / "tmp.bin").is_file()
            paths.append(ctx.scratch)
            started.set()
            if outcome == "failed":
                raise RuntimeError("boom")
            if outcome == "cancelled":
                await ctx.token.wait()
                await ctx.checkpoint()
            if outcome == "forced":
                await anyio.sleep(3600)

        async with jobs:
            job = await jobs.submit("work")
            await started.wait()
            if outcome in ("cancelled", "forced"):
                await jobs.cancel(job.id)
            final = await jobs.wait(job.id, timeout=5)
        expected = {"completed": "completed", "failed": "failed"}.get(outcome, "cancelled")
        assert final.status.value == expected
        assert not paths[0].exists()

    async def test_scratch_is_not_created_unless_used(self, make_manager: ManagerFactory) -> None:
        """A job that never touches ctx.scratch creates no temporary directory (its own,
        named after this process and the job: other test processes share the temp dir)."""
        import os
        import tempfile

        seen: list[Path] = []

        async def look(ctx: JobContext, payload: Any) -> None:
            # While the job runs, nothing may be there under its name.
            seen.extend(Path(tempfile.gettempdir()).glob(f"jobkit-{os.getpid()}-{ctx.job.id[:12]}-*"))

        jobs = make_manager()
        jobs.register("noop", look)
        async with jobs:
            job = await jobs.wait((await jobs.submit("noop")).id, timeout=5)
        assert job.status is JobStatus.COMPLETED
        assert seen == []
        assert list(Path(tempfile.gettempdir()).glob(f"jobkit-{os.getpid()}-{job.id[:12]}-*")) == []


class TestTimeout:
    async def test_cooperative_handler_times_out_as_failed(self, make_manager: ManagerFactory) -> None:
        """A job that overruns its timeout sees source=timeout and ends failed 'timed out after ...'."""
        jobs = make_manager()
        sources: list[Any] = []

        @jobs.handler("slow")
        async def slow(ctx: JobContext, payload: Any) -> None:
            await ctx.set_result("half")
            await ctx.token.wait()
            sources.append(ctx.token.source)
            await ctx.checkpoint()

        async with jobs:
            job = await jobs.submit("slow", timeout=0.05)
            final = await jobs.wait(job.id, timeout=5)
        assert final.status is JobStatus.FAILED
        assert final.error == "timed out after 0.05s"
        assert final.result == "half"
        assert sources == [CancelSource.TIMEOUT]

    async def test_timeout_forces_handler_that_ignores_token(self, make_manager: ManagerFactory) -> None:
        """After the timeout and cancel_grace, an ignoring async handler is forced and the job fails."""
        jobs = make_manager(cancel_grace=0.05)

        @jobs.handler("deaf")
        async def deaf(ctx: JobContext, payload: Any) -> None:
            await anyio.sleep(3600)

        async with jobs:
            job = await jobs.submit("deaf", timeout=0.05)
            final = await jobs.wait(job.id, timeout=5)
        assert final.status is JobStatus.FAILED
        assert final.error is not None
        assert final.error.startswith("timed out after")

    async def test_fast_job_is_not_affected_by_its_timeout(self, make_manager: ManagerFactory) -> None:
        """A job that finishes in time completes normally."""
        jobs = make_manager()
        jobs.register("noop", _noop)
        async with jobs:
            job = await jobs.submit("noop", timeout=30)
            assert (await jobs.wait(job.id, timeout=5)).status is JobStatus.COMPLETED


async def _audit(jobs: JobManager) -> list[str]:
    return [r.action.value for r in await jobs.audit()]


def test_time_module_is_monotonic_enough() -> None:
    """Sanity: the machine's monotonic clock advances (used by sync run_process grace)."""
    assert time.monotonic() <= time.monotonic()
