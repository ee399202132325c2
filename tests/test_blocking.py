"""BlockingJobManager: the same API for synchronous code."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

import jobkit
from jobkit import BlockingJobManager, JobContext, JobkitError, JobManager, JobNotFound, JobStatus
from parity import assert_same_api


async def _hello(ctx: JobContext, payload: Any) -> str:
    return "hello"


class TestParity:
    def test_same_public_methods_and_parameters(self) -> None:
        """Every public JobManager method exists on BlockingJobManager with the same parameters."""
        assert_same_api(JobManager, BlockingJobManager)

    def test_same_constructor_arguments(self) -> None:
        """BlockingJobManager takes JobManager's arguments (plus the backend of its loop)."""
        async_params = inspect.signature(JobManager.__init__).parameters
        sync_params = dict(inspect.signature(BlockingJobManager.__init__).parameters)
        assert sync_params.pop("backend").default == "asyncio"
        assert list(async_params.values()) == list(sync_params.values())


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
class TestBlockingUse:
    def test_run_manage_and_subscribe_from_sync_code(self, backend: str) -> None:
        """Submit, wait, list, artifacts, delete, audit and events work as plain calls."""
        jobs = BlockingJobManager(sweep_interval=None, backend=backend)

        @jobs.handler("hello")
        async def hello(ctx: JobContext, payload: Any) -> str:
            await ctx.put_artifact("greeting.txt", f"hello {payload}")
            return f"hello {payload}"

        with jobs:
            with jobs.subscribe() as events:
                job = jobs.submit("hello", "world")
                done = jobs.wait(job.id, timeout=5)
                types = [next(events).type for _ in range(3)]
            assert types == ["submitted", "started", "completed"]
            assert done.status is JobStatus.COMPLETED
            assert done.result == "hello world"
            assert [j.id for j in jobs.list()] == [job.id]
            assert jobs.read_artifact(job.id, "greeting.txt") == b"hello world"
            jobs.delete(job.id)
            with pytest.raises(JobNotFound):
                jobs.get(job.id)
            assert [r.action for r in jobs.audit()] == ["delete"]
            assert jobs.sweep().expired == 0

    def test_exit_with_an_open_subscription_does_not_hang(self, backend: str) -> None:
        """Leaving `with jobs:` ends a subscription another thread still holds open."""
        import threading

        jobs = BlockingJobManager(sweep_interval=None, backend=backend)
        jobs.register("hello", _hello)
        ended = threading.Event()
        opened = threading.Event()

        def reader() -> None:
            with jobs.subscribe() as events:
                opened.set()
                for _ in events:
                    pass
            ended.set()

        with jobs:
            thread = threading.Thread(target=reader)
            thread.start()
            assert opened.wait(5)
        thread.join(5)
        assert ended.is_set() or not thread.is_alive()

    def test_calls_outside_with_say_what_to_do(self, backend: str) -> None:
        """Using the blocking manager before `with` raises JobkitError with the fix."""
        jobs = BlockingJobManager(backend=backend)
        with pytest.raises(JobkitError, match="with jobs"):
            jobs.list()


def test_public_names_match_all() -> None:
    """jobkit.__all__ lists exactly the public names the package exports."""
    exported = {
        name
        for name in dir(jobkit)
        if not name.startswith("_") and not inspect.ismodule(getattr(jobkit, name))
    }
    assert set(jobkit.__all__) - {"__version__"} == exported
    for name in jobkit.__all__:
        assert getattr(jobkit, name) is not None


def test_contract_names_are_importable() -> None:
    """The names of the public contract import from where DESIGN.md says."""
    from jobkit import (  # noqa: F401
        Actor,
        AuditRecord,
        BlockingJobManager,
        CancelToken,
        DeletePolicy,
        InvalidInput,
        InvalidState,
        Job,
        JobCancelled,
        JobContext,
        JobEvent,
        JobkitError,
        JobManager,
        JobNotFound,
        JobStatus,
        Page,
        PermissionDenied,
        Retention,
        SweepReport,
    )
    from jobkit.blobs import MemoryBlobStore, open_blobs  # noqa: F401
    from jobkit.stores import MemoryStore, open_store  # noqa: F401


def test_error_codes_are_stable() -> None:
    """Each error carries the code web integrations put in their body."""
    assert jobkit.JobNotFound.code == "job_not_found"
    assert jobkit.InvalidState.code == "invalid_state"
    assert jobkit.PermissionDenied.code == "forbidden"
    assert jobkit.InvalidInput.code == "invalid_input"
    assert issubclass(jobkit.JobNotFound, LookupError)
    assert issubclass(jobkit.InvalidInput, ValueError)
    assert issubclass(jobkit.PermissionDenied, PermissionError)
