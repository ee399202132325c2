"""Django: JobkitBackend under Django's Tasks API, the worker in this process, and the REST
routes and console through Django's test client (a WSGI request cycle).

The backend cases mirror Django's own backend tests (tests/tasks/test_dummy_backend.py,
test_immediate_backend.py and test_tasks.py in Django's repository): enqueue and aenqueue
of sync and async tasks, get_result / aget_result equal to the enqueued result,
refresh / arefresh, a missing result, the enqueue log line, and validate_task's refusals
(priority range, module-level functions, takes_context, queues, naive run_after), plus what a
backend that stores must add: non-JSON arguments and tasks not importable by their path are
refused before anything is stored.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("django")

import django_support

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module", autouse=True)
def _django(tmp_path_factory: pytest.TempPathFactory) -> None:
    django_support.setup(tmp_path_factory.mktemp("django"))


@pytest.fixture
def anyio_backend() -> str:
    """asgiref (Django's async bridge) runs on asyncio only."""
    return "asyncio"


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """The project's JobkitBackend on a fresh store of each kind."""
    dsn = request.getfixturevalue("pg_dsn") if request.param == "postgres" else None
    store = django_support.store_url(request.param, tmp_path, dsn)
    with django_support.using_store(store, f"file://{tmp_path / 'blobs'}") as found:
        yield found


@pytest.fixture
def tasks() -> Any:
    from djapp import tasks

    return tasks


@pytest.fixture
def compat() -> Any:
    from jobkit.integrations.django import _compat

    return _compat


def stored(backend: Any) -> int:
    return sum(backend.manager.counts().values())


class TestBackend:
    def test_using_correct_backend(self, backend: Any, compat: Any) -> None:
        """TASKS' default alias is a JobkitBackend, with truthful capability flags."""
        from jobkit.integrations.django import JobkitBackend

        assert isinstance(compat.task_backends["default"], JobkitBackend)
        assert backend.supports_defer
        assert backend.supports_async_task
        assert backend.supports_get_result
        assert backend.supports_priority

    @pytest.mark.parametrize("name", ["add", "async_add"])
    def test_enqueue_task(self, backend: Any, tasks: Any, compat: Any, name: str) -> None:
        """enqueue stores a job (kind = task path, payload = args and kwargs) and returns a READY result."""
        task = getattr(tasks, name)
        result = task.enqueue(1, b=3)
        assert result.status == compat.TaskResultStatus.READY
        assert result.started_at is None
        assert result.finished_at is None
        assert result.enqueued_at is not None
        with pytest.raises(ValueError, match="Task has not finished yet"):
            result.return_value  # noqa: B018
        assert result.task == task
        assert (result.args, result.kwargs, result.backend) == ([1], {"b": 3}, "default")
        job = backend.manager.get(result.id)
        assert job.kind == f"djapp.tasks.{name}"
        assert job.payload == {"args": [1], "kwargs": {"b": 3}}
        assert job.labels == {"django.backend": "default", "django.queue": "default"}

    @pytest.mark.anyio
    async def test_enqueue_task_async(self, backend: Any, tasks: Any, compat: Any) -> None:
        """aenqueue from async code: the same READY result."""
        for task in (tasks.add, tasks.async_add):
            result = await task.aenqueue()
            assert result.status == compat.TaskResultStatus.READY
            assert (result.args, result.kwargs) == ([], {})
            assert result.task == task

    def test_get_result(self, backend: Any, tasks: Any) -> None:
        """get_result of the id is equal to the enqueued result."""
        result = backend.enqueue(tasks.add, (1, 2), {})
        assert backend.get_result(result.id) == result
        assert tasks.add.get_result(result.id) == result

    @pytest.mark.anyio
    async def test_get_result_async(self, backend: Any, tasks: Any) -> None:
        result = await backend.aenqueue(tasks.add, (1, 2), {})
        assert await backend.aget_result(result.id) == result

    @pytest.mark.parametrize("result_id", ["123", "0" * 32, "not a hex id"])
    def test_get_missing_result(self, backend: Any, compat: Any, result_id: str) -> None:
        with pytest.raises(compat.TaskResultDoesNotExist):
            backend.get_result(result_id)

    @pytest.mark.anyio
    async def test_aget_missing_result(self, backend: Any, compat: Any) -> None:
        with pytest.raises(compat.TaskResultDoesNotExist):
            await backend.aget_result("123")

    def test_enqueue_logs(self, backend: Any, tasks: Any, caplog: pytest.LogCaptureFixture) -> None:
        """Django's task_enqueued signal is sent: its logger reports the id."""
        logger = "django.tasks" if tasks.add.__class__.__module__.startswith("django.") else "django_tasks"
        with caplog.at_level(logging.DEBUG, logger=logger):
            result = tasks.add.enqueue(1, 2)
        assert any("enqueued" in r.getMessage() and result.id in r.getMessage() for r in caplog.records)

    def test_priority_and_queue(self, backend: Any, tasks: Any) -> None:
        """priority is the job's; another queue puts @queue after the task path in the kind."""
        result = tasks.add.using(priority=-100).enqueue(1, 2)
        assert backend.manager.get(result.id).priority == -100
        assert result.task.priority == -100
        email = tasks.send_email.enqueue("a@example.org")
        job = backend.manager.get(email.id)
        assert job.kind == "djapp.tasks.send_email@emails"
        assert backend.get_result(email.id).task.queue_name == "emails"

    def test_deferred(self, backend: Any, tasks: Any) -> None:
        """run_after becomes run_at: the job waits scheduled, its result is READY."""
        when = datetime.now(UTC) + timedelta(hours=1)
        result = tasks.add.using(run_after=when).enqueue(1, 2)
        job = backend.manager.get(result.id)
        assert job.status.value == "scheduled"
        assert job.run_at == when
        assert backend.get_result(result.id).task.run_after == when


class TestBadInput:
    """Refused with Django's documented errors, and nothing is stored."""

    @pytest.mark.parametrize("priority", [101, -101])
    def test_priority_out_of_range(self, backend: Any, tasks: Any, compat: Any, priority: int) -> None:
        with pytest.raises(compat.InvalidTask, match="priority"):
            tasks.add.using(priority=priority)
        assert stored(backend) == 0

    def test_not_json(self, backend: Any, tasks: Any) -> None:
        with pytest.raises(TypeError):
            tasks.add.enqueue(object(), 1)
        with pytest.raises(TypeError):
            tasks.add.enqueue(1, b={1, 2})
        assert stored(backend) == 0

    def test_not_module_level(self, backend: Any, compat: Any) -> None:
        from djapp.tasks import task

        def local() -> None: ...

        with pytest.raises(compat.InvalidTask, match="module level"):
            task(local)
        assert stored(backend) == 0

    def test_unknown_task_path(self, backend: Any, compat: Any) -> None:
        """A task whose path does not lead to it (a worker could not import it) is refused."""
        import djapp.tasks

        hidden = djapp.tasks.task(_renamed)
        with pytest.raises(compat.InvalidTask, match="cannot be found by its path"):
            hidden.enqueue()
        assert stored(backend) == 0

    def test_unknown_queue(self, backend: Any, tasks: Any, compat: Any) -> None:
        with pytest.raises(compat.InvalidTask, match="Queue"):
            tasks.add.using(queue_name="nowhere")

    def test_naive_run_after(self, backend: Any, tasks: Any, compat: Any) -> None:
        with pytest.raises(compat.InvalidTask, match="aware"):
            tasks.add.using(run_after=datetime(2030, 1, 1))

    def test_takes_context_without_context(self, backend: Any, compat: Any) -> None:
        from djapp.tasks import task

        with pytest.raises(compat.InvalidTask, match="context"):
            task(takes_context=True)(_renamed)


def _renamed() -> None:
    """A module-level function that is no task at its own path (this module's ``_renamed``
    stays a plain function)."""


class TestWorker:
    """build_worker runs the tasks in this process (manage.py jobkit_worker runs it the same way)."""

    @pytest.mark.anyio
    async def test_results(self, backend: Any, tasks: Any, compat: Any) -> None:
        """Sync and async tasks succeed with their return value; a raising task fails with its
        exception class and traceback; takes_context sees the attempt; refresh() reloads."""
        from jobkit.integrations.django import build_worker

        ok = tasks.add.enqueue(2, 3)
        aok = tasks.async_add.enqueue(4, b=5)
        bad = tasks.fail.enqueue("boom")
        ctx = tasks.which_attempt.enqueue("x")
        async with build_worker(backend, ["default"], concurrency=2):
            done = {r.id: await anyio.to_thread.run_sync(backend.wait, r.id, 60) for r in (ok, aok, bad, ctx)}
        assert done[ok.id].status == compat.TaskResultStatus.SUCCESSFUL
        assert done[ok.id].return_value == 5
        assert done[aok.id].return_value == 9
        failed = done[bad.id]
        assert failed.status == compat.TaskResultStatus.FAILED
        [error] = failed.errors
        assert error.exception_class_path == "builtins.ValueError"
        assert error.exception_class is ValueError
        assert "boom" in error.traceback
        with pytest.raises(ValueError, match="Task failed"):
            failed.return_value  # noqa: B018
        assert done[ctx.id].return_value == {"attempt": 1, "label": "x", "id": ctx.id}
        assert done[ok.id].started_at is not None
        assert done[ok.id].finished_at is not None
        assert done[ok.id].attempts == 1
        ok.refresh()
        assert ok.status == compat.TaskResultStatus.SUCCESSFUL
        await aok.arefresh()
        assert aok.return_value == 9

    @pytest.mark.anyio
    async def test_queues_split_workers(self, backend: Any, tasks: Any, compat: Any) -> None:
        """A worker of the emails queue runs that queue's task and leaves the older default one."""
        from jobkit.integrations.django import build_worker

        older = tasks.add.enqueue(1, 1)
        email = tasks.send_email.enqueue("a@example.org")
        async with build_worker(backend, ["emails"], concurrency=1):
            done = await anyio.to_thread.run_sync(backend.wait, email.id, 60)
        assert done.return_value == "sent to a@example.org"
        assert backend.get_result(older.id).status == compat.TaskResultStatus.READY


# -- the REST routes and the console through Django's test client ----------------------------

JSON = "application/json"


@pytest.fixture
def client() -> Any:
    from django.test import Client

    return Client()


@pytest.fixture
def staff(client: Any) -> Any:
    client.force_login(django_support.make_user("staff", staff=True))
    return client


class TestRoutes:
    def test_anonymous_is_401(self, backend: Any, client: Any) -> None:
        for url in ("/api/v1/jobs", "/api/v1/me", "/api/v1/counts"):
            response = client.get(url)
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "unauthenticated"

    def test_me(self, backend: Any, client: Any) -> None:
        """Staff are admins; other users are plain actors with their user id."""
        user = django_support.make_user("plain")
        client.force_login(user)
        assert client.get("/api/v1/me").json() == {
            "id": str(user.pk), "tenant": None, "roles": [], "host": False,
        }  # fmt: skip
        client.force_login(django_support.make_user("staff", staff=True))
        assert client.get("/api/v1/me").json()["roles"] == ["admin"]

    def test_console_behind_login(self, backend: Any, client: Any) -> None:
        response = client.get("/api/v1/console/")
        assert response.status_code == 302
        assert response["Location"].startswith("/login/?next=")
        client.force_login(django_support.make_user("plain"))
        response = client.get("/api/v1/console/")
        assert response.status_code == 200
        assert "default-src 'none'" in response["Content-Security-Policy"]
        assert '"apiPrefix": "/api/v1"' in response.content.decode()

    def test_the_routes_of_the_fastapi_router(self, backend: Any, client: Any) -> None:
        """Every route of the FastAPI router exists here too, with its method (an anonymous
        request is refused by the route, never by the catch-all's 404 or a 405)."""
        from fastapi.routing import APIRoute

        from jobkit import JobManager
        from jobkit.integrations.fastapi import job_router

        samples = {"job_id": "0" * 32, "name": "a/b.txt", "kind": "k"}
        checked = 0
        for route in job_router(JobManager()).routes:
            assert isinstance(route, APIRoute)
            url = re.sub(r"\{(\w+)(:\w+)?\}", lambda found: samples[found[1]], route.path)
            for method in route.methods:
                response = client.generic(method, f"/api/v1{url}", "{}", content_type=JSON)
                code = response.json()["error"]["code"]
                assert code in ("unauthenticated", "invalid_input"), (method, route.path, code)
                checked += 1
        assert checked >= 20

    def test_framework_errors_are_json(self, backend: Any, staff: Any) -> None:
        response = staff.get("/api/v1/nowhere")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
        response = staff.put("/api/v1/jobs", content_type=JSON)
        assert response.status_code == 405
        assert response.json()["error"]["code"] == "method_not_allowed"
        assert response["Allow"] == "GET, POST"

    def test_cancel_retry_delete_by_result_id(self, backend: Any, tasks: Any, compat: Any) -> None:
        """The Django result id is the job id: cancel, retry and delete it over REST (CSRF
        checks on: the routes are exempt and refuse cross-site requests themselves)."""
        from django.test import Client

        client = Client(enforce_csrf_checks=True)
        client.force_login(django_support.make_user("staff", staff=True))
        result = tasks.add.enqueue(1, 2)
        response = client.post(f"/api/v1/jobs/{result.id}/cancel", {"reason": "no"}, content_type=JSON)
        assert response.status_code == 200
        assert response.json()["status"] == "cancelled"
        cancelled = backend.get_result(result.id)
        assert cancelled.status == compat.TaskResultStatus.FAILED
        assert [e.exception_class_path for e in cancelled.errors] == ["jobkit.JobCancelled"]
        response = client.post(f"/api/v1/jobs/{result.id}/retry", content_type=JSON)
        assert response.status_code == 200
        assert backend.get_result(result.id).status == "READY"
        assert client.post(f"/api/v1/jobs/{result.id}/cancel").status_code == 422  # no JSON: cross-site?
        assert client.get(f"/api/v1/jobs/{result.id}/position").json() == {"position": 1}
        client.post(f"/api/v1/jobs/{result.id}/cancel", content_type=JSON)
        assert client.delete(f"/api/v1/jobs/{result.id}").status_code == 204
        audit = client.get(f"/api/v1/audit?job_id={result.id}").json()["items"]
        assert [record["action"] for record in audit] == ["delete", "cancel", "retry", "cancel"]
        with pytest.raises(compat.TaskResultDoesNotExist):
            backend.get_result(result.id)

    def test_submit_a_task_over_rest(self, backend: Any, staff: Any, compat: Any) -> None:
        body = {"kind": "djapp.tasks.add", "payload": {"args": [1, 2], "kwargs": {}}, "priority": 5}
        response = staff.post("/api/v1/jobs", json.dumps(body), content_type=JSON)
        assert response.status_code == 201
        result = backend.get_result(response.json()["id"])
        assert result.status == compat.TaskResultStatus.READY
        assert (result.args, result.task.priority) == ([1, 2], 5)
        listed = staff.get("/api/v1/jobs?kind=djapp.tasks.add").json()["items"]
        assert [item["id"] for item in listed] == [result.id]

    def test_unknown_kind_over_rest(self, backend: Any, staff: Any) -> None:
        body = {"kind": "djapp.tasks.nope", "payload": {"args": [], "kwargs": {}}}
        response = staff.post("/api/v1/jobs", json.dumps(body), content_type=JSON)
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "invalid_input"
        assert stored(backend) == 0

    def test_event_stream(self, backend: Any, staff: Any) -> None:
        """GET /events streams server-sent events through a WSGI request (a sync iterator)."""
        response = staff.get("/api/v1/events")
        assert response.status_code == 200
        assert response["Content-Type"] == "text/event-stream"
        assert response["Cache-Control"] == "no-cache"
        chunks = iter(response.streaming_content)
        assert next(chunks).startswith(b"retry: 3000")
        body = {"kind": "djapp.tasks.add", "payload": {"args": [1, 2], "kwargs": {}}}
        job = staff.post("/api/v1/jobs", json.dumps(body), content_type=JSON).json()
        frame = next(chunk for chunk in chunks if job["id"].encode() in chunk)
        assert frame.startswith(b"event: submitted\n")
        response.close()

    def test_enqueue_from_views(self, backend: Any, client: Any) -> None:
        """A sync and an async view enqueue; a view reads the result back."""
        first = client.get("/enqueue/add?a=1&b=2").json()
        second = client.get("/enqueue/async-add?a=1&b=2").json()
        assert first["status"] == second["status"] == "READY"
        read = client.get(f"/result/{first['id']}").json()
        assert read == {"status": "READY", "args": [1, 2], "kwargs": {}}
        assert backend.get_result(second["id"]).kwargs == {"b": 2}
