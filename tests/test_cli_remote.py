"""``jobkit --url``: the commands through jobkit.client against a real uvicorn server; id
prefixes, ``jobs watch``, ``status`` over HTTP, ``--version``, completion and the help text."""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from jobkit import JobStatus
from jobkit.cli._app import app
from jobkit.client import BlockingJobClient
from remote_server import ADMIN, GATES, Server, serve_jobs

AS_ADMIN = ["-H", "X-Actor: ada", "-H", "X-Roles: admin"]


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with serve_jobs() as found:
        yield found


def invoke(*args: str, env: dict[str, str | None] | None = None, input: str | None = None) -> Result:
    """``jobkit <args>`` in this process, 200 columns wide, without JOBKIT_* from outside."""
    clean: dict[str, str | None] = {
        "COLUMNS": "200",
        "JOBKIT_STORE": None,
        "JOBKIT_URL": None,
        "JOBKIT_HEADERS": None,
    }
    return CliRunner().invoke(app, list(args), env={**clean, **(env or {})}, input=input)


def remote(server: Server, *args: str, admin: bool = True) -> Result:
    """``jobkit --url <server> [-H admin headers] <args>``."""
    return invoke("--url", server.url, *(AS_ADMIN if admin else []), *args)


def ok_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def one_line_error(result: Result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def submitted(server: Server, kind: str, payload: Any = None) -> dict[str, Any]:
    args = ["jobs", "submit", kind, "--json"]
    if payload is not None:
        args += ["--payload", json.dumps(payload)]
    return ok_json(remote(server, *args))  # type: ignore[no-any-return]


class TestOptions:
    def test_url_with_store_is_a_usage_error(self, server: Server) -> None:
        result = invoke("--url", server.url, "--store", "memory://", "jobs", "list")
        one_line_error(result, 2, "--store or --url, not both")
        result = invoke("--url", server.url, "status", env={"JOBKIT_STORE": "memory://"})
        one_line_error(result, 2, "not both")
        result = invoke("--url", server.url, "--blobs", "memory://", "jobs", "list")
        one_line_error(result, 2, "--blobs goes with --store")

    def test_env_vars_give_the_url_and_headers(self, server: Server) -> None:
        """JOBKIT_URL and JOBKIT_HEADERS (lines, or a JSON object) stand for --url and --header."""
        for headers in ("X-Actor: ada\nX-Roles: admin", json.dumps(ADMIN)):
            env = {"JOBKIT_URL": server.url, "JOBKIT_HEADERS": headers}
            job = ok_json(invoke("jobs", "submit", "parked", "--json", env=env))
            assert job["status"] == "pending"
            assert ok_json(invoke("jobs", "show", job["id"], "--json", env=env))["id"] == job["id"]

    def test_a_malformed_header_is_a_usage_error(self, server: Server) -> None:
        one_line_error(invoke("--url", server.url, "-H", "no colon here", "jobs", "list"), 2, "Name: value")
        bad = invoke("jobs", "list", env={"JOBKIT_URL": server.url, "JOBKIT_HEADERS": "{not json"})
        one_line_error(bad, 2, "JOBKIT_HEADERS")

    def test_no_identity_is_exit_5_and_no_rights_too(self, server: Server) -> None:
        one_line_error(remote(server, "jobs", "list", admin=False), 5, "Sign in")
        result = invoke("--url", server.url, "-H", "X-Actor: bob", "kinds", "pause", "parked")
        one_line_error(result, 5, "admins only")

    def test_unreachable_server_is_a_backend_error(self) -> None:
        one_line_error(invoke("--url", "http://127.0.0.1:9/api/v1", "jobs", "list"), 7, "Cannot reach")

    def test_store_only_commands_and_options_are_usage_errors(self, server: Server) -> None:
        one_line_error(remote(server, "sweep"), 2, "needs --store")
        job = submitted(server, "parked")
        one_line_error(remote(server, "jobs", "delete", job["id"], "--soft", "--yes"), 2, "--soft")
        one_line_error(remote(server, "jobs", "list", "--include-deleted"), 2, "include_deleted")

    def test_version(self) -> None:
        import jobkit

        result = invoke("--version")
        assert result.exit_code == 0
        assert result.stdout.strip() == f"jobkit {jobkit.__version__}"

    def test_shell_completion(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """typer's completion options: --show-completion prints the script for a shell."""
        assert "--install-completion" in invoke("--help").stdout
        # Name the shell instead of detecting it: under `make`, the parent shell is sh, which
        # typer cannot complete for.
        monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
        result = invoke("--show-completion", "bash")
        assert result.exit_code == 0, result.output
        assert "_JOBKIT_COMPLETE" in result.stdout


COMMANDS = [
    [], ["jobs"], ["jobs", "list"], ["jobs", "show"], ["jobs", "submit"], ["jobs", "cancel"],
    ["jobs", "delete"], ["jobs", "priority"], ["jobs", "artifacts"], ["jobs", "retry"],
    ["jobs", "watch"], ["kinds"], ["kinds", "list"], ["kinds", "pause"], ["kinds", "resume"],
    ["schedules"], ["schedules", "list"], ["schedules", "add"], ["schedules", "remove"], ["sweep"],
    ["audit"], ["status"], ["worker"], ["demo"],
]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "jobkit")
def test_help_placeholders_read_like_words(command: list[str]) -> None:
    """No TEXT, INTEGER, FLOAT, <str>, <bool> or {ID}: every placeholder is a word."""
    result = invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    odd = re.findall(r"\b(?:TEXT|INTEGER|FLOAT|BOOLEAN|FILENAME)\b|<[a-z ]+>|\{[A-Z]+\}", result.stdout)
    assert not odd, result.stdout


class TestJobsOverHttp:
    def test_submit_list_show_by_prefix(self, server: Server) -> None:
        job = submitted(server, "parked", {"n": 1})
        listed = ok_json(remote(server, "jobs", "list", "--kind", "parked", "--limit", "1000", "--json"))
        assert job["id"] in {item["id"] for item in listed["items"]}
        shown = ok_json(remote(server, "jobs", "show", job["id"][:8], "--json"))
        assert shown["id"] == job["id"]
        assert shown["payload"] == {"n": 1}
        table = remote(server, "jobs", "show", job["id"][:8])
        assert table.exit_code == 0, table.output
        assert job["id"] in table.stdout

    def test_an_unknown_prefix_is_exit_3(self, server: Server) -> None:
        one_line_error(remote(server, "jobs", "show", "0123456789ab"), 3)
        one_line_error(remote(server, "jobs", "show", "no-such-job"), 3)

    def test_cancel_retry_priority_delete_by_prefix(self, server: Server) -> None:
        job = submitted(server, "parked")
        prefix = job["id"][:8]
        moved = ok_json(remote(server, "jobs", "priority", prefix, "7", "--json"))
        assert moved["job"]["priority"] == 7
        assert moved["position"] >= 1
        cancelled = ok_json(remote(server, "jobs", "cancel", prefix, "--reason", "done", "--json"))
        assert cancelled["status"] == "cancelled"
        assert ok_json(remote(server, "jobs", "retry", prefix, "--json"))["status"] == "pending"
        ok_json(remote(server, "jobs", "cancel", prefix, "--json"))
        deleted = remote(server, "jobs", "delete", prefix, "--yes")
        assert deleted.exit_code == 0, deleted.output
        assert f"Deleted job {job['id']}." in deleted.stdout
        one_line_error(remote(server, "jobs", "show", job["id"]), 3)

    def test_delete_asks_first(self, server: Server) -> None:
        job = submitted(server, "parked")
        ok_json(remote(server, "jobs", "cancel", job["id"], "--json"))
        result = invoke("--url", server.url, *AS_ADMIN, "jobs", "delete", job["id"][:8], input="n\n")
        assert result.exit_code == 8, result.output
        assert ok_json(remote(server, "jobs", "show", job["id"], "--json"))["status"] == "cancelled"

    def test_artifacts(self, server: Server) -> None:
        job = submitted(server, "hello", "x")
        assert ok_json(remote(server, "jobs", "watch", job["id"], "--json"))["status"] == "completed"
        assert ok_json(remote(server, "jobs", "artifacts", job["id"][:8], "--json")) == {
            "items": ["out/report.txt"]
        }

    def test_invalid_state_and_input(self, server: Server) -> None:
        job = submitted(server, "hello")
        ok_json(remote(server, "jobs", "watch", job["id"], "--json"))
        one_line_error(remote(server, "jobs", "cancel", job["id"]), 4)
        one_line_error(remote(server, "jobs", "submit", "no-such-kind"), 6, "no-such-kind")

    def test_audit_of_a_job_by_prefix(self, server: Server) -> None:
        job = submitted(server, "parked")
        ok_json(remote(server, "jobs", "cancel", job["id"], "--reason", "why not", "--json"))
        records = ok_json(remote(server, "audit", "--job", job["id"][:8], "--json"))["items"]
        assert [(r["action"], r["actor_id"], r["job_id"]) for r in records] == [("cancel", "ada", job["id"])]
        table = remote(server, "audit", "--limit", "5")
        assert table.exit_code == 0, table.output
        assert "cancel" in table.stdout


class TestWatch:
    def test_a_finished_job_exits_at_once_with_its_outcome(self, server: Server) -> None:
        """0 completed, 9 failed, 10 cancelled."""
        done = submitted(server, "hello")
        failed = submitted(server, "boom")
        cancelled = submitted(server, "parked")
        ok_json(remote(server, "jobs", "cancel", cancelled["id"], "--json"))
        ok_json(remote(server, "jobs", "watch", done["id"], "--json"))  # wait for it
        assert remote(server, "jobs", "watch", done["id"][:8]).exit_code == 0
        failing = remote(server, "jobs", "watch", failed["id"][:8])
        assert failing.exit_code == 9, failing.output
        assert "failed" in failing.stdout
        assert "boom" in failing.stdout
        stopped = remote(server, "jobs", "watch", cancelled["id"])
        assert stopped.exit_code == 10, stopped.output
        assert "cancelled" in stopped.stdout

    def test_follows_a_running_job_until_it_completes(
        self, server: Server, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The gate opens once the watcher has subscribed and then read the job (running):
        the bar follows it to 100%."""
        gate = f"gate-{uuid.uuid4()}"
        GATES[gate] = threading.Event()
        job = submitted(server, "gated", gate)
        subscribed, read = threading.Event(), threading.Event()
        subscribe, get = server.manager.subscribe, server.manager.get

        def spy_subscribe(**kwargs: Any) -> Any:
            if kwargs.get("job_id") == job["id"]:
                subscribed.set()
            return subscribe(**kwargs)

        async def spy_get(job_id: str, **kwargs: Any) -> Any:
            found = await get(job_id, **kwargs)
            if job_id == job["id"] and subscribed.is_set():
                read.set()
            return found

        monkeypatch.setattr(server.manager, "subscribe", spy_subscribe)
        monkeypatch.setattr(server.manager, "get", spy_get)

        def release() -> None:
            read.wait(30)
            GATES[gate].set()

        opener = threading.Thread(target=release)
        opener.start()
        try:
            result = remote(server, "jobs", "watch", job["id"][:8])
        finally:
            GATES[gate].set()
            opener.join(timeout=30)
        assert result.exit_code == 0, result.output
        assert "100%" in result.stdout
        assert f"Job {job['id']} completed." in result.stdout


class TestKindsSchedulesStatus:
    def test_kinds_list_pause_resume(self, server: Server) -> None:
        kinds = ok_json(remote(server, "kinds", "list", "--json"))["items"]
        assert {"hello", "boom", "gated", "parked"} <= {item["kind"] for item in kinds}
        assert ok_json(remote(server, "kinds", "pause", "parked", "--json"))["paused"] is True
        paused = ok_json(remote(server, "kinds", "list", "--json"))["items"]
        assert {"kind": "parked", "paused": True} in paused
        assert ok_json(remote(server, "kinds", "resume", "parked", "--json"))["changed"] is True

    def test_schedules_add_list_remove(self, server: Server) -> None:
        added = ok_json(
            remote(server, "schedules", "add", "nightly-cli", "parked", "--cron", "0 3 * * *", "--json")
        )
        assert added["name"] == "nightly-cli"
        listed = ok_json(remote(server, "schedules", "list", "--json"))["items"]
        assert "nightly-cli" in {item["name"] for item in listed}
        assert ok_json(remote(server, "schedules", "remove", "nightly-cli", "--json")) == {
            "removed": "nightly-cli"
        }
        one_line_error(remote(server, "schedules", "remove", "nightly-cli"), 3)

    def test_status_over_http(self, server: Server) -> None:
        """Counts per status, the oldest pending job, running jobs and paused kinds, from the REST API."""
        gate = f"gate-{uuid.uuid4()}"
        GATES[gate] = threading.Event()
        try:
            with BlockingJobClient(server.url, headers=ADMIN) as client:
                pending = client.submit("parked")
                with client.subscribe() as events:
                    running = client.submit("gated", gate)
                    for event in events:
                        if event.job_id == running.id and event.status is JobStatus.RUNNING:
                            break
                client.pause("boom")
                report = ok_json(remote(server, "status", "--json"))
                text = remote(server, "status")
                client.resume("boom")
        finally:
            GATES[gate].set()
        assert report["counts"]["pending"] >= 1
        assert report["counts"]["running"] >= 1
        assert report["oldest_pending"] is not None
        assert report["oldest_pending"] <= pending.created_at.isoformat()
        assert running.id in {item["job_id"] for item in report["running"]}
        assert "boom" in report["paused"]
        assert report["leases"] is None
        assert text.exit_code == 0, text.output
        assert "Paused kinds: boom" in text.stdout
        assert running.id[:8] in text.stdout
