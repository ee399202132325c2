"""Django end to end: the test project under uvicorn (ASGI) and ``manage.py jobkit_worker``,
each its own process, on a SQLite and a PostgreSQL store; this process enqueues and reads
results through a JobkitBackend of its own on the same store, and manages over HTTP.
"""

from __future__ import annotations

import queue
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("django")

import django_support
from web_handlers import ServerProcess

pytestmark = pytest.mark.timeout(180)
JSON = {"Content-Type": "application/json"}


@dataclass
class Deployment:
    backend: Any  # a JobkitBackend of this process on the deployment's store
    blobs: Path
    server: ServerProcess
    worker: ServerProcess
    http: httpx.Client  # signed in as a staff user
    events: queue.SimpleQueue[Any]  # every event of the store, from before the worker started

    def wait_for_progress(self, result_id: str, timeout: float = 60) -> None:
        """Wait until the task reported progress (so it is running in the worker)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no progress of {result_id}; worker: {self.worker.output}") from None
            if event.job_id == result_id and event.type.value == "progress":
                return


def _collect(backend: Any, into: queue.SimpleQueue[Any], subscribed: threading.Event) -> None:
    """Read the store's events for the deployment's whole life (a listener that the worker
    sees from its start: SQLite carries events to the processes that listened first)."""
    try:
        with backend.manager.subscribe() as events:
            subscribed.set()
            for event in events:
                into.put(event)
    except Exception:  # the manager stopped at the end of the deployment
        subscribed.set()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    workdir = tmp_path_factory.mktemp("django-e2e")
    django_support.setup(tmp_path_factory.mktemp("django"))
    from django.test import Client

    from jobkit.integrations.django import JobkitBackend
    from jobkit.integrations.django._backend import stop_managers

    dsn = request.getfixturevalue("pg_dsn") if request.param == "postgres" else None
    store = django_support.store_url(request.param, workdir, dsn)
    blobs = workdir / "blobs"
    params = django_support.tasks_settings(store, f"file://{blobs}")["default"]
    backend = JobkitBackend("default", params)
    env = {"JOBKIT_DJANGO_STORE": store, "JOBKIT_DJANGO_BLOBS": f"file://{blobs}"}
    client = Client()
    client.force_login(django_support.make_user("e2e-staff", staff=True))
    cookies = {"sessionid": client.cookies["sessionid"].value}
    project = django_support.PROJECT
    events: queue.SimpleQueue[Any] = queue.SimpleQueue()
    subscribed = threading.Event()
    threading.Thread(target=_collect, args=(backend, events, subscribed), daemon=True).start()
    assert subscribed.wait(60)
    worker = ServerProcess(
        [sys.executable, "manage.py", "jobkit_worker", "--concurrency", "4"],
        ready=r"worker: running .*concurrency=(\d+)",
        cwd=project,
        env=env,
    )
    try:
        server = ServerProcess(
            [sys.executable, "-m", "uvicorn", "djsite.asgi:application", "--host", "127.0.0.1", "--port=0"],
            ready=r"127\.0\.0\.1:(\d+)",
            cwd=project,
            env=env,
        )
    except BaseException:
        worker.stop()
        raise
    http = httpx.Client(base_url=f"http://127.0.0.1:{server.port}", cookies=cookies, timeout=30)
    try:
        yield Deployment(backend, blobs, server, worker, http, events)
    finally:
        http.close()
        server.stop()
        worker.stop()
        stop_managers()


@pytest.fixture
def tasks() -> Any:
    from djapp import tasks

    return tasks


class TestEndToEnd:
    def test_view_enqueues_worker_runs(self, deployment: Deployment) -> None:
        """A sync view enqueues, the worker process runs it, get_result (here and in a view) reads it."""
        enqueued = deployment.http.get("/enqueue/add", params={"a": 2, "b": 3}).json()
        done = deployment.backend.wait(enqueued["id"], timeout=60)
        assert done.status == "SUCCESSFUL"
        assert done.return_value == 5
        assert deployment.http.get(f"/result/{enqueued['id']}").json()["return_value"] == 5

    def test_async_task(self, deployment: Deployment) -> None:
        """An async view aenqueues an async task; the worker runs it on its loop."""
        enqueued = deployment.http.get("/enqueue/async-add", params={"a": 2, "b": 40}).json()
        assert deployment.backend.wait(enqueued["id"], timeout=60).return_value == 42

    def test_deferred_task(self, deployment: Deployment, tasks: Any) -> None:
        """A task with run_after runs once it is due, not before."""
        when = datetime.now(UTC) + timedelta(seconds=1)
        result = deployment.backend.enqueue(tasks.add.using(run_after=when), (1, 1), {})
        assert result.status == "READY"
        done = deployment.backend.wait(result.id, timeout=60)
        assert done.return_value == 2
        assert done.started_at >= when

    def test_cancel_reaches_the_worker_and_delete_removes_artifacts(
        self, deployment: Deployment, tasks: Any
    ) -> None:
        """A cancel through the REST routes stops the task running in the worker process (its
        partial result and artifact kept); a delete then removes the job and its artifacts."""
        backend = deployment.backend
        result = backend.enqueue(tasks.write_then_wait_for_cancel, ("part.txt",), {})
        deployment.wait_for_progress(result.id)
        assert backend.get_result(result.id).status == "RUNNING"
        response = deployment.http.post(f"/api/v1/jobs/{result.id}/cancel", json={"reason": "enough"})
        assert response.status_code == 200, deployment.server.output
        done = backend.wait(result.id, timeout=60)
        assert done.status == "FAILED"
        assert [e.exception_class_path for e in done.errors] == ["jobkit.JobCancelled"]
        job = backend.manager.get(result.id)
        assert (job.status.value, job.result) == ("cancelled", {"written": "part.txt"})
        listed = deployment.http.get(f"/api/v1/jobs/{result.id}/artifacts").json()
        assert listed == {"items": ["part.txt"]}
        read = deployment.http.get(f"/api/v1/jobs/{result.id}/artifacts/part.txt")
        assert read.content == b"half of the work"
        assert any(deployment.blobs.rglob("part.txt"))
        assert deployment.http.delete(f"/api/v1/jobs/{result.id}").status_code == 204
        assert not any(deployment.blobs.rglob("part.txt"))
        assert deployment.http.get(f"/api/v1/jobs/{result.id}").status_code == 404
        from jobkit.integrations.django._compat import TaskResultDoesNotExist

        with pytest.raises(TaskResultDoesNotExist):
            backend.get_result(result.id)

    def test_cancel_an_async_task_by_force(self, deployment: Deployment, tasks: Any) -> None:
        """An async task that never looks at its token is cancelled after the cancel grace."""
        backend = deployment.backend
        result = backend.enqueue(tasks.async_wait_forever, (), {})
        deployment.wait_for_progress(result.id)
        assert deployment.http.post(f"/api/v1/jobs/{result.id}/cancel", headers=JSON).status_code == 200
        done = backend.wait(result.id, timeout=60)
        assert [e.exception_class_path for e in done.errors] == ["jobkit.JobCancelled"]

    def test_event_stream_over_asgi(self, deployment: Deployment) -> None:
        """GET /events streams server-sent events through Django's ASGI handler (an async iterator)."""
        with deployment.http.stream("GET", "/api/v1/events") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = response.iter_lines()
            assert next(line for line in lines if line.startswith(":")) == ": connected"
            body = {"kind": "djapp.tasks.add", "payload": {"args": [5, 6], "kwargs": {}}}
            submitted = deployment.http.post("/api/v1/jobs", json=body).json()
            data = next(line for line in lines if line.startswith("data:") and submitted["id"] in line)
            assert '"type":"submitted"' in data

    def test_sweep_and_cli_commands(self, deployment: Deployment, tasks: Any) -> None:
        """manage.py jobkit_sweep and manage.py jobkit (the jobkit CLI on the backend's store)."""
        result = deployment.backend.enqueue(tasks.add, (1, 2), {})
        import os
        import subprocess

        env = {
            "JOBKIT_DJANGO_STORE": deployment.backend.options["store"],
            "JOBKIT_DJANGO_BLOBS": deployment.backend.options["blobs"],
        }
        run: dict[str, Any] = {"cwd": django_support.PROJECT, "env": {**os.environ, **env}}
        run.update(capture_output=True, text=True)
        swept = subprocess.run([sys.executable, "manage.py", "jobkit_sweep"], check=True, timeout=60, **run)
        assert '"expired": ' in swept.stdout
        listed = subprocess.run(
            [sys.executable, "manage.py", "jobkit", "jobs", "list", "--json"], check=False, timeout=60, **run
        )
        assert listed.returncode == 0, listed.stderr
        assert result.id in listed.stdout

    def test_worker_stops_on_sigterm(self, deployment: Deployment, tasks: Any) -> None:
        """SIGTERM stops the worker as jobkit worker does: the running task goes back to READY."""
        backend = deployment.backend
        result = backend.enqueue(tasks.write_then_wait_for_cancel, ("again.txt",), {})
        deployment.wait_for_progress(result.id)
        deployment.worker.process.send_signal(signal.SIGTERM)
        deployment.worker.wait_for(r"worker: stopped\.$", timeout=60)
        assert deployment.worker.process.wait(timeout=60) == 0
        assert backend.get_result(result.id).status == "READY"
