"""The Flask blueprint: the FastAPI router's routes, bodies, status codes and errors, for sync apps."""

from __future__ import annotations

import importlib
import json
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import flask
import pytest
import werkzeug.exceptions
from flask.testing import FlaskClient
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.test import TestResponse

from jobkit import BlockingJobManager, DeletePolicy, InvalidInput, JobStatus
from jobkit.blobs import MemoryBlobStore
from jobkit.integrations._http import AS_HOST
from jobkit.integrations.flask import job_blueprint, stop_on_signals
from web_handlers import HANDLERS, ServerProcess, actor_from_headers, status_in_store, stop_while_watching

API = "/api/v1"
ALICE = {"X-Actor": "alice", "X-Tenant": "acme"}
ALICE_ADMIN = {"X-Actor": "root", "X-Tenant": "acme", "X-Roles": "admin"}
BOB = {"X-Actor": "bob", "X-Tenant": "globex"}

SHUTDOWN_APP = Path(__file__).with_name("web_shutdown_app.py")

JOB_FIELDS = [
    "id", "kind", "status", "payload", "tenant", "priority", "progress", "progress_message", "result",
    "error", "cancel_reason", "created_at", "started_at", "finished_at", "expires_at", "deleted_at",
    "version", "attempts", "max_attempts", "labels", "ttl", "timeout", "run_at", "idempotency_key",
    "retry",
]  # fmt: skip


def header_actor() -> Any:
    """The test identity from X-Actor, X-Tenant and X-Roles; none = the trusted host."""
    headers = flask.request.headers
    return actor_from_headers(headers.get("X-Actor"), headers.get("X-Tenant"), headers.get("X-Roles"))


def make_jobs(**kwargs: Any) -> BlockingJobManager:
    kwargs.setdefault("sweep_interval", None)
    jobs = BlockingJobManager(**kwargs)
    for kind, handler in HANDLERS.items():
        jobs.register(kind, handler)
    return jobs


def make_client(jobs: BlockingJobManager, **options: Any) -> FlaskClient:
    app = flask.Flask(__name__)
    app.register_blueprint(job_blueprint(jobs, actor=header_actor, **options), url_prefix=API)
    client = app.test_client()
    client.environ_base["HTTP_X_REQUESTED_WITH"] = "tests"  # a same-site script (see TestCrossSite)
    return client


@contextmanager
def serve(**kwargs: Any) -> Iterator[tuple[BlockingJobManager, FlaskClient]]:
    jobs = make_jobs(**kwargs)
    with jobs:
        yield jobs, make_client(jobs)


def submit(client: FlaskClient, kind: str = "echo", headers: Any = None, **body: Any) -> Any:
    response = client.post(f"{API}/jobs", json={"kind": kind, **body}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json


def submit_running(jobs: BlockingJobManager, client: FlaskClient) -> str:
    with jobs.subscribe() as events:
        job_id: str = submit(client, "block")["id"]
        for event in events:
            if event.job_id == job_id and event.type == "started":
                return job_id
    raise AssertionError("the job never started")


def assert_error(response: TestResponse, status: int, code: str, message: str | None = None) -> None:
    """The response is an error with exactly the jobkit error body."""
    assert response.status_code == status, response.text
    assert response.mimetype == "application/json"
    body = response.json
    assert isinstance(body, dict)
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    if message is not None:
        assert body["error"]["message"] == message


class Frame:
    """One server-sent event frame."""

    def __init__(self, text: str) -> None:
        self.event: str | None = None
        self.data: Any = None
        self.comments: list[str] = []
        for line in text.split("\n"):
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "":
                self.comments.append(value)
            elif field == "event":
                self.event = value
            elif field == "data":
                self.data = json.loads(value)


class EventReader:
    """Reads frames from a streamed (``buffered=False``) event-stream response."""

    def __init__(self, response: TestResponse) -> None:
        self._chunks = iter(response.response)
        self._buffer = ""

    def next(self) -> Frame:
        while "\n\n" not in self._buffer:
            chunk = next(self._chunks)
            self._buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
        frame, self._buffer = self._buffer.split("\n\n", 1)
        return Frame(frame)

    def until(self, job_id: str, last: str) -> list[Frame]:
        seen = []
        while True:
            frame = self.next()
            if frame.event is None:
                continue
            seen.append(frame)
            if frame.data["job_id"] == job_id and frame.event == last:
                return seen


class TestRoutes:
    def test_submit_and_get(self) -> None:
        """POST /jobs is 201 with every Job field; GET /jobs/{id} returns the job as it ran."""
        with serve() as (jobs, client):
            created = client.post(
                f"{API}/jobs",
                json={"kind": "echo", "payload": [1], "priority": 2, "ttl": 60, "labels": {"a": "b"}},
                headers=ALICE,
            )
            assert created.status_code == 201
            assert created.mimetype == "application/json"
            job = created.json
            assert job is not None
            jobs.wait(job["id"], timeout=5)
            fetched = client.get(f"{API}/jobs/{job['id']}", headers=ALICE)
        assert list(job) == JOB_FIELDS
        assert (job["status"], job["tenant"], job["priority"], job["ttl"], job["labels"]) == (
            "pending",
            "acme",
            2,
            60.0,
            {"a": "b"},
        )
        assert fetched.status_code == 200
        assert fetched.json is not None
        assert (fetched.json["status"], fetched.json["result"]) == ("completed", [1])

    def test_list_filters_and_pages(self) -> None:
        """GET /jobs: newest first, status repeatable, kind filter, cursor paging, tenant scope."""
        with serve(concurrency=0) as (_, client):
            ids = [submit(client, headers=ALICE)["id"] for _ in range(4)]
            other = submit(client, "steps", headers=BOB)["id"]
            client.post(f"{API}/jobs/{ids[0]}/cancel")

            def listed(query: str, headers: Any = None) -> Any:
                response = client.get(f"{API}/jobs?{query}", headers=headers)
                assert response.status_code == 200, response.text
                return response.json

            assert [job["id"] for job in listed("", ALICE)["items"]] == ids[::-1]
            assert [job["id"] for job in listed("status=cancelled")["items"]] == [ids[0]]
            assert len(listed("status=pending&status=cancelled")["items"]) == 5
            assert [job["id"] for job in listed("kind=steps")["items"]] == [other]
            first = listed("limit=3", ALICE)
            second = listed(f"limit=3&cursor={first['next_cursor']}", ALICE)
        assert set(first) == {"items", "next_cursor"}
        assert [job["id"] for job in first["items"] + second["items"]] == ids[::-1]
        assert second["next_cursor"] is None

    def test_counts_per_status_by_tenant_and_kind(self) -> None:
        """GET /counts: every status, the caller's tenant only, a kind filter; a bad kind is 422."""
        with serve(concurrency=0) as (_, client):
            ids = [submit(client, headers=ALICE)["id"] for _ in range(2)]
            submit(client, "steps", headers=BOB)
            client.post(f"{API}/jobs/{ids[0]}/cancel")
            alice = client.get(f"{API}/counts", headers=ALICE)
            host = client.get(f"{API}/counts?kind=steps")
            bad = client.get(f"{API}/counts?kind=")
        assert alice.status_code == 200, alice.text
        assert alice.json is not None
        assert host.json is not None
        assert set(alice.json["counts"]) == {status.value for status in JobStatus}
        assert (alice.json["counts"]["pending"], alice.json["counts"]["cancelled"]) == (1, 1)
        assert host.json["counts"]["pending"] == 1
        assert sum(host.json["counts"].values()) == 1
        assert bad.status_code == 422
        assert bad.json is not None
        assert bad.json["error"]["code"] == "invalid_input"

    def test_cancel(self) -> None:
        """POST /jobs/{id}/cancel with or without a body cancels a pending job."""
        with serve(concurrency=0) as (_, client):
            first, second = submit(client)["id"], submit(client)["id"]
            with_reason = client.post(f"{API}/jobs/{first}/cancel", json={"reason": "typo"})
            without = client.post(f"{API}/jobs/{second}/cancel")
        assert with_reason.status_code == without.status_code == 200
        assert with_reason.json is not None
        assert without.json is not None
        assert (with_reason.json["status"], with_reason.json["cancel_reason"]) == ("cancelled", "typo")
        assert (without.json["status"], without.json["cancel_reason"]) == ("cancelled", None)

    def test_delete(self) -> None:
        """DELETE /jobs/{id} of a finished job is 204 without a body; the job is gone."""
        with serve() as (jobs, client):
            job_id = submit(client)["id"]
            jobs.wait(job_id, timeout=5)
            response = client.delete(f"{API}/jobs/{job_id}")
            after = client.get(f"{API}/jobs/{job_id}")
        assert response.status_code == 204
        assert response.data == b""
        assert_error(after, 404, "job_not_found")

    def test_priority(self) -> None:
        """PATCH /jobs/{id}/priority by an admin returns {"job", "position"}."""
        with serve(concurrency=0) as (_, client):
            submit(client, headers=ALICE)
            job_id = submit(client, headers=ALICE)["id"]
            response = client.patch(
                f"{API}/jobs/{job_id}/priority", json={"priority": 9}, headers=ALICE_ADMIN
            )
        assert response.status_code == 200
        assert response.json is not None
        assert set(response.json) == {"job", "position"}
        assert (response.json["job"]["priority"], response.json["position"]) == (9, 1)

    def test_artifacts(self) -> None:
        """Artifacts are listed, read as octet-stream bytes and deleted with 204."""
        with serve() as (jobs, client):
            job_id = submit(client, payload={"artifacts": {"b.txt": "bee", "a/c.txt": "sea"}})["id"]
            jobs.wait(job_id, timeout=5)
            listed = client.get(f"{API}/jobs/{job_id}/artifacts")
            read = client.get(f"{API}/jobs/{job_id}/artifacts/a/c.txt")
            deleted = client.delete(f"{API}/jobs/{job_id}/artifacts/b.txt")
            after = client.get(f"{API}/jobs/{job_id}/artifacts")
            gone = client.get(f"{API}/jobs/{job_id}/artifacts/b.txt")
        assert listed.json == {"items": ["a/c.txt", "b.txt"]}
        assert (read.status_code, read.mimetype, read.data) == (200, "application/octet-stream", b"sea")
        assert (deleted.status_code, deleted.data) == (204, b"")
        assert after.json == {"items": ["a/c.txt"]}
        assert_error(gone, 404, "artifact_not_found")


class TestErrors:
    def test_another_tenants_job_is_404(self) -> None:
        """Another tenant gets 404 for the job on every route, never 403."""
        with serve() as (jobs, client):
            job_id = submit(client, headers=ALICE, payload={"artifacts": {"a.txt": "x"}})["id"]
            jobs.wait(job_id, timeout=5)
            responses = [
                client.get(f"{API}/jobs/{job_id}", headers=BOB),
                client.post(f"{API}/jobs/{job_id}/cancel", headers=BOB),
                client.delete(f"{API}/jobs/{job_id}", headers=BOB),
                client.patch(f"{API}/jobs/{job_id}/priority", json={"priority": 1}, headers=BOB),
                client.get(f"{API}/jobs/{job_id}/artifacts", headers=BOB),
                client.get(f"{API}/jobs/{job_id}/artifacts/a.txt", headers=BOB),
                client.delete(f"{API}/jobs/{job_id}/artifacts/a.txt", headers=BOB),
                client.get(f"{API}/events?job_id={job_id}", headers=BOB),
            ]
            assert jobs.get(job_id).status == "completed"
        for response in responses:
            assert_error(response, 404, "job_not_found", f"Job {job_id!r} not found.")

    def test_delete_running_is_409_with_the_advice(self) -> None:
        """Deleting a running job is 409 'Cannot delete running job. Use cancel instead.'"""
        with serve() as (jobs, client):
            job_id = submit_running(jobs, client)
            response = client.delete(f"{API}/jobs/{job_id}")
            artifact = client.delete(f"{API}/jobs/{job_id}/artifacts/x.txt")
        assert_error(response, 409, "invalid_state", "Cannot delete running job. Use cancel instead.")
        assert_error(artifact, 409, "invalid_state")

    def test_cancel_finished_and_priority_of_finished_are_409(self) -> None:
        """Cancelling or re-prioritising a finished job is 409."""
        with serve() as (jobs, client):
            job_id = submit(client)["id"]
            jobs.wait(job_id, timeout=5)
            cancel = client.post(f"{API}/jobs/{job_id}/cancel")
            priority = client.patch(f"{API}/jobs/{job_id}/priority", json={"priority": 1})
        assert_error(cancel, 409, "invalid_state")
        assert_error(priority, 409, "invalid_state")

    def test_non_admin_priority_is_403(self) -> None:
        """A non-admin actor changing a priority is 403 forbidden."""
        with serve(concurrency=0) as (_, client):
            job_id = submit(client, headers=ALICE)["id"]
            response = client.patch(f"{API}/jobs/{job_id}/priority", json={"priority": 1}, headers=ALICE)
        assert_error(response, 403, "forbidden")

    @pytest.mark.parametrize(
        "body",
        [
            b"",
            b"{not json",
            b"[]",
            b'{"payload": 1}',
            b'{"kind": "echo", "extra": 1}',
            b'{"kind": "nope"}',
            b'{"kind": "echo", "priority": "1"}',
            b'{"kind": "echo", "priority": null}',
            b'{"kind": "echo", "ttl": -1}',
            b'{"kind": "echo", "timeout": "soon"}',
            b'{"kind": "echo", "max_attempts": 0}',
            b'{"kind": "echo", "labels": {"a": 1}}',
            b'{"kind": "echo", "payload": NaN}',
            b'{"kind": "\xff"}',
        ],
    )
    def test_bad_submit_body_is_422(self, body: bytes) -> None:
        """A missing, malformed or invalid POST /jobs body is 422 invalid_input; nothing is stored."""
        with serve(concurrency=0) as (jobs, client):
            response = client.post(f"{API}/jobs", data=body, content_type="application/json")
            assert len(jobs.list()) == 0
        assert_error(response, 422, "invalid_input")

    @pytest.mark.parametrize(
        ("method", "path", "body"),
        [
            ("PATCH", "/priority", b""),
            ("PATCH", "/priority", b"{}"),
            ("PATCH", "/priority", b'{"priority": "1"}'),
            ("PATCH", "/priority", b'{"priority": true}'),
            ("PATCH", "/priority", b'{"priority": 1e99}'),
            ("PATCH", "/priority", b'{"priority": 10000000}'),
            ("PATCH", "/priority", b'{"priority": 1, "x": 1}'),
            ("POST", "/cancel", b'{"reason": 1}'),
            ("POST", "/cancel", b'{"why": "x"}'),
            ("POST", "/cancel", b'"x"'),
        ],
    )
    def test_bad_priority_and_cancel_bodies_are_422(self, method: str, path: str, body: bytes) -> None:
        """Priority and cancel bodies are checked like the FastAPI router's: 422 invalid_input."""
        with serve(concurrency=0) as (jobs, client):
            job_id = submit(client)["id"]
            response = client.open(
                f"{API}/jobs/{job_id}{path}", method=method, data=body, content_type="application/json"
            )
            assert jobs.get(job_id).status == "pending"
        assert_error(response, 422, "invalid_input")

    @pytest.mark.parametrize(
        "query",
        [
            "status=bogus",
            "status=",
            "kind=",
            "limit=x",
            "limit=0",
            "limit=1.5",
            "limit=" + "9" * 20,
            "cursor=zz",
            "cursor=",
        ],
    )
    def test_bad_list_query_is_422(self, query: str) -> None:
        """An unknown status, a bad limit or a malformed cursor is 422 invalid_input."""
        with serve() as (_, client):
            response = client.get(f"{API}/jobs?{query}")
        assert_error(response, 422, "invalid_input")

    @pytest.mark.parametrize("name", ["a//b", "../x", "a/../../b", "a\\b", "/etc/passwd", "./a"])
    def test_unsafe_artifact_names_are_422(self, name: str) -> None:
        """Unsafe artifact names are 422 invalid_input (not a bare 404 or a redirect)."""
        with serve() as (jobs, client):
            job_id = submit(client)["id"]
            jobs.wait(job_id, timeout=5)
            read = client.get(f"{API}/jobs/{job_id}/artifacts/{name}")
            delete = client.delete(f"{API}/jobs/{job_id}/artifacts/{name}")
        assert_error(read, 422, "invalid_input")
        assert_error(delete, 422, "invalid_input")

    def test_any_artifact_name_reaches_the_route(self) -> None:
        """Names with newlines or control characters get the route's JSON answer."""
        with serve() as (jobs, client):
            job_id = submit(client)["id"]
            jobs.wait(job_id, timeout=5)
            names = ("%0Ax", "a%0A", "%1B")
            responses = [client.get(f"{API}/jobs/{job_id}/artifacts/{name}") for name in names]
        for response in responses:
            assert_error(response, 404, "artifact_not_found")

    def test_backend_error_is_503(self) -> None:
        """A failing backend is 503 backend_error."""

        class FailingBlobs(MemoryBlobStore):
            async def delete_prefix(self, prefix: str) -> int:
                raise OSError("disk on fire")

        with serve(blobs=FailingBlobs(), delete_policy=DeletePolicy(on_artifact_error="fail")) as (
            jobs,
            client,
        ):
            job_id = submit(client)["id"]
            jobs.wait(job_id, timeout=5)
            response = client.delete(f"{API}/jobs/{job_id}")
        assert_error(response, 503, "backend_error")

    def test_manager_not_running_is_503(self) -> None:
        """Routes of a manager that is not started answer 503."""
        client = make_client(make_jobs())
        assert_error(client.get(f"{API}/jobs"), 503, "jobkit_error")


class TestConfiguration:
    @pytest.mark.parametrize("heartbeat", [0, -1, float("nan"), "15", True])
    def test_heartbeat_must_be_positive_seconds(self, heartbeat: Any) -> None:
        """job_blueprint rejects a heartbeat that is not a positive number of seconds."""
        with pytest.raises(InvalidInput, match="heartbeat"):
            job_blueprint(make_jobs(), heartbeat=heartbeat)

    def test_missing_flask_names_the_extra(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without Flask installed, importing the integration says what to install."""
        monkeypatch.setitem(sys.modules, "flask", None)
        monkeypatch.delitem(sys.modules, "jobkit.integrations.flask")
        with pytest.raises(ImportError) as raised:
            importlib.import_module("jobkit.integrations.flask")
        assert str(raised.value) == "jobkit.integrations.flask needs Flask: pip install 'jobkit[flask]'"

    def test_two_blueprints_need_two_names(self) -> None:
        """The same routes can be registered twice under different blueprint names."""
        with serve(concurrency=0) as (jobs, _):
            app = flask.Flask(__name__)
            app.register_blueprint(job_blueprint(jobs), url_prefix="/a")
            app.register_blueprint(job_blueprint(jobs, name="jobkit_b"), url_prefix="/b")
            client = app.test_client()
            assert client.get("/a/jobs").status_code == client.get("/b/jobs").status_code == 200


class TestEvents:
    def test_streams_a_jobs_events(self) -> None:
        """GET /events streams the opening comment, then each event of the job as it happens."""
        with serve() as (_, client):
            response = client.get(f"{API}/events", headers=ALICE, buffered=False)
            try:
                assert response.status_code == 200
                assert response.mimetype == "text/event-stream"
                assert response.headers["Cache-Control"] == "no-cache"
                stream = EventReader(response)
                assert stream.next().comments == ["connected"]
                job = submit(client, "steps", ALICE)
                seen = stream.until(job["id"], "completed")
            finally:
                response.close()
        assert [frame.event for frame in seen] == ["submitted", "started", "progress", "completed"]
        assert [frame.data["status"] for frame in seen] == ["pending", "running", "running", "completed"]
        assert {frame.data["tenant"] for frame in seen} == {"acme"}
        assert seen[2].data["data"] == {"progress": 0.5, "message": "half way"}

    def test_a_retried_failure_streams_scheduled_with_run_at_and_attempt(self) -> None:
        """A job submitted with `retry` that fails streams `scheduled` with when it runs again
        and which attempt that will be."""

        def boom(ctx: Any, payload: Any) -> None:
            raise ValueError("boom")

        jobs = make_jobs()
        jobs.register("boom", boom)
        with jobs:
            client = make_client(jobs)
            response = client.get(f"{API}/events", buffered=False)
            try:
                stream = EventReader(response)
                stream.next()
                job = submit(client, "boom", retry={"attempts": 2, "backoff": 3600, "jitter": 0})
                seen = stream.until(job["id"], "scheduled")
            finally:
                response.close()
        assert [frame.event for frame in seen] == ["submitted", "started", "scheduled"]
        scheduled = seen[-1].data
        assert (scheduled["status"], scheduled["data"]["attempt"]) == ("scheduled", 2)
        run_at = datetime.fromisoformat(scheduled["data"]["run_at"])
        waited = run_at - datetime.fromisoformat(scheduled["at"])  # the event's own clock read
        assert abs(waited - timedelta(seconds=3600)) < timedelta(seconds=1)

    def test_a_tenants_stream_skips_other_tenants(self) -> None:
        """A tenant's stream carries none of another tenant's events."""
        with serve(concurrency=0) as (_, client):
            response = client.get(f"{API}/events", headers=BOB, buffered=False)
            try:
                stream = EventReader(response)
                stream.next()
                alices = submit(client, headers=ALICE)
                bobs = submit(client, headers=BOB)
                first = stream.next()
            finally:
                response.close()
        assert alices["id"] != bobs["id"]
        assert (first.event, first.data["job_id"], first.data["tenant"]) == (
            "submitted",
            bobs["id"],
            "globex",
        )

    def test_heartbeat_while_idle(self) -> None:
        """With no events for `heartbeat` seconds the stream sends a comment."""
        jobs = make_jobs()
        with jobs:
            client = make_client(jobs, heartbeat=0.05)
            response = client.get(f"{API}/events", buffered=False)
            try:
                stream = EventReader(response)
                stream.next()
                beat = stream.next()
            finally:
                response.close()
        assert (beat.event, beat.comments) == (None, ["heartbeat"])

    def test_closing_the_response_ends_the_subscription(self) -> None:
        """When the server closes the response (client gone), its helper thread ends."""
        with serve() as (_, client):
            response = client.get(f"{API}/events", buffered=False)
            EventReader(response).next()
            helpers = [thread for thread in threading.enumerate() if thread.name == "jobkit-sse"]
            response.close()
        assert len(helpers) == 1
        helpers[0].join(timeout=5)
        assert not helpers[0].is_alive()

    def test_the_manager_can_shut_down_while_a_stream_is_open(self) -> None:
        """Leaving `with jobs:` while an event stream is open (and not being read at that
        moment) ends the stream instead of waiting for it forever."""
        script = textwrap.dedent(
            f"""
            import flask
            from werkzeug.test import EnvironBuilder
            from jobkit import BlockingJobManager
            from jobkit.integrations.flask import job_blueprint

            jobs = BlockingJobManager(sweep_interval=None)
            app = flask.Flask("probe")
            app.register_blueprint(job_blueprint(jobs), url_prefix={API!r})
            with jobs:
                # a WSGI server has called the app, and not yet started sending the body
                body = app(EnvironBuilder(path="{API}/events").get_environ(), lambda *args: None)
            body.close()
            print("stopped")
            """
        )
        try:
            done = subprocess.run(
                [sys.executable, "-c", script], capture_output=True, text=True, timeout=5, check=False
            )
        except subprocess.TimeoutExpired:
            pytest.fail("leaving `with jobs:` hung while an event stream was open")
        assert done.stdout.strip() == "stopped", done.stderr


class TestWhoIsAsking:
    def test_nobody_signed_in_is_401_and_host_access_is_explicit(self) -> None:
        """An actor callable returning None gets 401 everywhere; AS_HOST is the host; /me tells."""
        with serve(concurrency=0) as (jobs, client):
            job = jobs.submit("echo", {"secret": 1})
            nobody = {"X-Actor": "-"}
            for method, path in [
                ("GET", "/jobs"),
                ("GET", f"/jobs/{job.id}"),
                ("POST", f"/jobs/{job.id}/cancel"),
                ("DELETE", f"/jobs/{job.id}"),
                ("GET", "/me"),
            ]:
                response = client.open(API + path, method=method, headers=nobody)
                assert response.status_code == 401, (method, path)
                assert response.get_json()["error"]["code"] == "unauthenticated"
            assert jobs.get(job.id).status == "pending"
            assert client.get(f"{API}/me").get_json() == {
                "id": None,
                "tenant": None,
                "roles": [],
                "host": True,
            }
            alice = {"X-Actor": "alice", "X-Tenant": "acme"}
            assert client.get(f"{API}/me", headers=alice).get_json()["id"] == "alice"


class TestCrossSite:
    def test_a_forgeable_post_is_refused(self) -> None:
        """No body, text/plain or a form: 422, nothing changes; JSON is accepted."""
        with serve(concurrency=0) as (jobs, _):
            app = flask.Flask(__name__)
            app.register_blueprint(job_blueprint(jobs, actor=header_actor), url_prefix=API)
            client = app.test_client()
            job = jobs.submit("echo")
            for options in (
                {},
                {"data": b"", "content_type": "text/plain"},
                {"data": {"reason": "x"}},
            ):
                response = client.post(f"{API}/jobs/{job.id}/cancel", **options)
                assert response.status_code == 422, options
                assert "another web site" in response.get_json()["error"]["message"]
            assert jobs.get(job.id).status == "pending"
            assert client.post(f"{API}/jobs/{job.id}/cancel", json={}).status_code == 200


class TestFrameworkErrors:
    """Flask's own errors under the blueprint's prefix, and the host's abort(), have the jobkit body."""

    def test_an_unknown_route_under_the_prefix_is_404_not_found(self) -> None:
        with serve(concurrency=0) as (_, client):
            assert_error(client.get(f"{API}/nope"), 404, "not_found", "There is no route GET /api/v1/nope.")
            assert_error(client.get(f"{API}/jobs/a/b/c"), 404, "not_found")
            assert_error(client.get(API), 404, "not_found")

    def test_a_wrong_method_is_405_method_not_allowed_with_allow(self) -> None:
        with serve(concurrency=0) as (_, client):
            response = client.put(f"{API}/jobs", json={})
            assert_error(response, 405, "method_not_allowed")
            assert "it takes GET, HEAD, OPTIONS, POST" in response.get_json()["error"]["message"]
            assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS", "POST"}
            assert_error(client.post(f"{API}/me", json={}), 405, "method_not_allowed")

    @pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe", b"[1, 2]"])
    def test_a_malformed_body_is_422_invalid_input(self, content: bytes) -> None:
        with serve(concurrency=0) as (_, client):
            response = client.post(f"{API}/jobs", data=content, content_type="application/json")
            assert_error(response, 422, "invalid_input")

    @pytest.mark.parametrize(
        ("method", "path", "limit"),
        [
            ("POST", "/jobs", 1 << 20),
            ("POST", "/jobs/x/cancel", 64 << 10),
            ("PATCH", "/jobs/x/priority", 4 << 10),
        ],
    )
    def test_a_body_too_large_is_413_payload_too_large(self, method: str, path: str, limit: int) -> None:
        with serve(concurrency=0) as (jobs, client):
            body = json.dumps({"reason": "x" * limit}).encode()
            response = client.open(API + path, method=method, data=body, content_type="application/json")
            assert_error(response, 413, "payload_too_large")
            assert str(limit) in response.get_json()["error"]["message"]
            # Flask's own limit (MAX_CONTENT_LENGTH) answers the same way
            client.application.config["MAX_CONTENT_LENGTH"] = 10
            response = client.open(API + path, method=method, data=body, content_type="application/json")
            assert_error(response, 413, "payload_too_large")
            assert len(jobs.list()) == 0

    def test_the_hosts_abort_in_the_actor_callable(self) -> None:
        def strict_actor() -> Any:
            token = flask.request.headers.get("X-Token")
            if token == "banned":
                flask.abort(403, "This token is banned.")
            if token != "ok":
                flask.abort(401, www_authenticate=WWWAuthenticate("Bearer"))
            return AS_HOST

        with serve(concurrency=0) as (jobs, _):
            app = flask.Flask(__name__)
            app.register_blueprint(job_blueprint(jobs, actor=strict_actor), url_prefix=API)
            client = app.test_client()
            banned = client.get(f"{API}/jobs", headers={"X-Token": "banned"})
            assert_error(banned, 403, "forbidden", "This token is banned.")
            anonymous = client.post(f"{API}/jobs", json={"kind": "echo"})
            assert_error(anonymous, 401, "unauthenticated")
            assert anonymous.headers["WWW-Authenticate"] == "Bearer"
            assert client.get(f"{API}/jobs", headers={"X-Token": "ok"}).status_code == 200
            assert len(jobs.list()) == 0

    def test_paths_outside_the_prefix_keep_the_apps_own_error_pages(self) -> None:
        """The app's own handler (or Flask's page) still answers elsewhere; an unhandled
        error in a blueprint route is a 500 with the jobkit body."""
        with serve(concurrency=0) as (jobs, _):
            app = flask.Flask(__name__)

            @app.errorhandler(werkzeug.exceptions.HTTPException)
            def own_page(exc: werkzeug.exceptions.HTTPException) -> tuple[str, int]:
                return f"own page {exc.code}", exc.code or 500

            def broken_actor() -> Any:
                raise RuntimeError("the host's bug")

            app.register_blueprint(job_blueprint(jobs, actor=header_actor), url_prefix=API)
            app.register_blueprint(
                job_blueprint(jobs, actor=broken_actor, name="broken"), url_prefix="/broken"
            )
            client = app.test_client()
            assert client.get("/elsewhere").text == "own page 404"
            assert client.get("/api/v1x").text == "own page 404"
            assert_error(client.get(f"{API}/nope"), 404, "not_found")
            assert_error(client.delete("/broken/nope"), 404, "not_found")
            failed = client.get("/broken/jobs")
            assert_error(failed, 500, "internal_error")
            assert "the host's bug" not in failed.text

            plain = flask.Flask(__name__)
            plain.register_blueprint(job_blueprint(jobs), url_prefix=API)
            page = plain.test_client().get("/elsewhere")
            assert page.status_code == 404
            assert page.mimetype == "text/html"


class TestShutdown:
    """SIGTERM on a Flask dev-server process (werkzeug, the blueprint through init_app) with a
    client on /events: the manager stops first, so the running job is back to pending, the
    stream ends and the process exits."""

    def test_sigterm_with_an_open_event_stream(self, tmp_path: Path) -> None:
        database = tmp_path / "jobs.db"
        server = ServerProcess([sys.executable, str(SHUTDOWN_APP), "flask", str(database)])
        try:
            stopped = stop_while_watching(server, f"http://127.0.0.1:{server.port}/api/v1", signal.SIGTERM)
        finally:
            server.stop()
        assert stopped.stream_ended_after < 3, stopped
        assert stopped.exited_after < 5, stopped
        assert stopped.returncode == 128 + signal.SIGTERM, server.output  # SystemExit(143)
        assert "stopped" in server.output  # the server's `finally` ran
        assert status_in_store(database, stopped.job_id) == "pending"

    def test_stop_on_signals_keeps_the_previous_handler(self) -> None:
        """The host's own handler still runs, after the manager stopped; ignored stays ignored."""
        script = textwrap.dedent(
            """
            import os, signal
            from jobkit import BlockingJobManager
            from jobkit.integrations.flask import stop_on_signals

            seen = []
            signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(jobs.manager.kinds is not None))
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            jobs = BlockingJobManager()
            jobs.__enter__()
            stop_on_signals(jobs)
            stop_on_signals(jobs)  # once is enough
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGTERM)
            assert seen == [True], seen
            try:
                jobs.get("x" * 32)
            except Exception as exc:
                print(type(exc).__name__, exc)
            """
        )
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "not started" in done.stdout

    def test_stop_on_signals_outside_the_main_thread_is_refused(self) -> None:
        jobs = make_jobs()
        failures: list[BaseException] = []

        def hook() -> None:
            try:
                stop_on_signals(jobs)
            except InvalidInput as exc:
                failures.append(exc)

        thread = threading.Thread(target=hook)
        thread.start()
        thread.join()
        assert len(failures) == 1
        assert "main thread" in str(failures[0])
