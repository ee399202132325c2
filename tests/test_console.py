"""The console page, end to end: the demo app served by uvicorn, driven in headless Chromium.

Live progress without reload, cancel, delete through the confirmation dialog, artifacts,
filters, tenant isolation, the admin-only priority control and error toasts. The demo app
runs with one worker (``concurrency=1``), so a long job keeps the next ones pending.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from jobkit import Actor, InvalidInput, JobManager
from jobkit.integrations._demo_app import create_demo_app, report
from jobkit.integrations.fastapi import (
    console_router,
    end_event_streams,
    install_error_handlers,
    job_router,
    lifespan,
)
from web_handlers import ServerProcess, status_in_store, stop_while_watching

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
DELETE_SENTENCE = "This will permanently delete the job and its artifacts."
ALICE = {"X-Actor": "alice", "X-Tenant": "acme"}
BOB = {"X-Actor": "bob", "X-Tenant": "globex"}
TERMINAL = {"completed", "failed", "cancelled"}
WAIT_MS = 15_000
Console = Callable[..., Page]  # opens the console with a query string
EVENTS = "**/api/v1/events*"
UNAVAILABLE = {"error": {"code": "backend_error", "message": "The event stream is unavailable."}}
ME = "**/api/v1/me"
UNAUTHENTICATED = {"error": {"code": "unauthenticated", "message": "Sign in first."}}

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="the console tests need Debian's chromium at /usr/bin/chromium (make browser)",
)

expect.set_options(timeout=WAIT_MS)

# Quick jobs for the tests (the demo's defaults take seconds): (kind, payload).
QUICK_REPORT = ("report", {"name": "quick", "rows": 12, "steps": 1, "delay": 0})
LONG_THUMBNAIL = ("thumbnail", {"image": "long.jpg", "steps": 600, "delay": 0.05})


# -- the server, the browser and the API ----------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The demo app (no seed, one worker) on 127.0.0.1 and a free port; stopped afterwards."""
    app = create_demo_app(tmp_path_factory.mktemp("console-demo"), seed=False, concurrency=1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # requests wait in the backlog until the app has started
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    uvicorn_server = uvicorn.Server(config)
    thread = threading.Thread(target=uvicorn_server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        with httpx.Client(timeout=30) as client:
            client.get(f"{base}/api/v1/jobs").raise_for_status()  # answered once started
        yield base
    finally:
        end_event_streams(app.state.jobkit_manager)  # the browser's streams, if any are left
        uvicorn_server.should_exit = True
        thread.join(timeout=30)
        sock.close()
    assert not thread.is_alive(), "the demo server did not stop"


@pytest.fixture(scope="module")
def api(server: str) -> Iterator[httpx.Client]:
    # A same-site script: body-less POSTs (the cleanup's cancels) carry X-Requested-With.
    headers = {"X-Requested-With": "tests"}
    with httpx.Client(base_url=f"{server}/api/v1", timeout=30, headers=headers) as client:
        yield client


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield browser
        browser.close()


@pytest.fixture(autouse=True)
def _no_jobs_left(server: str, api: httpx.Client) -> Iterator[None]:
    """Each test starts and ends with an empty store: cancel what runs, then delete everything."""
    yield
    jobs = api.get("/jobs", params={"limit": 1000}).json()["items"]
    for job in jobs:
        if job["status"] not in TERMINAL:
            api.post(f"/jobs/{job['id']}/cancel")
    for job in jobs:
        wait_for_status(server, job["id"], TERMINAL)
        api.delete(f"/jobs/{job['id']}")
    assert api.get("/jobs").json()["items"] == []


@pytest.fixture
def open_console(server: str, browser: Browser) -> Iterator[Console]:
    """Open the console (with a query string) once its event stream is live; no script errors."""
    contexts = []
    errors: list[str] = []

    def open_page(
        query: str = "",
        *,
        events_down: bool = False,
        signed_out: bool = False,
        viewport: tuple[int, int] = (1280, 720),
    ) -> Page:
        context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
        contexts.append(context)
        if events_down:  # the event stream answers 503 until the test unroutes EVENTS
            context.route(EVENTS, lambda route: route.fulfill(status=503, json=UNAVAILABLE))
        if signed_out:  # the server's actor dependency finds nobody: GET /me is a 401
            context.route(ME, lambda route: route.fulfill(status=401, json=UNAUTHENTICATED))
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
        page.on(
            "console",
            lambda message: (
                errors.append(message.text) if "Content Security Policy" in message.text else None
            ),
        )
        page.goto(f"{server}/console/{query}")
        expect(page.locator("#connection")).to_have_attribute(
            "data-state", "reconnecting" if events_down else "live"
        )
        return page

    yield open_page
    for context in contexts:
        context.close()
    assert errors == []


def submit(
    api: httpx.Client, job: tuple[str, Any], headers: dict[str, str] | None = None, **extra: Any
) -> str:
    kind, payload = job
    response = api.post("/jobs", json={"kind": kind, "payload": payload, **extra}, headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def wait_for_status(server: str, job_id: str, statuses: set[str]) -> dict[str, Any]:
    """The job once its status is one of ``statuses``, waiting on its event stream."""
    with (
        httpx.Client(base_url=f"{server}/api/v1", timeout=30) as client,
        client.stream("GET", "/events", params={"job_id": job_id}) as events,
    ):
        lines = events.iter_lines()
        next(lines)  # the stream's first line arrives once the subscription is live
        job: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        for line in lines:
            if line.startswith("data:") and json.loads(line[5:])["status"] in statuses:
                return dict(client.get(f"/jobs/{job_id}").json())
    raise AssertionError(f"the event stream ended before job {job_id} reached {statuses}")


def wait_for_progress(page: Page, job_id: str, fraction: float) -> None:
    """Wait until the page shows at least ``fraction`` of progress for the job."""
    page.wait_for_function(
        "([id, at]) => Number(document.querySelector(`tr[data-job-id='${id}']`).dataset.progress) >= at",
        arg=[job_id, fraction],
    )


def row(page: Page, job_id: str) -> Locator:
    return page.locator(f'tr.job-row[data-job-id="{job_id}"]')


def toast(page: Page, kind: str, text: str) -> Locator:
    return page.locator(f".toast.{kind}", has_text=text)


# -- the page itself -----------------------------------------------------------------------------


def console_page(**options: Any) -> httpx.Response:
    """GET the console from an app that mounts it at /ops/console with these options."""
    app = FastAPI()
    app.include_router(console_router(**options), prefix="/ops/console")

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.get("/ops/console/")

    # in a thread of its own: Playwright's sync API keeps an event loop running in this one
    results: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: results.append(anyio.run(get)))
    thread.start()
    thread.join(timeout=30)
    return results[0]


class TestConsoleRouter:
    def test_serves_the_page_with_its_api_prefix_and_title(self) -> None:
        """GET / under the mount serves the HTML page configured with api_prefix and the escaped title."""
        response = console_page(api_prefix="/internal/jobs/", title="Jobs <ops>")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        page = response.text
        config = re.search(r'<script type="application/json" id="jobkit-config">(.*?)</script>', page)
        assert config is not None
        assert json.loads(config.group(1)) == {
            "apiPrefix": "/internal/jobs",
            "title": "Jobs <ops>",
            "headers": {},
        }
        assert "<title>Jobs &lt;ops&gt;</title>" in page
        assert "Jobs <ops>" not in page.replace(config.group(1), "")

    def test_the_page_loads_nothing_from_elsewhere(self) -> None:
        """The page is self-contained: its policy allows only its own inline script and style."""
        response = console_page()
        policy = response.headers["content-security-policy"]
        assert "default-src 'none'" in policy
        assert "connect-src 'self';" in policy
        assert not re.search(r"\b(src|href)=\"(https?:)?//", response.text)
        script = re.search(r"<script>(.*?)</script>", response.text, re.DOTALL)
        assert script is not None
        digest = base64.b64encode(hashlib.sha256(script.group(1).encode()).digest()).decode()
        assert f"'sha256-{digest}'" in policy
        assert DELETE_SENTENCE in response.text

    def test_an_api_on_another_origin_is_allowed_to_connect(self) -> None:
        """An absolute api_prefix adds its origin to connect-src."""
        policy = console_page(api_prefix="https://jobs.example.com/api/v1").headers["content-security-policy"]
        assert "connect-src 'self' https://jobs.example.com;" in policy

    @pytest.mark.parametrize(
        "prefix", ["api/v1", "//evil.example/api", "javascript:alert(1)", "/api?x=1", "/a b"]
    )
    def test_a_bad_api_prefix_is_refused(self, prefix: str) -> None:
        """api_prefix must be a plain path or an http(s) URL."""
        with pytest.raises(InvalidInput, match="api_prefix"):
            console_router(api_prefix=prefix)


# -- the tests in the browser ---------------------------------------------------------------------


@needs_chromium
class TestLiveUpdates:
    def test_progress_updates_in_the_table_without_reload(
        self, open_console: Console, api: httpx.Client
    ) -> None:
        """A job submitted after the page loaded appears, then its progress rises to 100% live."""
        page = open_console()
        page.evaluate("window.loadedOnce = true")
        job_id = submit(api, ("thumbnail", {"image": "cat.jpg", "steps": 10, "delay": 0.15}))
        job_row = row(page, job_id)
        expect(job_row).to_have_attribute("data-status", "running")
        wait_for_progress(page, job_id, 0.3)
        expect(job_row.locator(".progress-value")).to_have_text(re.compile(r"^([3-9]\d|100)%$"))
        expect(job_row).to_have_attribute("data-status", "completed")
        expect(job_row.locator(".progress-value")).to_have_text("100%")
        expect(job_row.locator(".progress-message")).to_have_text("Rendered 256px thumbnail")
        assert page.evaluate("window.loadedOnce") is True  # the same page: never reloaded

    def test_the_page_reconnects_to_the_event_stream_and_catches_up(
        self, open_console: Console, api: httpx.Client
    ) -> None:
        """When the event stream fails the page says so, retries, and once live shows what it missed."""
        before = submit(api, QUICK_REPORT)
        page = open_console(events_down=True)
        expect(row(page, before)).to_be_visible()  # the table works without the stream
        expect(page.locator("#connection")).to_have_text("Reconnecting…")
        missed = submit(api, QUICK_REPORT)
        page.context.unroute(EVENTS)
        expect(page.locator("#connection")).to_have_attribute("data-state", "live")
        expect(row(page, missed)).to_be_visible()


@needs_chromium
class TestCancel:
    def test_cancel_a_running_job_from_the_page(self, open_console: Console, api: httpx.Client) -> None:
        """Cancel on a running job (clicked while progress streams in) ends it cancelled, with a toast."""
        job_id = submit(api, LONG_THUMBNAIL)
        page = open_console()
        job_row = row(page, job_id)
        expect(job_row).to_have_attribute("data-status", "running")
        wait_for_progress(page, job_id, 0.005)
        # a human's click: progress events (every 50 ms) must not replace the button meanwhile
        job_row.locator("[data-action=cancel]").click(delay=250)
        expect(toast(page, "success", "thumbnail")).to_be_visible()
        expect(job_row).to_have_attribute("data-status", "cancelled")
        expect(job_row.locator(".badge")).to_have_text("cancelled")
        expect(job_row.locator("[data-action=cancel]")).to_be_disabled()
        expect(job_row.locator("[data-action=delete]")).to_be_enabled()
        assert api.get(f"/jobs/{job_id}").json()["status"] == "cancelled"

    def test_a_finished_job_cannot_be_cancelled_or_a_running_one_deleted(
        self, open_console: Console, api: httpx.Client
    ) -> None:
        """Cancel is offered only to pending and running jobs, delete only to finished ones."""
        running = submit(api, LONG_THUMBNAIL)
        pending = submit(api, QUICK_REPORT)
        page = open_console()
        expect(row(page, running)).to_have_attribute("data-status", "running")
        expect(row(page, pending)).to_have_attribute("data-status", "pending")
        for job_id in (running, pending):
            expect(row(page, job_id).locator("[data-action=cancel]")).to_be_enabled()
            expect(row(page, job_id).locator("[data-action=delete]")).to_be_disabled()
        row(page, pending).locator("[data-action=cancel]").click()  # a pending job is cancelled at once
        expect(toast(page, "success", "Cancelled report")).to_be_visible()
        expect(row(page, pending)).to_have_attribute("data-status", "cancelled")


@needs_chromium
class TestDelete:
    def test_delete_a_finished_job_through_the_dialog(
        self, open_console: Console, api: httpx.Client, server: str
    ) -> None:
        """The dialog warns; keeping changes nothing; confirming removes the row and the job, with a toast."""
        job_id = submit(api, QUICK_REPORT)
        wait_for_status(server, job_id, {"completed"})
        page = open_console()
        job_row = row(page, job_id)
        dialog = page.locator("dialog#confirm-dialog")

        job_row.locator("[data-action=delete]").click()
        expect(dialog).to_be_visible()
        expect(dialog.locator("#confirm-message")).to_have_text(DELETE_SENTENCE)
        expect(dialog).to_contain_text(job_id)
        dialog.get_by_role("button", name="Keep it").click()
        expect(dialog).to_be_hidden()
        expect(job_row).to_be_visible()
        assert api.get(f"/jobs/{job_id}").status_code == 200

        job_row.locator("[data-action=delete]").click()
        expect(dialog.locator("#confirm-message")).to_have_text(DELETE_SENTENCE)
        dialog.get_by_role("button", name="Delete").click()
        expect(job_row).to_have_count(0)
        expect(toast(page, "success", f"Deleted report {job_id[:8]}")).to_be_visible()
        assert api.get(f"/jobs/{job_id}").status_code == 404
        assert api.get(f"/jobs/{job_id}/artifacts").status_code == 404

    def test_an_artifact_is_listed_and_deleted_on_its_own(
        self, open_console: Console, api: httpx.Client, server: str
    ) -> None:
        """A finished job lists its artifacts; deleting one (after confirming) keeps the job."""
        job_id = submit(api, QUICK_REPORT)
        wait_for_status(server, job_id, {"completed"})
        page = open_console()
        row(page, job_id).click()
        artifact = page.locator(f'#job-dialog[data-job-id="{job_id}"] li[data-artifact="quick.csv"]')
        expect(artifact).to_be_visible()
        with page.expect_download() as download:
            artifact.locator("[data-action=download]").click()
        assert Path(download.value.path()).read_text().startswith("day,region,orders,revenue")
        artifact.locator("[data-action=delete-artifact]").click()
        expect(page.locator("#confirm-message")).to_have_text("This will permanently delete the artifact.")
        page.locator("#confirm-ok").click()
        expect(artifact).to_have_count(0)
        expect(page.locator("#job-dialog .artifacts-empty")).to_have_text("No artifacts.")
        expect(toast(page, "success", "Deleted quick.csv")).to_be_visible()
        assert api.get(f"/jobs/{job_id}/artifacts").json() == {"items": []}
        assert api.get(f"/jobs/{job_id}").json()["status"] == "completed"


@needs_chromium
class TestFilters:
    def test_status_and_kind_filters(self, open_console: Console, api: httpx.Client, server: str) -> None:
        """The status and kind filters show only matching jobs, and live events respect them."""
        report = submit(api, QUICK_REPORT)
        wait_for_status(server, report, {"completed"})
        thumbnail = submit(api, LONG_THUMBNAIL)
        page = open_console()
        expect(row(page, thumbnail)).to_have_attribute("data-status", "running")
        page.select_option("#filter-status", "running")
        expect(page.locator("tr.job-row")).to_have_count(1)
        expect(row(page, thumbnail)).to_be_visible()
        assert "status=running" in page.url
        row(page, thumbnail).locator("[data-action=cancel]").click()  # no longer running: leaves the view
        expect(page.locator("tr.job-row")).to_have_count(0)
        expect(page.locator("#empty")).to_be_visible()
        page.select_option("#filter-status", "")
        page.select_option("#filter-kind", "report")
        expect(page.locator("tr.job-row")).to_have_count(1)
        expect(row(page, report)).to_be_visible()


@needs_chromium
class TestIdentity:
    def test_the_page_shows_who_the_server_says_is_asking(self, open_console: Console) -> None:
        """The identity comes from GET /me: the host, a tenant's user, or nobody (never a guess)."""
        host_page = open_console()
        expect(host_page.locator("#identity")).to_have_text("Signed in as the trusted host")
        alice = open_console("?actor=alice&tenant=acme&roles=admin")
        expect(alice.locator("#identity")).to_have_text("Signed in as alice · tenant acme · roles admin")
        expect(alice.locator("body")).to_have_attribute("data-admin", "true")
        nobody = open_console("?actor=alice&roles=admin", signed_out=True)
        expect(nobody.locator("#identity")).to_have_text("Not signed in")
        expect(nobody.locator("body")).to_have_attribute("data-admin", "false")

    def test_a_tenant_sees_only_its_jobs(self, open_console: Console, api: httpx.Client) -> None:
        """Opened as alice of acme, the page lists acme's jobs only, on load and live."""
        acme = submit(api, QUICK_REPORT, headers=ALICE)
        submit(api, QUICK_REPORT, headers=BOB)
        submit(api, QUICK_REPORT)  # the host's own, without a tenant
        page = open_console("?actor=alice&tenant=acme")
        expect(page.locator("#identity")).to_contain_text("alice")
        expect(row(page, acme)).to_be_visible()
        expect(page.locator("tr.job-row")).to_have_count(1)
        submit(api, QUICK_REPORT, headers=BOB)
        acme_live = submit(api, QUICK_REPORT, headers=ALICE)  # its event comes after bob's
        expect(row(page, acme_live)).to_be_visible()
        expect(page.locator("tr.job-row")).to_have_count(2)
        expect(page.locator('tr.job-row:not([data-tenant="acme"])')).to_have_count(0)

    def test_only_an_admin_sees_the_priority_control(self, open_console: Console, api: httpx.Client) -> None:
        """An admin can change a pending job's priority from the page; others see a plain number."""
        running = submit(api, LONG_THUMBNAIL)
        first = submit(api, QUICK_REPORT)
        second = submit(api, QUICK_REPORT)
        admin = open_console("?actor=root&roles=admin")
        expect(row(admin, running)).to_have_attribute("data-status", "running")
        expect(row(admin, running).locator(".priority-input")).to_have_count(0)
        control = row(admin, second).locator(".priority-input")
        expect(control).to_be_visible()
        control.fill("7")
        row(admin, second).locator("[data-action=set-priority]").click()
        expect(toast(admin, "success", "is now 7: position 1 in the queue")).to_be_visible()
        expect(row(admin, second).locator(".priority-input")).to_have_value("7")
        assert api.get(f"/jobs/{second}").json()["priority"] == 7

        user = open_console("?actor=carol")
        expect(row(user, first)).to_have_attribute("data-status", "pending")
        expect(user.locator(".priority-input")).to_have_count(0)
        expect(row(user, second).locator(".priority-value")).to_have_text("7")


@needs_chromium
class TestLifecycle:
    def test_a_delayed_job_shows_scheduled_and_when_it_runs(
        self, open_console: Console, api: httpx.Client
    ) -> None:
        """A delayed job is `scheduled` in the table, with when it runs (exact in its title)."""
        job_id = submit(api, QUICK_REPORT, delay=3600)
        page = open_console()
        job_row = row(page, job_id)
        expect(job_row).to_have_attribute("data-status", "scheduled")
        expect(job_row.locator(".badge")).to_have_text("scheduled")
        run_at = job_row.locator(".run-at")
        expect(run_at).to_contain_text("Runs in")
        expect(run_at).to_have_attribute("title", re.compile(r"\d"))
        expect(job_row.locator("[data-action=cancel]")).to_be_enabled()  # cancelled at once
        expect(job_row.locator("[data-action=retry]")).to_have_count(0)
        page.select_option("#filter-status", "scheduled")
        expect(page.locator("tr.job-row")).to_have_count(1)

    def test_retry_a_cancelled_job_from_the_page(self, open_console: Console, api: httpx.Client) -> None:
        """A cancelled job has a Retry button: it calls POST /jobs/{id}/retry and the job is pending again."""
        running = submit(api, LONG_THUMBNAIL)
        cancelled = submit(api, QUICK_REPORT)
        assert api.post(f"/jobs/{cancelled}/cancel").json()["status"] == "cancelled"
        page = open_console()
        expect(row(page, running)).to_have_attribute("data-status", "running")
        expect(row(page, running).locator("[data-action=retry]")).to_have_count(0)
        job_row = row(page, cancelled)
        expect(job_row).to_have_attribute("data-status", "cancelled")
        job_row.locator("[data-action=retry]").click()
        expect(toast(page, "success", "Retrying report")).to_be_visible()
        expect(job_row).to_have_attribute("data-status", "pending")
        expect(job_row.locator("[data-action=retry]")).to_have_count(0)
        assert api.get(f"/jobs/{cancelled}").json()["status"] == "pending"

    def test_an_admin_pauses_and_resumes_a_kind(self, open_console: Console, api: httpx.Client) -> None:
        """The Kinds panel (admins only) pauses a kind and resumes it, each with a toast."""
        user = open_console("?actor=carol")
        expect(user.locator("#identity")).to_contain_text("carol")
        expect(user.locator("#kinds-panel")).to_be_hidden()
        admin = open_console("?actor=root&roles=admin")
        admin.locator("#kinds-panel summary").click()
        item = admin.locator('#kind-list li[data-kind="report"]')
        try:
            expect(item).to_have_attribute("data-paused", "false")
            item.locator("[data-action=pause]").click()
            expect(toast(admin, "success", "Paused report")).to_be_visible()
            expect(item).to_have_attribute("data-paused", "true")
            assert {"kind": "report", "paused": True} in api.get("/kinds").json()["items"]
            item.locator("[data-action=resume]").click()
            expect(toast(admin, "success", "Resumed report")).to_be_visible()
            expect(item).to_have_attribute("data-paused", "false")
            assert {"kind": "report", "paused": False} in api.get("/kinds").json()["items"]
        finally:
            api.post("/kinds/report/resume")


def expect_count(page: Page, status: str, n: int) -> None:
    expect(page.locator(f'#counts .chip[data-status="{status}"] .n')).to_have_text(str(n))


def detail(page: Page, job_id: str) -> Locator:
    """The job's detail view (the dialog), once it shows that job."""
    return page.locator(f'dialog#job-dialog[open][data-job-id="{job_id}"]')


def fact(page: Page, name: str) -> Locator:
    return page.locator(f'#job-dialog dd[data-fact="{name}"]')


def failed_job(api: httpx.Client, server: str, headers: dict[str, str] | None = None) -> str:
    job_id = submit(
        api, ("transcode", {"file": "broken.avi", "fail": True, "segments": 1, "delay": 0}), headers=headers
    )
    wait_for_status(server, job_id, {"failed"})
    return job_id


@needs_chromium
class TestCounts:
    def test_counts_per_status_filter_and_follow_the_event_stream(
        self, open_console: Console, api: httpx.Client, server: str
    ) -> None:
        """The chips show GET /counts; a click filters the table by that status; a job
        submitted or cancelled on the server changes the numbers without a reload."""
        failed = failed_job(api, server)
        running = submit(api, LONG_THUMBNAIL)
        page = open_console()
        expect(row(page, running)).to_have_attribute("data-status", "running")
        expect_count(page, "failed", 1)
        expect_count(page, "running", 1)
        expect_count(page, "pending", 0)
        expect_count(page, "", 2)
        pending = submit(api, QUICK_REPORT)  # waits behind the long job (one worker)
        expect_count(page, "pending", 1)
        expect_count(page, "", 3)

        page.locator('#counts .chip[data-status="failed"]').click()
        expect(page.locator('#counts .chip[data-status="failed"]')).to_have_attribute("aria-pressed", "true")
        expect(page.locator("tr.job-row")).to_have_count(1)
        expect(row(page, failed)).to_be_visible()
        assert "status=failed" in page.url

        api.post(f"/jobs/{pending}/cancel")
        expect_count(page, "pending", 0)
        expect_count(page, "cancelled", 1)
        page.locator('#counts .chip[data-status="failed"]').click()  # again: every status
        expect(page.locator("tr.job-row")).to_have_count(3)
        for status, n in api.get("/counts").json()["counts"].items():
            expect_count(page, status, n)


@needs_chromium
class TestSearch:
    def test_a_full_id_or_a_unique_prefix_opens_the_job(
        self, open_console: Console, api: httpx.Client, server: str
    ) -> None:
        """The search box opens a job by its id, or by a prefix only it has."""
        first = submit(api, QUICK_REPORT)
        second = submit(api, QUICK_REPORT)
        wait_for_status(server, second, {"completed"})
        page = open_console()
        page.fill("#search-input", first.upper())  # ids are case-insensitive
        page.locator("#search-button").click()
        expect(detail(page, first)).to_be_visible()
        expect(fact(page, "id")).to_have_text(first)
        page.keyboard.press("Escape")
        expect(page.locator("#job-dialog")).to_be_hidden()
        expect(page.locator("#search-button")).to_be_focused()  # focus is back where it was
        prefix = next(second[:n] for n in range(4, 33) if not first.startswith(second[:n]))
        page.fill("#search-input", prefix)
        page.keyboard.press("Enter")
        expect(detail(page, second)).to_be_visible()
        assert page.url.endswith(f"#job={second}")

    def test_a_shared_prefix_lists_the_jobs_and_a_bad_one_says_why(
        self, open_console: Console, api: httpx.Client, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Several jobs starting with the prefix are listed (one click opens one); a prefix
        shorter than 4 characters or an unknown one gets an error toast."""
        import jobkit._manager

        real = jobkit._manager.new_id
        # the server runs in this process: its next three job ids start alike
        monkeypatch.setattr(jobkit._manager, "new_id", lambda nbytes=16: "beef" + real(nbytes)[4:])
        jobs = {submit(api, QUICK_REPORT, delay=3600) for _ in range(3)}
        monkeypatch.undo()
        other = submit(api, QUICK_REPORT, delay=3600)
        assert all(job_id.startswith("beef") for job_id in jobs)
        assert not other.startswith("beef")
        page = open_console()
        page.fill("#search-input", "beef")
        page.locator("#search-button").click()
        results = page.locator("#search-results li[data-job-id]")
        expect(results).to_have_count(3)
        assert {item.get_attribute("data-job-id") for item in results.all()} == jobs
        chosen = sorted(jobs)[0]
        page.locator(f'#search-results li[data-job-id="{chosen}"] button').click()
        expect(detail(page, chosen)).to_be_visible()
        page.locator("#job-close").click()
        for text, message in [("bee", "Not a job id"), ("0000", "No job id starts with 0000")]:
            page.fill("#search-input", text)
            page.locator("#search-button").click()
            expect(toast(page, "error", message)).to_be_visible()


@needs_chromium
class TestDetail:
    def test_clicking_a_row_opens_the_job_with_all_its_fields_and_live_events(
        self, open_console: Console, api: httpx.Client
    ) -> None:
        """A click on the row opens the detail view (its id in the URL): fields, live
        progress and the events that arrive (here a cancel made on the server); Escape
        closes it and focus returns to the row."""
        job_id = submit(
            api, ("thumbnail", {"image": "cat.jpg", "steps": 600, "delay": 0.05}), labels={"team": "web"}
        )
        page = open_console()
        expect(row(page, job_id)).to_have_attribute("data-status", "running")
        # A click anywhere on the row opens it: here on its status, which stays put while the
        # progress cell is redrawn by the job's events (a click there can land on a node
        # replaced between press and release).
        row(page, job_id).locator(".col-status").click()
        view = detail(page, job_id)
        expect(view).to_be_visible()
        assert page.url.endswith(f"#job={job_id}")
        expect(fact(page, "kind")).to_have_text("thumbnail")
        expect(fact(page, "labels")).to_have_text("team=web")
        expect(fact(page, "attempts")).to_have_text("1 of 1")
        expect(view.locator(".job-data")).to_contain_text('"image": "cat.jpg"')
        expect(view.locator(".job-artifacts")).not_to_contain_text("Loading")
        expect(view.locator('.event-list li[data-event-type="progress"]')).to_contain_text("%")
        expect(view.locator(".progress-value")).to_have_text(re.compile(r"^\d+%$"))
        api.post(f"/jobs/{job_id}/cancel", json={"reason": "seen enough"})
        expect(view.locator('.event-list li[data-event-type="cancelled"]')).to_have_count(1)
        expect(view).to_have_attribute("data-status", "cancelled")
        expect(fact(page, "cancel_reason")).to_have_text("seen enough")
        page.keyboard.press("Escape")
        expect(page.locator("#job-dialog")).to_be_hidden()
        expect(page).not_to_have_url(re.compile("#job="))
        expect(row(page, job_id)).to_be_focused()
        page.keyboard.press("Enter")  # the focused row opens again from the keyboard
        expect(detail(page, job_id)).to_be_visible()
        page.go_back()  # the browser's Back closes it
        expect(page.locator("#job-dialog")).to_be_hidden()
        expect(row(page, job_id)).to_be_focused()

    def test_a_link_with_the_id_opens_the_job(self, open_console: Console, api: httpx.Client) -> None:
        """#job=<id> in the URL opens that job (here a scheduled one: when it runs); an
        unknown id says so."""
        job_id = submit(api, QUICK_REPORT, delay=3600)
        page = open_console(f"#job={job_id}")
        expect(detail(page, job_id)).to_be_visible()
        expect(fact(page, "status")).to_have_text("scheduled")
        expect(fact(page, "run_at")).to_have_text(re.compile(r"\d"))
        expect(page.locator("#job-dialog .run-at")).to_contain_text("Runs in")
        missing = "0" * 32
        page.evaluate(f"location.hash = 'job={missing}'")
        expect(toast(page, "error", f"No job {missing}")).to_be_visible()
        expect(page.locator("#job-dialog")).to_be_hidden()

    def test_retry_cancel_and_delete_from_the_detail_view(
        self, open_console: Console, api: httpx.Client, server: str
    ) -> None:
        """The view's actions act on the server: retry a failed job, cancel it, then delete
        it through the confirmation dialog (focus returns to the button after "Keep it")."""
        failed = failed_job(api, server)
        blocker = submit(api, LONG_THUMBNAIL)  # keeps the retried job pending
        page = open_console(f"#job={failed}")
        view = detail(page, failed)
        expect(view).to_be_visible()
        expect(fact(page, "error")).to_contain_text("exited with status 1")
        wait_for_status(server, blocker, {"running"})
        view.locator("[data-action=retry]").click()
        expect(view).to_have_attribute("data-status", "pending")
        assert api.get(f"/jobs/{failed}").json()["status"] == "pending"
        view.locator("[data-action=cancel]").click()
        expect(view).to_have_attribute("data-status", "cancelled")
        delete = view.locator("[data-action=delete]")
        delete.click()
        expect(page.locator("#confirm-message")).to_have_text(DELETE_SENTENCE)
        page.get_by_role("button", name="Keep it").click()
        expect(delete).to_be_focused()
        delete.click()
        page.locator("#confirm-ok").click()
        expect(page.locator("#job-dialog")).to_be_hidden()
        expect(row(page, failed)).to_have_count(0)
        expect(page.locator("#search-input")).to_be_focused()  # the row it came from is gone
        assert api.get(f"/jobs/{failed}").status_code == 404

    def test_an_admin_changes_the_priority_in_the_detail_view(
        self, open_console: Console, api: httpx.Client, server: str
    ) -> None:
        blocker = submit(api, LONG_THUMBNAIL)
        waiting = submit(api, QUICK_REPORT)
        wait_for_status(server, blocker, {"running"})
        page = open_console(f"?actor=root&roles=admin#job={waiting}")
        view = detail(page, waiting)
        view.locator(".priority-input").fill("9")
        view.locator("[data-action=set-priority]").click()
        expect(fact(page, "priority")).to_have_text("9")
        assert api.get(f"/jobs/{waiting}").json()["priority"] == 9
        user = open_console(f"?actor=carol#job={waiting}")
        expect(detail(user, waiting)).to_be_visible()
        expect(user.locator("#job-dialog .priority-input")).to_have_count(0)
        expect(user.locator("#job-dialog .job-audit")).to_be_hidden()

    def test_an_admin_sees_the_jobs_audit_trail(self, open_console: Console, api: httpx.Client) -> None:
        job_id = submit(api, QUICK_REPORT, delay=3600)
        page = open_console(f"?actor=root&roles=admin#job={job_id}")
        view = detail(page, job_id)
        view.locator("[data-action=cancel]").click()
        expect(view.locator('.job-audit tr[data-audit-action="cancel"]')).to_have_count(1)
        expect(view.locator(".job-audit")).to_contain_text("root")


@needs_chromium
class TestAdmin:
    def test_the_tenant_filter_narrows_jobs_and_counts(
        self, open_console: Console, api: httpx.Client
    ) -> None:
        """An admin of no tenant filters by tenant (GET /jobs?tenant=, GET /counts?tenant=);
        a tenant's admin has no such filter."""
        acme = submit(api, QUICK_REPORT, headers=ALICE, delay=3600)
        globex = submit(api, QUICK_REPORT, headers=BOB, delay=3600)
        page = open_console("?actor=root&roles=admin")
        expect(row(page, globex)).to_be_visible()
        expect_count(page, "scheduled", 2)
        page.fill("#filter-tenant", "acme")
        page.keyboard.press("Enter")
        expect(page.locator("tr.job-row")).to_have_count(1)
        expect(row(page, acme)).to_be_visible()
        expect_count(page, "scheduled", 1)
        assert "for_tenant=acme" in page.url
        elsewhere = submit(api, QUICK_REPORT, headers=BOB, delay=3600)  # another tenant's: not shown
        acme_live = submit(api, QUICK_REPORT, headers=ALICE, delay=3600)  # its events come after
        expect(row(page, acme_live)).to_be_visible()
        expect_count(page, "scheduled", 2)
        expect(row(page, elsewhere)).to_have_count(0)
        expect(page.locator("tr.job-row")).to_have_count(2)
        tenant_admin = open_console("?actor=alice&tenant=acme&roles=admin")
        expect(tenant_admin.locator("#admin-panels")).to_be_visible()
        expect(tenant_admin.locator("#tenant-field")).to_be_hidden()

    def test_an_admin_lists_adds_and_removes_schedules(
        self, open_console: Console, api: httpx.Client
    ) -> None:
        page = open_console("?actor=root&roles=admin")
        page.locator("#schedules-panel summary").click()
        expect(page.locator("#schedules-empty")).to_be_visible()
        try:
            page.fill("#schedule-name", "nightly")
            page.fill("#schedule-kind", "report")
            page.fill("#schedule-cron", "0 3 * * *")
            page.fill("#schedule-payload", '{"name": "nightly"}')
            page.locator("#schedule-add").click()
            expect(toast(page, "success", "Scheduled nightly")).to_be_visible()
            item = page.locator('#schedule-rows tr[data-schedule="nightly"]')
            expect(item).to_contain_text("0 3 * * * (UTC)")
            assert [s["name"] for s in api.get("/schedules").json()["items"]] == ["nightly"]
            item.locator("[data-action=remove-schedule]").click()
            expect(page.locator("#confirm-title")).to_have_text("Remove schedule?")
            page.locator("#confirm-ok").click()
            expect(item).to_have_count(0)
            assert api.get("/schedules").json()["items"] == []
        finally:
            api.delete("/schedules/nightly")
        user = open_console("?actor=carol")
        expect(user.locator("#identity")).to_contain_text("carol")
        expect(user.locator("#schedules-panel")).to_be_hidden()

    def test_an_admin_reads_the_audit_trail(self, open_console: Console, api: httpx.Client) -> None:
        job_id = submit(api, QUICK_REPORT, delay=3600)
        page = open_console("?actor=root&roles=admin")
        page.locator("#audit-panel summary").click()
        api.post(f"/jobs/{job_id}/cancel", headers={"X-Actor": "ops", "X-Roles": "admin"})
        # The server is shared with other tests: this job's row is the one with its short id.
        entry = page.locator('#audit-list tr[data-audit-action="cancel"]').filter(has_text=job_id[:8])
        expect(entry).to_contain_text("ops")
        entry.locator("button").click()
        expect(detail(page, job_id)).to_be_visible()


NARROW = (390, 844)


INSIDE_VIEWPORT = """selector => {
    const box = document.querySelector(selector)?.getBoundingClientRect();
    return box !== undefined && box.width > 0 && box.left >= 0 && box.right <= innerWidth;
}"""


def expect_inside_viewport(page: Page, selector: str) -> None:
    """Wait until the element is shown and lies within the viewport's width (it may be
    rebuilt meanwhile by a progress event: the check is one evaluation in the page)."""
    page.wait_for_function(INSIDE_VIEWPORT, arg=selector)


@needs_chromium
class TestNarrowLayout:
    def test_at_390px_status_progress_and_actions_fit_without_scrolling(
        self, open_console: Console, api: httpx.Client, server: str
    ) -> None:
        """At 390x844 (a phone) no part of the page scrolls sideways, and each row's status,
        progress and actions are inside the viewport; so is the detail view."""
        failed = failed_job(api, server)
        running = submit(api, LONG_THUMBNAIL, labels={"a-rather-long-label": "with-a-long-value" * 3})
        pending = submit(api, ("report", {"name": "x" * 200}))
        page = open_console("?actor=root&roles=admin", viewport=NARROW)
        expect(row(page, running)).to_have_attribute("data-status", "running")
        wait_for_progress(page, running, 0.01)
        assert page.evaluate("innerWidth") == 390
        for job_id in (failed, running, pending):
            for part in (".badge", ".col-progress", "[data-action=cancel]", "[data-action=delete]"):
                expect_inside_viewport(page, f'tr.job-row[data-job-id="{job_id}"] {part}')
        expect_inside_viewport(page, f'tr.job-row[data-job-id="{failed}"] [data-action=retry]')
        expect_inside_viewport(page, f'tr.job-row[data-job-id="{running}"] .bar')
        assert page.evaluate("document.scrollingElement.scrollWidth <= innerWidth")
        row(page, running).locator(".job-open").click()
        view = detail(page, running)
        expect(view).to_be_visible()
        expect_inside_viewport(page, "#job-dialog [data-action=cancel]")
        expect_inside_viewport(page, "#job-dialog .bar")
        assert view.evaluate("d => d.scrollWidth <= d.clientWidth")
        assert page.evaluate("document.scrollingElement.scrollWidth <= innerWidth")


@needs_chromium
class TestAccessibility:
    def test_controls_are_buttons_and_inputs_have_labels(
        self, open_console: Console, api: httpx.Client
    ) -> None:
        submit(api, QUICK_REPORT, delay=3600)
        page = open_console("?actor=root&roles=admin")
        page.locator("#new-job summary").click()
        for panel in ("#kinds-panel", "#schedules-panel", "#audit-panel"):
            page.locator(f"{panel} summary").click()
        expect(page.locator("tr.job-row")).to_have_count(1)
        unlabelled = page.evaluate(
            """() => [...document.querySelectorAll("input, select, textarea")]
                .filter((e) => e.type !== "hidden" && !e.labels.length && !e.getAttribute("aria-label"))
                .map((e) => e.outerHTML)"""
        )
        assert unlabelled == []
        not_buttons = page.evaluate(
            """() => [...document.querySelectorAll("[data-action]")]
                .filter((e) => e.tagName !== "BUTTON").map((e) => e.outerHTML)"""
        )
        assert not_buttons == []
        assert page.evaluate("document.querySelector('tr.job-row').tabIndex") == 0


@needs_chromium
class TestErrors:
    def test_an_api_error_shows_its_message_in_a_toast(self, open_console: Console) -> None:
        """A refused request (here: an unknown job kind) shows the API's error message."""
        page = open_console()
        page.locator("#new-job summary").click()
        page.fill("#submit-kind", "nope")
        page.fill("#submit-payload", '{"a": 1}')
        page.locator("#submit-button").click()
        error = toast(page, "error", "Could not submit the job")
        expect(error).to_be_visible()
        expect(error).to_contain_text("Unknown job kind 'nope'")
        expect(page.locator("tr.job-row")).to_have_count(0)


@needs_chromium
class TestScreenshots:
    def test_the_console_with_jobs_in_every_status(
        self, open_console: Console, api: httpx.Client, server: str, tmp_path: Path
    ) -> None:
        """Jobs of two tenants in every status render and photograph (the docs' own: make screenshots)."""
        SCREENSHOTS = tmp_path  # the docs' screenshots come from `make screenshots`
        done = submit(api, ("thumbnail", {"image": "holiday.jpg", "steps": 4, "delay": 0}), headers=ALICE)
        failed = submit(
            api, ("transcode", {"file": "broken.avi", "fail": True, "segments": 2, "delay": 0}), headers=BOB
        )
        report = submit(
            api, ("report", {"name": "q3-sales", "rows": 480, "steps": 2, "delay": 0}), headers=ALICE
        )
        cancelled = submit(api, ("report", {"name": "inventory"}), headers=BOB, priority=-1)
        api.post(f"/jobs/{cancelled}/cancel", json={"reason": "not needed"})
        for job_id in (done, failed, report):
            wait_for_status(server, job_id, TERMINAL)
        running = submit(
            api, ("transcode", {"file": "intro.mov", "segments": 60, "delay": 0.1}), headers=ALICE
        )
        pending = submit(api, ("thumbnail", {"image": "logo.png"}), headers=BOB, priority=5)
        page = open_console("?actor=root&roles=admin")
        expected = {done: "completed", failed: "failed", report: "completed", cancelled: "cancelled"}
        expected |= {running: "running", pending: "pending"}
        for job_id, status in expected.items():
            expect(row(page, job_id)).to_have_attribute("data-status", status)
        expect(row(page, failed).locator(".error-text")).to_contain_text("exited with status 1")
        wait_for_progress(page, running, 0.2)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SCREENSHOTS / "console.png")
        row(page, done).locator("[data-action=delete]").click()
        expect(page.locator("#confirm-message")).to_have_text(DELETE_SENTENCE)
        page.screenshot(path=SCREENSHOTS / "console-delete.png")
        page.locator("#confirm-cancel").click()
        assert (SCREENSHOTS / "console.png").stat().st_size > 10_000


# -- the demo in its own process -----------------------------------------------------------


class TestDemoShutdown:
    @pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
    def test_the_demo_stops_at_once_with_a_console_watching(self, sig: int, tmp_path: Path) -> None:
        """`jobkit demo` with a client on /events and a job running: Ctrl-C (or SIGTERM) ends
        the stream and the process within seconds, and the job is back to pending."""
        data = tmp_path / "demo"
        argv = [
            sys.executable,
            "-m",
            "jobkit.cli",
            "demo",
            "--port",
            "0",
            "--data-dir",
            str(data),
            "--no-seed",
        ]
        server = ServerProcess(argv, ready=r"console at http://127\.0\.0\.1:(\d+)/", cwd=tmp_path)
        try:
            stopped = stop_while_watching(
                server, f"http://127.0.0.1:{server.port}/api/v1", sig, job=LONG_THUMBNAIL
            )
            server.wait_for("jobkit demo: stopped")
        finally:
            server.stop()
        assert stopped.stream_ended_after < 3, stopped
        assert stopped.exited_after < 5, stopped
        assert stopped.returncode == 0, server.output
        assert status_in_store(data / "jobs.db", stopped.job_id) == "pending"


# -- behind the host's own authentication ---------------------------------------------------

TOKENS = {"t-alice": Actor("alice", tenant="acme")}
SESSIONS = {"s-bob": Actor("bob", tenant="globex")}


async def host_actor(request: Request) -> Actor | None:
    """A host's authentication: a bearer token, else a session cookie; else nobody (401)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token in TOKENS:
        return TOKENS[token]
    return SESSIONS.get(request.cookies.get("session", ""))


async def alice_token(request: Request) -> dict[str, str]:
    """The console's headers dependency: a token for the signed-in user (here: always alice)."""
    return {"Authorization": "Bearer t-alice"}


@pytest.fixture(scope="module")
def host_server() -> Iterator[str]:
    """A host app whose actor reads an Authorization header or a session cookie, with the
    console mounted with the token (/console/) and without (/plain/); on uvicorn."""
    jobs = JobManager(sweep_interval=None, concurrency=0)  # jobs stay pending: nothing to wait for
    jobs.register("report", report)
    app = FastAPI(lifespan=lifespan(jobs))
    install_error_handlers(app)
    app.include_router(job_router(jobs, actor=host_actor), prefix="/api/v1")
    app.include_router(console_router(headers=alice_token), prefix="/console")
    app.include_router(console_router(), prefix="/plain")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    uvicorn_server = uvicorn.Server(config)
    thread = threading.Thread(target=uvicorn_server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        with httpx.Client(timeout=30) as client:
            assert client.get(f"{base}/api/v1/me").status_code == 401  # answered once started
        yield base
    finally:
        end_event_streams(jobs)
        uvicorn_server.should_exit = True
        thread.join(timeout=30)
        sock.close()
    assert not thread.is_alive(), "the host server did not stop"


def host_submit(base: str, headers: dict[str, str], name: str) -> str:
    with httpx.Client(base_url=f"{base}/api/v1", timeout=30) as client:
        response = client.post("/jobs", json={"kind": "report", "payload": {"name": name}}, headers=headers)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])


@needs_chromium
class TestBehindTheHostsAuth:
    def test_configured_headers_go_with_every_request_and_the_event_stream(
        self, host_server: str, browser: Browser
    ) -> None:
        """console_router(headers=...) sends the host's Authorization header: alice's jobs,
        live; the same page without it is 'Not signed in' and its stream is refused."""
        before = host_submit(host_server, {"Authorization": "Bearer t-alice"}, "before")
        host_submit(host_server, {"Cookie": "session=s-bob"}, "bobs")
        context = browser.new_context()
        try:
            page = context.new_page()
            page.goto(f"{host_server}/console/")
            expect(page.locator("#identity")).to_have_text("Signed in as alice · tenant acme")
            expect(page.locator("#connection")).to_have_attribute("data-state", "live")
            expect(row(page, before)).to_be_visible()
            live = host_submit(host_server, {"Authorization": "Bearer t-alice"}, "live")
            expect(row(page, live)).to_be_visible()  # the event stream carried the header
            expect(page.locator("tr.job-row")).to_have_count(2)

            plain = context.new_page()
            plain.goto(f"{host_server}/plain/")
            expect(plain.locator("#identity")).to_have_text("Not signed in")
            expect(plain.locator("#connection")).to_have_attribute("data-state", "reconnecting")
            expect(plain.locator("tr.job-row")).to_have_count(0)
        finally:
            context.close()

    def test_the_hosts_session_cookie_is_sent(self, host_server: str, browser: Browser) -> None:
        """Signed in by a cookie, the plain console shows bob's jobs and a live stream."""
        bobs = host_submit(host_server, {"Cookie": "session=s-bob"}, "cookie")
        context = browser.new_context()
        try:
            context.add_cookies([{"name": "session", "value": "s-bob", "url": host_server}])
            page = context.new_page()
            page.goto(f"{host_server}/plain/")
            expect(page.locator("#identity")).to_have_text("Signed in as bob · tenant globex")
            expect(page.locator("#connection")).to_have_attribute("data-state", "live")
            expect(row(page, bobs)).to_be_visible()
            expect(page.locator('tr.job-row:not([data-tenant="globex"])')).to_have_count(0)
        finally:
            context.close()


class TestConsoleHeaders:
    def test_fixed_headers_are_in_the_pages_config(self) -> None:
        response = console_page(headers={"X-Console": "ops"})
        config = re.search(
            r'<script type="application/json" id="jobkit-config">(.*?)</script>', response.text
        )
        assert config is not None
        assert json.loads(config.group(1))["headers"] == {"X-Console": "ops"}
        assert response.headers["cache-control"] == "no-store"

    @pytest.mark.parametrize(
        "headers",
        [{"Bad Name": "x"}, {"X-A": "line\r\nInjected: 1"}, {"X-A": 1}, {"X-A": "caf\u00e9"}, ["X-A"]],
    )
    def test_bad_fixed_headers_are_refused(self, headers: Any) -> None:
        with pytest.raises(InvalidInput, match="header"):
            console_router(headers=headers)
