"""Nothing a caller sends can break the manager: bounds, text, and background work that survives.

Each test here was a crash or a half-done write before: a duration that overflows the
clock, a lone surrogate that is stored and then breaks every read, an outcome write that
kills the manager, one bad row that stops the whole sweep.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bad_input
from jobkit import (
    BackendError,
    DeletePolicy,
    InvalidInput,
    Job,
    JobContext,
    JobManager,
    JobNotFound,
    JobStatus,
    Retention,
)
from jobkit import _machine as machine
from jobkit._records import MAX_DURATION
from jobkit.stores import MemoryStore, SQLiteStore
from jobkit.testing import FakeClock
from managers import ManagerFactory

pytestmark = pytest.mark.anyio

SURROGATE = "bad \ud800 text"


async def noop(ctx: JobContext, payload: Any) -> Any:
    return payload


async def count_jobs(jobs: JobManager) -> int:
    return len((await jobs.list(limit=1000, include_deleted=True)).items)


class TestDurationBounds:
    @pytest.mark.parametrize(
        "value", [300_000_000_000, timedelta.max, MAX_DURATION + timedelta(seconds=1), 1e300, float("inf")]
    )
    async def test_a_ttl_or_timeout_past_the_bound_is_invalid_input_and_nothing_is_stored(
        self, make_manager: ManagerFactory, value: Any
    ) -> None:
        """ttl=9,500 years or timedelta.max is InvalidInput on every store, not an overflow later."""
        jobs = JobManager(make_manager.new_store(), sweep_interval=None, concurrency=0)
        jobs.register("noop", noop)
        async with jobs:
            for field in ("ttl", "timeout"):
                with pytest.raises(InvalidInput, match="duration"):
                    await jobs.submit("noop", **{field: value})
            assert await count_jobs(jobs) == 0

    async def test_the_bound_itself_is_accepted_and_the_job_finishes(
        self, make_manager: ManagerFactory
    ) -> None:
        """A 100-year ttl is fine: the job completes and expires in 100 years."""
        jobs = JobManager(make_manager.new_store(), sweep_interval=None)
        jobs.register("noop", noop)
        async with jobs:
            job = await jobs.submit("noop", ttl=MAX_DURATION, timeout=MAX_DURATION)
            done = await jobs.wait(job.id, timeout=10)
            assert done.status is JobStatus.COMPLETED
            assert done.finished_at is not None
            assert done.expires_at == done.finished_at + MAX_DURATION

    @pytest.mark.parametrize(
        "settings_",
        [
            {"sweep_interval": timedelta.max},
            {"cancel_grace": 1e12},
            {"lease_duration": timedelta.max},
            {"poll_interval": 1e30},
            {"audit_retention": timedelta.max},
        ],
    )
    def test_manager_settings_past_the_bound_are_invalid_input(self, settings_: dict[str, Any]) -> None:
        """Every duration the host configures has the same bound."""
        with pytest.raises(InvalidInput, match="duration"):
            JobManager(**settings_)

    @pytest.mark.parametrize("field", ["completed", "failed", "cancelled"])
    def test_a_retention_past_the_bound_is_invalid_input(self, field: str) -> None:
        """A host-configured Retention that large is refused when it is made, not when a job ends."""
        with pytest.raises(InvalidInput, match="duration"):
            Retention(**{field: timedelta.max})
        with pytest.raises(InvalidInput, match="duration"):
            DeletePolicy(mode="soft", purge_soft_deleted_after=timedelta.max)

    def test_a_stored_duration_past_the_bound_never_overflows_the_machine(self) -> None:
        """A row written by something else with a huge ttl still concludes (it is kept forever)."""
        now = datetime(2030, 1, 1, tzinfo=UTC)
        job = Job(id="j", kind="k", status="running", created_at=now, started_at=now, attempts=1)
        job = machine.replace_job(job, ttl=timedelta.max)
        done = machine.complete(job, now, Retention())
        assert done.status is JobStatus.COMPLETED
        assert done.expires_at == datetime.max.replace(tzinfo=UTC)
        assert machine.cancel(
            machine.replace_job(job, status=JobStatus.PENDING), now, Retention()
        ).is_terminal


class TestText:
    async def test_nul_characters_are_refused_in_stored_text_but_kept_in_payloads(
        self, make_manager: ManagerFactory
    ) -> None:
        """PostgreSQL's text cannot hold NUL: kind, labels, job ids and reasons refuse it on
        every store alike (InvalidInput, nothing stored); JSON payloads keep it (escaped)."""
        jobs = JobManager(make_manager.new_store(), sweep_interval=None, concurrency=0)
        jobs.register("noop", noop)
        async with jobs:
            for call in (
                lambda: jobs.submit("no\x00op"),
                lambda: jobs.submit("noop", labels={"name": "a\x00b"}),
                lambda: jobs.get("job\x00id"),
            ):
                with pytest.raises(InvalidInput, match="NUL"):
                    await call()
            assert await count_jobs(jobs) == 0
            job = await jobs.submit("noop", {"text": "a\x00b"})
            assert (await jobs.get(job.id)).payload == {"text": "a\x00b"}
            with pytest.raises(InvalidInput, match="NUL"):
                await jobs.cancel(job.id, reason="dup\x00")
            assert (await jobs.get(job.id)).status is JobStatus.PENDING
            assert await jobs.audit() == []

    async def test_lone_surrogates_are_refused_everywhere_a_string_is_stored(
        self, make_manager: ManagerFactory
    ) -> None:
        """Kind, labels, payload strings, job ids and cancel reasons: InvalidInput, nothing stored."""
        jobs = JobManager(make_manager.new_store(), sweep_interval=None, concurrency=0)
        jobs.register("noop", noop)
        async with jobs:
            for call in (
                lambda: jobs.submit(SURROGATE),
                lambda: jobs.submit("noop", labels={"name": SURROGATE}),
                lambda: jobs.submit("noop", labels={SURROGATE: "value"}),
                lambda: jobs.submit("noop", {"text": SURROGATE}),
                lambda: jobs.get(SURROGATE),
            ):
                with pytest.raises(InvalidInput):
                    await call()
            assert await count_jobs(jobs) == 0
            job = await jobs.submit("noop")
            with pytest.raises(InvalidInput, match="surrogate"):
                await jobs.cancel(job.id, reason=SURROGATE)
            assert (await jobs.get(job.id)).status is JobStatus.PENDING  # not cancelled either
            assert await jobs.audit() == []
            page = await jobs.list()
            assert [j.id for j in page.items] == [job.id]

    async def test_a_handler_cannot_store_bad_text_and_its_error_is_made_storable(
        self, make_manager: ManagerFactory
    ) -> None:
        """Progress messages and artifact names are checked; an exception's text is escaped."""
        jobs = JobManager(make_manager.new_store(), sweep_interval=None)
        refused: list[str] = []

        @jobs.handler("work")
        async def work(ctx: JobContext, payload: Any) -> None:
            for call in (
                lambda: ctx.progress(0.5, SURROGATE),
                lambda: ctx.put_artifact(SURROGATE, b"x"),
                lambda: ctx.set_result(SURROGATE),
            ):
                try:
                    await call()
                except InvalidInput as exc:
                    refused.append(exc.code)
            raise ValueError(SURROGATE)

        async with jobs:
            job = await jobs.submit("work")
            done = await jobs.wait(job.id, timeout=10)
            assert refused == ["invalid_input"] * 3
            assert done.status is JobStatus.FAILED
            assert done.error == "ValueError: bad \\ud800 text"
            assert done.progress_message is None
            assert await jobs.artifacts(job.id) == []
            assert (await jobs.get(job.id)).error == done.error  # and it reads back

    async def test_a_cancel_reason_has_a_length_limit(self) -> None:
        """A 20 MB reason is refused before anything is written."""
        jobs = JobManager(sweep_interval=None, concurrency=0)
        jobs.register("noop", noop)
        async with jobs:
            job = await jobs.submit("noop")
            with pytest.raises(InvalidInput, match="longer than"):
                await jobs.cancel(job.id, reason="x" * 20_000_000)
            assert (await jobs.get(job.id)).status is JobStatus.PENDING

    async def test_a_cursor_with_a_huge_number_is_invalid_input(self, make_manager: ManagerFactory) -> None:
        """A well-formed cursor whose number no store can hold is InvalidInput, not a backend error."""
        from jobkit._validate import encode_cursor

        jobs = JobManager(make_manager.new_store(), sweep_interval=None, concurrency=0)
        async with jobs:
            with pytest.raises(InvalidInput, match="cursor"):
                await jobs.list(cursor=encode_cursor(10**30))


class TestBadInputProperty:
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(bad=bad_input.bad_submits)
    def test_any_bad_submit_is_invalid_input_and_stores_nothing(self, bad: dict[str, Any]) -> None:
        """Whatever is wrong with a submit, it is InvalidInput and the store stays empty."""
        arguments = {"kind": "noop", **bad}
        kind = arguments.pop("kind")
        payload = arguments.pop("payload", None)

        async def main() -> None:
            jobs = JobManager(sweep_interval=None, concurrency=0)
            jobs.register("noop", noop)
            async with jobs:
                with pytest.raises(InvalidInput):
                    await jobs.submit(kind, payload, **arguments)
                assert await count_jobs(jobs) == 0

        anyio.run(main)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        call=st.one_of(
            bad_input.bad_reasons.map(lambda r: ("cancel", r)),
            bad_input.bad_priorities.map(lambda p: ("set_priority", p)),
            bad_input.bad_cursors.map(lambda c: ("list", c)),
        )
    )
    async def test_any_bad_cancel_priority_or_cursor_is_invalid_input_and_changes_nothing(
        self, make_manager: ManagerFactory, call: tuple[str, Any]
    ) -> None:
        """On every store: a bad reason, priority or cursor is InvalidInput; the job, the
        audit trail and the listing stay as they were."""
        jobs = make_manager(concurrency=0)
        jobs.declare("later")
        async with jobs:
            job = await jobs.submit("later")
            method, value = call
            attempts = {
                "cancel": lambda: jobs.cancel(job.id, reason=value),
                "set_priority": lambda: jobs.set_priority(job.id, value),
                "list": lambda: jobs.list(cursor=value),
            }
            with pytest.raises(InvalidInput):
                await attempts[method]()
            assert await jobs.get(job.id) == job
            assert await jobs.audit() == []
            assert [j.id for j in (await jobs.list()).items] == [job.id]


class _FlakyStore(MemoryStore):
    """Fails the first ``failures`` outcome writes (replacing a running job by a finished one)."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def replace(self, job: Job, *, expected_version: int) -> bool:
        if job.is_terminal and self.failures:
            self.failures -= 1
            raise BackendError("the disk is having a bad day")
        return await super().replace(job, expected_version=expected_version)


class TestBackgroundWorkNeverKillsTheManager:
    async def test_a_failing_outcome_write_is_retried_and_the_manager_goes_on(self) -> None:
        """Store errors while recording an outcome are retried with backoff; the job completes."""
        store = _FlakyStore(failures=3)
        jobs = JobManager(store, sweep_interval=None)
        jobs.register("noop", noop)
        async with jobs:
            job = await jobs.submit("noop", 1)
            assert (await jobs.wait(job.id, timeout=10)).status is JobStatus.COMPLETED
            assert store.failures == 0
            second = await jobs.submit("noop", 2)
            assert (await jobs.wait(second.id, timeout=10)).result == 2

    async def test_an_outcome_that_cannot_be_recorded_fails_the_job_with_a_clear_error(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A bug in turning the outcome into a job fails that job, never the manager."""
        real = machine.complete
        broken = {"n": 1}

        def complete(*args: Any, **kwargs: Any) -> Job:
            if broken["n"]:
                broken["n"] -= 1
                raise OverflowError("date value out of range")
            return real(*args, **kwargs)

        monkeypatch.setattr(machine, "complete", complete)
        jobs = JobManager(sweep_interval=None)
        jobs.register("noop", noop)
        async with jobs:
            job = await jobs.submit("noop")
            done = await jobs.wait(job.id, timeout=10)
            assert done.status is JobStatus.FAILED
            assert done.error is not None
            assert "could not be recorded" in done.error
            later = await jobs.submit("noop", "still here")
            assert (await jobs.wait(later.id, timeout=10)).result == "still here"

    async def test_one_bad_row_never_stops_the_sweep(
        self, monkeypatch: pytest.MonkeyPatch, clock: FakeClock
    ) -> None:
        """A job the sweeper cannot delete is logged and skipped; the rest expire."""
        from jobkit._deleter import Deleter

        jobs = JobManager(sweep_interval=None, clock=clock, retention=Retention(completed=60))
        jobs.register("noop", noop)
        async with jobs:
            ids = [(await jobs.submit("noop", i)).id for i in range(3)]
            for job_id in ids:
                await jobs.wait(job_id, timeout=10)
            real = Deleter.delete

            async def delete(self: Deleter, job: Job, *args: Any) -> int:
                if job.id == ids[1]:
                    raise RuntimeError("a row nobody can read")
                return await real(self, job, *args)

            monkeypatch.setattr(Deleter, "delete", delete)
            clock.advance(120)
            report = await jobs.sweep()
            assert report.expired == 2
            assert [j.id for j in (await jobs.list()).items] == [ids[1]]

    async def test_a_failing_duty_never_stops_the_others(self, clock: FakeClock) -> None:
        """The purge queue failing to read still lets expiry and recovery run."""

        class NoPurgeQueue(MemoryStore):
            async def pending_purges(self, limit: int) -> list[str]:
                raise BackendError("purge table is locked")

        jobs = JobManager(NoPurgeQueue(), sweep_interval=None, clock=clock, retention=Retention(completed=1))
        jobs.register("noop", noop)
        async with jobs:
            job = await jobs.submit("noop")
            await jobs.wait(job.id, timeout=10)
            clock.advance(5)
            report = await jobs.sweep()
            assert report.expired == 1


class TestKinds:
    async def test_a_declared_kind_is_submitted_here_and_run_by_the_process_with_its_handler(
        self, tmp_path: Path
    ) -> None:
        """declare() lets a web process submit a kind it cannot run; it stays pending until a
        worker with the handler claims it, and a worker never claims kinds it cannot run."""
        path = tmp_path / "jobs.db"
        web = JobManager(SQLiteStore(path), sweep_interval=None)
        web.declare("transcode")
        cpu = JobManager(SQLiteStore(path), sweep_interval=None, poll_interval=0.05)
        cpu.register("report", noop)
        gpu = JobManager(SQLiteStore(path), sweep_interval=None, poll_interval=0.05)
        gpu.register("transcode", noop)
        async with web, cpu:
            job = await web.submit("transcode", "film")
            with pytest.raises(InvalidInput, match="declare"):
                await web.submit("unknown")
            # The CPU worker runs only "report": the transcode job must stay pending.
            other = await cpu.submit("report", "q3")
            assert (await cpu.wait(other.id, timeout=10)).status is JobStatus.COMPLETED
            assert (await web.get(job.id)).status is JobStatus.PENDING
            async with gpu:
                done = await gpu.wait(job.id, timeout=10)
            assert done.status is JobStatus.COMPLETED
            assert done.result == "film"


class TestFencing:
    async def test_a_run_that_lost_its_job_cannot_leave_artifacts_behind(
        self, make_manager: ManagerFactory, clock: FakeClock, tmp_path: Path
    ) -> None:
        """Worker A's lease runs out; B recovers the job and deletes it; A's late put_artifact
        is refused (its handler is told) and nothing is left under the job's prefix."""
        from jobkit.blobs import FileBlobStore

        store = make_manager.new_store()
        blobs = FileBlobStore(tmp_path / "artifacts")
        go = anyio.Event()
        told = anyio.Event()
        outcome: list[str] = []
        a = JobManager(store, blobs, sweep_interval=None, clock=clock, lease_duration=60)

        @a.handler("slow")
        async def slow(ctx: JobContext, payload: Any) -> None:
            await go.wait()
            try:
                await ctx.put_artifact("late.txt", b"orphan?")
            except Exception as exc:  # the handler is told
                outcome.append(type(exc).__name__)
                raise
            finally:
                told.set()
            outcome.append("written")

        b = JobManager(store, blobs, sweep_interval=None, clock=clock, concurrency=0)
        b.declare("slow")
        async with a, b:
            async with a.subscribe() as events:
                job = await b.submit("slow")
                async for event in events:
                    if event.type == "started":
                        break
            clock.advance(120)  # A's lease is long gone
            report = await b.sweep()
            assert report.recovered == 1
            assert (await b.get(job.id)).status is JobStatus.FAILED  # one attempt only
            await b.delete(job.id)
            go.set()
            with anyio.fail_after(10):
                await told.wait()
            with pytest.raises(JobNotFound):
                await b.get(job.id)
        assert outcome == ["JobCancelled"]
        assert await blobs.list(f"jobs/{job.id}/") == []


QUIET_SCRIPT = """
import anyio
from jobkit import JobManager, Retention

async def boom(ctx, payload):
    ctx.log.info("handler says hello")
    raise RuntimeError("boom")

async def main():
    jobs = JobManager(sweep_interval=None, retention=Retention(failed=0))
    jobs.register("boom", boom)
    async with jobs:
        job = await jobs.submit("boom")
        await jobs.wait(job.id, timeout=10)
        await jobs.sweep()
    print("script output")

anyio.run(main)
"""


class TestLogging:
    def test_a_library_user_sees_only_their_own_output(self) -> None:
        """Without logging configured, jobkit prints nothing: not the failure, not the audit."""
        import subprocess
        import sys

        result = subprocess.run(
            [sys.executable, "-c", QUIET_SCRIPT], capture_output=True, text=True, timeout=60, check=True
        )
        assert result.stdout == "script output\n"
        assert result.stderr == ""

    async def test_logs_go_through_the_standard_loggers_and_obey_their_levels(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """'jobkit', 'jobkit.audit' and 'jobkit.job' are standard loggers the host controls."""
        import logging

        async def boom(ctx: JobContext, payload: Any) -> None:
            ctx.log.info("handler says hello", step=1)
            raise RuntimeError("boom")

        jobs = JobManager(sweep_interval=None)
        jobs.register("boom", boom)
        async with jobs:
            with caplog.at_level(logging.INFO, logger="jobkit"):
                job = await jobs.submit("boom")
                await jobs.wait(job.id, timeout=10)
                await jobs.delete(job.id)
            failed = [r for r in caplog.records if r.name == "jobkit" and r.jobkit_event == "job failed"]
            assert [r.levelno for r in failed] == [logging.WARNING]
            assert failed[0].exc_info is not None
            assert failed[0].jobkit["job_id"] == job.id
            [hello] = [r for r in caplog.records if r.name == "jobkit.job"]
            assert (
                hello.getMessage() == f"handler says hello job_id={job.id!r} kind='boom' tenant=None step=1"
            )
            assert [r.jobkit_event for r in caplog.records if r.name == "jobkit.audit"] == ["delete"]

            caplog.clear()
            logging.getLogger("jobkit").setLevel(logging.ERROR)
            try:
                job = await jobs.submit("boom")
                await jobs.wait(job.id, timeout=10)
            finally:
                logging.getLogger("jobkit").setLevel(logging.NOTSET)
            assert [r for r in caplog.records if r.name.startswith("jobkit")] == []


class TestOrdering:
    async def test_a_submit_that_resumes_after_its_job_ran_does_not_hide_the_finish(self) -> None:
        """The job runs and finishes before submit() returns (a store that yields late): wait()
        still sees it finished at once, not at the next poll."""
        finished = anyio.Event()

        class LateInsert(MemoryStore):
            async def insert(self, job: Job) -> None:
                await super().insert(job)
                await finished.wait()  # the write is in; the caller hears of it only later

        jobs = JobManager(LateInsert(), sweep_interval=None, poll_interval=3600)

        @jobs.handler("quick")
        async def quick(ctx: JobContext, payload: Any) -> str:
            return "done"

        async with jobs, jobs.subscribe() as events:

            async def release_after_completion() -> None:
                async for event in events:
                    if event.type == "completed":
                        finished.set()
                        return

            async with anyio.create_task_group() as tg:
                tg.start_soon(release_after_completion)
                job = await jobs.submit("quick")
            with anyio.fail_after(5):
                done = await jobs.wait(job.id)
            assert done.status is JobStatus.COMPLETED


class TestAllOrNothing:
    async def test_fail_mode_deleting_a_requeued_pending_job_leaves_it_as_it_was(self) -> None:
        """pending in `deletable` + on_artifact_error="fail": a blob failure raises and the job
        and its artifacts stay; nothing is queued; retrying deletes both."""
        from jobkit.blobs import MemoryBlobStore

        class FailingOnce(MemoryBlobStore):
            failures = 1

            async def delete_prefix(self, prefix: str) -> int:
                if self.failures:
                    self.failures -= 1
                    raise OSError("storage unavailable")
                return await super().delete_prefix(prefix)

        blobs = FailingOnce()
        store = MemoryStore()
        jobs = JobManager(
            store,
            blobs,
            sweep_interval=None,
            concurrency=0,
            delete_policy=DeletePolicy(
                deletable={"pending", "completed", "failed", "cancelled"}, on_artifact_error="fail"
            ),
        )
        jobs.register("noop", noop)
        async with jobs:
            job = await jobs.submit("noop")
            await blobs.put(f"jobs/{job.id}/partial.bin", b"from an earlier attempt")
            with pytest.raises(BackendError, match="not deleted"):
                await jobs.delete(job.id)
            assert (await jobs.get(job.id)).status is JobStatus.PENDING
            assert await jobs.artifacts(job.id) == ["partial.bin"]
            assert await store.pending_purges(10) == []
            assert await jobs.audit(job_id=job.id) == []
            await jobs.delete(job.id)
            with pytest.raises(JobNotFound):
                await jobs.get(job.id)
            assert await blobs.list(f"jobs/{job.id}/") == []
            [record] = await jobs.audit(job_id=job.id)
            assert record.details["artifacts_deleted"] == 1

    async def test_a_priority_change_that_loses_a_race_with_a_claim_is_still_whole(self) -> None:
        """The new priority is stored, then a worker takes the job: the change is reported,
        audited and announced (not an InvalidState with the change silently kept)."""

        class ClaimAfterWrite(MemoryStore):
            async def position(self, job_id: str) -> int | None:
                # A worker claims the job between the write and the position lookup.
                now = datetime(2030, 1, 1, tzinfo=UTC)
                await self.claim_many(now=now, worker_id="w", lease_until=now, kinds=None, limit=1)
                return await super().position(job_id)

        jobs = JobManager(ClaimAfterWrite(), sweep_interval=None, concurrency=0)
        jobs.register("noop", noop)
        async with jobs, jobs.subscribe() as events:
            job = await jobs.submit("noop")
            new, position = await jobs.set_priority(job.id, 9)
            assert (new.priority, position) == (9, 1)
            assert (await jobs.get(job.id)).priority == 9
            [record] = await jobs.audit(job_id=job.id)
            assert record.action == "set_priority"
            seen = [await events.__anext__() for _ in range(2)]
            assert [e.type for e in seen] == ["submitted", "priority_changed"]


class TestUrls:
    @pytest.mark.parametrize(
        ("path", "expected"),
        [("jobs.db", "sqlite:///jobs.db"), ("/var/lib/app/jobs.db", "sqlite:////var/lib/app/jobs.db")],
    )
    def test_a_bare_path_as_a_store_url_names_the_url_to_use(self, path: str, expected: str) -> None:
        """The error shows the right URL (three slashes relative, four absolute)."""
        from jobkit.stores import open_store

        with pytest.raises(InvalidInput, match="use " + expected.replace(".", r"\.")):
            open_store(path)

    @pytest.mark.parametrize(
        ("path", "expected"), [("artifacts", "file://artifacts"), ("/srv/artifacts", "file:///srv/artifacts")]
    )
    def test_a_bare_path_as_a_blob_url_names_the_url_to_use(self, path: str, expected: str) -> None:
        from jobkit.blobs import open_blobs

        with pytest.raises(InvalidInput, match="use " + expected):
            open_blobs(path)

    def test_the_documented_urls_mean_what_the_docs_say(self, tmp_path: Path) -> None:
        """sqlite:////abs and file:///abs are absolute; sqlite:///rel and file://rel relative."""
        from jobkit.blobs import FileBlobStore, open_blobs
        from jobkit.stores import open_store

        absolute = open_store(f"sqlite:///{tmp_path}/jobs.db")
        assert isinstance(absolute, SQLiteStore)
        assert absolute.path == f"{tmp_path}/jobs.db"
        relative = open_store("sqlite:///jobs.db")
        assert isinstance(relative, SQLiteStore)
        assert relative.path == "jobs.db"
        blobs = open_blobs(f"file://{tmp_path}/artifacts")
        assert isinstance(blobs, FileBlobStore)
        assert str(blobs.root) == f"{tmp_path}/artifacts"


class TestSymlinkedPrefix:
    async def test_deleting_a_job_never_touches_another_jobs_files_through_a_symlink(
        self, tmp_path: Path
    ) -> None:
        """jobs/A made a symlink to jobs/B: listing A shows nothing, deleting A removes only the
        link, and B keeps its artifacts."""
        import os

        from jobkit.blobs import FileBlobStore

        blobs = FileBlobStore(tmp_path / "artifacts")
        jobs = JobManager(MemoryStore(), blobs, sweep_interval=None)

        @jobs.handler("write")
        async def write(ctx: JobContext, payload: Any) -> None:
            await ctx.put_artifact("data.bin", payload.encode())

        async with jobs:
            a = await jobs.submit("write", "a")
            b = await jobs.submit("write", "b")
            for job in (a, b):
                await jobs.wait(job.id, timeout=10)
            folder_a = tmp_path / "artifacts" / "jobs" / a.id
            (folder_a / "data.bin").unlink()
            folder_a.rmdir()
            os.symlink(tmp_path / "artifacts" / "jobs" / b.id, folder_a)
            assert await jobs.artifacts(a.id) == []
            await jobs.delete(a.id)
            assert not os.path.lexists(folder_a)
            assert await jobs.artifacts(b.id) == ["data.bin"]
            assert await jobs.read_artifact(b.id, "data.bin") == b"b"


class TestRequestBodies:
    def test_flask_a_deeply_nested_body_is_422_not_500(self) -> None:
        import flask

        from jobkit import BlockingJobManager
        from jobkit.integrations.flask import job_blueprint

        jobs = BlockingJobManager(sweep_interval=None, concurrency=0)
        jobs.register("noop", noop)
        app = flask.Flask(__name__)
        app.register_blueprint(job_blueprint(jobs), url_prefix="/api")
        client = app.test_client()
        deep = b'{"kind": "noop", "payload": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        huge_reason = b'{"reason": "' + b"x" * 20_000_000 + b'"}'
        with jobs:
            response = client.post("/api/jobs", data=deep, content_type="application/json")
            assert response.status_code == 422
            assert response.get_json()["error"]["code"] == "invalid_input"
            job = jobs.submit("noop")
            response = client.post(
                f"/api/jobs/{job.id}/cancel", data=huge_reason, content_type="application/json"
            )
            assert response.status_code == 413  # payload_too_large (an InvalidInput)
            assert "at most" in response.get_json()["error"]["message"]
            assert jobs.get(job.id).status == "pending"

    async def test_fastapi_a_huge_cancel_reason_is_refused_before_it_is_read(self) -> None:
        import httpx
        from fastapi import FastAPI

        from jobkit.integrations.fastapi import install_error_handlers, job_router

        jobs = JobManager(sweep_interval=None, concurrency=0)
        jobs.register("noop", noop)
        app = FastAPI()
        install_error_handlers(app)
        app.include_router(job_router(jobs), prefix="/api")
        transport = httpx.ASGITransport(app)
        async with jobs, httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            job = await jobs.submit("noop")
            body = b'{"reason": "' + b"x" * 2_000_000 + b'"}'
            response = await client.post(
                f"/api/jobs/{job.id}/cancel", content=body, headers={"Content-Type": "application/json"}
            )
            assert response.status_code == 413  # payload_too_large (an InvalidInput)
            assert "at most" in response.json()["error"]["message"]
            assert (await jobs.get(job.id)).status is JobStatus.PENDING


class TestLeftovers:
    async def test_deleting_a_prefix_removes_temp_files_and_empty_folders(self, tmp_path: Path) -> None:
        """What a killed put (a temp file) or a killed delete (empty folders) left goes too."""
        from jobkit.blobs import FileBlobStore
        from jobkit.blobs._file import TEMP_PREFIX

        root = tmp_path / "artifacts"
        blobs = FileBlobStore(root)
        await blobs.open()
        await blobs.put("jobs/j1/out/result.txt", b"ok")
        stale = root / "jobs" / "j1" / "out" / f"{TEMP_PREFIX}deadbeef"
        stale.write_bytes(b"half a put")
        os.utime(stale, (1_000_000_000, 1_000_000_000))  # left by a process killed long ago
        (root / "jobs" / "j1" / "empty" / "deeper").mkdir(parents=True)
        await blobs.put("jobs/j2/keep.txt", b"other job")
        assert await blobs.delete_prefix("jobs/j1/") == 1
        assert not (root / "jobs" / "j1").exists()
        assert await blobs.list("jobs/") == ["jobs/j2/keep.txt"]

    async def test_a_start_removes_the_scratch_folders_of_killed_processes(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Scratch folders carry their process id; those of dead processes are removed at start."""
        import subprocess
        import sys
        import tempfile

        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
        dead = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"],
            capture_output=True,
            text=True,
            check=True,
        )
        stale = tmp_path / f"jobkit-{dead.stdout.strip()}-0123456789ab-x1"
        (stale / "inside").mkdir(parents=True)
        mine = tmp_path / f"jobkit-{os.getpid()}-0123456789ab-x2"
        mine.mkdir()
        other = tmp_path / "jobkit-not-a-pid"
        other.mkdir()
        async with JobManager(sweep_interval=None, concurrency=0):
            pass
        assert not stale.exists()
        assert mine.exists()
        assert other.exists()
