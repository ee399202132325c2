"""Regenerate the console screenshots in this folder: ``make screenshots``
(or ``.venv/bin/python docs/img/refresh.py [OUT_DIR]``).

It runs the demo app (one worker, a throwaway data folder) on 127.0.0.1, seeds jobs of two
tenants in every status and a schedule, and photographs the console in Debian's Chromium
(``/usr/bin/chromium``, see ``make browser``):

- ``console.png``: the table with the counts, as an admin (1280x720);
- ``console-detail.png``: a running job's detail view, with its live events;
- ``console-delete.png``: the confirmation dialog of a delete;
- ``console-narrow.png``: the same table on a phone (390x844).
"""

from __future__ import annotations

import json
import socket
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from playwright.sync_api import Browser, Page, expect, sync_playwright

from jobkit.integrations._demo_app import create_demo_app
from jobkit.integrations.fastapi import end_event_streams

HERE = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run"]
ACME = {"X-Actor": "alice", "X-Tenant": "acme"}
GLOBEX = {"X-Actor": "bob", "X-Tenant": "globex"}
ADMIN = "?actor=root&roles=admin"
TERMINAL = {"completed", "failed", "cancelled"}


def wait_for(client: httpx.Client, job_id: str, statuses: set[str]) -> None:
    """Until the job's status is one of ``statuses``, on its event stream."""
    with client.stream("GET", "/events", params={"job_id": job_id}) as events:
        lines = events.iter_lines()
        next(lines)  # the subscription is live
        if client.get(f"/jobs/{job_id}").json()["status"] in statuses:
            return
        for line in lines:
            if line.startswith("data:") and json.loads(line[5:])["status"] in statuses:
                return
    raise RuntimeError(f"job {job_id} never reached {statuses}")


def seed(client: httpx.Client) -> dict[str, str]:
    def submit(kind: str, payload: Any, headers: dict[str, str], **extra: Any) -> str:
        response = client.post("/jobs", json={"kind": kind, "payload": payload, **extra}, headers=headers)
        response.raise_for_status()
        return str(response.json()["id"])

    jobs = {
        "done": submit("thumbnail", {"image": "holiday.jpg", "steps": 4, "delay": 0}, ACME),
        "failed": submit(
            "transcode", {"file": "broken.avi", "fail": True, "segments": 2, "delay": 0}, GLOBEX
        ),
        "report": submit("report", {"name": "q3-sales", "rows": 480, "steps": 2, "delay": 0}, ACME),
        "cancelled": submit("report", {"name": "inventory"}, GLOBEX, priority=-1),
    }
    client.post(f"/jobs/{jobs['cancelled']}/cancel", json={"reason": "not needed"}).raise_for_status()
    for key in ("done", "failed", "report"):
        wait_for(client, jobs[key], TERMINAL)
    jobs["scheduled"] = submit("report", {"name": "monthly"}, ACME, delay=3 * 3600)
    jobs["running"] = submit(
        "transcode", {"file": "intro.mov", "segments": 200, "delay": 0.1}, ACME, labels={"team": "video"}
    )
    jobs["pending"] = submit("thumbnail", {"image": "logo.png"}, GLOBEX, priority=5)
    wait_for(client, jobs["running"], {"running"})
    nightly = {"name": "nightly", "kind": "report", "payload": {"name": "nightly"}, "cron": "0 3 * * *"}
    client.post("/schedules", json=nightly).raise_for_status()
    return jobs


def open_console(browser: Browser, base: str, query: str, viewport: tuple[int, int], rows: int = 7) -> Page:
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    page = context.new_page()
    page.goto(f"{base}/console/{query}")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=15_000)
    expect(page.locator("tr.job-row")).to_have_count(rows, timeout=15_000)
    page.wait_for_function(
        "() => Number(document.querySelector('tr.job-row[data-status=running]').dataset.progress) >= 0.1",
        timeout=60_000,
    )
    return page


def take(base: str, out: Path) -> list[Path]:
    headers = {"X-Requested-With": "refresh"}
    with httpx.Client(base_url=f"{base}/api/v1", timeout=30, headers=headers) as client:
        jobs = seed(client)
    out.mkdir(parents=True, exist_ok=True)
    shots = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = open_console(browser, base, ADMIN, (1280, 720))
        shots.append(out / "console.png")
        page.screenshot(path=shots[-1])
        page.locator(f'tr.job-row[data-job-id="{jobs["done"]}"] [data-action=delete]').click()
        expect(page.locator("#confirm-dialog")).to_be_visible()
        shots.append(out / "console-delete.png")
        page.screenshot(path=shots[-1])
        page.locator("#confirm-cancel").click()
        page.context.close()
        # the running job's detail view, as alice of acme (a user: no admin controls)
        page = open_console(browser, base, "?actor=alice&tenant=acme", (1280, 720), rows=4)
        page.locator(f'tr.job-row[data-job-id="{jobs["running"]}"]').click()
        expect(page.locator('#job-dialog .event-list li[data-event-type="progress"]')).to_be_visible()
        artifacts = page.locator("#job-dialog .artifacts-empty, #job-dialog li[data-artifact]")
        expect(artifacts.first).to_be_visible()
        shots.append(out / "console-detail.png")
        page.screenshot(path=shots[-1])
        page.context.close()
        narrow = open_console(browser, base, ADMIN, (390, 844))
        shots.append(out / "console-narrow.png")
        narrow.screenshot(path=shots[-1])
        narrow.context.close()
        browser.close()
    return shots


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as data:
        app = create_demo_app(Path(data), seed=False, concurrency=1)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            for shot in take(f"http://127.0.0.1:{sock.getsockname()[1]}", out):
                print(f"wrote {shot}")
        finally:
            end_event_streams(app.state.jobkit_manager)
            server.should_exit = True
            thread.join(timeout=30)
            sock.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
