"""jobkit.client: JobClient and BlockingJobClient against a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import itertools
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import anyio.to_thread
import pytest

from jobkit import (
    Actor,
    ArtifactNotFound,
    BackendError,
    EventType,
    InvalidInput,
    InvalidState,
    JobEvent,
    JobManager,
    JobNotFound,
    JobStatus,
    PermissionDenied,
    Retry,
    Unauthenticated,
)
from jobkit.client import BlockingJobClient, JobClient, NotSupported
from parity import assert_same_api, public_methods
from remote_server import ADMIN, GATES, USER, DroppingProxy, Server, make_app, serve_flask_jobs, serve_jobs
from web_handlers import serve_http

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """One server for the module (see remote_server.py)."""
    with serve_jobs() as found:
        yield found


@pytest.fixture
async def admin(server: Server) -> AsyncIterator[JobClient]:
    async with JobClient(server.url, headers=ADMIN, timeout=30) as client:
        yield client


@pytest.fixture
def gate() -> Iterator[str]:
    name = f"gate-{len(GATES)}"
    GATES[name] = threading.Event()
    yield name
    GATES[name].set()  # whatever the test did, let the job end


async def _event(events: AsyncIterator[JobEvent], job_id: str, *types: EventType) -> JobEvent:
    """The next event of ``job_id`` of one of ``types`` (others skipped)."""
    with anyio.fail_after(30):
        async for event in events:
            if event.job_id == job_id and event.type in types:
                return event
    raise AssertionError("the event stream ended")


#: The JobManager methods a client offers: every public one but registering handlers and sweeping.
MANAGEMENT = set(public_methods(JobManager)) - {"handler", "register", "declare", "sweep"}


class TestParity:
    def test_client_has_the_management_methods_and_parameters_of_job_manager(self) -> None:
        """JobClient: each management method of JobManager, same parameters but `actor`."""
        assert_same_api(
            JobManager, JobClient, only=MANAGEMENT, extra={"me", "known_kinds"}, drop_parameters={"actor"}
        )

    def test_blocking_client_has_the_methods_of_job_client(self) -> None:
        """BlockingJobClient: every public JobClient method, same parameters."""
        assert_same_api(JobClient, BlockingJobClient)

    def test_blocking_client_takes_the_arguments_of_job_client(self) -> None:
        import inspect

        async_params = inspect.signature(JobClient.__init__).parameters
        sync_params = dict(inspect.signature(BlockingJobClient.__init__).parameters)
        assert sync_params.pop("backend").default == "asyncio"
        assert list(async_params.values()) == list(sync_params.values())

    def test_import_names_the_extra(self) -> None:
        """Without httpx, importing jobkit.client says which extra to install."""
        import subprocess
        import sys

        code = (
            "import sys; sys.modules['httpx'] = None\n"
            "try:\n    import jobkit.client\nexcept ImportError as e:\n    print(e)"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
        )
        assert "pip install 'jobkit[client]'" in out.stdout


class TestJobs:
    async def test_submit_get_list_counts(self, admin: JobClient) -> None:
        """A submitted job comes back as a Job with every field decoded."""
        run_at = datetime(2099, 1, 1, 9, 0, tzinfo=UTC)
        job = await admin.submit(
            "parked",
            {"n": 1},
            priority=3,
            ttl=timedelta(hours=1),
            timeout=90,
            labels={"team": "ops"},
            run_at=run_at,
            retry=Retry(attempts=3, backoff=2.0),
            idempotency_key=f"k-{uuid.uuid4()}",
        )
        assert job.status is JobStatus.SCHEDULED
        assert (job.kind, job.payload, job.priority, dict(job.labels)) == (
            "parked",
            {"n": 1},
            3,
            {"team": "ops"},
        )
        assert job.ttl == timedelta(hours=1)
        assert job.timeout == timedelta(seconds=90)
        assert job.run_at == run_at
        assert job.created_at.tzinfo is not None
        assert job.retry is not None
        assert job.retry.attempts == 3
        assert job.max_attempts == 3
        assert job.idempotency_key is not None
        assert await admin.get(job.id) == job
        page = await admin.list(status=["scheduled"], kind="parked", limit=1000)
        assert job.id in {item.id for item in page.items}
        assert all(item.status is JobStatus.SCHEDULED for item in page)
        counts = await admin.counts(kind="parked")
        assert set(counts) == set(JobStatus)
        assert counts[JobStatus.SCHEDULED] >= 1

    async def test_submit_once_tells_new_from_existing(self, admin: JobClient) -> None:
        """The same idempotency key: the existing job and False (the server's 200)."""
        key = f"k-{uuid.uuid4()}"
        first, created = await admin.submit_once("parked", {"x": 1}, idempotency_key=key)
        again, created_again = await admin.submit_once("parked", {"x": 1}, idempotency_key=key)
        assert (created, created_again) == (True, False)
        assert again.id == first.id

    async def test_delay_makes_a_scheduled_job(self, admin: JobClient) -> None:
        job = await admin.submit("parked", delay=timedelta(hours=2))
        assert job.status is JobStatus.SCHEDULED
        assert job.run_at is not None
        assert job.run_at - job.created_at == timedelta(hours=2)

    async def test_list_pages_with_the_cursor(self, admin: JobClient) -> None:
        ids = {(await admin.submit("parked", {"page": i})).id for i in range(3)}
        first = await admin.list(kind="parked", limit=2)
        assert len(first) == 2
        assert first.next_cursor is not None
        second = await admin.list(kind="parked", limit=2, cursor=first.next_cursor)
        seen = [job.id for job in (*first.items, *second.items)]
        assert len(seen) == len(set(seen))
        assert ids & set(seen)

    async def test_cancel_retry_and_delete(self, admin: JobClient) -> None:
        job = await admin.submit("parked")
        cancelled = await admin.cancel(job.id, reason="not needed")
        assert cancelled.status is JobStatus.CANCELLED
        assert cancelled.cancel_reason == "not needed"
        later = datetime.now(UTC) + timedelta(days=1)
        retried = await admin.retry(job.id, run_at=later)
        assert retried.status is JobStatus.SCHEDULED
        await admin.cancel(job.id)
        retried = await admin.retry(job.id)
        assert retried.status is JobStatus.PENDING
        await admin.cancel(job.id)
        await admin.delete(job.id)
        with pytest.raises(JobNotFound) as raised:
            await admin.get(job.id)
        assert raised.value.job_id == job.id

    async def test_position_is_the_place_in_the_queue_and_none_once_not_pending(
        self, admin: JobClient
    ) -> None:
        """position() reads GET /jobs/{id}/position: the manager's answer, None for a job that is
        not pending; another tenant's job is JobNotFound."""
        first = await admin.submit("parked", priority=-1000)
        second = await admin.submit("parked", priority=-1000)
        assert await admin.position(second.id) == (await admin.position(first.id) or 0) + 1
        await admin.cancel(first.id)
        assert await admin.position(first.id) is None
        with pytest.raises(JobNotFound):
            await admin.position("0" * 32)

    async def test_set_priority_returns_the_position(self, admin: JobClient) -> None:
        job = await admin.submit("parked", priority=0)
        changed, position = await admin.set_priority(job.id, 50)
        assert changed.priority == 50
        assert position >= 1

    async def test_artifacts_read_and_delete(self, admin: JobClient) -> None:
        job = await admin.submit("hello", "x")
        done = await admin.wait(job.id, timeout=30)
        assert done.status is JobStatus.COMPLETED
        assert done.result == {"hello": "x"}
        assert await admin.artifacts(job.id) == ["out/report.txt"]
        assert await admin.read_artifact(job.id, "out/report.txt") == b"hello report"
        await admin.delete_artifact(job.id, "out/report.txt")
        with pytest.raises(ArtifactNotFound):
            await admin.read_artifact(job.id, "out/report.txt")
        with pytest.raises(ArtifactNotFound):
            await admin.delete_artifact(job.id, "out/report.txt")
        with pytest.raises(InvalidInput):
            await admin.read_artifact(job.id, "../escape")

    async def test_resolve_a_unique_prefix(self, admin: JobClient) -> None:
        """A whole id or a unique start of it (any case) is the whole id; as JobManager.resolve."""
        job = await admin.submit("parked")
        assert await admin.resolve(job.id) == job.id
        assert await admin.resolve(job.id[:8]) == job.id
        assert await admin.resolve(job.id[:10].upper()) == job.id
        other = "0" if job.id[0] != "0" else "1"
        with pytest.raises(JobNotFound):
            await admin.resolve(other + job.id[1:12])
        with pytest.raises(InvalidInput, match="hexadecimal"):
            await admin.resolve(job.id[:3])
        with pytest.raises(InvalidInput):
            await admin.resolve("")

    async def test_list_and_counts_by_tenant(self, server: Server, admin: JobClient) -> None:
        """tenant= narrows to one tenant; a tenant's actor asking for another is PermissionDenied."""
        async with JobClient(server.url, headers={"X-Actor": "tia", "X-Tenant": "acme"}) as tia:
            job = await tia.submit("parked")
            assert job.tenant == "acme"
            with pytest.raises(PermissionDenied):
                await tia.counts(tenant="globex")
        listed = await admin.list(tenant="acme", limit=1000)
        assert {item.tenant for item in listed} == {"acme"}
        assert job.id in {item.id for item in listed}
        assert (await admin.counts(tenant="acme"))[JobStatus.PENDING] >= 1
        assert [item.id for item in await admin.list(id_prefix=job.id[:12])] == [job.id]

    async def test_me_is_the_actor_the_server_sees(self, server: Server) -> None:
        async with JobClient(server.url, headers={**ADMIN, "X-Tenant": "acme"}) as client:
            assert await client.me() == Actor("ada", tenant="acme", roles=frozenset({"admin"}))


class TestKindsAndSchedules:
    async def test_pause_resume_paused(self, admin: JobClient) -> None:
        await admin.pause("parked")
        assert "parked" in await admin.paused()
        assert (await admin.known_kinds())["parked"] is True
        await admin.resume("parked")
        assert "parked" not in await admin.paused()
        assert {"hello", "boom", "gated", "parked"} <= set(await admin.known_kinds())

    async def test_schedule_schedules_unschedule(self, admin: JobClient) -> None:
        item = await admin.schedule("nightly", "parked", {"a": 1}, cron="0 3 * * *", timezone="Europe/Berlin")
        assert (item.name, item.kind, item.cron, item.timezone) == (
            "nightly",
            "parked",
            "0 3 * * *",
            "Europe/Berlin",
        )
        assert item.next_run_at > datetime.now(UTC)
        assert "nightly" in {s.name for s in await admin.schedules()}
        await admin.unschedule("nightly")
        assert "nightly" not in {s.name for s in await admin.schedules()}
        with pytest.raises(JobNotFound):
            await admin.unschedule("nightly")
        with pytest.raises(InvalidInput):
            await admin.schedule("bad", "parked", cron="61 * * * *")


class TestErrors:
    async def test_no_credentials_is_unauthenticated(self, server: Server) -> None:
        async with JobClient(server.url) as client:
            with pytest.raises(Unauthenticated):
                await client.list()
            with pytest.raises(Unauthenticated):
                async with client.subscribe():
                    pass

    async def test_non_admin_is_permission_denied(self, server: Server, admin: JobClient) -> None:
        job = await admin.submit("parked")
        async with JobClient(server.url, headers=USER) as user:
            with pytest.raises(PermissionDenied):
                await user.pause("parked")
            with pytest.raises(PermissionDenied):
                await user.set_priority(job.id, 5)

    async def test_unknown_job_is_job_not_found(self, admin: JobClient) -> None:
        for call in (admin.get, admin.cancel, admin.retry, admin.delete, admin.artifacts, admin.wait):
            with pytest.raises(JobNotFound):
                await call("0" * 32)

    async def test_not_allowed_in_status_is_invalid_state(self, admin: JobClient, gate: str) -> None:
        async with admin.subscribe() as events:
            job = await admin.submit("gated", gate)
            await _event(events, job.id, EventType.STARTED)
        with pytest.raises(InvalidState, match="cancel"):
            await admin.delete(job.id)
        with pytest.raises(InvalidState):
            await admin.retry(job.id)
        GATES[gate].set()
        assert (await admin.wait(job.id, timeout=30)).status is JobStatus.COMPLETED
        with pytest.raises(InvalidState):
            await admin.cancel(job.id)

    async def test_bad_input_is_invalid_input_and_stores_nothing(self, admin: JobClient) -> None:
        before = await admin.counts()
        bad: list[dict[str, Any]] = [
            {"kind": "no-such-kind"},
            {"kind": "parked", "priority": 10**9},
            {"kind": "parked", "labels": {"a": 1}},
            {"kind": "parked", "payload": float("nan")},
            {"kind": "parked", "payload": object()},
            {"kind": "parked", "run_at": datetime(2030, 1, 1)},  # naive
            {"kind": "parked", "delay": 5, "run_at": datetime(2030, 1, 1, tzinfo=UTC)},
            {"kind": "parked", "ttl": -1},
            {"kind": "parked", "idempotency_key": ""},
        ]
        for arguments in bad:
            with pytest.raises(InvalidInput):
                await admin.submit(**arguments)
        with pytest.raises(InvalidInput):
            await admin.list(status="lost")
        with pytest.raises(InvalidInput):
            await admin.list(limit=0)
        with pytest.raises(InvalidInput):
            await admin.list(cursor="garbage")
        assert await admin.counts() == before

    async def test_a_body_too_large_is_invalid_input(self, admin: JobClient) -> None:
        """The server's 413 payload_too_large is an InvalidInput; nothing is stored."""
        before = await admin.counts()
        with pytest.raises(InvalidInput, match="at most"):
            await admin.submit("parked", "x" * (2 << 20))
        assert await admin.counts() == before

    def test_error_bodies_without_a_code_map_by_status(self) -> None:
        """A proxy's HTML error page or a foreign body: the status decides the class."""
        from jobkit.client._decode import error_from_response

        cases = {401: Unauthenticated, 403: PermissionDenied, 404: JobNotFound, 409: InvalidState}
        for status, cls in cases.items():
            assert type(error_from_response(status, None, what="GET /x")) is cls
        assert type(error_from_response(422, {"detail": []}, what="GET /x")) is InvalidInput
        for status in (500, 502, 503, 504):
            error = error_from_response(status, "<html>", what="GET /jobs")
            assert isinstance(error, BackendError)
            assert str(status) in error.message
        found = error_from_response(
            404, {"error": {"code": "job_not_found", "message": "gone"}}, what="x", job_id="j"
        )
        assert isinstance(found, JobNotFound)
        assert (found.job_id, found.message) == ("j", "gone")

    async def test_server_errors_and_unreachable_servers_are_backend_errors(self) -> None:
        """A 503 (the server's manager is not running) and a refused connection: BackendError."""
        with serve_http(make_app(JobManager(), started=False)) as base:
            async with JobClient(f"{base}/api/v1", headers=ADMIN) as client:
                with pytest.raises(BackendError):
                    await client.list()
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        async with JobClient(f"http://127.0.0.1:{port}/api/v1") as client:
            with pytest.raises(BackendError, match="Cannot reach"):
                await client.get("0" * 32)
            with pytest.raises(BackendError):
                async with client.subscribe():
                    pass

    async def test_missing_routes_and_arguments_are_not_supported(
        self, admin: JobClient, server: Server
    ) -> None:
        """What the REST API lacks is NotSupported, never silently dropped."""
        job = await admin.submit("parked")
        with pytest.raises(NotSupported):
            await admin.get(job.id, include_deleted=True)
        with pytest.raises(NotSupported):
            await admin.list(include_deleted=True)
        with pytest.raises(NotSupported):
            await admin.artifacts(job.id, include_deleted=True)
        with pytest.raises(NotSupported, match="Exception"):
            await admin.submit("parked", retry=Retry(attempts=2, on=(OSError,)))
        with pytest.raises(NotSupported):
            async with admin.subscribe(buffer=10):
                pass
        async with JobClient(server.url.removesuffix("/api/v1"), headers=ADMIN) as wrong:
            with pytest.raises(NotSupported, match="base URL"):
                await wrong.list()

    async def test_audit_of_a_job_and_of_everything(self, admin: JobClient, server: Server) -> None:
        """GET /audit: the records decoded (who, what, when); admins only."""
        job = await admin.submit("parked")
        await admin.cancel(job.id, reason="audit me")
        [record] = await admin.audit(job.id)
        assert (record.action, record.actor_id, record.job_id) == ("cancel", "ada", job.id)
        assert record.details["reason"] == "audit me"
        assert record.at.tzinfo is not None
        assert job.id in {item.job_id for item in await admin.audit(limit=1000)}
        async with JobClient(server.url, headers=USER) as user:
            with pytest.raises(PermissionDenied):
                await user.audit()

    async def test_outside_async_with_says_what_to_do(self, server: Server) -> None:
        client = JobClient(server.url)
        with pytest.raises(Exception, match="async with"):
            await client.list()
        with pytest.raises(InvalidInput):
            JobClient("ftp://example.com")


class TestEvents:
    async def test_subscribe_yields_the_jobs_events(self, admin: JobClient) -> None:
        async with admin.subscribe() as events:
            job = await admin.submit("hello", 1)
            seen = []
            with anyio.fail_after(30):
                async for event in events:
                    if event.job_id == job.id:
                        seen.append(event)
                        if event.type is EventType.COMPLETED:
                            break
        types = [event.type for event in seen]
        assert types[0] is EventType.SUBMITTED
        assert types[-1] is EventType.COMPLETED
        assert EventType.STARTED in types
        progress = next(event for event in seen if event.type is EventType.PROGRESS)
        assert progress.data["progress"] == 0.5
        assert progress.at.tzinfo is not None
        assert seen[-1].status is JobStatus.COMPLETED

    async def test_subscribe_to_an_unknown_job_is_job_not_found(self, admin: JobClient) -> None:
        with pytest.raises(JobNotFound):
            async with admin.subscribe(job_id="0" * 32):
                pass

    async def test_subscribe_reconnects_after_the_stream_drops(
        self, server: Server, admin: JobClient
    ) -> None:
        """The connection is cut: the stream opens again by itself, says that events may have
        been missed (overflow, reconnected), and goes on with new events."""
        with DroppingProxy(server.port) as proxy:
            url = server.url.replace(f":{server.port}/", f":{proxy.port}/")
            async with JobClient(url, headers=ADMIN) as watcher, watcher.subscribe() as events:
                first = await admin.submit("hello", "before")
                await _event(events, first.id, EventType.SUBMITTED)
                proxy.drop()
                overflow = await _event(events, "", EventType.OVERFLOW)
                assert overflow.data == {"missed": None, "reconnected": True}
                assert proxy.connections == 2
                second = await admin.submit("hello", "after")
                assert (await _event(events, second.id, EventType.COMPLETED)).status is JobStatus.COMPLETED

    async def test_a_stream_the_server_ends_at_once_is_retried_after_its_delay(self) -> None:
        """A server that ends every stream at once (shutting down, say) is asked again only
        after the delay its ``retry:`` field gives, never in a tight loop; each new stream
        says events may have been missed."""
        from fastapi import FastAPI
        from fastapi.responses import StreamingResponse

        opened: list[float] = []
        app = FastAPI()

        @app.get("/api/v1/events")
        async def events() -> StreamingResponse:
            opened.append(anyio.current_time())

            async def body() -> AsyncIterator[bytes]:
                yield b"retry: 200\n: connected\n\n"

            return StreamingResponse(body(), media_type="text/event-stream")

        with serve_http(app) as base:
            async with JobClient(f"{base}/api/v1") as client, client.subscribe() as stream:
                with anyio.fail_after(30):
                    for _ in range(3):
                        event = await anext(stream)
                        assert event.type is EventType.OVERFLOW
                        assert event.data["reconnected"] is True
        assert len(opened) == 4
        gaps = [later - earlier for earlier, later in itertools.pairwise(opened)]
        assert min(gaps) >= 0.15, gaps


class TestWait:
    async def test_wait_on_a_job_finished_before_the_call(self, admin: JobClient) -> None:
        job = await admin.submit("boom")
        first = await admin.wait(job.id, timeout=30)
        assert first.status is JobStatus.FAILED
        assert "boom" in (first.error or "")
        assert await admin.wait(job.id, timeout=30) == first

    async def test_wait_on_a_job_that_finishes_after_the_call(
        self, admin: JobClient, server: Server, gate: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The gate opens once the waiter's event stream is open on the server."""
        job = await admin.submit("gated", gate)
        subscribed = threading.Event()
        subscribe = server.manager.subscribe

        def spy(**kwargs: Any) -> Any:
            if kwargs.get("job_id") == job.id:
                subscribed.set()
            return subscribe(**kwargs)

        monkeypatch.setattr(server.manager, "subscribe", spy)
        result: list[Any] = []
        async with anyio.create_task_group() as tg:

            async def waiter() -> None:
                result.append(await admin.wait(job.id, timeout=30))

            tg.start_soon(waiter)
            assert await anyio.to_thread.run_sync(subscribed.wait, 30)
            GATES[gate].set()
        assert result[0].status is JobStatus.COMPLETED
        assert result[0].result == "released"

    async def test_wait_times_out(self, admin: JobClient, gate: str) -> None:
        job = await admin.submit("gated", gate)
        with pytest.raises(TimeoutError):
            await admin.wait(job.id, timeout=0.5)

    async def test_wait_on_a_cancelled_job(self, admin: JobClient, gate: str) -> None:
        result: list[Any] = []
        async with anyio.create_task_group() as tg, admin.subscribe() as events:
            job = await admin.submit("gated", gate)

            async def waiter() -> None:
                result.append(await admin.wait(job.id, timeout=30))

            tg.start_soon(waiter)
            await _event(events, job.id, EventType.STARTED)
            await admin.cancel(job.id, reason="stop")
        assert result[0].status is JobStatus.CANCELLED


@pytest.fixture(scope="module")
def flask_url() -> Iterator[str]:
    with serve_flask_jobs() as url:
        yield url


class TestFlaskServer:
    """The Flask blueprint serves the same routes and bodies: the client works against it too."""

    async def test_manage_wait_and_events(self, flask_url: str) -> None:
        async with JobClient(flask_url, headers=ADMIN) as client:
            async with client.subscribe() as events:
                job = await client.submit("hello", "flask")
                done = await _event(events, job.id, EventType.COMPLETED)
            assert done.status is JobStatus.COMPLETED
            finished = await client.wait(job.id, timeout=30)
            assert finished.result == {"hello": "flask"}
            assert await client.resolve(job.id[:8]) == job.id
            assert await client.read_artifact(job.id, "out/report.txt") == b"hello report"
            assert (await client.counts())[JobStatus.COMPLETED] >= 1
            with pytest.raises(InvalidState):
                await client.cancel(job.id)
            with pytest.raises(JobNotFound):
                await client.get("0" * 32)
            with pytest.raises(InvalidInput):
                await client.submit("no-such-kind")
        async with JobClient(flask_url) as anonymous:
            with pytest.raises(Unauthenticated):
                await anonymous.list()

    async def test_wait_for_a_running_job(self, flask_url: str, gate: str) -> None:
        async with JobClient(flask_url, headers=ADMIN) as client:
            result: list[Any] = []
            async with anyio.create_task_group() as tg, client.subscribe() as events:
                job = await client.submit("gated", gate)

                async def waiter() -> None:
                    result.append(await client.wait(job.id, timeout=30))

                tg.start_soon(waiter)
                await _event(events, job.id, EventType.STARTED)
                await client.cancel(job.id)
        assert result[0].status is JobStatus.CANCELLED


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
class TestBlockingClient:
    def test_manage_wait_and_subscribe_from_sync_code(self, server: Server, backend: str) -> None:
        with BlockingJobClient(server.url, headers=ADMIN, backend=backend) as jobs:
            assert jobs.me() == Actor("ada", roles=frozenset({"admin"}))
            with jobs.subscribe() as events:
                job = jobs.submit("hello", "sync")
                for event in events:
                    if event.job_id == job.id and event.type is EventType.COMPLETED:
                        break
            assert jobs.wait(job.id, timeout=30).result == {"hello": "sync"}
            assert jobs.read_artifact(job.id, "out/report.txt") == b"hello report"
            with pytest.raises(JobNotFound):
                jobs.get("0" * 32)

    def test_calls_outside_with_say_what_to_do(self, server: Server, backend: str) -> None:
        jobs = BlockingJobClient(server.url, backend=backend)
        with pytest.raises(Exception, match="with BlockingJobClient"):
            jobs.list()
