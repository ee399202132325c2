"""The ``jobkit`` commands for delayed jobs, retries, paused kinds and schedules."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import anyio
import attrs
import pytest
from typer.testing import CliRunner, Result

from jobkit import Job, JobStatus
from jobkit.cli._app import app
from jobkit.stores import SQLiteStore
from jobkit.testing._store_suite import finished, make_job

T = TypeVar("T")


class Store:
    """A SQLite database file, with jobs written straight into it (as a host's workers would)."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.url = f"sqlite:///{db}"
        self.use(lambda store: store.list_jobs(
            tenant=None, statuses=None, kind=None, include_deleted=False, before=None, limit=1
        ))  # fmt: skip  # creates the database

    def use(self, fn: Callable[[SQLiteStore], Awaitable[T]]) -> T:
        async def session() -> T:
            store = SQLiteStore(self.db)
            await store.open()
            try:
                return await fn(store)
            finally:
                await store.close()

        return anyio.run(session)

    def insert(self, job: Job) -> Job:
        self.use(lambda store: store.insert(job))
        return job

    def get(self, job_id: str) -> Job:
        job = self.use(lambda store: store.get(job_id))
        assert job is not None
        return job

    def all(self) -> list[Job]:
        jobs, _ = self.use(lambda store: store.list_jobs(
            tenant=None, statuses=None, kind=None, include_deleted=True, before=None, limit=1000
        ))  # fmt: skip
        return jobs

    def claim(self) -> Job | None:
        now = datetime.now(UTC)
        return self.use(
            lambda store: store.claim(now=now, worker_id="w", lease_until=now + timedelta(minutes=1))
        )

    def invoke(self, *args: str, input: str | None = None) -> Result:
        """``jobkit --store sqlite:///<db> <args>`` in this process, 200 columns wide."""
        return CliRunner().invoke(app, ["--store", self.url, *args], input=input, env={"COLUMNS": "200"})


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "jobs.db")


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
        assert fragment in lines[0], lines[0]


def failed_job(store: Store, status: JobStatus = JobStatus.FAILED) -> Job:
    """A finished job of kind "export" (a failed one with an error), stored."""
    job = finished(make_job(kind="export"), datetime.now(UTC), status=status)
    if status is JobStatus.FAILED:
        job = attrs.evolve(job, error="ValueError: bad input")
    return store.insert(job)


class TestSubmit:
    def test_delay_makes_a_scheduled_job(self, store: Store) -> None:
        """--delay: the job is scheduled, run_at that far ahead, stored for the workers."""
        before = datetime.now(UTC)
        job = ok_json(
            store.invoke("jobs", "submit", "export", "--payload", '{"n": 1}', "--delay", "90", "--json")
        )
        assert job["status"] == "scheduled"
        assert job["kind"] == "export"
        assert job["payload"] == {"n": 1}
        run_at = datetime.fromisoformat(job["run_at"])
        assert before + timedelta(seconds=89) < run_at < datetime.now(UTC) + timedelta(seconds=91)
        stored = store.get(job["id"])
        assert stored.status is JobStatus.SCHEDULED
        assert stored.run_at == run_at

    def test_human_output_says_when_it_runs(self, store: Store) -> None:
        """Without --json: one line with the status and run time, then the job's fields."""
        result = store.invoke("jobs", "submit", "export", "--run-at", "2030-01-01T09:00:00+02:00")
        assert result.exit_code == 0, result.output
        [job] = store.all()
        first = result.stdout.splitlines()[0]
        assert first.startswith(f"Submitted job {job.id}: scheduled, runs at 20")
        assert "runs at" in result.stdout
        assert job.run_at == datetime(2030, 1, 1, 7, tzinfo=UTC)

    def test_without_a_time_the_job_is_pending(self, store: Store) -> None:
        """No --delay or --run-at: pending, with the priority given; the note about a new kind
        goes to stderr."""
        result = store.invoke("jobs", "submit", "export", "--priority", "-3")
        assert result.exit_code == 0, result.output
        assert "Submitted job" in result.stdout
        assert ": pending, a worker runs it next." in result.stdout
        assert "no job of kind 'export' before" in result.stderr
        [job] = store.all()
        assert (job.status, job.priority, job.payload) == (JobStatus.PENDING, -3, None)
        again = store.invoke("jobs", "submit", "export")
        assert "no job of kind" not in again.stderr

    def test_payload_from_a_file_and_stdin(self, store: Store, tmp_path: Path) -> None:
        """--payload @file reads JSON from a file, @- from standard input."""
        path = tmp_path / "payload.json"
        path.write_text('{"rows": [1, 2]}', encoding="utf-8")
        from_file = ok_json(store.invoke("jobs", "submit", "export", "--payload", f"@{path}", "--json"))
        assert from_file["payload"] == {"rows": [1, 2]}
        from_stdin = ok_json(
            store.invoke("jobs", "submit", "export", "--payload", "@-", "--json", input='"x"')
        )
        assert from_stdin["payload"] == "x"

    def test_retry_attempts_and_idempotency_key(self, store: Store) -> None:
        """--retry-attempts sets a Retry (and max_attempts); a repeated --idempotency-key gives
        the same job back and stores no other."""
        args = ("jobs", "submit", "export", "--retry-attempts", "4", "--idempotency-key", "nightly-1")
        job = ok_json(store.invoke(*args, "--json"))
        assert job["max_attempts"] == 4
        assert job["retry"]["attempts"] == 4
        assert job["idempotency_key"] == "nightly-1"
        again = ok_json(store.invoke(*args, "--json"))
        assert again["id"] == job["id"]
        human = store.invoke(*args)
        assert "already has the idempotency key 'nightly-1': nothing new was submitted" in human.stdout
        assert len(store.all()) == 1

    @pytest.mark.parametrize(
        ("args", "fragments"),
        [
            (
                ["--run-at", "2030-01-01T09:00:00"],
                ["--run-at '2030-01-01T09:00:00' has no UTC offset", "ambiguous"],
            ),
            (["--run-at", "tomorrow"], ["--run-at must be an ISO 8601 time with a UTC offset"]),
            (["--run-at", "2030-01-01T09:00:00Z", "--delay", "5"], ["not both"]),
            (["--delay", "-5"], ["negative"]),
            (["--payload", "{bad"], ["--payload is not JSON"]),
            (["--payload", "@/nonexistent/payload.json"], ["Cannot read the --payload file"]),
            (["--retry-attempts", "0"], ["attempts"]),
            (["--idempotency-key", ""], ["idempotency"]),
        ],
    )
    def test_bad_input_is_6_and_stores_nothing(
        self, store: Store, args: list[str], fragments: list[str]
    ) -> None:
        """A naive or malformed --run-at, a bad payload, delay, key or retry: exit 6, nothing stored."""
        assert_one_line_error(store.invoke("jobs", "submit", "export", *args), 6, *fragments)
        assert store.all() == []

    def test_json_errors_are_json(self, store: Store) -> None:
        """With --json a bad --run-at is the web API's error body on stderr."""
        result = store.invoke("--json", "jobs", "submit", "export", "--run-at", "2030-01-01T09:00")
        assert result.exit_code == 6
        body = json.loads(result.stderr)
        assert body["error"]["code"] == "invalid_input"
        assert "no UTC offset" in body["error"]["message"]

    def test_a_reused_key_with_another_payload_is_6(self, store: Store) -> None:
        """The same idempotency key for a different job: exit 6 with the manager's message."""
        store.invoke("jobs", "submit", "export", "--idempotency-key", "k", "--payload", "1")
        result = store.invoke("jobs", "submit", "export", "--idempotency-key", "k", "--payload", "2")
        assert_one_line_error(result, 6, "belongs to job", "another payload")
        assert len(store.all()) == 1


class TestRetry:
    def test_failed_job_goes_back_to_pending(self, store: Store) -> None:
        """A failed job is pending again, with one more attempt; the error stays until the next outcome."""
        job = failed_job(store)
        result = store.invoke("jobs", "retry", job.id)
        assert result.exit_code == 0, result.output
        assert (
            result.stdout.strip() == f"Job {job.id} is pending again (attempt 2 of 2): a worker runs it next."
        )
        stored = store.get(job.id)
        assert (stored.status, stored.max_attempts, stored.error) == (
            JobStatus.PENDING,
            2,
            "ValueError: bad input",
        )

    def test_run_at_schedules_it(self, store: Store) -> None:
        """--run-at: a cancelled job becomes scheduled at that time (JSON: the job)."""
        job = failed_job(store, JobStatus.CANCELLED)
        body = ok_json(store.invoke("jobs", "retry", job.id, "--run-at", "2031-05-01T00:00:00Z", "--json"))
        assert body["status"] == "scheduled"
        assert body["run_at"] == "2031-05-01T00:00:00+00:00"

    def test_completed_job_is_invalid_state(self, store: Store) -> None:
        """A completed job is not retried: exit 4 with the manager's advice."""
        job = failed_job(store, JobStatus.COMPLETED)
        result = store.invoke("jobs", "retry", job.id)
        assert_one_line_error(result, 4, "Cannot retry a completed job", "Submit a new job instead.")
        assert store.get(job.id).status is JobStatus.COMPLETED

    def test_pending_job_is_invalid_state_and_unknown_is_3(self, store: Store) -> None:
        """Only failed and cancelled jobs are retried; an unknown id is not found."""
        job = store.insert(make_job(kind="export"))
        assert_one_line_error(store.invoke("jobs", "retry", job.id), 4, "Cannot retry a pending job")
        assert_one_line_error(store.invoke("jobs", "retry", "nope"), 3, "not found")

    def test_naive_run_at_is_6(self, store: Store) -> None:
        """A --run-at without an offset: exit 6, the job unchanged."""
        job = failed_job(store)
        result = store.invoke("jobs", "retry", job.id, "--run-at", "2031-05-01 00:00")
        assert_one_line_error(result, 6, "has no UTC offset")
        assert store.get(job.id).status is JobStatus.FAILED


class TestListAndShow:
    def test_status_scheduled_lists_scheduled_jobs_with_their_run_time(self, store: Store) -> None:
        """--status scheduled keeps the scheduled jobs; the table gets a RUNS column for them."""
        later = store.insert(
            make_job(kind="export", status=JobStatus.SCHEDULED, run_at=datetime.now(UTC) + timedelta(hours=2))
        )
        now = store.insert(make_job(kind="export"))
        body = ok_json(store.invoke("jobs", "list", "--status", "scheduled", "--json"))
        assert [item["id"] for item in body["items"]] == [later.id]
        table = store.invoke("jobs", "list")
        assert table.exit_code == 0, table.output
        assert "RUNS" in table.stdout.splitlines()[0]
        rows = {line.split()[0]: line.split() for line in table.stdout.splitlines()[2:]}
        assert rows[later.id][-2:] == ["in", "1h"]
        assert rows[now.id][-1] == "-"
        without = store.invoke("jobs", "list", "--status", "pending")
        assert "RUNS" not in without.stdout

    def test_show_has_run_at_attempts_key_and_retry(self, store: Store) -> None:
        """jobs show: when it runs, attempts of max_attempts, the idempotency key, the retry policy."""
        job = ok_json(store.invoke(
            "jobs", "submit", "export", "--delay", "3600", "--retry-attempts", "3",
            "--idempotency-key", "k-1", "--json",
        ))  # fmt: skip
        shown = store.invoke("jobs", "show", job["id"])
        assert shown.exit_code == 0, shown.output
        lines = [" ".join(line.split()) for line in shown.stdout.splitlines()]
        assert any(line.startswith("runs at 20") and line.endswith("(in 59m)") for line in lines), lines
        assert "attempts 0 of 3" in lines
        assert "idempotency key k-1" in lines
        assert "retry 3 attempts, backoff 1s x2 (at most 3600s), jitter 10%, on builtins.Exception" in lines
        body = ok_json(store.invoke("jobs", "show", job["id"], "--json"))
        assert {"run_at", "idempotency_key", "retry"} <= set(body)


class TestKinds:
    def test_list_shows_kinds_of_jobs_and_paused_kinds(self, store: Store) -> None:
        """Kinds with jobs, and paused ones, each with PAUSED; JSON as GET /kinds."""
        store.insert(make_job(kind="export"))
        store.insert(make_job(kind="report"))
        store.invoke("kinds", "pause", "report")
        body = ok_json(store.invoke("kinds", "list", "--json"))
        assert body == {
            "items": [{"kind": "export", "paused": False}, {"kind": "report", "paused": True}],
            "capped": False,
        }
        table = store.invoke("kinds", "list")
        rows = [line.split() for line in table.stdout.splitlines()]
        assert ["export", "no"] in rows
        assert ["report", "yes"] in rows

    def test_empty_store_has_no_kinds(self, store: Store) -> None:
        assert (
            store.invoke("kinds", "list").stdout.strip()
            == "No kinds: the store has no jobs and no paused kind."
        )

    def test_a_paused_kind_is_not_claimed_until_resumed(self, store: Store) -> None:
        """After `kinds pause`, a worker's claim on the store finds nothing of that kind; after
        `kinds resume` it gets the job."""
        job = store.insert(make_job(kind="export"))
        paused = store.invoke("kinds", "pause", "export")
        assert paused.exit_code == 0, paused.output
        assert paused.stdout.startswith("Kind export paused: no worker sharing this store starts its jobs")
        assert "jobkit kinds resume export" in paused.stdout
        assert store.claim() is None
        assert "was already paused" in store.invoke("kinds", "pause", "export").stdout
        assert ok_json(store.invoke("kinds", "resume", "export", "--json")) == {
            "kind": "export", "paused": False, "changed": True,
        }  # fmt: skip
        claimed = store.claim()
        assert claimed is not None
        assert claimed.id == job.id
        assert store.invoke("kinds", "resume", "export").stdout.strip() == "Kind export was not paused."

    def test_pause_and_resume_are_audited_without_a_job(self, store: Store) -> None:
        """The audit shows pause and resume with no job ("-" in the table, null in JSON)."""
        store.insert(make_job(kind="export"))
        store.invoke("kinds", "pause", "export")
        store.invoke("kinds", "resume", "export")
        body = ok_json(store.invoke("audit", "--json"))
        assert [(item["action"], item["job_id"], item["details"]["kind"]) for item in body["items"]] == [
            ("resume", None, "export"),
            ("pause", None, "export"),
        ]
        row = next(line for line in store.invoke("audit").stdout.splitlines() if " pause " in line)
        assert row.split()[2:5] == ["pause", "host", "-"]
        assert " - " in row

    def test_unknown_kind_is_6(self, store: Store) -> None:
        """A kind with no job and not paused: exit 6 for pause and resume, nothing paused."""
        assert_one_line_error(store.invoke("kinds", "pause", "nope"), 6, "Unknown job kind 'nope'")
        assert_one_line_error(store.invoke("kinds", "resume", "nope"), 6, "Unknown job kind 'nope'")
        assert ok_json(store.invoke("kinds", "list", "--json"))["items"] == []


class TestSchedules:
    def test_add_list_remove(self, store: Store) -> None:
        """add stores a schedule (the kind declared here), list shows it, remove removes it."""
        added = ok_json(store.invoke(
            "schedules", "add", "nightly", "report", "--cron", "0 3 * * *", "--timezone", "Europe/Berlin",
            "--payload", '{"full": true}', "--priority", "2", "--json",
        ))  # fmt: skip
        assert (added["name"], added["kind"], added["cron"], added["timezone"]) == (
            "nightly", "report", "0 3 * * *", "Europe/Berlin",
        )  # fmt: skip
        assert (added["payload"], added["priority"], added["tenant"]) == ({"full": True}, 2, None)
        fire = datetime.fromisoformat(added["next_run_at"])
        assert fire.astimezone(ZoneInfo("Europe/Berlin")).hour == 3
        assert ok_json(store.invoke("schedules", "list", "--json"))["items"] == [added]
        table = store.invoke("schedules", "list")
        assert table.stdout.splitlines()[2].split()[:9] == [
            "nightly",
            "report",
            "0",
            "3",
            "*",
            "*",
            "*",
            "Europe/Berlin",
            "2",
        ]
        removed = store.invoke("schedules", "remove", "nightly")
        assert removed.stdout.strip() == "Removed schedule nightly."
        assert store.invoke("schedules", "list").stdout.strip() == "No schedules."
        actions = [item["action"] for item in ok_json(store.invoke("audit", "--json"))["items"]]
        assert actions == ["unschedule", "schedule"]

    def test_human_add_says_when_it_fires(self, store: Store) -> None:
        result = store.invoke("schedules", "add", "hourly", "report", "--cron", "0 * * * *")
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith("Schedule hourly: a report job at '0 * * * *' (UTC), next at 20")

    @pytest.mark.parametrize(
        ("args", "fragment"),
        [
            (["--cron", "0 3 * *"], "A cron expression has five fields"),
            (["--cron", "61 3 * * *"], "cron"),
            (["--cron", "0 3 * * *", "--timezone", "Mars/Olympus"], "Unknown time zone 'Mars/Olympus'"),
            (["--cron", "0 3 * * *", "--payload", "{x"], "--payload is not JSON"),
        ],
    )
    def test_bad_cron_or_time_zone_is_6_and_stores_nothing(
        self, store: Store, args: list[str], fragment: str
    ) -> None:
        """A malformed cron expression or an unknown time zone: exit 6, no schedule, no audit record."""
        assert_one_line_error(store.invoke("schedules", "add", "nightly", "report", *args), 6, fragment)
        assert ok_json(store.invoke("schedules", "list", "--json"))["items"] == []
        assert ok_json(store.invoke("audit", "--json"))["items"] == []

    def test_removing_an_unknown_schedule_is_3(self, store: Store) -> None:
        assert_one_line_error(store.invoke("schedules", "remove", "nope"), 3, "No schedule named 'nope'.")


class TestStatusAndSweep:
    def test_status_counts_scheduled_jobs_and_names_paused_kinds(self, store: Store) -> None:
        """status: the scheduled count, when the next one is due, the next fire time, paused kinds."""
        due = datetime.now(UTC) + timedelta(hours=5)
        store.insert(make_job(kind="export", status=JobStatus.SCHEDULED, run_at=due))
        store.insert(make_job(kind="export", status=JobStatus.SCHEDULED, run_at=due + timedelta(hours=1)))
        store.insert(make_job(kind="report"))
        store.invoke("kinds", "pause", "report")
        store.invoke("schedules", "add", "nightly", "report", "--cron", "0 3 * * *")
        body = ok_json(store.invoke("status", "--json"))
        assert body["counts"] == {"pending": 1, "running": 0, "cancelling": 0, "scheduled": 2}
        assert datetime.fromisoformat(body["next_due"]) == due
        assert body["next_schedule"] is not None
        assert body["paused"] == ["report"]
        text = store.invoke("status").stdout
        assert "Jobs: pending 1, running 0, cancelling 0, scheduled 2" in text
        assert "Next scheduled job due: " in text
        assert "(in 4h)" in text
        assert "Next schedule fires: " in text
        assert "Paused kinds: report" in text

    def test_status_without_scheduled_jobs_or_paused_kinds(self, store: Store) -> None:
        text = store.invoke("status").stdout
        assert "Next scheduled job due: -" in text
        assert "Next schedule fires" not in text
        assert "Paused kinds: none" in text

    def test_sweep_reports_promoted_and_fired(self, store: Store) -> None:
        """A due scheduled job is pending after `jobkit sweep` (promoted by the sweep or by the
        command's own timer: every process promotes); the report has both new lines."""
        job = store.insert(
            make_job(
                kind="export", status=JobStatus.SCHEDULED, run_at=datetime.now(UTC) - timedelta(seconds=1)
            )
        )
        body = ok_json(store.invoke("--blobs", "memory://", "sweep", "--json"))
        assert body["promoted"] in (0, 1)
        assert body["fired"] == 0
        assert store.get(job.id).status is JobStatus.PENDING
        table = store.invoke("--blobs", "memory://", "sweep").stdout
        lines = [line.split() for line in table.splitlines()]
        assert ["scheduled", "jobs", "made", "pending", "0"] in lines
        assert ["jobs", "fired", "by", "schedules", "0"] in lines
