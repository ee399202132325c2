"""The FastAPI integration: routes, bodies, status codes, error bodies, OpenAPI and live events."""

from __future__ import annotations

import codecs
import importlib
import json
import math
import signal
import socket
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any

import anyio
import httpx
import pytest
import uvicorn
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream
from fastapi import FastAPI, Header, HTTPException

from jobkit import DeletePolicy, InvalidInput, JobContext, JobManager, JobNotFound, JobStatus
from jobkit.blobs import MemoryBlobStore
from jobkit.integrations._http import AS_HOST
from jobkit.integrations.fastapi import (
    console_router,
    end_event_streams,
    install_error_handlers,
    job_router,
    lifespan,
)
from web_handlers import (
    HANDLERS,
    ServerProcess,
    header_actor,
    serve_http,
    status_in_store,
    stop_while_watching,
)

pytestmark = pytest.mark.anyio

BASE = "http://testserver/api/v1"
ALICE = {"X-Actor": "alice", "X-Tenant": "acme"}
ALICE_ADMIN = {"X-Actor": "root", "X-Tenant": "acme", "X-Roles": "ops, admin"}
BOB = {"X-Actor": "bob", "X-Tenant": "globex"}
#: What a same-site script sends, so body-less POSTs are accepted (see TestCrossSite).
SAME_SITE = {"X-Requested-With": "tests"}

SHUTDOWN_APP = Path(__file__).with_name("web_shutdown_app.py")

JOB_FIELDS = [
    "id", "kind", "status", "payload", "tenant", "priority", "progress", "progress_message", "result",
    "error", "cancel_reason", "created_at", "started_at", "finished_at", "expires_at", "deleted_at",
    "version", "attempts", "max_attempts", "labels", "ttl", "timeout", "run_at", "idempotency_key",
    "retry",
]  # fmt: skip


# -- the app under test ------------------------------------------------------------------


def make_jobs(**kwargs: Any) -> JobManager:
    kwargs.setdefault("sweep_interval", None)
    jobs = JobManager(**kwargs)
    for kind, handler in HANDLERS.items():
        jobs.register(kind, handler)
    return jobs


def make_app(jobs: JobManager, **router_options: Any) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(job_router(jobs, actor=header_actor, **router_options), prefix="/api/v1")
    return app


@asynccontextmanager
async def serve(jobs: JobManager, **router_options: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The manager running and a client of its app, in process."""
    app = make_app(jobs, **router_options)
    async with (
        jobs,
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=BASE, headers=SAME_SITE) as client,
    ):
        yield client


async def submit(client: httpx.AsyncClient, kind: str = "echo", headers: Any = None, **body: Any) -> Any:
    response = await client.post("/jobs", json={"kind": kind, **body}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def submit_running(client: httpx.AsyncClient, jobs: JobManager, headers: Any = None) -> str:
    """A `block` job, returned once a worker runs it."""
    async with jobs.subscribe() as events:
        job_id = (await submit(client, "block", headers))["id"]
        with anyio.fail_after(5):
            async for event in events:
                if event.job_id == job_id and event.type == "started":
                    return job_id
    raise AssertionError("the job never started")


def assert_error(response: httpx.Response, status: int, code: str, message: str | None = None) -> None:
    """The response is an error with exactly the jobkit error body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    if message is not None:
        assert body["error"]["message"] == message


# -- a streaming transport for server-sent events ------------------------------------------


class _StreamedBody(httpx.AsyncByteStream):
    """The body as the app sends it. A plain async iterator, not a generator: a test may
    stop reading an endless stream at any point without leaving a generator behind."""

    def __init__(
        self, chunks: MemoryObjectReceiveStream[bytes], disconnected: anyio.Event, done: anyio.Event
    ) -> None:
        self._chunks = chunks
        self._disconnected = disconnected
        self._done = done

    def __aiter__(self) -> _StreamedBody:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._chunks.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        """The client hangs up: the app is told, and must finish (bounded by the caller)."""
        self._disconnected.set()
        await self._done.wait()
        self._chunks.close()


class StreamingASGITransport(httpx.AsyncBaseTransport):
    """Like httpx.ASGITransport, but hands the body over while the app is still sending it
    (httpx's transport buffers the whole body, which never ends for an event stream).
    The app runs in ``task_group``; closing the response sends it ``http.disconnect``."""

    def __init__(self, app: FastAPI, task_group: TaskGroup) -> None:
        self.app = app
        self.task_group = task_group

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        body = b"".join([part async for part in request.stream])
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "headers": [(key.lower(), value) for key, value in request.headers.raw],
            "scheme": request.url.scheme,
            "path": request.url.path,
            "raw_path": request.url.raw_path.split(b"?")[0],
            "query_string": request.url.query,
            "server": (request.url.host, request.url.port),
            "client": ("127.0.0.1", 123),
            "root_path": "",
        }
        send_chunk, chunks = anyio.create_memory_object_stream[bytes](math.inf)
        head: dict[str, Any] = {}
        started, disconnected, done = anyio.Event(), anyio.Event(), anyio.Event()
        request_sent = False

        async def receive() -> dict[str, Any]:
            nonlocal request_sent
            if not request_sent:
                request_sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                head.update(status=message["status"], headers=message.get("headers", []))
                started.set()
            elif message["type"] == "http.response.body":
                if message.get("body"):
                    send_chunk.send_nowait(message["body"])
                if not message.get("more_body", False):
                    send_chunk.close()

        async def run_app() -> None:
            try:
                await self.app(scope, receive, send)
            finally:
                send_chunk.close()
                started.set()
                done.set()

        self.task_group.start_soon(run_app)
        await started.wait()
        if "status" not in head:
            chunks.close()
            raise RuntimeError("the app ended without a response")
        body = _StreamedBody(chunks, disconnected, done)
        return httpx.Response(
            head["status"], headers=head["headers"], stream=body, extensions={"asgi_body": body}
        )


@asynccontextmanager
async def streaming_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        anyio.create_task_group() as tg,
        httpx.AsyncClient(
            transport=StreamingASGITransport(app, tg), base_url=BASE, headers=SAME_SITE
        ) as client,
    ):
        yield client


class Frame:
    """One server-sent event frame: its event type, decoded data, and comment lines."""

    def __init__(self, text: str) -> None:
        self.event: str | None = None
        self.data: Any = None
        self.comments: list[str] = []
        self.retry: int | None = None
        for line in text.split("\n"):
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "":
                self.comments.append(value)
            elif field == "event":
                self.event = value
            elif field == "data":
                self.data = json.loads(value)
            elif field == "retry":
                self.retry = int(value)

    def __repr__(self) -> str:
        return f"Frame(event={self.event!r}, data={self.data!r}, comments={self.comments!r})"


class EventReader:
    """Reads an event stream frame by frame, as the frames arrive."""

    def __init__(self, response: httpx.Response) -> None:
        # In process, read the transport's body directly; httpx's own iterators are async
        # generators, which trio reports when a test stops reading an endless stream.
        self._source: AsyncIterator[bytes] = response.extensions.get("asgi_body") or response.aiter_bytes()
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._buffer = ""
        self._ended = False

    async def next(self) -> Frame | None:
        """The next frame, or None once the stream has ended."""
        while "\n\n" not in self._buffer:
            if self._ended:
                assert self._buffer == "", "the stream ended inside a frame"
                return None
            try:
                self._buffer += self._decoder.decode(await anext(self._source))
            except StopAsyncIteration:
                self._ended = True
        frame, self._buffer = self._buffer.split("\n\n", 1)
        return Frame(frame)

    async def first(self) -> Frame:
        """The opening frame, sent once the subscription is live."""
        frame = await self.next()
        assert frame is not None
        assert (frame.retry, frame.comments) == (3000, ["connected"])
        return frame

    async def until(self, job_id: str, last: str) -> list[Frame]:
        """The event frames (comments skipped) up to event ``last`` of ``job_id``."""
        seen = []
        while (frame := await self.next()) is not None:
            if frame.event is None:
                continue
            seen.append(frame)
            if frame.data["job_id"] == job_id and frame.event == last:
                return seen
        raise AssertionError(f"the stream ended before {last} of {job_id}: {seen}")

    async def rest(self) -> list[Frame]:
        """Every frame up to the end of the stream."""
        frames = []
        while (frame := await self.next()) is not None:
            frames.append(frame)
        return frames


# -- the tests ---------------------------------------------------------------------------


class TestSubmit:
    async def test_submit_returns_201_and_the_job_with_every_field(self) -> None:
        """POST /jobs stores a pending job of the actor's tenant and returns all Job fields."""
        async with serve(make_jobs(concurrency=0)) as client:
            response = await client.post(
                "/jobs",
                json={
                    "kind": "echo",
                    "payload": {"n": [1, 2.5, None, "x"]},
                    "priority": 7,
                    "ttl": 90,
                    "timeout": 1.5,
                    "max_attempts": 3,
                    "labels": {"team": "data"},
                },
                headers=ALICE,
            )
        assert response.status_code == 201
        assert response.headers["content-type"] == "application/json"
        job = response.json()
        assert list(job) == JOB_FIELDS
        assert job["kind"] == "echo"
        assert job["status"] == "pending"
        assert job["payload"] == {"n": [1, 2.5, None, "x"]}
        assert job["tenant"] == "acme"
        assert (job["priority"], job["max_attempts"], job["attempts"], job["version"]) == (7, 3, 0, 1)
        assert (job["ttl"], job["timeout"]) == (90.0, 1.5)
        assert job["labels"] == {"team": "data"}
        assert datetime.fromisoformat(job["created_at"]).utcoffset() == UTC.utcoffset(None)
        assert job["started_at"] is job["finished_at"] is job["deleted_at"] is None

    async def test_defaults(self) -> None:
        """Only kind is required; the host's job has no tenant and the documented defaults."""
        async with serve(make_jobs(concurrency=0)) as client:
            job = await submit(client)
        assert job["payload"] is None
        assert job["tenant"] is None
        assert (job["priority"], job["max_attempts"], job["ttl"], job["timeout"]) == (0, 1, None, None)
        assert job["labels"] == {}

    @pytest.mark.parametrize(
        "body",
        [
            {"payload": 1},
            {"kind": "echo", "unknown": 1},
            {"kind": ""},
            {"kind": 5},
            {"kind": "echo", "priority": "5"},
            {"kind": "echo", "priority": True},
            {"kind": "echo", "priority": 10**7},
            {"kind": "echo", "ttl": -1},
            {"kind": "echo", "timeout": 0},
            {"kind": "echo", "max_attempts": 0},
            {"kind": "echo", "labels": {"a": 1}},
            {"kind": "echo", "labels": {"": "x"}},
            {"kind": "no-such-kind"},
            {"kind": "   "},
            [],
            None,
        ],
    )
    async def test_bad_bodies_are_422_invalid_input(self, body: Any) -> None:
        """A malformed body, a bad value or an unknown kind is 422 invalid_input; nothing is stored."""
        jobs = make_jobs(concurrency=0)
        async with serve(jobs) as client:
            response = await client.post("/jobs", json=body)
            assert_error(response, 422, "invalid_input")
            assert len(await jobs.list()) == 0

    async def test_invalid_json_is_422(self) -> None:
        """A body that is not JSON is 422 invalid_input."""
        async with serve(make_jobs(concurrency=0)) as client:
            response = await client.post(
                "/jobs", content=b'{"kind": ', headers={"Content-Type": "application/json"}
            )
        assert_error(response, 422, "invalid_input")

    async def test_a_body_that_is_not_utf8_is_422(self) -> None:
        """A JSON body that cannot even be decoded is 422 invalid_input, not a bare 400."""
        async with serve(make_jobs(concurrency=0)) as client:
            response = await client.post(
                "/jobs", content=b'{"kind": "\xff"}', headers={"Content-Type": "application/json"}
            )
        assert_error(response, 422, "invalid_input")

    async def test_validation_message_names_the_field(self) -> None:
        """The 422 message says which field is wrong."""
        async with serve(make_jobs(concurrency=0)) as client:
            response = await client.post("/jobs", json={"kind": "echo", "priority": "high"})
        assert "priority" in response.json()["error"]["message"]


class TestRead:
    async def test_get_returns_the_job(self) -> None:
        """GET /jobs/{id} returns the same job JSON as the submit, updated as it runs."""
        jobs = make_jobs()
        async with serve(jobs) as client:
            created = await submit(client, payload={"a": 1}, headers=ALICE)
            await jobs.wait(created["id"], timeout=5)
            response = await client.get(f"/jobs/{created['id']}", headers=ALICE)
        assert response.status_code == 200
        job = response.json()
        assert list(job) == JOB_FIELDS
        assert job["id"] == created["id"]
        assert job["status"] == "completed"
        assert job["result"] == {"a": 1}
        assert job["progress"] == 1.0
        assert job["started_at"] is not None
        assert job["finished_at"] is not None
        assert job["expires_at"] is not None

    async def test_times_are_utc_whatever_the_clocks_zone(self) -> None:
        """Datetimes travel as ISO 8601 UTC even when the host's clock uses another zone."""
        paris = timezone(timedelta(hours=2))
        jobs = make_jobs(concurrency=0, clock=lambda: datetime(2030, 1, 1, 12, 0, tzinfo=paris))
        async with serve(jobs) as client:
            job = await submit(client)
        assert job["created_at"] == "2030-01-01T10:00:00+00:00"

    async def test_unknown_job_is_404(self) -> None:
        """An unknown id is 404 job_not_found."""
        async with serve(make_jobs()) as client:
            response = await client.get("/jobs/nope")
        assert_error(response, 404, "job_not_found", "Job 'nope' not found.")

    async def test_another_tenants_job_is_404_not_403(self) -> None:
        """Another tenant's job does not exist for the actor: 404, never 403."""
        async with serve(make_jobs(concurrency=0)) as client:
            job = await submit(client, headers=ALICE)
            response = await client.get(f"/jobs/{job['id']}", headers=BOB)
            own = await client.get(f"/jobs/{job['id']}", headers=ALICE)
            host = await client.get(f"/jobs/{job['id']}")
        assert_error(response, 404, "job_not_found", f"Job {job['id']!r} not found.")
        assert own.status_code == host.status_code == 200

    async def test_an_overlong_id_is_422(self) -> None:
        """A job id longer than 200 characters is 422 invalid_input."""
        async with serve(make_jobs()) as client:
            response = await client.get("/jobs/" + "x" * 201)
        assert_error(response, 422, "invalid_input")


class TestList:
    async def test_lists_newest_first_with_the_page_shape(self) -> None:
        """GET /jobs returns {"items": [...], "next_cursor": null}, newest first."""
        async with serve(make_jobs(concurrency=0)) as client:
            ids = [(await submit(client))["id"] for _ in range(3)]
            response = await client.get("/jobs")
        assert response.status_code == 200
        page = response.json()
        assert set(page) == {"items", "next_cursor"}
        assert [job["id"] for job in page["items"]] == ids[::-1]
        assert list(page["items"][0]) == JOB_FIELDS
        assert page["next_cursor"] is None

    async def test_counts_per_status_by_tenant_and_kind(self) -> None:
        """GET /counts: every status, the caller's tenant only, a kind filter; a bad kind is 422."""
        async with serve(make_jobs(concurrency=0)) as client:
            ids = [(await submit(client, headers=ALICE))["id"] for _ in range(2)]
            await submit(client, headers=BOB)
            await client.post(f"/jobs/{ids[0]}/cancel", headers=ALICE)
            alice = (await client.get("/counts", headers=ALICE)).json()["counts"]
            host = await client.get("/counts")
            other_kind = (await client.get("/counts?kind=elsewhere")).json()["counts"]
            bad = await client.get("/counts?kind=")
        assert set(alice) == {status.value for status in JobStatus}
        assert (alice["pending"], alice["cancelled"]) == (1, 1)
        assert host.status_code == 200
        assert host.json() == {"counts": {**dict.fromkeys(alice, 0), "pending": 2, "cancelled": 1}}
        assert sum(other_kind.values()) == 0
        assert_error(bad, 422, "invalid_input")

    async def test_a_tenant_lists_only_its_jobs(self) -> None:
        """An actor with a tenant sees only that tenant's jobs; the host sees all."""
        async with serve(make_jobs(concurrency=0)) as client:
            mine = (await submit(client, headers=ALICE))["id"]
            theirs = (await submit(client, headers=BOB))["id"]
            alice = (await client.get("/jobs", headers=ALICE)).json()
            host = (await client.get("/jobs")).json()
        assert [job["id"] for job in alice["items"]] == [mine]
        assert {job["id"] for job in host["items"]} == {mine, theirs}

    async def test_status_filter_repeats_and_kind_filters(self) -> None:
        """status may be given several times (any of them matches); kind narrows further."""
        jobs = make_jobs(concurrency=0)
        async with serve(jobs) as client:
            first = (await submit(client))["id"]
            second = (await submit(client, "steps"))["id"]
            third = (await submit(client))["id"]
            assert (await client.post(f"/jobs/{first}/cancel")).status_code == 200

            async def ids(query: str) -> list[str]:
                response = await client.get(f"/jobs?{query}")
                assert response.status_code == 200, response.text
                return [job["id"] for job in response.json()["items"]]

            assert await ids("status=cancelled") == [first]
            assert await ids("status=pending") == [third, second]
            assert await ids("status=pending&status=cancelled") == [third, second, first]
            assert await ids("status=running") == []
            assert await ids("status=pending&kind=steps") == [second]
            assert await ids("kind=echo") == [third, first]

    async def test_cursor_paging_visits_every_job_once(self) -> None:
        """Following next_cursor with a limit visits every job exactly once, newest first."""
        async with serve(make_jobs(concurrency=0)) as client:
            ids = [(await submit(client))["id"] for _ in range(7)]
            seen: list[str] = []
            pages = 0
            params: dict[str, Any] = {"limit": 3}
            while True:
                page = (await client.get("/jobs", params=params)).json()
                pages += 1
                assert len(page["items"]) <= 3
                seen += [job["id"] for job in page["items"]]
                if page["next_cursor"] is None:
                    break
                params["cursor"] = page["next_cursor"]
        assert seen == ids[::-1]
        assert pages == 3

    @pytest.mark.parametrize(
        "query",
        [
            "status=bogus",
            "status=pending&status=RUNNING",
            "status=",
            "kind=",
            "limit=0",
            "limit=1001",
            "limit=ten",
            "cursor=zzz",
            "cursor=",
        ],
    )
    async def test_bad_query_is_422(self, query: str) -> None:
        """An unknown status, a limit outside 1..1000 or a malformed cursor is 422 invalid_input."""
        async with serve(make_jobs()) as client:
            response = await client.get(f"/jobs?{query}")
        assert_error(response, 422, "invalid_input")

    async def test_bad_cursor_message(self) -> None:
        """A malformed cursor says to pass next_cursor back unchanged."""
        async with serve(make_jobs()) as client:
            response = await client.get("/jobs", params={"cursor": "not-a-cursor"})
        assert_error(
            response,
            422,
            "invalid_input",
            "Malformed cursor: pass the next_cursor of a previous page unchanged.",
        )


class TestCancel:
    async def test_cancel_a_pending_job_with_a_reason(self) -> None:
        """POST /jobs/{id}/cancel cancels a pending job at once and keeps the reason."""
        async with serve(make_jobs(concurrency=0)) as client:
            job = await submit(client, headers=ALICE)
            response = await client.post(f"/jobs/{job['id']}/cancel", json={"reason": "typo"}, headers=ALICE)
        assert response.status_code == 200
        cancelled = response.json()
        assert list(cancelled) == JOB_FIELDS
        assert (cancelled["status"], cancelled["cancel_reason"]) == ("cancelled", "typo")
        assert cancelled["finished_at"] is not None

    async def test_the_body_is_optional(self) -> None:
        """A cancel without a body has no reason."""
        async with serve(make_jobs(concurrency=0)) as client:
            job = await submit(client)
            response = await client.post(f"/jobs/{job['id']}/cancel")
        assert response.status_code == 200
        assert (response.json()["status"], response.json()["cancel_reason"]) == ("cancelled", None)

    async def test_cancel_a_running_job(self) -> None:
        """A running job goes to cancelling, then ends cancelled once its handler stops."""
        jobs = make_jobs()
        async with serve(jobs) as client:
            job_id = await submit_running(client, jobs)
            response = await client.post(f"/jobs/{job_id}/cancel", json={"reason": "stop"})
            assert response.status_code == 200
            assert response.json()["status"] == "cancelling"
            done = await jobs.wait(job_id, timeout=5)
            assert (await client.get(f"/jobs/{job_id}")).json()["status"] == "cancelled"
        assert done.cancel_reason == "stop"

    async def test_cancel_a_finished_job_is_409(self) -> None:
        """Cancelling a finished job is 409 invalid_state, saying what to do instead."""
        jobs = make_jobs()
        async with serve(jobs) as client:
            job = await submit(client)
            await jobs.wait(job["id"], timeout=5)
            response = await client.post(f"/jobs/{job['id']}/cancel")
        assert_error(response, 409, "invalid_state")
        assert "Delete it instead" in response.json()["error"]["message"]

    async def test_cancel_another_tenants_job_is_404(self) -> None:
        """Another tenant cannot cancel (nor learn of) the job: 404, and it stays pending."""
        jobs = make_jobs(concurrency=0)
        async with serve(jobs) as client:
            job = await submit(client, headers=ALICE)
            response = await client.post(f"/jobs/{job['id']}/cancel", headers=BOB)
            assert (await jobs.get(job["id"])).status == "pending"
        assert_error(response, 404, "job_not_found")

    @pytest.mark.parametrize("body", [{"why": "x"}, {"reason": 5}, [], "stop"])
    async def test_bad_cancel_body_is_422(self, body: Any) -> None:
        """A cancel body other than {"reason": str | null} is 422."""
        jobs = make_jobs(concurrency=0)
        async with serve(jobs) as client:
            job = await submit(client)
            response = await client.post(f"/jobs/{job['id']}/cancel", json=body)
            assert (await jobs.get(job["id"])).status == "pending"
        assert_error(response, 422, "invalid_input")


class TestDelete:
    async def test_delete_a_finished_job(self) -> None:
        """DELETE /jobs/{id} of a finished job is 204 with no body; the job is then gone."""
        jobs = make_jobs()
        async with serve(jobs) as client:
            job = await submit(client, payload={"artifacts": {"out.txt": "x"}}, headers=ALICE)
            await jobs.wait(job["id"], timeout=5)
            response = await client.delete(f"/jobs/{job['id']}", headers=ALICE)
            after = await client.get(f"/jobs/{job['id']}", headers=ALICE)
            artifacts = await client.get(f"/jobs/{job['id']}/artifacts")
        assert response.status_code == 204
        assert response.content == b""
        assert_error(after, 404, "job_not_found")
        assert_error(artifacts, 404, "job_not_found")

    async def test_delete_a_running_job_is_409_with_the_advice(self) -> None:
        """Deleting a running job is 409 'Cannot delete running job. Use cancel instead.'"""
        jobs = make_jobs()
        async with serve(jobs) as client:
            job_id = await submit_running(client, jobs)
            response = await client.delete(f"/jobs/{job_id}")
            assert (await client.get(f"/jobs/{job_id}")).json()["status"] == "running"
        assert_error(response, 409, "invalid_state", "Cannot delete running job. Use cancel instead.")

    async def test_delete_a_cancelling_job_is_409(self) -> None:
        """Deleting a job whose cancellation is in progress is 409 with its own message."""
        jobs = make_jobs()
        gate = anyio.Event()

        async def stubborn(ctx: JobContext, payload: Any) -> None:
            await gate.wait()

        jobs.register("stubborn", stubborn)
        async with serve(jobs) as client, jobs.subscribe() as events:
            job = await submit(client, "stubborn")
            with anyio.fail_after(5):
                async for event in events:
                    if event.type == "started":
                        break
            await client.post(f"/jobs/{job['id']}/cancel")
            response = await client.delete(f"/jobs/{job['id']}")
            gate.set()
            await jobs.wait(job["id"], timeout=5)
        assert_error(response, 409, "invalid_state", "Cannot delete job while cancellation is in progress.")

    async def test_delete_another_tenants_job_is_404(self) -> None:
        """Another tenant's delete is 404 and the job survives."""
        jobs = make_jobs()
        async with serve(jobs) as client:
            job = await submit(client, headers=ALICE)
            await jobs.wait(job["id"], timeout=5)
            response = await client.delete(f"/jobs/{job['id']}", headers=BOB)
            assert (await client.get(f"/jobs/{job['id']}", headers=ALICE)).status_code == 200
        assert_error(response, 404, "job_not_found")


class TestPriority:
    async def test_admin_changes_priority_and_gets_the_position(self) -> None:
        """PATCH /jobs/{id}/priority by an admin returns {"job", "position"}; 1 runs next."""
        async with serve(make_jobs(concurrency=0)) as client:
            first = await submit(client, headers=ALICE)
            second = await submit(client, headers=ALICE)
            response = await client.patch(
                f"/jobs/{second['id']}/priority", json={"priority": 5}, headers=ALICE_ADMIN
            )
            first_now = await client.get(f"/jobs/{first['id']}")
        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"job", "position"}
        assert list(body["job"]) == JOB_FIELDS
        assert (body["job"]["id"], body["job"]["priority"], body["position"]) == (second["id"], 5, 1)
        assert first_now.json()["priority"] == 0

    async def test_the_trusted_host_may_change_priority(self) -> None:
        """Without an actor (the host itself) the admin action is allowed."""
        async with serve(make_jobs(concurrency=0)) as client:
            job = await submit(client)
            response = await client.patch(f"/jobs/{job['id']}/priority", json={"priority": -3})
        assert response.status_code == 200
        assert (response.json()["job"]["priority"], response.json()["position"]) == (-3, 1)

    async def test_non_admin_is_403(self) -> None:
        """A non-admin actor of the job's own tenant is 403 forbidden; nothing changes."""
        jobs = make_jobs(concurrency=0)
        async with serve(jobs) as client:
            job = await submit(client, headers=ALICE)
            response = await client.patch(f"/jobs/{job['id']}/priority", json={"priority": 5}, headers=ALICE)
            assert (await jobs.get(job["id"])).priority == 0
        assert_error(response, 403, "forbidden")
        assert "'alice' is not allowed" in response.json()["error"]["message"]

    async def test_another_tenants_admin_gets_404_before_403(self) -> None:
        """The tenant check comes first: another tenant's admin gets 404, not 403."""
        async with serve(make_jobs(concurrency=0)) as client:
            job = await submit(client, headers=BOB)
            response = await client.patch(
                f"/jobs/{job['id']}/priority", json={"priority": 5}, headers=ALICE_ADMIN
            )
        assert_error(response, 404, "job_not_found")

    @pytest.mark.parametrize(
        "body",
        [
            {},
            {"priority": "5"},
            {"priority": 1.5},
            {"priority": True},
            {"priority": 10**9},
            {"priority": None},
            {"priority": 1, "x": 2},
        ],
    )
    async def test_bad_priority_is_422(self, body: Any) -> None:
        """A missing, non-integer, out-of-range priority or an extra field is 422."""
        async with serve(make_jobs(concurrency=0)) as client:
            job = await submit(client)
            response = await client.patch(f"/jobs/{job['id']}/priority", json=body)
        assert_error(response, 422, "invalid_input")

    async def test_priority_of_a_finished_job_is_409(self) -> None:
        """Only a pending job's priority can change: 409 otherwise."""
        jobs = make_jobs()
        async with serve(jobs) as client:
            job = await submit(client)
            await jobs.wait(job["id"], timeout=5)
            response = await client.patch(f"/jobs/{job['id']}/priority", json={"priority": 5})
        assert_error(response, 409, "invalid_state")


class TestArtifacts:
    async def test_list_read_and_delete(self) -> None:
        """Artifacts are listed sorted, read as octet-stream bytes, and deleted with 204."""
        jobs = make_jobs()
        files = {"b.txt": "bee", "a/nested/x.json": '{"ok": true}', "ünï cødé.txt": "ü"}
        async with serve(jobs) as client:
            job = await submit(client, payload={"artifacts": files}, headers=ALICE)
            await jobs.wait(job["id"], timeout=5)
            listed = await client.get(f"/jobs/{job['id']}/artifacts", headers=ALICE)
            read = await client.get(f"/jobs/{job['id']}/artifacts/a/nested/x.json", headers=ALICE)
            unicode = await client.get(f"/jobs/{job['id']}/artifacts/ünï cødé.txt", headers=ALICE)
            deleted = await client.delete(f"/jobs/{job['id']}/artifacts/b.txt", headers=ALICE)
            after = await client.get(f"/jobs/{job['id']}/artifacts", headers=ALICE)
            gone = await client.get(f"/jobs/{job['id']}/artifacts/b.txt", headers=ALICE)
        assert listed.status_code == 200
        assert listed.json() == {"items": sorted(files)}
        assert read.status_code == 200
        assert read.headers["content-type"] == "application/octet-stream"
        assert read.content == b'{"ok": true}'
        assert unicode.content == "ü".encode()
        assert deleted.status_code == 204
        assert deleted.content == b""
        assert after.json() == {"items": ["a/nested/x.json", "ünï cødé.txt"]}
        assert_error(gone, 404, "artifact_not_found")

    async def test_missing_artifact_is_404(self) -> None:
        """Reading or deleting an artifact that does not exist is 404 artifact_not_found."""
        jobs = make_jobs()
        async with serve(jobs) as client:
            job = await submit(client)
            await jobs.wait(job["id"], timeout=5)
            read = await client.get(f"/jobs/{job['id']}/artifacts/none.txt")
            delete = await client.delete(f"/jobs/{job['id']}/artifacts/none.txt")
        assert_error(read, 404, "artifact_not_found", f"Job {job['id']!r} has no artifact 'none.txt'.")
        assert_error(delete, 404, "artifact_not_found")

    async def test_another_tenants_artifacts_are_404(self) -> None:
        """Another tenant can neither list, read nor delete the job's artifacts."""
        jobs = make_jobs()
        async with serve(jobs) as client:
            job = await submit(client, payload={"artifacts": {"a.txt": "secret"}}, headers=ALICE)
            await jobs.wait(job["id"], timeout=5)
            responses = [
                await client.get(f"/jobs/{job['id']}/artifacts", headers=BOB),
                await client.get(f"/jobs/{job['id']}/artifacts/a.txt", headers=BOB),
                await client.delete(f"/jobs/{job['id']}/artifacts/a.txt", headers=BOB),
            ]
            assert await jobs.artifacts(job["id"]) == ["a.txt"]
        for response in responses:
            assert_error(response, 404, "job_not_found")

    @pytest.mark.parametrize(
        "name", ["a//b.txt", "%2E%2E/secret", "a/%2E%2E/%2E%2E/b", "a%5Cb", "%2Fetc/passwd", "a/%2E/b"]
    )
    async def test_unsafe_names_are_422(self, name: str) -> None:
        """Empty segments, '..' and '.', backslashes and absolute paths are 422 invalid_input."""
        jobs = make_jobs()
        async with serve(jobs) as client:
            job = await submit(client, payload={"artifacts": {"a.txt": "x"}})
            await jobs.wait(job["id"], timeout=5)
            read = await client.get(f"/jobs/{job['id']}/artifacts/{name}")
            delete = await client.delete(f"/jobs/{job['id']}/artifacts/{name}")
        assert_error(read, 422, "invalid_input")
        assert_error(delete, 422, "invalid_input")

    async def test_any_name_reaches_the_route(self) -> None:
        """Names with newlines or control characters get the route's JSON answer, not the
        framework's bare 404."""
        jobs = make_jobs()
        async with serve(jobs) as client:
            job = await submit(client)
            await jobs.wait(job["id"], timeout=5)
            for name in ("%0Ax", "a%0A", "x%1B%0D"):
                read = await client.get(f"/jobs/{job['id']}/artifacts/{name}")
                assert_error(read, 404, "artifact_not_found")

    def test_urls_of_artifacts_can_be_built(self) -> None:
        """The host can build an artifact's URL from the route's name."""
        app = make_app(make_jobs())
        assert (
            app.url_path_for("read_artifact", job_id="j1", name="a/b.txt")
            == "/api/v1/jobs/j1/artifacts/a/b.txt"
        )

    async def test_deleting_an_artifact_of_a_running_job_is_409(self) -> None:
        """Artifacts of a running job cannot be deleted: 409 invalid_state."""
        jobs = make_jobs()
        async with serve(jobs) as client:
            job_id = await submit_running(client, jobs)
            response = await client.delete(f"/jobs/{job_id}/artifacts/any.txt")
        assert_error(response, 409, "invalid_state")


class _FailingBlobs(MemoryBlobStore):
    async def delete_prefix(self, prefix: str) -> int:
        raise OSError("disk on fire")


class TestServiceErrors:
    async def test_backend_error_is_503(self) -> None:
        """A backend failure is 503 backend_error; the job stays."""
        jobs = make_jobs(blobs=_FailingBlobs(), delete_policy=DeletePolicy(on_artifact_error="fail"))
        async with serve(jobs) as client:
            job = await submit(client)
            await jobs.wait(job["id"], timeout=5)
            response = await client.delete(f"/jobs/{job['id']}")
            assert (await client.get(f"/jobs/{job['id']}")).status_code == 200
        assert_error(response, 503, "backend_error")
        assert "disk on fire" in response.json()["error"]["message"]

    async def test_a_manager_that_is_not_running_is_503(self) -> None:
        """Before the manager starts (or after it closed) every route answers 503."""
        jobs = make_jobs()
        app = make_app(jobs)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url=BASE, headers=SAME_SITE
        ) as client:
            response = await client.get("/jobs")
        assert_error(response, 503, "jobkit_error")
        assert "async with" in response.json()["error"]["message"]

    async def test_errors_have_the_body_even_without_install_error_handlers(self) -> None:
        """The router's routes answer with the jobkit error body on their own."""
        jobs = make_jobs()
        app = FastAPI()
        app.include_router(job_router(jobs), prefix="/api/v1")
        async with (
            jobs,
            httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=BASE, headers=SAME_SITE) as client,
        ):
            missing = await client.get("/jobs/nope")
            invalid = await client.get("/jobs?limit=0")
        assert_error(missing, 404, "job_not_found")
        assert_error(invalid, 422, "invalid_input")

    async def test_install_error_handlers_covers_the_hosts_routes(self) -> None:
        """The host's own routes get the same error bodies for jobkit and validation errors."""
        jobs = make_jobs()
        app = make_app(jobs)

        @app.get("/mine/{job_id}")
        async def mine(job_id: str, n: int) -> dict[str, Any]:
            raise JobNotFound(job_id)

        async with (
            jobs,
            httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=BASE, headers=SAME_SITE) as client,
        ):
            missing = await client.get("http://testserver/mine/x?n=1")
            invalid = await client.get("http://testserver/mine/x?n=one")
        assert_error(missing, 404, "job_not_found")
        assert_error(invalid, 422, "invalid_input")
        assert "query.n" in invalid.json()["error"]["message"]


class TestConfiguration:
    @pytest.mark.parametrize("heartbeat", [0, -1, float("nan"), "15", True])
    def test_heartbeat_must_be_positive_seconds(self, heartbeat: Any) -> None:
        """job_router rejects a heartbeat that is not a positive number of seconds."""
        with pytest.raises(InvalidInput, match="heartbeat"):
            job_router(make_jobs(), heartbeat=heartbeat)

    async def test_the_console_router_is_exported_here(self) -> None:
        """console_router comes from the FastAPI integration and serves the page at its root."""
        app = FastAPI()
        app.include_router(console_router(), prefix="/console")
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url=BASE, headers=SAME_SITE
        ) as client:
            response = await client.get("http://testserver/console/")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")

    def test_missing_fastapi_names_the_extra(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without FastAPI installed, importing the integration says what to install."""
        monkeypatch.setitem(sys.modules, "fastapi", None)
        monkeypatch.delitem(sys.modules, "jobkit.integrations.fastapi")
        with pytest.raises(ImportError) as raised:
            importlib.import_module("jobkit.integrations.fastapi")
        assert str(raised.value) == "jobkit.integrations.fastapi needs FastAPI: pip install 'jobkit[fastapi]'"


class TestLifespan:
    async def test_the_manager_runs_for_the_apps_lifespan(self) -> None:
        """lifespan(jobs) enters the manager on startup and closes it on shutdown."""
        jobs = make_jobs()
        app = FastAPI(lifespan=lifespan(jobs))
        app.include_router(job_router(jobs), prefix="/api/v1")
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=BASE, headers=SAME_SITE) as client,
        ):
            job = await submit(client)
            done = await jobs.wait(job["id"], timeout=5)
        assert done.status == "completed"
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url=BASE, headers=SAME_SITE
        ) as client:
            response = await client.get("/jobs")
        assert_error(response, 503, "jobkit_error")


class TestOpenAPI:
    def schema(self) -> dict[str, Any]:
        return make_app(make_jobs()).openapi()

    def test_every_route_is_documented_with_its_success_body(self) -> None:
        """Each route's success response documents its body: a schema, bytes, events, or none."""
        paths = self.schema()["paths"]

        def success(path: str, method: str, status: str) -> dict[str, Any]:
            content: dict[str, Any] = paths["/api/v1" + path][method]["responses"][status].get("content", {})
            return {media: body["schema"] for media, body in content.items()}

        def ref(name: str) -> dict[str, Any]:
            return {"application/json": {"$ref": f"#/components/schemas/{name}"}}

        assert success("/jobs", "post", "201") == ref("Job")
        assert success("/jobs", "get", "200") == ref("JobPage")
        assert success("/jobs/{job_id}", "get", "200") == ref("Job")
        assert success("/jobs/{job_id}/cancel", "post", "200") == ref("Job")
        assert success("/jobs/{job_id}", "delete", "204") == {}
        assert success("/jobs/{job_id}/priority", "patch", "200") == ref("PriorityChange")
        assert success("/jobs/{job_id}/artifacts", "get", "200") == ref("ArtifactList")
        assert success("/jobs/{job_id}/artifacts/{name}", "get", "200") == {
            "application/octet-stream": {"type": "string", "format": "binary"}
        }
        assert success("/jobs/{job_id}/artifacts/{name}", "delete", "204") == {}
        assert list(success("/events", "get", "200")) == ["text/event-stream"]
        assert success("/jobs", "post", "200") == ref("Job")  # a repeated idempotency key
        assert success("/jobs/{job_id}/retry", "post", "200") == ref("Job")
        assert success("/kinds", "get", "200") == ref("KindList")
        assert success("/kinds/{kind}/pause", "post", "200") == ref("Kind")
        assert success("/kinds/{kind}/resume", "post", "200") == ref("Kind")
        assert success("/schedules", "get", "200") == ref("ScheduleList")
        assert success("/schedules", "post", "201") == ref("Schedule")
        assert success("/schedules/{name}", "delete", "204") == {}

    def test_error_responses_are_documented_with_the_error_body(self) -> None:
        """Every route documents 401, 422 and 503 (and 404/409/413 where they apply) as ErrorResponse."""
        schema = self.schema()
        expected = {
            ("/jobs", "post"): {"401", "403", "413", "422", "503"},
            ("/jobs", "get"): {"401", "403", "422", "503"},
            ("/jobs/{job_id}", "get"): {"401", "403", "404", "422", "503"},
            ("/jobs/{job_id}/cancel", "post"): {"401", "403", "404", "409", "413", "422", "503"},
            ("/jobs/{job_id}", "delete"): {"401", "403", "404", "409", "422", "503"},
            ("/jobs/{job_id}/priority", "patch"): {"401", "403", "404", "409", "413", "422", "503"},
            ("/jobs/{job_id}/artifacts", "get"): {"401", "403", "404", "422", "503"},
            ("/jobs/{job_id}/artifacts/{name}", "get"): {"401", "403", "404", "422", "503"},
            ("/jobs/{job_id}/artifacts/{name}", "delete"): {"401", "403", "404", "409", "422", "503"},
            ("/events", "get"): {"401", "403", "404", "422", "503"},
            ("/me", "get"): {"401", "422"},  # 422: the actor dependency's own parameters
            ("/jobs/{job_id}/retry", "post"): {"401", "403", "404", "409", "413", "422", "503"},
            ("/kinds", "get"): {"401", "403", "422", "503"},
            ("/kinds/{kind}/pause", "post"): {"401", "403", "413", "422", "503"},
            ("/kinds/{kind}/resume", "post"): {"401", "403", "413", "422", "503"},
            ("/schedules", "get"): {"401", "403", "422", "503"},
            ("/schedules", "post"): {"401", "403", "413", "422", "503"},
            ("/schedules/{name}", "delete"): {"401", "403", "404", "422", "503"},
        }
        for (path, method), statuses in expected.items():
            responses = schema["paths"]["/api/v1" + path][method]["responses"]
            errors = {status for status in responses if status >= "400"}
            assert errors == statuses, (path, method)
            for status in statuses:
                assert responses[status]["content"] == {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}
                }
        assert "HTTPValidationError" not in schema["components"]["schemas"]
        error = schema["components"]["schemas"]["ErrorDetail"]
        assert set(error["required"]) == {"code", "message"}

    def test_request_bodies_forbid_unknown_fields(self) -> None:
        """The request body schemas are closed (additionalProperties: false)."""
        schemas = self.schema()["components"]["schemas"]
        for name in ("SubmitJob", "CancelJob", "SetPriority", "RetryPolicy", "RetryJob", "CreateSchedule"):
            assert schemas[name]["additionalProperties"] is False
        assert schemas["SubmitJob"]["required"] == ["kind"]
        assert set(schemas["Job"]["required"]) == set(JOB_FIELDS)


class TestEvents:
    async def test_a_jobs_lifecycle_streams_as_server_sent_events(self) -> None:
        """GET /events streams submitted, started, progress and completed, each with its JSON."""
        jobs = make_jobs()
        async with jobs, streaming_client(make_app(jobs)) as client:
            with anyio.fail_after(10):
                async with client.stream("GET", "/events", headers=ALICE) as response:
                    assert response.status_code == 200
                    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
                    assert response.headers["cache-control"] == "no-cache"
                    stream = EventReader(response)
                    await stream.first()
                    job = await submit(client, "steps", ALICE)
                    seen = await stream.until(job["id"], "completed")
        assert [frame.event for frame in seen] == ["submitted", "started", "progress", "completed"]
        assert [frame.data["type"] for frame in seen] == [frame.event for frame in seen]
        assert [frame.data["status"] for frame in seen] == ["pending", "running", "running", "completed"]
        for frame in seen:
            assert list(frame.data) == ["type", "job_id", "tenant", "status", "at", "data"]
            assert (frame.data["job_id"], frame.data["tenant"]) == (job["id"], "acme")
            assert datetime.fromisoformat(frame.data["at"]).utcoffset() == UTC.utcoffset(None)
        assert seen[2].data["data"] == {"progress": 0.5, "message": "half way"}

    async def test_a_retried_failure_streams_scheduled_with_run_at_and_attempt(self) -> None:
        """A job submitted with `retry` that fails streams `scheduled` with when it runs again
        and which attempt that will be."""

        async def boom(ctx: JobContext, payload: Any) -> None:
            raise ValueError("boom")

        jobs = make_jobs()
        jobs.register("boom", boom)
        async with jobs, streaming_client(make_app(jobs)) as client:
            with anyio.fail_after(10):
                async with client.stream("GET", "/events") as response:
                    stream = EventReader(response)
                    await stream.first()
                    job = await submit(client, "boom", retry={"attempts": 2, "backoff": 3600, "jitter": 0})
                    seen = await stream.until(job["id"], "scheduled")
        assert [frame.event for frame in seen] == ["submitted", "started", "scheduled"]
        scheduled = seen[-1].data
        assert scheduled["status"] == "scheduled"
        assert scheduled["data"]["attempt"] == 2
        run_at = datetime.fromisoformat(scheduled["data"]["run_at"])
        waited = run_at - datetime.fromisoformat(scheduled["at"])  # the event's own clock read
        assert abs(waited - timedelta(seconds=3600)) < timedelta(seconds=1)

    async def test_events_are_filtered_by_the_actors_tenant(self) -> None:
        """A tenant's stream carries only its own jobs' events; the host's carries all."""
        jobs = make_jobs()
        async with jobs, streaming_client(make_app(jobs)) as client:
            with anyio.fail_after(10):
                async with (
                    client.stream("GET", "/events", headers=BOB) as bob_response,
                    client.stream("GET", "/events") as host_response,
                ):
                    bob, host = EventReader(bob_response), EventReader(host_response)
                    await bob.first()
                    await host.first()
                    alices = await submit(client, headers=ALICE)
                    await jobs.wait(alices["id"])
                    bobs = await submit(client, headers=BOB)
                    bob_saw = await bob.until(bobs["id"], "completed")
                    host_saw = await host.until(bobs["id"], "completed")
        assert [frame.event for frame in bob_saw] == ["submitted", "started", "completed"]
        assert {frame.data["job_id"] for frame in bob_saw} == {bobs["id"]}
        assert {frame.data["tenant"] for frame in bob_saw} == {"globex"}
        assert [frame.data["job_id"] for frame in host_saw] == [alices["id"]] * 3 + [bobs["id"]] * 3

    async def test_job_id_filter(self) -> None:
        """?job_id= streams only that job's events."""
        jobs = make_jobs(concurrency=0)
        async with jobs, streaming_client(make_app(jobs)) as client:
            first = await submit(client)
            second = await submit(client)
            with anyio.fail_after(10):
                async with client.stream("GET", "/events", params={"job_id": first["id"]}) as response:
                    stream = EventReader(response)
                    await stream.first()
                    await client.patch(f"/jobs/{second['id']}/priority", json={"priority": 1})
                    await client.post(f"/jobs/{first['id']}/cancel")
                    seen = await stream.until(first["id"], "cancelled")
        assert [frame.event for frame in seen] == ["cancelled"]

    async def test_unknown_or_foreign_job_id_is_404_before_streaming(self) -> None:
        """?job_id= of an unknown job, or another tenant's, is a plain 404 error response."""
        jobs = make_jobs(concurrency=0)
        async with serve(jobs) as client:
            job = await submit(client, headers=ALICE)
            unknown = await client.get("/events", params={"job_id": "nope"})
            foreign = await client.get("/events", params={"job_id": job["id"]}, headers=BOB)
        assert_error(unknown, 404, "job_not_found")
        assert_error(foreign, 404, "job_not_found")

    async def test_heartbeat_comments_while_idle(self) -> None:
        """With no events for `heartbeat` seconds, the stream sends a comment line."""
        jobs = make_jobs()
        async with jobs, streaming_client(make_app(jobs, heartbeat=0.05)) as client:
            with anyio.fail_after(10):
                async with client.stream("GET", "/events") as response:
                    stream = EventReader(response)
                    await stream.first()
                    beat = await stream.next()
        assert beat is not None
        assert (beat.event, beat.comments) == (None, ["heartbeat"])

    async def test_the_stream_ends_when_the_manager_closes(self) -> None:
        """Shutting the manager down ends open streams cleanly."""
        jobs = make_jobs()
        async with streaming_client(make_app(jobs)) as client:
            with anyio.fail_after(10):
                async with jobs:
                    response = await client.send(client.build_request("GET", "/events"), stream=True)
                    stream = EventReader(response)
                    await stream.first()
                rest = await stream.rest()
                await response.aclose()
        assert rest == []

    async def test_a_client_disconnect_ends_the_response(self) -> None:
        """When the client hangs up the server side finishes (the transport waits for it on
        close), and the manager goes on serving others."""
        jobs = make_jobs()
        async with jobs, streaming_client(make_app(jobs, heartbeat=3600)) as client:
            with anyio.fail_after(10):
                async with client.stream("GET", "/events") as response:
                    await EventReader(response).first()
                job = await submit(client)
                assert (await jobs.wait(job["id"])).status == "completed"


# -- served by uvicorn -------------------------------------------------------------------


@pytest.fixture
def uvicorn_url() -> Iterator[str]:
    """The app, its manager tied to the lifespan, served by uvicorn on a free local port."""
    jobs = make_jobs()
    app = FastAPI(lifespan=lifespan(jobs))
    install_error_handlers(app)
    app.include_router(job_router(jobs, actor=header_actor), prefix="/api/v1")
    with serve_http(app) as base:
        yield f"{base}/api/v1"


# The server runs its own asyncio loop in a thread; the client side is only a probe (and
# httpx's streaming iterators are async generators that trio reports when abandoned).
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
class TestServedByUvicorn:
    async def test_routes_and_event_stream_over_http(self, uvicorn_url: str) -> None:
        """Over a real connection: submit, stream the job's events to completion, read it
        back; the server stops promptly after the client hung up."""
        async with httpx.AsyncClient(base_url=uvicorn_url, timeout=10, headers=SAME_SITE) as client:
            with anyio.fail_after(20):
                async with client.stream("GET", "/events", headers=ALICE) as response:
                    assert response.status_code == 200
                    stream = EventReader(response)
                    await stream.first()
                    job = await submit(client, "steps", ALICE)
                    seen = await stream.until(job["id"], "completed")
                done = await client.get(f"/jobs/{job['id']}", headers=ALICE)
                missing = await client.get(f"/jobs/{job['id']}", headers=BOB)
        assert [frame.event for frame in seen] == ["submitted", "started", "progress", "completed"]
        assert done.json()["result"] == "done"
        assert_error(missing, 404, "job_not_found")


class TestWhoIsAsking:
    """A dependency returning None is nobody signed in (401); host access must be explicit."""

    async def test_nobody_signed_in_is_401_on_every_route_and_nothing_changes(self) -> None:
        jobs = make_jobs(concurrency=0)
        nobody = {"X-Actor": "-"}  # the test identity returns None: nobody signed in
        async with serve(jobs) as client:
            job = await jobs.submit("echo", {"secret": 1})
            for method, path in [
                ("GET", "/jobs"),
                ("GET", f"/jobs/{job.id}"),
                ("POST", f"/jobs/{job.id}/cancel"),
                ("DELETE", f"/jobs/{job.id}"),
                ("GET", "/me"),
                ("POST", "/jobs"),
                ("GET", "/events"),
            ]:
                response = await client.request(method, path, json={"kind": "echo"}, headers=nobody)
                assert response.status_code == 401, (method, path)
                assert response.json()["error"]["code"] == "unauthenticated"
            assert (await jobs.get(job.id)).status is JobStatus.PENDING
            assert len(await jobs.list()) == 1

    async def test_as_host_is_the_explicit_way_to_act_as_the_host(self) -> None:
        """GET /me says who the server thinks is asking: the host only through AS_HOST."""
        async with serve(make_jobs(concurrency=0)) as client:
            host = (await client.get("/me")).json()  # no X-Actor: the test identity says AS_HOST
            assert host == {"id": None, "tenant": None, "roles": [], "host": True}
            me = (await client.get("/me", headers=ALICE_ADMIN)).json()
            assert me == {"id": "root", "tenant": "acme", "roles": ["admin", "ops"], "host": False}


class TestCrossSite:
    """A POST that another web page could send without a preflight changes nothing."""

    @pytest.mark.parametrize(
        "request_options",
        [
            {},  # no body, no content type
            {"content": b"", "headers": {"Content-Type": "text/plain"}},
            {"content": b"reason=x", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
            {"content": b"", "headers": {"Content-Type": "multipart/form-data; boundary=x"}},
        ],
    )
    async def test_a_forgeable_post_is_refused(self, request_options: dict[str, Any]) -> None:
        jobs = make_jobs(concurrency=0)
        app = make_app(jobs)
        async with jobs, httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=BASE) as client:
            job = await jobs.submit("echo")
            response = await client.post(f"/jobs/{job.id}/cancel", **request_options)
            assert response.status_code == 422
            assert "another web site" in response.json()["error"]["message"]
            submitted = await client.post("/jobs", **request_options)
            assert submitted.status_code == 422
            assert (await jobs.get(job.id)).status is JobStatus.PENDING
            assert len(await jobs.list()) == 1
            # JSON (even empty), or the custom header, is what a same-site client sends.
            assert (await client.post(f"/jobs/{job.id}/cancel", json={})).status_code == 200


class TestFrameworkErrors:
    """Every error the framework or the host's HTTPException produces has the jobkit body."""

    async def test_an_unknown_route_is_404_not_found(self) -> None:
        async with serve(make_jobs(concurrency=0)) as client:
            response = await client.get("/nope")
            assert_error(response, 404, "not_found", "There is no route GET /api/v1/nope.")
            assert_error(await client.get("/jobs/a/b/c"), 404, "not_found")

    async def test_a_wrong_method_is_405_method_not_allowed_with_allow(self) -> None:
        async with serve(make_jobs(concurrency=0)) as client:
            response = await client.put("/jobs", json={})
            assert_error(
                response, 405, "method_not_allowed", "/api/v1/jobs does not take PUT; it takes GET, POST."
            )
            assert response.headers["allow"] == "GET, POST"
            assert_error(await client.post("/me", json={}), 405, "method_not_allowed")

    @pytest.mark.parametrize(
        ("content", "headers"),
        [
            (b"{not json", {"Content-Type": "application/json"}),
            (b"\xff\xfe", {"Content-Type": "application/json"}),  # not UTF-8
            (b"[1, 2]", {"Content-Type": "application/json"}),
        ],
    )
    async def test_a_malformed_body_is_422_invalid_input(self, content: bytes, headers: Any) -> None:
        async with serve(make_jobs(concurrency=0)) as client:
            assert_error(await client.post("/jobs", content=content, headers=headers), 422, "invalid_input")

    @pytest.mark.parametrize(
        ("route", "method", "path", "limit"),
        [
            ("submit", "POST", "/jobs", 1 << 20),
            ("cancel", "POST", "/jobs/x/cancel", 64 << 10),
            ("priority", "PATCH", "/jobs/x/priority", 4 << 10),
        ],
    )
    async def test_a_body_too_large_is_413_payload_too_large(
        self, route: str, method: str, path: str, limit: int
    ) -> None:
        jobs = make_jobs(concurrency=0)
        async with serve(jobs) as client:
            body = json.dumps({"reason": "x" * limit}).encode()
            response = await client.request(
                method, path, content=body, headers={"Content-Type": "application/json"}
            )
            assert_error(response, 413, "payload_too_large")
            assert f"at most {limit}" in response.json()["error"]["message"]
            assert len(await jobs.list()) == 0

    async def test_the_hosts_http_exception_in_the_actor_dependency(self) -> None:
        """Raised by the host's dependency: its status, message and headers, the jobkit body
        — even without install_error_handlers (the router alone)."""

        async def strict_actor(x_token: Annotated[str | None, Header()] = None) -> Any:
            if x_token == "banned":
                raise HTTPException(403, "This token is banned.")
            if x_token != "ok":
                raise HTTPException(401, headers={"WWW-Authenticate": "Bearer"})
            return AS_HOST

        jobs = make_jobs(concurrency=0)
        app = FastAPI()  # no install_error_handlers: the router answers for its routes
        app.include_router(job_router(jobs, actor=strict_actor), prefix="/api/v1")
        transport = httpx.ASGITransport(app)
        async with jobs, httpx.AsyncClient(transport=transport, base_url=BASE, headers=SAME_SITE) as client:
            banned = await client.get("/jobs", headers={"X-Token": "banned"})
            assert_error(banned, 403, "forbidden", "This token is banned.")
            anonymous = await client.post("/jobs", json={"kind": "echo"})
            assert_error(anonymous, 401, "unauthenticated")
            assert anonymous.headers["www-authenticate"] == "Bearer"
            assert (await client.get("/jobs", headers={"X-Token": "ok"})).status_code == 200
            assert len(await jobs.list()) == 0

    async def test_the_hosts_http_exception_in_its_own_route(self) -> None:
        jobs = make_jobs(concurrency=0)
        app = make_app(jobs)

        @app.get("/teapot")
        async def teapot() -> None:
            raise HTTPException(418, "I am a teapot.")

        @app.get("/plain")
        async def plain() -> None:
            raise HTTPException(409)

        transport = httpx.ASGITransport(app)
        async with jobs, httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            assert_error(await client.get("/teapot"), 418, "http_418", "I am a teapot.")
            assert_error(await client.get("/plain"), 409, "conflict")
            assert_error(await client.get("/elsewhere"), 404, "not_found")


class TestShutdown:
    """SIGTERM on a uvicorn process with a client on /events: the stream ends, the process
    exits at once, and the running job is back to pending in the store."""

    def test_sigterm_with_an_open_event_stream(self, tmp_path: Path) -> None:
        database = tmp_path / "jobs.db"
        server = ServerProcess([sys.executable, str(SHUTDOWN_APP), "fastapi", str(database)])
        try:
            stopped = stop_while_watching(server, f"http://127.0.0.1:{server.port}/api/v1", signal.SIGTERM)
        finally:
            server.stop()
        assert stopped.stream_ended_after < 3, stopped
        assert stopped.exited_after < 5, stopped
        assert stopped.returncode in (0, -signal.SIGTERM), server.output
        assert status_in_store(database, stopped.job_id) == "pending"

    def test_end_event_streams_for_a_server_stopped_from_another_thread(self) -> None:
        """No signal when a thread stops uvicorn: end_event_streams() ends the open streams
        (from that thread), so the server stops without waiting for the client."""
        jobs = make_jobs()
        app = FastAPI(lifespan=lifespan(jobs))
        app.include_router(job_router(jobs), prefix="/api/v1")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", loop="asyncio"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/api/v1/events"
        try:
            with httpx.Client(timeout=10) as client, client.stream("GET", url) as events:
                lines = events.iter_lines()
                next(lines)  # the subscription is live
                end_event_streams(jobs)
                server.should_exit = True
                for _ in lines:  # ends when the server ends the stream
                    pass
            thread.join(timeout=10)
            assert not thread.is_alive(), "uvicorn waited for the stream's client"
        finally:
            server.should_exit = True
            thread.join(timeout=30)
            sock.close()
        end_event_streams(jobs)  # the app has stopped: nothing to do
