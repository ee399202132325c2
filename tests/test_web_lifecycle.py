"""Delays, retries, idempotency keys, paused kinds and schedules over HTTP: the same routes,
bodies and status codes through the FastAPI router and the Flask blueprint."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import flask
import httpx
import pytest
from anyio.from_thread import start_blocking_portal
from fastapi import FastAPI

from jobkit import BlockingJobManager, JobManager
from jobkit.integrations.fastapi import install_error_handlers, job_router
from jobkit.integrations.flask import job_blueprint
from web_handlers import HANDLERS, actor_from_headers, header_actor

API = "/api/v1"
ALICE = {"X-Actor": "alice", "X-Tenant": "acme"}
ADMIN = {"X-Actor": "root", "X-Tenant": "acme", "X-Roles": "admin"}
SAME_SITE = {"X-Requested-With": "tests"}


class Web:
    """One integration under test, called as plain requests: ``call`` returns the status and
    the decoded JSON body (None when there is none)."""

    def __init__(self, framework: str, client: Any, wait: Any) -> None:
        self.framework = framework
        self._client = client
        self.wait = wait

    def call(self, method: str, path: str, body: Any = None, headers: Any = None) -> tuple[int, Any]:
        headers = {**SAME_SITE, **(headers or {})}
        kwargs: dict[str, Any] = {"headers": headers}
        if body is not None:
            kwargs["json"] = body
        if self.framework == "flask":
            flask_response = self._client.open(API + path, method=method, **kwargs)
            data = flask_response.get_data()
            return flask_response.status_code, flask_response.get_json() if data else None
        response = self._client.request(method, API + path, **kwargs)
        return response.status_code, response.json() if response.content else None

    def post(self, path: str, body: Any = None, headers: Any = None) -> tuple[int, Any]:
        return self.call("POST", path, body, headers)

    def get(self, path: str, headers: Any = None) -> Any:
        status, body = self.call("GET", path, headers=headers)
        assert status == 200, body
        return body


def _flask_actor() -> Any:
    headers = flask.request.headers
    return actor_from_headers(headers.get("X-Actor"), headers.get("X-Tenant"), headers.get("X-Roles"))


@pytest.fixture(params=["fastapi", "flask"])
def web(request: pytest.FixtureRequest) -> Iterator[Web]:
    """The routes over a manager that runs no jobs (concurrency 0), with the test handlers
    and the declared kind ``report``."""
    if request.param == "fastapi":
        jobs = JobManager(sweep_interval=None, concurrency=0)
        for kind, handler in HANDLERS.items():
            jobs.register(kind, handler)
        jobs.declare("report")
        app = FastAPI()
        install_error_handlers(app)
        app.include_router(job_router(jobs, actor=header_actor), prefix=API)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test")
        # The manager and the client on an event loop in another thread; the test calls them.
        with (
            start_blocking_portal() as portal,
            portal.wrap_async_context_manager(jobs),
            portal.wrap_async_context_manager(client),
        ):

            class Calls:
                def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
                    response: httpx.Response = portal.call(
                        functools.partial(client.request, method, url, **kwargs)
                    )
                    return response

            yield Web("fastapi", Calls(), lambda job_id: portal.call(jobs.get, job_id))
    else:
        sync = BlockingJobManager(sweep_interval=None, concurrency=0)
        for kind, handler in HANDLERS.items():
            sync.register(kind, handler)
        sync.declare("report")
        app = flask.Flask(__name__)
        app.register_blueprint(job_blueprint(sync, actor=_flask_actor), url_prefix=API)
        with sync:
            yield Web("flask", app.test_client(), sync.get)


def error_code(response: tuple[int, Any], status: int) -> str:
    got, body = response
    assert got == status, body
    assert set(body) == {"error"}
    assert body["error"]["message"]
    code: str = body["error"]["code"]
    return code


class TestDelayedSubmit:
    def test_a_delay_makes_a_scheduled_job_with_its_run_at(self, web: Web) -> None:
        """POST /jobs with `delay` answers 201 with a `scheduled` job due that many seconds on."""
        before = datetime.now(UTC)
        status, job = web.post("/jobs", {"kind": "echo", "delay": 3600})
        assert status == 201, job
        assert job["status"] == "scheduled"
        run_at = datetime.fromisoformat(job["run_at"])
        assert before + timedelta(seconds=3600) <= run_at <= datetime.now(UTC) + timedelta(seconds=3600)
        assert web.get(f"/jobs/{job['id']}")["status"] == "scheduled"
        assert [item["id"] for item in web.get("/jobs?status=scheduled")["items"]] == [job["id"]]

    def test_run_at_with_an_offset_is_kept_in_utc(self, web: Web) -> None:
        """`run_at` with a UTC offset is stored and answered as the same instant in UTC."""
        status, job = web.post("/jobs", {"kind": "echo", "run_at": "2099-05-01T12:30:00+02:00"})
        assert status == 201, job
        assert (job["status"], job["run_at"]) == ("scheduled", "2099-05-01T10:30:00+00:00")

    def test_a_retry_object_becomes_the_jobs_retry(self, web: Web) -> None:
        """`retry` sets the job's policy (every Exception) and its max_attempts."""
        body = {"kind": "echo", "retry": {"attempts": 4, "backoff": 2, "jitter": 0}}
        status, job = web.post("/jobs", body)
        assert status == 201, job
        assert job["retry"] == {
            "attempts": 4,
            "backoff": 2.0,
            "factor": 2.0,
            "max_backoff": 3600.0,
            "jitter": 0.0,
            "on": ["builtins.Exception"],
        }
        assert job["max_attempts"] == 4
        assert web.post("/jobs", {"kind": "echo"})[1]["retry"] is None


class TestIdempotency:
    def test_a_repeated_key_in_the_body_answers_200_with_the_same_job(self, web: Web) -> None:
        """The first submit with a key is 201; the same submit again is 200 with that job."""
        body = {"kind": "echo", "payload": {"n": 1}, "idempotency_key": "order-1"}
        first = web.post("/jobs", body)
        again = web.post("/jobs", body)
        assert (first[0], again[0]) == (201, 200)
        assert again[1]["id"] == first[1]["id"]
        assert again[1]["idempotency_key"] == "order-1"
        assert len(web.get("/jobs")["items"]) == 1

    def test_the_idempotency_key_header_works_too(self, web: Web) -> None:
        """`Idempotency-Key` is the body's field as a header (the same key in both is fine)."""
        header = {"Idempotency-Key": "order-2"}
        first = web.post("/jobs", {"kind": "echo"}, header)
        again = web.post("/jobs", {"kind": "echo"}, header)
        both = web.post("/jobs", {"kind": "echo", "idempotency_key": "order-2"}, header)
        assert (first[0], again[0], both[0]) == (201, 200, 200)
        assert first[1]["idempotency_key"] == "order-2"
        assert again[1]["id"] == both[1]["id"] == first[1]["id"]

    def test_a_header_and_a_field_that_differ_are_refused(self, web: Web) -> None:
        """Two different keys for one submit: 422 and no job."""
        response = web.post("/jobs", {"kind": "echo", "idempotency_key": "a"}, {"Idempotency-Key": "b"})
        assert error_code(response, 422) == "invalid_input"
        assert web.get("/jobs")["items"] == []

    def test_keys_are_per_tenant(self, web: Web) -> None:
        """Another tenant's key is not taken: it gets a job of its own."""
        mine = web.post("/jobs", {"kind": "echo", "idempotency_key": "k"}, ALICE)
        theirs = web.post(
            "/jobs", {"kind": "echo", "idempotency_key": "k"}, {"X-Actor": "b", "X-Tenant": "g"}
        )
        assert (mine[0], theirs[0]) == (201, 201)
        assert mine[1]["id"] != theirs[1]["id"]


class TestRetryRoute:
    def cancelled(self, web: Web) -> str:
        job_id: str = web.post("/jobs", {"kind": "echo"})[1]["id"]
        status, job = web.post(f"/jobs/{job_id}/cancel")
        assert (status, job["status"]) == (200, "cancelled")
        return job_id

    def test_retry_sends_a_cancelled_job_back_to_pending(self, web: Web) -> None:
        """POST /jobs/{id}/retry (no body) answers the job, pending again, finished_at cleared."""
        job_id = self.cancelled(web)
        status, job = web.post(f"/jobs/{job_id}/retry")
        assert status == 200, job
        assert (job["id"], job["status"], job["finished_at"]) == (job_id, "pending", None)
        assert web.wait(job_id).status == "pending"

    def test_retry_with_run_at_schedules_it(self, web: Web) -> None:
        """A `run_at` in the body makes the retried job scheduled for then."""
        job_id = self.cancelled(web)
        status, job = web.post(f"/jobs/{job_id}/retry", {"run_at": "2099-01-01T00:00:00Z"})
        assert status == 200, job
        assert (job["status"], job["run_at"]) == ("scheduled", "2099-01-01T00:00:00+00:00")

    def test_retry_of_a_job_that_did_not_end_is_409(self, web: Web) -> None:
        """A pending job cannot be retried: 409 invalid_state; an unknown id is 404."""
        job_id = web.post("/jobs", {"kind": "echo"})[1]["id"]
        assert error_code(web.post(f"/jobs/{job_id}/retry"), 409) == "invalid_state"
        assert error_code(web.post("/jobs/nope/retry"), 404) == "job_not_found"

    def test_a_naive_run_at_is_422_and_leaves_the_job(self, web: Web) -> None:
        job_id = self.cancelled(web)
        response = web.post(f"/jobs/{job_id}/retry", {"run_at": "2099-01-01T00:00:00"})
        assert error_code(response, 422) == "invalid_input"
        assert "UTC offset" in response[1]["error"]["message"]
        assert web.get(f"/jobs/{job_id}")["status"] == "cancelled"


class TestKinds:
    def test_kinds_lists_handlers_and_declared_kinds(self, web: Web) -> None:
        """GET /kinds: every kind with a handler or declared, by name, none paused."""
        assert web.get("/kinds") == {
            "items": [{"kind": kind, "paused": False} for kind in sorted({*HANDLERS, "report"})]
        }

    def test_pause_and_resume_round_trip(self, web: Web) -> None:
        """An admin pauses a kind (shown in GET /kinds, for everyone) and resumes it."""
        status, body = web.post("/kinds/echo/pause", headers=ADMIN)
        assert (status, body) == (200, {"kind": "echo", "paused": True})
        items = web.get("/kinds", ALICE)["items"]
        assert {"kind": "echo", "paused": True} in items
        assert {"kind": "steps", "paused": False} in items
        status, body = web.post("/kinds/echo/resume", headers=ADMIN)
        assert (status, body) == (200, {"kind": "echo", "paused": False})
        assert {"kind": "echo", "paused": False} in web.get("/kinds")["items"]

    def test_pausing_needs_an_admin(self, web: Web) -> None:
        """A non-admin gets 403 forbidden on pause and resume, and nothing is paused."""
        assert error_code(web.post("/kinds/echo/pause", headers=ALICE), 403) == "forbidden"
        assert error_code(web.post("/kinds/echo/resume", headers=ALICE), 403) == "forbidden"
        assert all(not item["paused"] for item in web.get("/kinds")["items"])

    def test_an_unknown_kind_is_422(self, web: Web) -> None:
        assert error_code(web.post("/kinds/nope/pause", headers=ADMIN), 422) == "invalid_input"


class TestSchedules:
    BODY: ClassVar[dict[str, Any]] = {
        "name": "nightly",
        "kind": "report",
        "payload": {"x": 1},
        "cron": "0 3 * * *",
    }

    def test_create_list_replace_and_delete(self, web: Web) -> None:
        """POST /schedules is 201 with the schedule, GET lists it, a POST of the same name
        replaces it, DELETE removes it (204) and a second DELETE is 404."""
        status, created = web.post("/schedules", {**self.BODY, "timezone": "Europe/Berlin"}, ADMIN)
        assert status == 201, created
        assert list(created) == [
            "name", "kind", "payload", "cron", "timezone", "tenant", "priority", "next_run_at", "created_at",
        ]  # fmt: skip
        assert (created["name"], created["kind"], created["payload"]) == ("nightly", "report", {"x": 1})
        assert (created["timezone"], created["tenant"], created["priority"]) == ("Europe/Berlin", "acme", 0)
        fire = datetime.fromisoformat(created["next_run_at"])
        assert fire.utcoffset() == timedelta(0)
        assert fire.astimezone(ZoneInfo("Europe/Berlin")).hour == 3
        assert web.get("/schedules", ALICE)["items"] == [created]
        status, replaced = web.post("/schedules", {**self.BODY, "cron": "*/5 * * * *", "priority": 7}, ADMIN)
        assert status == 201, replaced
        assert [(s["cron"], s["priority"]) for s in web.get("/schedules", ADMIN)["items"]] == [
            ("*/5 * * * *", 7)
        ]
        assert web.call("DELETE", "/schedules/nightly", headers=ADMIN) == (204, None)
        assert web.get("/schedules", ADMIN)["items"] == []
        assert error_code(web.call("DELETE", "/schedules/nightly", headers=ADMIN), 404) == "job_not_found"

    def test_schedules_belong_to_their_tenant(self, web: Web) -> None:
        """Another tenant neither sees nor removes a tenant's schedule."""
        assert web.post("/schedules", self.BODY, ADMIN)[0] == 201
        other_admin = {"X-Actor": "boss", "X-Tenant": "globex", "X-Roles": "admin"}
        assert web.get("/schedules", other_admin)["items"] == []
        assert (
            error_code(web.call("DELETE", "/schedules/nightly", headers=other_admin), 404) == "job_not_found"
        )
        assert len(web.get("/schedules")["items"]) == 1  # the host sees every tenant's

    def test_schedules_need_an_admin(self, web: Web) -> None:
        """A non-admin gets 403 on create and delete; the schedule stays as it was."""
        assert error_code(web.post("/schedules", self.BODY, ALICE), 403) == "forbidden"
        assert web.post("/schedules", self.BODY, ADMIN)[0] == 201
        assert error_code(web.call("DELETE", "/schedules/nightly", headers=ALICE), 403) == "forbidden"
        assert [s["name"] for s in web.get("/schedules", ALICE)["items"]] == ["nightly"]

    @pytest.mark.parametrize(
        ("change", "words"),
        [
            ({"cron": "0 3 * *"}, "five fields"),
            ({"cron": "61 * * * *"}, "Malformed cron"),
            ({"timezone": "Mars/Olympus"}, "Unknown time zone"),
            ({"kind": "nope"}, "Unknown job kind"),
        ],
    )
    def test_bad_schedules_are_422(self, web: Web, change: dict[str, Any], words: str) -> None:
        response = web.post("/schedules", {**self.BODY, **change}, ADMIN)
        assert error_code(response, 422) == "invalid_input"
        assert words in response[1]["error"]["message"]
        assert web.get("/schedules")["items"] == []


BOB = {"X-Actor": "bob", "X-Tenant": "globex"}
OPS = {"X-Actor": "ops", "X-Roles": "admin"}  # an admin of every tenant


class TestIdPrefixAndTenantFilters:
    def test_id_prefix_lists_the_matching_jobs(self, web: Web) -> None:
        """GET /jobs?id_prefix= lists the caller's jobs whose id starts with the prefix, any case,
        on one page; a malformed prefix, or a cursor with it, is 422."""
        made = [web.post("/jobs", {"kind": "echo"}, ALICE)[1]["id"] for _ in range(3)]
        for job_id in made:
            found = web.get(f"/jobs?id_prefix={job_id[:8].upper()}", ALICE)
            assert [item["id"] for item in found["items"]] == [job_id]
            assert found["next_cursor"] is None
            assert web.get(f"/jobs?id_prefix={job_id[:8]}", BOB)["items"] == []
        everything = web.get("/jobs?limit=1", ALICE)
        for query in ("id_prefix=xyz", "id_prefix=", f"id_prefix=ab&cursor={everything['next_cursor']}"):
            assert error_code(web.call("GET", f"/jobs?{query}", headers=ALICE), 422) == "invalid_input"

    def test_tenant_narrows_jobs_and_counts_for_the_host_and_untenanted_admins(self, web: Web) -> None:
        """?tenant= narrows GET /jobs and GET /counts; a tenant's actor naming another is 403."""
        alice_job = web.post("/jobs", {"kind": "echo"}, ALICE)[1]["id"]
        web.post("/jobs", {"kind": "echo"}, BOB)
        for who in ({}, OPS):
            assert [item["id"] for item in web.get("/jobs?tenant=acme", who)["items"]] == [alice_job]
            assert web.get("/counts?tenant=globex", who)["counts"]["pending"] == 1
        assert web.get("/counts?tenant=acme", ALICE)["counts"]["pending"] == 1
        for path in ("/jobs?tenant=globex", "/counts?tenant=globex"):
            assert error_code(web.call("GET", path, headers=ALICE), 403) == "forbidden"
        assert error_code(web.call("GET", "/jobs?tenant=", headers=OPS), 422) == "invalid_input"


class TestAuditRoute:
    def test_admins_read_the_trail_newest_first_and_by_job(self, web: Web) -> None:
        """GET /audit gives the tenant's records newest first, with the AuditRecord field names;
        job_id keeps one job's; limit bounds the page."""
        first = web.post("/jobs", {"kind": "echo"}, ALICE)[1]["id"]
        second = web.post("/jobs", {"kind": "echo"}, ALICE)[1]["id"]
        web.post(f"/jobs/{first}/cancel", {"reason": "not needed"}, ALICE)
        web.post(f"/jobs/{second}/cancel", None, ALICE)
        web.post("/jobs", {"kind": "echo"}, BOB)
        items = web.get("/audit", ADMIN)["items"]
        assert [(item["action"], item["job_id"]) for item in items][:2] == [
            ("cancel", second),
            ("cancel", first),
        ]
        assert {item["tenant"] for item in items} == {"acme"}
        assert set(items[0]) == {"id", "at", "action", "actor_id", "tenant", "job_id", "details"}
        assert items[0]["actor_id"] == "alice"
        assert datetime.fromisoformat(items[0]["at"]).utcoffset() == timedelta(0)
        mine = web.get(f"/audit?job_id={first}", ADMIN)["items"]
        assert {item["job_id"] for item in mine} == {first}
        assert len(web.get("/audit?limit=1", ADMIN)["items"]) == 1
        assert {item["tenant"] for item in web.get("/audit", OPS)["items"]} >= {"acme"}

    def test_the_trail_is_for_admins_and_bad_queries_are_422(self, web: Web) -> None:
        assert error_code(web.call("GET", "/audit", headers=ALICE), 403) == "forbidden"
        for query in ("limit=0", "limit=1001", "limit=many", "job_id="):
            assert error_code(web.call("GET", f"/audit?{query}", headers=ADMIN), 422) == "invalid_input"


class TestPositionRoute:
    def test_position_of_pending_jobs_and_none_after(self, web: Web) -> None:
        """GET /jobs/{id}/position: the 1-based place among pending jobs; null once not pending;
        another tenant's job is 404."""
        first = web.post("/jobs", {"kind": "echo"}, ALICE)[1]["id"]
        second = web.post("/jobs", {"kind": "echo"}, ALICE)[1]["id"]
        assert web.get(f"/jobs/{first}/position", ALICE) == {"position": 1}
        assert web.get(f"/jobs/{second}/position", ALICE) == {"position": 2}
        web.post(f"/jobs/{first}/cancel", None, ALICE)
        assert web.get(f"/jobs/{first}/position", ALICE) == {"position": None}
        assert web.get(f"/jobs/{second}/position", ALICE) == {"position": 1}
        assert error_code(web.call("GET", f"/jobs/{second}/position", headers=BOB), 404) == "job_not_found"
