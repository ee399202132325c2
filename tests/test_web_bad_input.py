"""Bad input through both web integrations: a 4xx with the error body, never a 5xx, and
nothing changed.

Every state-changing route (submit, with delays, retries and idempotency keys; cancel with
a reason, retry, priority, delete, delete an artifact, pause a kind, schedules) and the
reads (list with crafted cursors and query parameters, get) get the strategies of
:mod:`bad_input` through the FastAPI router (ASGI, on asyncio and trio) and the Flask
blueprint (its test client, the manager's loop on asyncio and trio). After each request
the jobs, the audit trail, the artifacts, the paused kinds and the schedules are exactly
as before, and ``GET /jobs`` still answers with the seeded jobs: nothing was stored,
changed or poisoned.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flask
import httpx
import pytest
from fastapi import FastAPI
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.serving import make_server

import bad_input as bad
from jobkit import BlockingJobManager, JobContext, JobManager
from jobkit.abc import BlobStore
from jobkit.blobs import FileBlobStore, MemoryBlobStore
from jobkit.integrations._http import BODY_LIMITS
from jobkit.integrations.fastapi import install_error_handlers, job_router
from jobkit.integrations.flask import job_blueprint
from managers import STORE_KINDS, ManagerFactory

API = "/api/v1"
#: Examples per route family, integration, backend and store kind.
EXAMPLES = 100
ARTIFACT = "out/a.txt"


@dataclass(frozen=True)
class Call:
    """One request; ``{pending}`` and ``{done}`` in the path stand for the seeded jobs."""

    method: str
    path: str
    body: bytes | None = None
    content_type: str | None = "application/json"
    same_site: bool = True  # sends the X-Requested-With header a foreign page cannot send
    expected: frozenset[int] = frozenset({422})
    extra_headers: tuple[tuple[str, str], ...] = ()

    def url(self, ids: dict[str, str]) -> str:
        return API + self.path.replace("{pending}", ids["pending"]).replace("{done}", ids["done"])

    def headers(self) -> dict[str, str]:
        headers = {"X-Requested-With": "tests"} if self.same_site else {}
        if self.content_type is not None:
            headers["Content-Type"] = self.content_type
        headers.update(self.extra_headers)
        return headers


ID_ERRORS = frozenset({404, 422})
CODES = {
    404: {"job_not_found", "artifact_not_found"},
    409: {"invalid_state"},
    413: {"payload_too_large"},
    422: {"invalid_input"},
}


def _body_call(method: str, path: str, route: str) -> Callable[[bytes], Call]:
    """A bad body for ``route``: 422, or 413 too when it is larger than the route takes (a
    body FastAPI cannot even parse is refused as 422 before its size is looked at)."""
    limit = BODY_LIMITS[route]
    return lambda body: Call(
        method, path, body, expected=frozenset({413, 422} if len(body) > limit else {422})
    )


def _on_ids(method: str, suffix: str = "", body: bytes | None = None) -> st.SearchStrategy[Call]:
    return bad.job_ids.map(lambda job_id: Call(method, f"/jobs/{job_id}{suffix}", body, expected=ID_ERRORS))


#: Idempotency-Key headers refused on a fine body: empty, too long, or not the body's key.
_BAD_KEY_HEADERS = st.one_of(
    st.sampled_from([("", b'{"kind": "echo"}'), ("other", b'{"kind": "echo", "idempotency_key": "mine"}')]),
    st.builds(lambda n: ("k" * n, b'{"kind": "echo"}'), st.integers(201, 240)),
    # the seeded job's key, from the header, with another payload
    st.just((bad.SEEDED_KEY, b'{"kind": "later", "payload": 1}')),
)

#: The bad requests, by route family.
CALLS: dict[str, st.SearchStrategy[Call]] = {
    "submit": st.one_of(
        bad.submit_bodies().map(_body_call("POST", "/jobs", "submit")),
        _BAD_KEY_HEADERS.map(
            lambda pair: Call("POST", "/jobs", pair[1], extra_headers=(("Idempotency-Key", pair[0]),))
        ),
    ),
    "retry": st.one_of(
        bad.retry_bodies().map(_body_call("POST", "/jobs/{done}/retry", "retry")),
        _on_ids("POST", "/retry", b"{}"),
        st.just(Call("POST", "/jobs/{pending}/retry", expected=frozenset({409}))),  # not finished
        st.just(Call("POST", "/jobs/{done}/retry", expected=frozenset({409}))),  # completed
    ),
    "kinds": st.builds(
        lambda kind, action: Call("POST", f"/kinds/{kind}/{action}"),
        bad.unknown_kinds,
        st.sampled_from(["pause", "resume"]),
    ),
    "schedule": st.one_of(
        bad.schedule_bodies().map(_body_call("POST", "/schedules", "schedule")),
        st.builds(lambda name: Call("DELETE", f"/schedules/{name}", expected=ID_ERRORS), bad.job_ids),
    ),
    "cancel": st.one_of(
        bad.cancel_bodies().map(_body_call("POST", "/jobs/{pending}/cancel", "cancel")),
        _on_ids("POST", "/cancel", b'{"reason": "fine"}'),
    ),
    "priority": st.one_of(
        bad.priority_bodies().map(_body_call("PATCH", "/jobs/{pending}/priority", "priority")),
        _on_ids("PATCH", "/priority", b'{"priority": 3}'),
    ),
    "delete": st.one_of(
        _on_ids("DELETE"),
        st.just(Call("DELETE", "/jobs/{pending}", expected=frozenset({409}))),  # not finished
    ),
    "delete_artifact": st.one_of(
        bad.artifact_names.map(
            lambda name: Call("DELETE", f"/jobs/{{done}}/artifacts/{name}", expected=ID_ERRORS)
        ),
        _on_ids("DELETE", "/artifacts/" + ARTIFACT),
    ),
    # What a page on another site can send with the user's cookies, without a preflight.
    "cross_site": st.builds(
        lambda path, content_type, body: Call("POST", path, body, content_type, same_site=False),
        st.sampled_from(["/jobs", "/jobs/{pending}/cancel"]),
        bad.cross_site_content_types,
        st.sampled_from([b"", b'{"kind": "echo"}', b"kind=echo", b'{"reason": "x"}']),
    ),
    "reads": st.one_of(
        bad.list_queries().map(lambda query: Call("GET", f"/jobs?{query}")),
        bad.undecodable_kinds.map(lambda q: Call("GET", f"/jobs?{q}", expected=frozenset({200, 422}))),
        _on_ids("GET"),
        _on_ids("GET", "/artifacts"),
        bad.artifact_names.map(
            lambda name: Call("GET", f"/jobs/{{done}}/artifacts/{name}", expected=ID_ERRORS)
        ),
    ),
}


def check_refused(call: Call, status: int, body: bytes) -> None:
    """The answer is one of the statuses expected, with the jobkit error body (or, for a
    filter that matches nothing, an empty page)."""
    assert status in call.expected, (status, body[:300])
    if status == 200:
        assert json.loads(body) == {"items": [], "next_cursor": None}
        return
    error = json.loads(body)
    assert set(error) == {"error"}
    assert set(error["error"]) == {"code", "message"}
    assert error["error"]["code"] in CODES[status]
    assert isinstance(error["error"]["message"], str)
    assert error["error"]["message"]


async def make_artifact(ctx: JobContext, payload: Any) -> str:
    await ctx.put_artifact(ARTIFACT, b"kept")
    return "done"


def blobs_for(store_kind: str, directory: Path) -> BlobStore:
    """Artifacts in memory next to a MemoryStore, in files next to SQLite."""
    return MemoryBlobStore() if store_kind == "memory" else FileBlobStore(directory / "artifacts")


def _dsn(request: pytest.FixtureRequest, store_kind: str) -> str | None:
    """The test cluster's URL for a PostgresStore (started on first use), else None."""
    return request.getfixturevalue("pg_dsn") if store_kind == "postgres" else None  # type: ignore[no-any-return]


def _settings() -> Any:
    return settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


# -- Flask -------------------------------------------------------------------------------


@dataclass
class FlaskService:
    jobs: BlockingJobManager
    app: flask.Flask
    client: FlaskClient
    ids: dict[str, str]

    def state(self) -> Any:
        """Everything a refused request must leave alone."""
        jobs = self.jobs
        return (
            jobs.list(limit=1000, include_deleted=True).items,
            jobs.audit(limit=1000),
            jobs.artifacts(self.ids["done"]),
            jobs.paused(),
            jobs.schedules(),
        )


@pytest.fixture(
    scope="module",
    params=[(b, s) for b in ("asyncio", "trio") for s in STORE_KINDS],
    ids=[f"{b}-{s}" for b in ("asyncio", "trio") for s in STORE_KINDS],
)
def flask_service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FlaskService]:
    """The blueprint over a running manager (its loop on asyncio or trio, on each store kind),
    called through Flask's test client; shared by the module's Flask tests."""
    backend, store_kind = request.param
    directory = tmp_path_factory.mktemp("flask")
    store = ManagerFactory(store_kind, directory, _dsn(request, store_kind)).new_store()
    jobs = BlockingJobManager(
        store, blobs_for(store_kind, directory), sweep_interval=None, concurrency=1, backend=backend
    )
    jobs.register("echo", make_artifact)
    jobs.declare("later")  # no handler here: its job stays pending
    app = flask.Flask(__name__)
    app.register_blueprint(job_blueprint(jobs), url_prefix=API)
    with jobs:
        done = jobs.submit("echo")
        assert jobs.wait(done.id, timeout=10).status == "completed"
        pending = jobs.submit("later", priority=2, idempotency_key=bad.SEEDED_KEY)
        yield FlaskService(jobs, app, app.test_client(), {"done": done.id, "pending": pending.id})


def flask_refuses(family: str) -> Callable[..., None]:
    """A property test: the ``family``'s bad calls are refused by the blueprint, and
    nothing changes."""

    @_settings()
    @given(call=CALLS[family])
    def test(flask_service: FlaskService, call: Call) -> None:
        service = flask_service
        before = service.state()
        response = service.client.open(
            call.url(service.ids), method=call.method, data=call.body, headers=call.headers()
        )
        check_refused(call, response.status_code, response.get_data())
        assert service.state() == before
        listing = service.client.get(f"{API}/jobs")
        assert listing.status_code == 200
        assert {job["id"] for job in listing.get_json()["items"]} == set(service.ids.values())

    return test


test_flask_submit = flask_refuses("submit")
test_flask_cancel = flask_refuses("cancel")
test_flask_priority = flask_refuses("priority")
test_flask_delete = flask_refuses("delete")
test_flask_delete_artifact = flask_refuses("delete_artifact")
test_flask_cross_site = flask_refuses("cross_site")
test_flask_reads = flask_refuses("reads")
test_flask_retry = flask_refuses("retry")
test_flask_kinds = flask_refuses("kinds")
test_flask_schedule = flask_refuses("schedule")


# -- FastAPI -----------------------------------------------------------------------------


@dataclass
class FastAPIService:
    jobs: JobManager
    client: httpx.AsyncClient
    ids: dict[str, str]

    async def state(self) -> Any:
        jobs = self.jobs
        return (
            (await jobs.list(limit=1000, include_deleted=True)).items,
            await jobs.audit(limit=1000),
            await jobs.artifacts(self.ids["done"]),
            await jobs.paused(),
            await jobs.schedules(),
        )


@pytest.fixture
async def fastapi_service(make_manager: ManagerFactory, tmp_path: Path) -> AsyncIterator[FastAPIService]:
    """The router over a running manager (on each store kind), called through ASGI; shared
    by a test's examples."""
    blobs = blobs_for(make_manager.kind, tmp_path)
    jobs = make_manager(blobs=blobs, concurrency=1, handlers={"echo": make_artifact})
    jobs.declare("later")
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(job_router(jobs), prefix=API)
    transport = httpx.ASGITransport(app)
    async with jobs, httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        done = await jobs.submit("echo")
        assert (await jobs.wait(done.id, timeout=10)).status == "completed"
        pending = await jobs.submit("later", priority=2, idempotency_key=bad.SEEDED_KEY)
        yield FastAPIService(jobs, client, {"done": done.id, "pending": pending.id})


def fastapi_refuses(family: str) -> Callable[..., Awaitable[None]]:
    """A property test: the ``family``'s bad calls are refused by the router, and nothing
    changes. (The calls are drawn by ``@given`` itself: a draw inside an async test can
    raise Hypothesis' StopTest, a BaseException, in the event loop's runner task.)"""

    @pytest.mark.anyio
    @_settings()
    @given(call=CALLS[family])
    async def test(fastapi_service: FastAPIService, call: Call) -> None:
        service = fastapi_service
        before = await service.state()
        response = await service.client.request(
            call.method, call.url(service.ids), content=call.body, headers=call.headers()
        )
        check_refused(call, response.status_code, response.content)
        assert await service.state() == before
        listing = await service.client.get(f"{API}/jobs")
        assert listing.status_code == 200
        assert {job["id"] for job in listing.json()["items"]} == set(service.ids.values())

    return test


test_fastapi_submit = fastapi_refuses("submit")
test_fastapi_cancel = fastapi_refuses("cancel")
test_fastapi_priority = fastapi_refuses("priority")
test_fastapi_delete = fastapi_refuses("delete")
test_fastapi_delete_artifact = fastapi_refuses("delete_artifact")
test_fastapi_cross_site = fastapi_refuses("cross_site")
test_fastapi_reads = fastapi_refuses("reads")
test_fastapi_retry = fastapi_refuses("retry")
test_fastapi_kinds = fastapi_refuses("kinds")
test_fastapi_schedule = fastapi_refuses("schedule")


def test_every_family_is_tested_on_both_integrations() -> None:
    expected = {f"test_{web}_{family}" for web in ("flask", "fastapi") for family in CALLS}
    assert expected <= set(globals())


# -- bodies without a length -------------------------------------------------------------


def _chunks(body: bytes) -> Iterator[bytes]:
    for start in range(0, len(body), 1 << 16):
        yield body[start : start + (1 << 16)]


async def _achunks(body: bytes) -> AsyncIterator[bytes]:
    for chunk in _chunks(body):
        yield chunk


OVERSIZED = {
    "submit": ("POST", "/jobs", b'{"kind": "echo", "payload": "' + b"x" * (2 << 20) + b'"}'),
    "cancel": ("POST", "/jobs/{pending}/cancel", b'{"reason": "' + b"x" * (128 << 10) + b'"}'),
    "priority": ("PATCH", "/jobs/{pending}/priority", b'{"priority": 1' + b" " * (8 << 10) + b"}"),
}


@pytest.mark.anyio
@pytest.mark.parametrize("route", sorted(OVERSIZED))
async def test_fastapi_a_chunked_body_over_the_limit_is_refused_and_stores_nothing(
    fastapi_service: FastAPIService, route: str
) -> None:
    """Without a Content-Length (chunked transfer), a body over the route's limit is still
    413: a 2 MiB payload is not stored (it was, with 201)."""
    service = fastapi_service
    method, path, body = OVERSIZED[route]
    call = Call(method, path, expected=frozenset({413}))
    before = await service.state()
    response = await service.client.request(
        method, call.url(service.ids), content=_achunks(body), headers=call.headers()
    )
    check_refused(call, response.status_code, response.content)
    assert "larger than this route takes" in response.json()["error"]["message"]
    assert await service.state() == before


@pytest.mark.parametrize("route", sorted(OVERSIZED))
def test_flask_a_chunked_body_over_the_limit_is_refused_and_stores_nothing(
    flask_service: FlaskService, route: str
) -> None:
    """The same through a real werkzeug server (the test client always sends a length)."""
    service = flask_service
    method, path, body = OVERSIZED[route]
    call = Call(method, path, expected=frozenset({413}))
    before = service.state()
    http = make_server("127.0.0.1", 0, service.app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{http.server_port}{call.url(service.ids)}"
        response = httpx.request(method, url, content=_chunks(body), headers=call.headers(), timeout=30)
    finally:
        http.shutdown()
        thread.join(timeout=30)
        http.server_close()
    assert not thread.is_alive()
    check_refused(call, response.status_code, response.content)
    assert "larger than this route takes" in response.json()["error"]["message"]
    assert service.state() == before
