"""The examples: every examples/*.py runs to completion and shows the behaviour it promises.

Each example runs as its own process with this interpreter, as a user would run it.
A new example is picked up by the glob and must at least run cleanly.
"""

from __future__ import annotations

import ast
import functools
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
TIME_LIMIT = 60  # seconds; each example takes a few


@functools.cache
def run(name: str) -> subprocess.CompletedProcess[str]:
    """Run one example (once per test process) and capture its output."""
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        capture_output=True,
        text=True,
        timeout=TIME_LIMIT,
        cwd=ROOT,
        check=False,
    )


def output(name: str) -> str:
    result = run(name)
    assert result.returncode == 0, f"{name} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def line_with(text: str, *parts: str) -> str:
    """The first output line containing every one of ``parts`` (fails when there is none)."""
    for line in text.splitlines():
        if all(part in line for part in parts):
            return line
    raise AssertionError(f"no line contains all of {parts!r} in:\n{text}")


class TestEveryExample:
    def test_there_are_examples(self) -> None:
        """The glob finds the examples (an empty glob would silently test nothing)."""
        assert {
            "quickstart.py",
            "gdpr_delete.py",
            "render_admin.py",
            "nightly_report.py",
            "remote_client.py",
        } <= {p.name for p in EXAMPLES}

    @pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
    def test_runs_cleanly(self, path: Path) -> None:
        """Each example exits 0 within the time limit, with output and nothing on stderr."""
        result = run(path.name)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip()
        assert result.stderr == ""

    @pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
    def test_says_what_it_shows(self, path: Path) -> None:
        """Each example opens with a docstring saying what it shows."""
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        assert docstring
        assert len(docstring.splitlines()) >= 3


class TestQuickstart:
    def test_both_handlers_complete_with_progress(self) -> None:
        """The async and the threaded handler both complete, and their progress is shown live."""
        text = output("quickstart.py")
        assert "cat.jpg completed: {'thumbnails': [64, 128, 256]}" in text
        assert "weekly report completed: {'title': 'weekly', 'sections': 3}" in text
        assert re.search(r"weekly report\s+67%\s+section 2 of 3", text)
        assert re.search(r"cat\.jpg\s+33%\s+resized to 64px", text)

    def test_cancelled_job_keeps_its_partial_result(self) -> None:
        """The job cancelled half-way ends cancelled with the thumbnails made before it stopped."""
        line = line_with(output("quickstart.py"), "panorama.jpg cancelled")
        assert "(closed the browser tab)" in line
        assert "partial result: {'thumbnails': [64, 128" in line
        assert "2048" not in line

    def test_delete_removes_the_artifacts(self) -> None:
        """Before the delete the artifacts are listed; after it the job and its blobs are gone."""
        text = output("quickstart.py")
        assert "before: jobs.artifacts -> ['thumb_128.png', 'thumb_256.png', 'thumb_64.png']" in text
        assert "after:  jobs.artifacts -> JobNotFound (job_not_found)" in text
        assert line_with(text, "after:  blob store under jobs/").endswith("-> []")

    def test_expired_job_is_swept(self) -> None:
        """The job with a short ttl is removed by the sweep, with its artifact."""
        text = output("quickstart.py")
        assert "jobs.sweep() -> SweepReport(expired=1, purged=0, artifacts_deleted=1" in text
        assert "daily report is gone: JobNotFound" in text

    def test_audit_trail_names_who_did_what(self) -> None:
        """The audit trail lists alice's cancel and delete and the sweeper's expiry, in order."""
        text = output("quickstart.py")
        actions = re.findall(r"^\s+\d\d:\d\d:\d\d\s+(\w+)\s+(.+?)\s+by (\S+)", text, re.MULTILINE)
        assert actions == [
            ("cancel", "panorama.jpg", "alice"),
            ("delete", "cat.jpg", "alice"),
            ("expire", "daily report", "system:sweeper"),
        ]


class TestGdprDelete:
    @pytest.mark.parametrize(
        ("what", "message"),
        [
            ("interview.wav (running)", "Cannot delete running job. Use cancel instead."),
            ("podcast.wav (pending)", "Cannot delete pending job. Use cancel instead."),
            ("interview.wav (cancelling)", "Cannot delete job while cancellation is in progress."),
        ],
    )
    def test_unfinished_jobs_are_refused(self, what: str, message: str) -> None:
        """Deleting a job that has not finished is a 409 invalid_state saying what to do."""
        line = line_with(output("gdpr_delete.py"), f"DELETE {what}")
        assert '-> 409 {"error": {"code": "invalid_state", "message": "' + message + '"}}' in line

    def test_other_tenant_gets_not_found(self) -> None:
        """Another tenant's delete gets the same 404 job_not_found as a job that never existed."""
        text = output("gdpr_delete.py")
        assert '404 {"error": {"code": "job_not_found"' in line_with(text, "DELETE meeting.wav as bob")
        assert '404 {"error": {"code": "job_not_found"' in line_with(text, "DELETE no-such-job as bob")

    def test_delete_leaves_no_file_behind(self) -> None:
        """Finished jobs are deleted (204) together with every stored file, partial ones included."""
        text = output("gdpr_delete.py")
        meeting = line_with(text, "DELETE meeting.wav (completed")
        assert "5 files) -> 204 No Content; files left: []" in meeting
        interview = line_with(text, "DELETE interview.wav (cancelled")
        assert interview.endswith("-> 204 No Content; files left: []")
        assert "-> 204 No Content" in line_with(text, "DELETE podcast.wav (cancelled before it ran)")
        assert "GET meeting.wav as alice -> 404" in text

    def test_audit_trail_shows_who_deleted_what(self) -> None:
        """The audit trail, read after the jobs are gone, has alice's deletes with artifact counts."""
        text = output("gdpr_delete.py")
        line = line_with(text, "delete meeting.wav", "by alice")
        assert "'mode': 'hard', 'status': 'completed', 'artifacts_deleted': 5" in line
        assert len(re.findall(r"\bdelete \S+\s+by alice", text)) == 3


class TestRenderAdmin:
    def test_cancel_kills_the_process_and_cleans_scratch(self) -> None:
        """The admin's cancel stops the render: cancelled, its process gone, its temp files removed."""
        text = output("render_admin.py")
        assert "ada cancels it -> cancelled (wrong logo in the trailer)" in text
        assert re.search(r"process \d+ is gone", text)
        assert "STILL RUNNING" not in text
        assert "temp files removed: True" in text

    def test_priority_boost_moves_the_job_to_the_front(self) -> None:
        """The boosted job gets position 1 and runs before the jobs queued ahead of it."""
        text = output("render_admin.py")
        assert "ada boosts the teaser  -> priority 10, new position 1" in text
        started = re.findall(r"ws> started\s+(\w+)", text)
        assert started == ["trailer", "teaser", "intro", "credits"]

    def test_non_admin_is_denied(self) -> None:
        """A non-admin may neither reorder the queue nor cancel: PermissionDenied."""
        text = output("render_admin.py")
        assert "ed boosts the teaser   -> PermissionDenied" in text
        assert "ed cancels it  -> PermissionDenied" in text

    def test_invalid_actions_say_why(self) -> None:
        """A running job's priority and a finished job's cancel are refused with InvalidState."""
        text = output("render_admin.py")
        assert "ada boosts the trailer -> InvalidState: Cannot change priority of a running job." in text
        assert "ada cancels the finished teaser -> InvalidState: Cannot cancel a completed job" in text

    def test_audit_log_records_the_admin_actions(self) -> None:
        """The audit log names the admin for the priority change and the cancel."""
        text = output("render_admin.py")
        assert "ada set_priority teaser: {'from': 0, 'to': 10, 'position': 1}" in text
        assert "ada cancel trailer:" in text


class TestNightlyReport:
    def test_schedule_fires_at_three_in_berlin(self) -> None:
        """The cron schedule's first fire time is 03:00 Berlin time (02:00 UTC in winter), and
        the job it fires carries the schedule's label."""
        text = output("nightly_report.py")
        assert "next run: Thu 14 Mar 03:00:00 CET (02:00 UTC)" in text
        assert "fired job with labels {'jobkit.schedule': 'nightly'}" in text

    def test_retry_backs_off_then_completes(self) -> None:
        """Two failures wait 60 s, then 120 s, in scheduled; the third attempt completes."""
        text = output("nightly_report.py")
        started = re.findall(r"(\d\d:\d\d:\d\d) CET  attempt (\d) started", text)
        assert started[:3] == [("03:00:00", "1"), ("03:01:00", "2"), ("03:03:00", "3")]
        assert "attempt 1 failed: ConnectionError: warehouse not reachable" in text
        assert "scheduled: attempt 2 in 60 s" in text
        assert "scheduled: attempt 3 in 120 s" in text
        assert "completed after 3 attempts: {'report': 'sales', 'rows': 1203}" in text

    def test_delayed_job_waits_for_its_time(self) -> None:
        """A delay=3600 submit is scheduled for an hour later and starts then."""
        text = output("nightly_report.py")
        assert "03:03:00 CET  scheduled, runs at Thu 14 Mar 04:03:00 CET" in text
        assert "Thu 14 Mar 04:03:00 CET  attempt 1 started" in text
        assert "completed after 1 attempt: {'report': 'backfill'" in text

    def test_missed_nights_make_one_job(self) -> None:
        """Three fire times missed at once make one job, and the schedule moves to the next night."""
        text = output("nightly_report.py")
        assert "the nightly schedule has made 2 jobs" in text
        assert "next run: Mon 18 Mar 03:00:00 CET" in text
        assert "jobs.counts() -> {'completed': 3}" in text


class TestRemoteClient:
    def test_manages_the_service_over_http(self) -> None:
        """JobClient submits, follows the events, resolves a short id and waits for the result."""
        text = output("remote_client.py")
        assert "Actor(id='ada'" in line_with(text, "signed in as:")
        line_with(text, "event: progress 50% half way")
        short = line_with(text, "short id").split()
        assert short[-1].startswith(short[2])
        line_with(text, "wait: completed, result {'rows': 42}")

    def test_errors_are_the_managers(self) -> None:
        """Over HTTP the same errors: InvalidState, Unauthenticated, PermissionDenied."""
        text = output("remote_client.py")
        line_with(text, "delete while running: InvalidState:", "Use cancel instead")
        line_with(text, "no token: Unauthenticated:")
        line_with(text, "a non-admin pausing a kind: PermissionDenied:")

    def test_blocking_client_reads_the_artifact(self) -> None:
        text = output("remote_client.py")
        line_with(text, "blocking client: artifacts ['report.txt'] -> report for 2030-01")
        line_with(text, "blocking client: counts {'completed': 1}")


class TestDjangoReports:
    def test_the_tasks_api_on_jobkit(self) -> None:
        """Django's Tasks API end to end: READY, SUCCESSFUL with the return value, cancel, delete."""
        text = output("django_reports.py")
        line_with(text, "enqueued export: status READY")
        line_with(text, "export: SUCCESSFUL, return value 'export.csv', attempts 1")
        line_with(text, "total: 6")
        line_with(text, "artifacts of the export: ['export.csv']")
        line_with(text, "deferred task cancelled: FAILED, errors ['jobkit.JobCancelled']")
        line_with(text, "after delete, artifact files left: []")
        line_with(text, "get_result after delete: TaskResultDoesNotExist")
