"""The ``jobkit`` command: management commands, output formats, exit codes, worker and demo."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
from typer.testing import CliRunner, Result

from jobkit import (
    BackendError,
    DeletePolicy,
    InvalidInput,
    Job,
    JobContext,
    JobManager,
    JobStatus,
    PermissionDenied,
)
from jobkit.abc import BlobStore
from jobkit.blobs import FileBlobStore, MemoryBlobStore
from jobkit.cli import main
from jobkit.cli._app import app
from jobkit.cli._worker import load_manager
from jobkit.stores import SQLiteStore

T = TypeVar("T")

JOB_FIELDS = [
    "id", "kind", "status", "payload", "tenant", "priority", "progress", "progress_message", "result",
    "error", "cancel_reason", "created_at", "started_at", "finished_at", "expires_at", "deleted_at",
    "version", "attempts", "max_attempts", "labels", "ttl", "timeout", "run_at", "idempotency_key",
    "retry",
]  # fmt: skip
#: The fields of delayed, retried and deduplicated jobs, in any order after the others.
LIFECYCLE_FIELDS = {"run_at", "idempotency_key", "retry"}


def assert_job_fields(job: dict[str, Any]) -> None:
    """A job in --json output has the web API's fields."""
    assert list(job)[: len(JOB_FIELDS)] == JOB_FIELDS
    assert set(job) == {*JOB_FIELDS, *LIFECYCLE_FIELDS}


# -- a database prepared by a host ---------------------------------------------------------


async def report(ctx: JobContext, payload: Any) -> Any:
    """Writes two artifacts, reports progress, returns the payload."""
    await ctx.put_artifact("report.txt", b"all good")
    await ctx.put_artifact("img/chart.png", b"\x89PNG")
    await ctx.progress(1.0, "written")
    return {"echo": payload}


async def boom(ctx: JobContext, payload: Any) -> None:
    raise ValueError("the input was bad")


def host_manager(db: Path, blobs: BlobStore, concurrency: int, mode: str = "hard") -> JobManager:
    jobs = JobManager(
        SQLiteStore(db),
        blobs,
        concurrency=concurrency,
        sweep_interval=None,
        poll_interval=0.05,
        delete_policy=DeletePolicy(mode=mode),
    )
    jobs.register("report", report)
    jobs.register("boom", boom)
    return jobs


def as_host(db: Path, blobs: BlobStore, fn: Callable[[JobManager], Awaitable[T]]) -> T:
    """Run ``fn`` with a manager that runs no jobs, on the test's database and blobs."""

    async def session() -> T:
        async with host_manager(db, blobs, concurrency=0) as jobs:
            return await fn(jobs)

    return anyio.run(session)


class Host:
    """The test's database: finished jobs (with artifacts), pending ones and a soft-deleted one."""

    def __init__(self, db: Path, artifacts: Path) -> None:
        self.db = db
        self.artifacts_root = artifacts
        self.blobs = FileBlobStore(artifacts)
        self.store = f"sqlite:///{db}"
        self.blobs_url = f"file://{artifacts}"
        self.ids: dict[str, str] = {}

    def prepare(self) -> None:
        async def run() -> None:
            async with host_manager(self.db, self.blobs, concurrency=2) as jobs:
                done = await jobs.submit("report", {"n": 1}, labels={"team": "data"})
                failed = await jobs.submit("boom")
                expiring = await jobs.submit("report", {"n": 2}, ttl=0)
                soft = await jobs.submit("report", {"n": 5})
                for job in (done, failed, expiring, soft):
                    await jobs.wait(job.id, timeout=30)
            soft_deleting = host_manager(self.db, self.blobs, concurrency=0, mode="soft")
            async with soft_deleting as jobs:
                await jobs.delete(soft.id)
            async with host_manager(self.db, self.blobs, concurrency=0) as jobs:
                low = await jobs.submit("report", {"n": 3})
                high = await jobs.submit("report", {"n": 4}, priority=5)
            self.ids = {
                "done": done.id,
                "failed": failed.id,
                "expiring": expiring.id,
                "low": low.id,
                "high": high.id,
                "soft": soft.id,
            }

        anyio.run(run)

    def get(self, name: str) -> Job:
        job_id = self.ids[name]
        return as_host(self.db, self.blobs, lambda jobs: jobs.get(job_id))

    def artifacts(self, name: str) -> list[str]:
        job_id = self.ids[name]
        return as_host(self.db, self.blobs, lambda jobs: jobs.artifacts(job_id))

    def invoke(
        self, *args: str, input: str | None = None, env: dict[str, str | None] | None = None
    ) -> Result:
        """``jobkit --store sqlite:///<db> --blobs file://<artifacts> <args>``, in this process."""
        return invoke("--store", self.store, "--blobs", self.blobs_url, *args, input=input, env=env)


@pytest.fixture
def host(tmp_path: Path) -> Host:
    """A prepared SQLite database, with the artifacts of its jobs in a folder."""
    host = Host(tmp_path / "jobs.db", tmp_path / "artifacts")
    host.prepare()
    return host


def invoke(*args: str, input: str | None = None, env: dict[str, str | None] | None = None) -> Result:
    """``jobkit <args>`` in this process, on an output 200 columns wide (tables are never cut)."""
    return CliRunner().invoke(app, list(args), input=input, env={"COLUMNS": "200", **(env or {})})


def ok_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def assert_one_line_error(result: Result, code: int, *fragments: str) -> None:
    """The command failed with ``code`` and said why in one line on stderr, no traceback."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]


# -- management commands -------------------------------------------------------------------


class TestList:
    def test_lists_every_job_newest_first_as_json(self, host: Host) -> None:
        """--json gives {"items", "next_cursor"} with the web API's job fields, newest first."""
        page = ok_json(host.invoke("--json", "jobs", "list"))
        assert [item["id"] for item in page["items"]] == [
            host.ids[name] for name in ("high", "low", "expiring", "failed", "done")
        ]
        assert page["next_cursor"] is None
        first = page["items"][-1]
        assert_job_fields(first)
        assert (first["run_at"], first["idempotency_key"], first["retry"]) == (None, None, None)
        assert first["status"] == "completed"
        assert first["result"] == {"echo": {"n": 1}}
        assert first["labels"] == {"team": "data"}
        assert first["created_at"].endswith("+00:00")

    def test_filters_by_status_and_kind(self, host: Host) -> None:
        """--status repeats or takes commas; --kind narrows further."""
        statuses = ok_json(host.invoke("jobs", "list", "--status", "failed", "--status", "pending", "--json"))
        assert {item["id"] for item in statuses["items"]} == {
            host.ids["failed"],
            host.ids["low"],
            host.ids["high"],
        }
        commas = ok_json(host.invoke("jobs", "list", "--status", "failed,pending", "--json"))
        assert commas == statuses
        kind = ok_json(host.invoke("jobs", "list", "-s", "completed", "--kind", "report", "--json"))
        assert {item["id"] for item in kind["items"]} == {host.ids["done"], host.ids["expiring"]}

    def test_pages_with_limit_and_cursor(self, host: Host) -> None:
        """--limit cuts a page; --cursor with its next_cursor continues without repeats."""
        first = ok_json(host.invoke("jobs", "list", "--limit", "3", "--json"))
        assert len(first["items"]) == 3
        second = ok_json(
            host.invoke("jobs", "list", "--limit", "3", "--cursor", first["next_cursor"], "--json")
        )
        assert second["next_cursor"] is None
        ids = [item["id"] for item in first["items"] + second["items"]]
        assert sorted(ids) == sorted(job_id for name, job_id in host.ids.items() if name != "soft")

    def test_human_table_shows_ids_kinds_statuses_and_a_next_page_hint(self, host: Host) -> None:
        """The table has every job's full id, kind and status, and says how to get more."""
        result = host.invoke("jobs", "list", "--limit", "4")
        assert result.exit_code == 0
        for name in ("high", "low", "expiring", "failed"):
            assert host.ids[name] in result.stdout
        assert host.ids["done"] not in result.stdout
        for word in ("ID", "KIND", "STATUS", "CREATED", "report", "boom", "pending", "failed", "completed"):
            assert word in result.stdout
        assert "More jobs: jobkit jobs list --limit 4 --cursor " in result.stdout

    def test_statuses_are_coloured_on_a_colour_terminal(self, host: Host) -> None:
        """With colour forced, failed is red and completed green."""
        result = host.invoke("jobs", "list", env={"FORCE_COLOR": "1", "NO_COLOR": None})
        assert "\x1b[1;31mfailed" in result.stdout
        assert "\x1b[32mcompleted" in result.stdout

    def test_soft_deleted_jobs_only_on_request(self, host: Host) -> None:
        """A soft-deleted job is hidden unless --include-deleted, and marked as deleted then."""
        hidden = ok_json(host.invoke("jobs", "list", "--json"))
        assert host.ids["soft"] not in {item["id"] for item in hidden["items"]}
        shown = ok_json(host.invoke("jobs", "list", "--include-deleted", "--json"))
        soft = next(item for item in shown["items"] if item["id"] == host.ids["soft"])
        assert soft["deleted_at"] is not None
        table = host.invoke("jobs", "list", "--include-deleted")
        row = next(line for line in table.stdout.splitlines() if host.ids["soft"] in line)
        assert "completed (deleted)" in row

    def test_empty_result_says_so(self, host: Host) -> None:
        """No matching job: a plain sentence, exit 0."""
        result = host.invoke("jobs", "list", "--status", "cancelled")
        assert result.exit_code == 0
        assert result.stdout.strip() == "No jobs."


class TestShow:
    def test_json_is_the_job(self, host: Host) -> None:
        """--json prints the job object with the web API's fields."""
        job = ok_json(host.invoke("--json", "jobs", "show", host.ids["failed"]))
        assert_job_fields(job)
        assert job["status"] == "failed"
        assert job["error"] == "ValueError: the input was bad"

    def test_human_view_has_fields_times_and_queue_position(self, host: Host) -> None:
        """Every field, readable times, the payload, and a pending job's place in the queue."""
        done = host.invoke("jobs", "show", host.ids["done"])
        assert done.exit_code == 0
        for text in (host.ids["done"], "completed", "team=data", '"echo"', "written", "(in 6d)"):
            assert text in done.stdout
        assert re.search(r"created +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \((now|\d+s ago)\)", done.stdout)
        pending = host.invoke("jobs", "show", host.ids["low"])
        assert "queue position  2 (1 runs next)" in pending.stdout

    def test_soft_deleted_job_needs_include_deleted(self, host: Host) -> None:
        """A soft-deleted job is not found (exit 3) unless --include-deleted."""
        assert_one_line_error(host.invoke("jobs", "show", host.ids["soft"]), 3, "not found")
        job = ok_json(host.invoke("jobs", "show", host.ids["soft"], "--include-deleted", "--json"))
        assert job["deleted_at"] is not None
        human = host.invoke("jobs", "show", host.ids["soft"], "--include-deleted")
        assert re.search(r"deleted +\d{4}-", human.stdout)


class TestCancel:
    def test_cancels_a_pending_job_with_a_reason(self, host: Host) -> None:
        """A pending job is cancelled at once and keeps the reason."""
        job = ok_json(host.invoke("jobs", "cancel", host.ids["low"], "--reason", "not needed", "--json"))
        assert job["status"] == "cancelled"
        assert job["cancel_reason"] == "not needed"
        assert host.get("low").status is JobStatus.CANCELLED

    def test_human_output_names_the_new_status(self, host: Host) -> None:
        """Without --json it says what the job is now."""
        result = host.invoke("jobs", "cancel", host.ids["high"])
        assert result.exit_code == 0
        assert result.stdout.strip() == f"Job {host.ids['high']} is cancelled."

    def test_finished_job_is_invalid_state(self, host: Host) -> None:
        """Cancelling a finished job exits 4 with the manager's advice."""
        result = host.invoke("jobs", "cancel", host.ids["done"])
        assert_one_line_error(result, 4, "Cannot cancel a completed job")
        assert host.get("done").status is JobStatus.COMPLETED


class TestDelete:
    def test_yes_deletes_the_job_and_its_artifacts(self, host: Host) -> None:
        """--yes deletes without asking; the job and its artifacts are gone."""
        assert host.artifacts("done") == ["img/chart.png", "report.txt"]
        result = host.invoke("jobs", "delete", host.ids["done"], "--yes")
        assert result.exit_code == 0
        assert result.stdout.strip() == f"Deleted job {host.ids['done']}."
        assert host.invoke("jobs", "show", host.ids["done"]).exit_code == 3
        assert not (host.artifacts_root / "jobs" / host.ids["done"]).exists()

    def test_asks_first_and_deletes_on_yes(self, host: Host) -> None:
        """Without --yes it describes the job and asks; "y" deletes."""
        result = host.invoke("jobs", "delete", host.ids["done"], input="y\n")
        assert result.exit_code == 0
        assert "2 artifacts" in result.stderr
        assert "This will permanently delete the job and its artifacts." in result.stderr
        assert host.invoke("jobs", "show", host.ids["done"]).exit_code == 3

    @pytest.mark.parametrize("answer", ["n\n", "", "\n"])
    def test_anything_but_yes_keeps_the_job(self, host: Host, answer: str) -> None:
        """No, end of input or Enter: nothing is deleted and the exit code is 1."""
        result = host.invoke("jobs", "delete", host.ids["done"], input=answer)
        assert result.exit_code == 8  # aborted: not the code of an unexpected error
        assert result.stderr.endswith("\nerror: Not confirmed: the job was not deleted.\n") or (
            result.stderr.endswith("[y/N]:error: Not confirmed: the job was not deleted.\n")  # no echo
        )
        assert host.get("done").status is JobStatus.COMPLETED
        assert host.artifacts("done") == ["img/chart.png", "report.txt"]

    def test_soft_keeps_the_job_for_audit(self, host: Host) -> None:
        """--soft marks the job deleted: hidden, readable with --include-deleted, artifacts kept."""
        result = host.invoke("jobs", "delete", host.ids["done"], "--soft", input="y\n")
        assert result.exit_code == 0
        assert "keep it and its artifacts for audit" in result.stderr
        assert host.invoke("jobs", "show", host.ids["done"]).exit_code == 3
        job = ok_json(host.invoke("jobs", "show", host.ids["done"], "--include-deleted", "--json"))
        assert job["deleted_at"] is not None
        assert (host.artifacts_root / "jobs" / host.ids["done"] / "report.txt").read_bytes() == b"all good"

    def test_json_does_not_ask(self, host: Host) -> None:
        """--json never prompts (scripts) and reports the deleted id."""
        assert ok_json(host.invoke("--json", "jobs", "delete", host.ids["failed"])) == {
            "deleted": host.ids["failed"]
        }

    def test_pending_job_is_invalid_state(self, host: Host) -> None:
        """A pending job cannot be deleted (default policy): exit 4, advice to cancel."""
        result = host.invoke("jobs", "delete", host.ids["low"], "--yes")
        assert_one_line_error(result, 4, "Use cancel instead")

    def test_needs_to_know_where_artifacts_live(self, host: Host) -> None:
        """With a SQLite store and no --blobs, commands that touch artifacts refuse (exit 2)."""
        for args in (["jobs", "delete", host.ids["done"], "--yes"], ["jobs", "artifacts", host.ids["done"]]):
            result = invoke("--store", host.store, *args, env={"JOBKIT_BLOBS": None})
            assert_one_line_error(result, 2, "--blobs")
        assert host.get("done").status is JobStatus.COMPLETED


class TestPriority:
    def test_prints_the_new_position(self, host: Host) -> None:
        """Raising the low job's priority moves it to the front of the queue."""
        result = host.invoke("jobs", "priority", host.ids["low"], "10")
        assert result.exit_code == 0
        assert "position 1 in the queue" in result.stdout
        assert host.get("low").priority == 10

    def test_messages_are_not_wrapped_on_narrow_output(self, host: Host) -> None:
        """A sentence stays one line however narrow the output: the terminal wraps, not jobkit."""
        result = host.invoke("jobs", "priority", host.ids["low"], "10", env={"COLUMNS": "40"})
        assert len(result.stdout.splitlines()) == 1

    def test_negative_priority_and_json(self, host: Host) -> None:
        """A negative priority is a value, not an option; --json gives {"job", "position"}."""
        body = ok_json(host.invoke("jobs", "priority", host.ids["high"], "-3", "--json"))
        assert body["position"] == 2
        assert body["job"]["id"] == host.ids["high"]
        assert body["job"]["priority"] == -3

    def test_finished_job_is_invalid_state(self, host: Host) -> None:
        """Only pending jobs have a priority to change: exit 4."""
        assert_one_line_error(host.invoke("jobs", "priority", host.ids["done"], "1"), 4)

    def test_out_of_range_is_invalid_input(self, host: Host) -> None:
        """A priority outside the allowed range: exit 6."""
        assert_one_line_error(host.invoke("jobs", "priority", host.ids["low"], "99999999"), 6, "priority")


class TestArtifacts:
    def test_lists_names(self, host: Host) -> None:
        """Human: one name per row; --json: {"items": [names]}."""
        result = host.invoke("jobs", "artifacts", host.ids["done"])
        assert result.exit_code == 0
        assert "img/chart.png" in result.stdout
        assert "report.txt" in result.stdout
        assert ok_json(host.invoke("--json", "jobs", "artifacts", host.ids["done"])) == {
            "items": ["img/chart.png", "report.txt"]
        }

    def test_job_without_artifacts(self, host: Host) -> None:
        """A job that wrote nothing says so."""
        result = host.invoke("jobs", "artifacts", host.ids["failed"])
        assert result.stdout.strip() == f"Job {host.ids['failed']} has no artifacts."


class TestSweep:
    def test_deletes_expired_jobs_and_reports(self, host: Host) -> None:
        """The job with ttl=0 and its two artifacts go; the report counts them."""
        body = ok_json(host.invoke("sweep", "--json"))
        assert body == {
            "expired": 1, "purged": 0, "artifacts_deleted": 2, "recovered": 0, "audit_removed": 0,
            "promoted": 0, "fired": 0,
        }  # fmt: skip
        assert host.invoke("jobs", "show", host.ids["expiring"]).exit_code == 3
        assert not (host.artifacts_root / "jobs" / host.ids["expiring"]).exists()
        assert host.artifacts("done") == ["img/chart.png", "report.txt"]

    def test_soft_sweep_keeps_expired_jobs_for_audit(self, host: Host) -> None:
        """--soft: the expired job is marked deleted, not removed."""
        body = ok_json(host.invoke("sweep", "--soft", "--json"))
        assert body["expired"] == 1
        job = ok_json(host.invoke("jobs", "show", host.ids["expiring"], "--include-deleted", "--json"))
        assert job["deleted_at"] is not None

    def test_audit_records_are_removed_only_when_asked(self, host: Host) -> None:
        """By default no audit record is removed; --audit-retention DAYS removes older ones."""
        assert ok_json(host.invoke("sweep", "--json"))["audit_removed"] == 0
        body = ok_json(host.invoke("sweep", "--audit-retention", "0", "--json"))
        assert body["audit_removed"] == 2  # the soft delete of the setup, the first sweep's expiry
        assert ok_json(host.invoke("audit", "--json"))["items"] == []

    def test_human_report_is_a_table(self, host: Host) -> None:
        """Without --json the report is a table of counts."""
        result = host.invoke("sweep")
        assert result.exit_code == 0
        assert "Sweep report" in result.stdout
        assert "expired jobs deleted" in result.stdout
        lines = [line.split() for line in result.stdout.splitlines()]
        assert ["expired", "jobs", "deleted", "1"] in lines
        assert ["artifacts", "deleted", "2"] in lines


class TestAudit:
    def test_records_who_did_what_newest_first(self, host: Host) -> None:
        """Cancel, priority change and the sweeper's expiry appear, newest first, host as null."""
        host.invoke("jobs", "priority", host.ids["low"], "7")
        host.invoke("jobs", "cancel", host.ids["low"])
        host.invoke("sweep")
        body = ok_json(host.invoke("audit", "--json"))
        actions = [(item["action"], item["job_id"], item["actor_id"]) for item in body["items"]]
        assert actions == [
            ("expire", host.ids["expiring"], "system:sweeper"),
            ("cancel", host.ids["low"], None),
            ("set_priority", host.ids["low"], None),
            ("delete", host.ids["soft"], None),
        ]
        assert body["items"][1]["details"]["to_status"] == "cancelled"
        assert set(body["items"][0]) == {"id", "at", "action", "actor_id", "tenant", "job_id", "details"}

    def test_filters_by_job_and_limit(self, host: Host) -> None:
        """--job keeps one job's records; --limit caps their number."""
        host.invoke("jobs", "priority", host.ids["low"], "7")
        host.invoke("jobs", "priority", host.ids["high"], "8")
        host.invoke("jobs", "priority", host.ids["high"], "9")
        one = ok_json(host.invoke("audit", "--job", host.ids["high"], "--json"))
        assert [item["details"]["to"] for item in one["items"]] == [9, 8]
        assert len(ok_json(host.invoke("audit", "--limit", "1", "--json"))["items"]) == 1

    def test_human_table(self, host: Host) -> None:
        """The table shows the action, the host as "host", the job and the details."""
        host.invoke("jobs", "cancel", host.ids["low"], "--reason", "dup")
        result = host.invoke("audit")
        assert result.exit_code == 0
        row = next(line for line in result.stdout.splitlines() if host.ids["low"] in line)
        for text in ("cancel", "host", "reason=dup"):
            assert text in row

    def test_empty_trail(self, tmp_path: Path) -> None:
        """Nothing happened yet: a plain sentence."""
        db = tmp_path / "empty.db"
        as_host(db, MemoryBlobStore(), lambda jobs: jobs.list())
        result = invoke("--store", f"sqlite:///{db}", "audit")
        assert result.exit_code == 0
        assert result.stdout.strip() == "No audit records."


# -- errors and exit codes -----------------------------------------------------------------


class TestExitCodes:
    def test_unknown_job_is_3(self, host: Host) -> None:
        """An unknown id: exit 3 and the manager's message, for every job command."""
        for args in (["show"], ["cancel"], ["delete", "--yes"], ["priority"], ["artifacts"]):
            extra = ["1"] if args == ["priority"] else []
            result = host.invoke("jobs", args[0], "nope", *args[1:], *extra)
            assert_one_line_error(result, 3, "Job 'nope' not found.")

    def test_permission_denied_is_5(self, host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
        """A PermissionDenied (e.g. from a host's store or authorizer) exits 5."""

        async def deny(self: JobManager, job_id: str, **kwargs: Any) -> Job:
            raise PermissionDenied("Actor 'x' is not allowed to read.")

        monkeypatch.setattr(JobManager, "get", deny)
        assert_one_line_error(host.invoke("jobs", "show", host.ids["done"]), 5, "not allowed")

    @pytest.mark.parametrize(
        ("args", "fragment"),
        [
            (["jobs", "list", "--status", "done"], "Unknown status"),
            (["jobs", "list", "--limit", "0"], "limit"),
            (["jobs", "list", "--cursor", "garbage"], "Malformed cursor"),
            (["audit", "--limit", "5000"], "limit"),
        ],
    )
    def test_invalid_input_is_6(self, host: Host, args: list[str], fragment: str) -> None:
        """Bad option values the manager rejects exit 6."""
        assert_one_line_error(host.invoke(*args), 6, fragment)

    @pytest.mark.parametrize(
        ("url", "fragment"),
        [
            ("mysql://db/jobs", "Unknown store URL scheme"),
            ("sqlite://host/jobs.db", "Malformed SQLite URL"),
            ("sqlite:///{tmp}/missing.db", "No jobkit database at"),
        ],
    )
    def test_bad_store_url_is_6(self, tmp_path: Path, url: str, fragment: str) -> None:
        """A store URL that names no jobkit database exits 6 and creates nothing."""
        result = invoke("--store", url.format(tmp=tmp_path), "jobs", "list")
        assert_one_line_error(result, 6, fragment)
        assert list(tmp_path.iterdir()) == []

    def test_corrupt_database_is_7(self, tmp_path: Path) -> None:
        """A file that is not a SQLite database: exit 7 (backend), file untouched."""
        db = tmp_path / "jobs.db"
        garbage = b"this is not a database, " * 100
        db.write_bytes(garbage)
        result = invoke("--store", f"sqlite:///{db}", "jobs", "list")
        assert_one_line_error(result, 7, "not a SQLite database or is corrupt")
        assert db.read_bytes() == garbage

    def test_backend_error_is_7(self, host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
        """A BackendError from the store exits 7 with its message."""

        async def unavailable(self: SQLiteStore, *args: Any, **kwargs: Any) -> Any:
            raise BackendError("SQLite store is unavailable: disk I/O error")

        monkeypatch.setattr(SQLiteStore, "list_jobs", unavailable)
        assert_one_line_error(host.invoke("jobs", "list"), 7, "disk I/O error")

    def test_unexpected_error_is_1_and_one_line(self, host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
        """A bug: exit 1, one line naming the exception; --traceback shows where it happened."""

        async def broken(self: JobManager) -> Any:
            raise ZeroDivisionError("division by zero")

        monkeypatch.setattr(JobManager, "sweep", broken)
        result = host.invoke("sweep")
        assert_one_line_error(result, 1, "unexpected ZeroDivisionError: division by zero", "--traceback")
        traced = invoke("--traceback", "--store", host.store, "--blobs", host.blobs_url, "sweep")
        assert traced.exit_code == 1
        assert "Traceback" in traced.stderr
        assert traced.stderr.splitlines()[-1].startswith("error: unexpected ZeroDivisionError")

    def test_usage_errors_are_2(self, host: Host) -> None:
        """Missing arguments and unknown options are typer's usage errors: exit 2."""
        assert host.invoke("jobs", "show").exit_code == 2
        assert host.invoke("jobs", "list", "--colour").exit_code == 2
        assert host.invoke("jobs", "priority", host.ids["low"], "high").exit_code == 2

    def test_no_store_is_a_usage_error(self) -> None:
        """Without --store or JOBKIT_STORE the command says how to give one (exit 2)."""
        result = invoke("jobs", "list", env={"JOBKIT_STORE": None})
        assert_one_line_error(result, 2, "--store", "JOBKIT_STORE")

    def test_store_and_blobs_from_the_environment(self, host: Host) -> None:
        """JOBKIT_STORE and JOBKIT_BLOBS stand in for --store and --blobs."""
        env: dict[str, str | None] = {"JOBKIT_STORE": host.store, "JOBKIT_BLOBS": host.blobs_url}
        assert len(ok_json(invoke("--json", "jobs", "list", env=env))["items"]) == 5
        names = ok_json(invoke("--json", "jobs", "artifacts", host.ids["done"], env=env))["items"]
        assert names == ["img/chart.png", "report.txt"]

    def test_json_errors_are_json_on_stderr(self, host: Host) -> None:
        """With --json an error is one line of {"error": {"code", "message"}} on stderr."""
        result = host.invoke("--json", "jobs", "show", "nope")
        assert result.exit_code == 3
        assert result.stdout == ""
        assert json.loads(result.stderr) == {
            "error": {"code": "job_not_found", "message": "Job 'nope' not found."}
        }


class TestMain:
    def test_help_lists_the_commands(self, capsys: pytest.CaptureFixture[str]) -> None:
        """``jobkit --help`` exits 0 and names every command."""
        with pytest.raises(SystemExit) as exit_info:
            main(["--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        commands = ("jobs", "kinds", "schedules", "sweep", "audit", "status", "worker", "demo")
        for command in (*commands, "--store", "--json"):
            assert command in out

    def test_missing_extra_names_the_install_command(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Without typer the command says which extra to install, in one line, exit 1."""
        monkeypatch.setitem(sys.modules, "typer", None)
        with pytest.raises(SystemExit) as exit_info:
            main(["jobs", "list"])
        assert exit_info.value.code == 1
        assert capsys.readouterr().err == (
            "error: jobkit.cli needs typer and rich: pip install 'jobkit[cli]'\n"
        )


# -- the worker ----------------------------------------------------------------------------

WORKER_APP = """
from pathlib import Path

import anyio

from jobkit import BlockingJobManager, JobManager
from jobkit.stores import SQLiteStore

jobs = JobManager(
    SQLiteStore(Path(__file__).with_name("jobs.db")),
    concurrency=2,
    sweep_interval=None,
    poll_interval=0.05,
)


@jobs.handler("echo")
async def echo(ctx, payload):
    return {"echo": payload}


@jobs.handler("long")
async def long(ctx, payload):
    while True:
        await ctx.checkpoint()
        await anyio.sleep(0.01)


@jobs.handler("stubborn")
async def stubborn(ctx, payload):
    await anyio.sleep(3600)  # ignores its cancel token


not_a_manager = 42
blocking = BlockingJobManager(SQLiteStore(Path(__file__).with_name("jobs.db")))


def build(store=None, blobs=None):
    # A factory: jobkit worker --store/--blobs URLs arrive as opened backends.
    built = JobManager(store, blobs, sweep_interval=None)
    built.register("echo", echo)
    return built
"""


class Lines:
    """A subprocess's stdout, read line by line in a thread so waits can be bounded."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        assert proc.stdout is not None
        stdout = proc.stdout

        def pump() -> None:
            for line in stdout:
                self.lines.put(line)
            self.lines.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def expect(self, fragment: str, timeout: float = 30) -> str:
        """The first line (from now) containing ``fragment``."""
        while True:
            line = self.lines.get(timeout=timeout)
            if line is None:
                raise AssertionError(f"{fragment!r} never printed; got {self.seen}")
            self.seen.append(line)
            if fragment in line:
                return line


@pytest.fixture
def worker_dir(tmp_path: Path) -> Path:
    (tmp_path / "cli_worker_app.py").write_text(WORKER_APP)
    return tmp_path


def start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "jobkit.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes started by a test; any still running at the end is killed."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def submitter(db: Path) -> JobManager:
    jobs = JobManager(SQLiteStore(db), concurrency=0, sweep_interval=None, poll_interval=0.05)
    for kind in ("echo", "long", "stubborn"):
        jobs.register(kind, echo_stub)
    return jobs


async def echo_stub(ctx: JobContext, payload: Any) -> None:
    """Never runs: the submitting manager has no workers."""


def submit(db: Path, kind: str, payload: Any = None) -> str:
    async def run() -> str:
        async with submitter(db) as jobs:
            return (await jobs.submit(kind, payload)).id

    return anyio.run(run)


def wait_until(db: Path, job_id: str, status: JobStatus) -> Job:
    """Poll the shared database (another process changes it) until the job has ``status``."""

    async def run() -> Job:
        async with submitter(db) as jobs:
            with anyio.fail_after(30):
                while (job := await jobs.get(job_id)).status is not status:
                    await anyio.sleep(0.02)
                return job

    return anyio.run(run)


class TestWorker:
    def test_runs_submitted_jobs(self, worker_dir: Path, processes: list[subprocess.Popen[str]]) -> None:
        """The worker imports module:manager from the current directory and runs its jobs."""
        proc = start(
            ["--store", "sqlite:///ignored.db", "worker", "--app", "cli_worker_app:jobs"], worker_dir
        )
        processes.append(proc)
        Lines(proc).expect("worker: running cli_worker_app:jobs")
        job_id = submit(worker_dir / "jobs.db", "echo", {"x": 1})
        job = wait_until(worker_dir / "jobs.db", job_id, JobStatus.COMPLETED)
        assert job.result == {"echo": {"x": 1}}

    @pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
    def test_signal_stops_gracefully_and_requeues_the_running_job(
        self, worker_dir: Path, processes: list[subprocess.Popen[str]], signum: signal.Signals
    ) -> None:
        """SIGTERM or SIGINT: the running job goes back to pending and the worker exits 0."""
        db = worker_dir / "jobs.db"
        proc = start(["worker", "--app", "cli_worker_app:jobs"], worker_dir)
        processes.append(proc)
        lines = Lines(proc)
        lines.expect("worker: running")
        job_id = submit(db, "long")
        wait_until(db, job_id, JobStatus.RUNNING)
        proc.send_signal(signum)
        assert proc.wait(timeout=10) == 0
        lines.expect(f"{signum.name} received, stopping")
        lines.expect("worker: stopped.")
        job = wait_until(db, job_id, JobStatus.PENDING)
        assert job.attempts == 1
        assert job.finished_at is None

    def test_second_signal_forces_a_stop(
        self, worker_dir: Path, processes: list[subprocess.Popen[str]]
    ) -> None:
        """A handler that ignores its token: a second SIGINT forces the stop (exit 1), job requeued."""
        db = worker_dir / "jobs.db"
        proc = start(["worker", "--app", "cli_worker_app:jobs"], worker_dir)
        processes.append(proc)
        lines = Lines(proc)
        lines.expect("worker: running")
        job_id = submit(db, "stubborn")
        wait_until(db, job_id, JobStatus.RUNNING)
        proc.send_signal(signal.SIGINT)
        lines.expect("stopping")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 1
        lines.expect("forcing the stop")
        assert wait_until(db, job_id, JobStatus.PENDING).attempts == 1

    def test_a_blocking_manager_runs_its_async_manager(
        self, worker_dir: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """--app may name a BlockingJobManager (a Flask host's): the worker runs its JobManager."""
        monkeypatch.chdir(worker_dir)
        monkeypatch.setattr(sys, "path", list(sys.path))
        monkeypatch.delitem(sys.modules, "cli_worker_app", raising=False)
        try:
            manager = load_manager("cli_worker_app:blocking")
            assert manager is sys.modules["cli_worker_app"].blocking.manager
        finally:
            sys.modules.pop("cli_worker_app", None)

    def test_store_and_blobs_reach_a_factory_and_the_environment(
        self, worker_dir: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """--app naming a factory: it is called with the --store/--blobs backends; either
        way the URLs are in JOBKIT_STORE / JOBKIT_BLOBS before the host module is imported."""
        monkeypatch.chdir(worker_dir)
        monkeypatch.setattr(sys, "path", list(sys.path))
        monkeypatch.delitem(sys.modules, "cli_worker_app", raising=False)
        monkeypatch.setenv("JOBKIT_STORE", "")
        monkeypatch.setenv("JOBKIT_BLOBS", "")
        try:
            manager = load_manager("cli_worker_app:build", store="sqlite:///w.db", blobs="file://art")
            assert isinstance(manager._store, SQLiteStore)
            assert manager._store.path == "w.db"
            assert isinstance(manager._blobs, FileBlobStore)
            assert (os.environ["JOBKIT_STORE"], os.environ["JOBKIT_BLOBS"]) == (
                "sqlite:///w.db",
                "file://art",
            )
            with pytest.raises(InvalidInput, match="Unknown store URL scheme"):
                load_manager("cli_worker_app:build", store="nosuch://x")
        finally:
            sys.modules.pop("cli_worker_app", None)

    @pytest.mark.parametrize(
        ("spec", "fragment"),
        [
            ("cli_worker_app", "must be module:attribute"),
            ("no_such_module_here:jobs", "Cannot import 'no_such_module_here'"),
            ("cli_worker_app:missing", "has no attribute 'missing'"),
            ("cli_worker_app:not_a_manager", "is a int, not a jobkit.JobManager"),
            ("cli_worker_app:Path", "is a PosixPath, not a jobkit.JobManager (nor a factory"),
        ],
    )
    def test_bad_app_is_invalid_input(
        self, worker_dir: Path, monkeypatch: pytest.MonkeyPatch, spec: str, fragment: str
    ) -> None:
        """--app that names no JobManager exits 6 with one line saying what is wrong."""
        monkeypatch.chdir(worker_dir)
        monkeypatch.setattr(sys, "path", list(sys.path))
        monkeypatch.delitem(sys.modules, "cli_worker_app", raising=False)
        try:
            assert_one_line_error(invoke("worker", "--app", spec), 6, fragment)
        finally:
            sys.modules.pop("cli_worker_app", None)


# -- the demo ------------------------------------------------------------------------------


class TestDemo:
    @pytest.mark.parametrize("seed", [True, False], ids=["seeded", "empty"])
    def test_serves_the_console_and_stops_on_ctrl_c(
        self, tmp_path: Path, processes: list[subprocess.Popen[str]], seed: bool
    ) -> None:
        """`jobkit demo --port 0` prints its URL, serves GET /console/ (200), exits 0 on SIGINT."""
        pytest.importorskip("jobkit.integrations._demo_app")
        import httpx

        data = tmp_path / "demo"
        flag = "--seed" if seed else "--no-seed"
        proc = start(["demo", "--port", "0", "--data-dir", str(data), flag], tmp_path)
        processes.append(proc)
        lines = Lines(proc)
        line = lines.expect("jobkit demo: console at http://127.0.0.1:")
        url = line.split(" at ", 1)[1].split()[0]
        assert url.endswith("/console/")
        response = httpx.get(url, timeout=30)
        assert response.status_code == 200
        assert "text/html" in response.headers["content-type"]
        jobs = httpx.get(url.replace("/console/", "/api/v1/jobs"), timeout=30).json()["items"]
        assert bool(jobs) is seed
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        lines.expect("jobkit demo: stopped.")
        assert (data / "jobs.db").exists()

    def test_port_in_use_is_one_line(self, tmp_path: Path) -> None:
        """A port already taken: exit 6 and a one-line error that suggests --port."""
        pytest.importorskip("jobkit.integrations._demo_app")
        import socket

        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = str(taken.getsockname()[1])
            result = invoke("demo", "--port", port, "--data-dir", str(tmp_path / "d"))
        assert_one_line_error(result, 6, f"127.0.0.1:{port}", "--port")


def test_module_runs_as_python_dash_m(tmp_path: Path) -> None:
    """`python -m jobkit.cli` is the jobkit command (usage says "jobkit")."""
    result = subprocess.run(
        [sys.executable, "-m", "jobkit.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    assert "Usage: jobkit" in result.stdout


class TestUntrustedText:
    def test_control_characters_and_markup_are_shown_escaped(self, host: Host) -> None:
        """Labels, reasons and names come from HTTP clients: no terminal escapes, no markup."""
        evil = "\x1b[2J\x1b[31m[bold]owned[/bold]\x07"

        async def run() -> str:
            async with host_manager(host.db, host.blobs, concurrency=0) as jobs:
                job = await jobs.submit("report", labels={"note": evil})
                await jobs.cancel(job.id, reason=evil)
                return job.id

        job_id = anyio.run(run)
        result = host.invoke("jobs", "show", job_id)
        assert result.exit_code == 0, result.output
        assert "\x1b" not in result.stdout
        assert "\x07" not in result.stdout
        assert "\\x1b[2J\\x1b[31m[bold]owned[/bold]\\x07" in result.stdout  # shown, escaped, unstyled

    def test_a_mistyped_blobs_folder_is_refused_before_anything_is_deleted(self, host: Host) -> None:
        """--blobs pointing at no folder: exit 6, the job and its real artifacts stay."""
        missing = f"file://{host.artifacts_root}-typo"
        result = invoke(
            "--store", host.store, "--blobs", missing, "jobs", "delete", host.ids["done"], "--yes"
        )
        assert_one_line_error(result, 6, "No artifacts folder")
        assert host.get("done").status is JobStatus.COMPLETED
        assert host.artifacts("done")
        assert not Path(f"{host.artifacts_root}-typo").exists()


def test_an_unknown_artifact_count_reads_as_unknown_in_the_audit_table() -> None:
    """An audit detail the manager could not know (None) is shown as 'unknown', not 'None'."""
    from datetime import UTC, datetime

    from rich.console import Console

    from jobkit import AuditRecord
    from jobkit._records import AuditAction
    from jobkit.cli._render import audit_table

    record = AuditRecord(
        id="a1",
        at=datetime(2030, 1, 1, tzinfo=UTC),
        action=AuditAction.DELETE,
        actor_id=None,
        tenant=None,
        job_id="j1",
        details={"mode": "hard", "artifacts_deleted": None},
    )
    console = Console(width=200, record=True)
    console.print(audit_table([record]))
    assert "mode=hard, artifacts_deleted=unknown" in console.export_text()


# -- status --------------------------------------------------------------------------------


async def _store_with_a_running_job(store: Any) -> tuple[str, str]:
    """Three pending jobs, one of them claimed by worker "w-7": (running id, oldest pending id)."""
    from jobkit.testing._store_suite import make_job

    await store.open()
    try:
        made = [make_job() for _ in range(3)]
        for job in made:
            await store.insert(job)
        now = datetime.now(UTC)
        running = await store.claim(now=now, worker_id="w-7", lease_until=now + timedelta(seconds=45))
        assert running is not None
        return running.id, next(job.id for job in made if job.id != running.id)
    finally:
        await store.close()


class TestStatus:
    def test_sqlite_counts_leases_and_says_it_polls(self, tmp_path: Path) -> None:
        """Counts per unfinished status, the oldest pending job, the lease (worker, end) of
        the running one; SQLite has no listener: it polls."""
        db = tmp_path / "jobs.db"
        running, _ = anyio.run(_store_with_a_running_job, SQLiteStore(db))
        body = ok_json(invoke("--store", f"sqlite:///{db}", "status", "--json"))
        assert body["counts"] == {"pending": 2, "running": 1, "cancelling": 0, "scheduled": 0}
        assert body["capped"] == []
        assert body["oldest_pending"] is not None
        [lease] = body["leases"]
        assert (lease["job_id"], lease["worker"], lease["status"]) == (running, "w-7", "running")
        assert datetime.fromisoformat(lease["lease_until"]) > datetime.now(UTC)
        assert body["listener"]["listener"] == "polling"
        text = invoke("--store", f"sqlite:///{db}", "status")
        assert text.exit_code == 0, text.output
        assert "Jobs: pending 2, running 1, cancelling 0, scheduled 0" in text.stdout
        assert "w-7" in text.stdout
        assert "Listener: polling" in text.stdout

    def test_postgres_shows_a_connected_listener(self, pg_dsn: str) -> None:
        """On PostgreSQL the listener is started and seen to connect; the lease is listed."""
        from jobkit.stores.postgres import PostgresStore
        from pgserver import new_schema

        url = f"{pg_dsn}?schema={new_schema()}"
        running, _ = anyio.run(_store_with_a_running_job, PostgresStore(pg_dsn, schema=url.rsplit("=", 1)[1]))
        body = ok_json(invoke("--store", url, "status", "--json"))
        assert body["counts"]["running"] == 1
        assert [lease["job_id"] for lease in body["leases"]] == [running]
        assert body["listener"]["listener"] == "connected", body["listener"]

    def test_an_empty_store_has_no_leases(self) -> None:
        """memory:// (a new, empty store in this process): zero counts, no leases, no listener."""
        body = ok_json(invoke("--store", "memory://", "status", "--json"))
        assert body["counts"] == {"pending": 0, "running": 0, "cancelling": 0, "scheduled": 0}
        assert body["leases"] == []
        assert body["listener"]["listener"] == "none"
        assert "Leases: none" in invoke("--store", "memory://", "status").stdout


class TestIdPrefixesOnAStore:
    def test_a_unique_start_of_an_id_works_wherever_an_id_does(self, host: Host) -> None:
        """show, artifacts, priority, cancel, audit --job: 8 characters (any case) are enough."""
        done, low = host.ids["done"], host.ids["low"]
        assert ok_json(host.invoke("jobs", "show", done[:8].upper(), "--json"))["id"] == done
        assert ok_json(host.invoke("jobs", "artifacts", done[:8], "--json"))["items"]
        assert ok_json(host.invoke("jobs", "priority", low[:6], "3", "--json"))["job"]["id"] == low
        assert ok_json(host.invoke("jobs", "cancel", low[:6], "--json"))["status"] == "cancelled"
        records = ok_json(host.invoke("audit", "--job", low[:6], "--json"))["items"]
        assert {record["job_id"] for record in records} == {low}

    def test_a_soft_deleted_job_needs_its_whole_id(self, host: Host) -> None:
        soft = host.ids["soft"]
        assert_one_line_error(host.invoke("jobs", "show", soft[:8]), 3)
        assert ok_json(host.invoke("jobs", "show", soft, "--include-deleted", "--json"))["id"] == soft


class TestWatchOnAStore:
    def test_exit_code_tells_the_outcome(self, host: Host) -> None:
        """A finished job: one line with its outcome; 0 completed, 9 failed."""
        done = host.invoke("jobs", "watch", host.ids["done"][:8])
        assert done.exit_code == 0, done.output
        assert f"Job {host.ids['done']} completed." in done.stdout
        failed = host.invoke("jobs", "watch", host.ids["failed"])
        assert failed.exit_code == 9, failed.output
        assert "the input was bad" in failed.stdout
        assert ok_json(host.invoke("jobs", "watch", host.ids["done"], "--json"))["status"] == "completed"
