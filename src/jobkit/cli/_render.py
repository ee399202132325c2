"""How the CLI shows things: JSON values for ``--json``, rich tables for people."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs
from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn
from rich.table import Table
from rich.text import Text

from .._codec import audit_to_json, job_to_json, schedule_to_json
from .._records import AuditRecord, Job, JobStatus, Page, Retry, Schedule, SweepReport
from ..abc import Lease

__all__ = [
    "STATUS_STYLE",
    "audit_table",
    "audit_to_json",
    "dumps",
    "job_detail",
    "job_json",
    "jobs_table",
    "kinds_table",
    "make_console",
    "names_table",
    "page_to_json",
    "report_table",
    "report_to_json",
    "retry_text",
    "schedule_to_json",
    "schedules_table",
    "status_text",
    "when",
]

#: The colour of each status in tables.
STATUS_STYLE: dict[JobStatus, str] = {
    JobStatus.SCHEDULED: "cyan",
    JobStatus.PENDING: "yellow",
    JobStatus.RUNNING: "bold blue",
    JobStatus.CANCELLING: "magenta",
    JobStatus.COMPLETED: "green",
    JobStatus.FAILED: "bold red",
    JobStatus.CANCELLED: "dim",
}


def dumps(value: Any) -> str:
    """The ``--json`` output: indented, UTF-8 text, keys in a stable order."""
    return json.dumps(value, ensure_ascii=False, indent=2, allow_nan=False)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


#: A job with the web API's fields.
job_json = job_to_json


def page_to_json(page: Page) -> dict[str, Any]:
    """A page of jobs as ``GET /jobs`` returns it."""
    return {"items": [job_json(job) for job in page.items], "next_cursor": page.next_cursor}


def report_to_json(report: SweepReport) -> dict[str, int]:
    """A sweep report as ``{"expired": ..., "purged": ..., ...}``."""
    return attrs.asdict(report)


# -- for people ---------------------------------------------------------------------


def when(value: datetime | None, now: datetime | None = None) -> str:
    """A time in the local timezone, to the second, with how long ago (or until) it is."""
    if value is None:
        return "-"
    text = value.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    if now is None:
        return text
    return f"{text} ({_relative(value, now)})"


def _relative(value: datetime, now: datetime) -> str:
    seconds = (now - value).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 1:
        return "now"
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        if seconds >= size:
            amount = f"{int(seconds // size)}{unit}"
            return f"in {amount}" if future else f"{amount} ago"
    raise AssertionError("unreachable")  # pragma: no cover


def status_text(status: JobStatus) -> Text:
    """The status, coloured."""
    return Text(status.value, style=STATUS_STYLE[status])


_CONTROL = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
_CONTROL.update({ord("\n"): "\\n", ord("\t"): "\\t", ord("\r"): "\\r"})


def plain(value: str) -> Text:
    """Text that came from outside (kinds, labels, reasons, messages, names): shown as is,
    never as rich markup, with control characters (terminal escapes) escaped."""
    return Text(value.translate(_CONTROL))


def _progress(job: Job) -> str:
    if job.progress is None:
        return "-" if job.status is not JobStatus.COMPLETED else "100%"
    return f"{job.progress * 100:.0f}%"


def jobs_table(jobs: Sequence[Job], now: datetime) -> Table:
    """The jobs of a page: one row each, newest first; CREATED is how long ago, RUNS (when
    a scheduled job is on the page) how long until a scheduled job's ``run_at``."""
    show_tenant = any(job.tenant is not None for job in jobs)
    show_runs = any(job.status is JobStatus.SCHEDULED for job in jobs)
    table = _table()
    table.add_column("ID", no_wrap=True, min_width=32)
    table.add_column("KIND", overflow="fold", min_width=4)
    table.add_column("STATUS", no_wrap=True, min_width=10)
    table.add_column("PRIO", justify="right", no_wrap=True, min_width=4)
    table.add_column("DONE", justify="right", no_wrap=True, min_width=4)
    if show_tenant:
        table.add_column("TENANT", overflow="fold", min_width=6)
    table.add_column("CREATED", no_wrap=True, min_width=7)
    if show_runs:
        table.add_column("RUNS", no_wrap=True, min_width=4)
    for job in jobs:
        status = status_text(job.status)
        if job.deleted_at is not None:
            status.append(" (deleted)", style="dim")
        row: list[str | Text] = [job.id, plain(job.kind), status, str(job.priority), _progress(job)]
        if show_tenant:
            row.append(plain(job.tenant or "-"))
        row.append(_relative(job.created_at, now))
        if show_runs:
            waiting = job.run_at if job.status is JobStatus.SCHEDULED else None
            row.append("-" if waiting is None else _relative(waiting, now))
        table.add_row(*row)
    return table


def leases_table(leases: Sequence[Lease], now: datetime) -> Table:
    """Running and cancelling jobs with the worker holding each and when its lease ends."""
    table = _table(title="Leases")
    table.add_column("ID", no_wrap=True, min_width=32)
    table.add_column("KIND", overflow="fold", min_width=4)
    table.add_column("STATUS", no_wrap=True, min_width=10)
    table.add_column("WORKER", overflow="fold")
    table.add_column("LEASE ENDS", no_wrap=True)
    table.add_column("ATTEMPT", justify="right", no_wrap=True)
    for lease in leases:
        job = lease.job
        ends = _relative(lease.until, now)
        table.add_row(
            job.id, plain(job.kind), status_text(job.status), plain(lease.owner), ends, str(job.attempts)
        )
    return table


def _table(**options: Any) -> Table:
    return Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold", **options)


def _json_text(value: Any) -> Text:
    return Text(json.dumps(value, ensure_ascii=False, indent=2), style="cyan")


def _seconds(value: Any) -> str:
    return "-" if value is None else f"{value.total_seconds():g}s"


def job_detail(job: Job, *, position: int | None, now: datetime) -> Table:
    """Every field of one job, one per line."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    rows: list[tuple[str, str | Text]] = [
        ("id", job.id),
        ("kind", plain(job.kind)),
        ("status", status_text(job.status)),
    ]
    if position is not None:
        rows.append(("queue position", f"{position} (1 runs next)"))
    rows += [
        ("tenant", plain(job.tenant or "-")),
        ("priority", str(job.priority)),
        ("progress", plain(_progress(job) + (f"  {job.progress_message}" if job.progress_message else ""))),
        ("attempts", f"{job.attempts} of {job.max_attempts}"),
        ("retry", retry_text(job.retry)),
    ]
    if job.run_at is not None:
        label = "runs at" if job.status is JobStatus.SCHEDULED else "run at"
        rows.append((label, when(job.run_at, now)))
    if job.idempotency_key is not None:
        rows.append(("idempotency key", plain(job.idempotency_key)))
    rows += [
        ("created", when(job.created_at, now)),
        ("started", when(job.started_at, now)),
        ("finished", when(job.finished_at, now)),
        ("expires", when(job.expires_at, now) if job.expires_at else "-"),
    ]
    if job.deleted_at is not None:
        rows.append(("deleted", when(job.deleted_at, now)))
    rows += [("ttl", _seconds(job.ttl)), ("timeout", _seconds(job.timeout))]
    if job.labels:
        rows.append(
            ("labels", plain(", ".join(f"{key}={value}" for key, value in sorted(job.labels.items()))))
        )
    if job.cancel_reason is not None:
        rows.append(("cancel reason", plain(job.cancel_reason)))
    if job.error is not None:
        error = plain(job.error)
        error.stylize("red")
        rows.append(("error", error))
    rows.append(("payload", _json_text(job.payload)))
    if job.result is not None:
        rows.append(("result", _json_text(job.result)))
    for name, value in rows:
        table.add_row(name, value)
    return table


def retry_text(retry: Retry | None) -> str:
    """A Retry in one line: "3 attempts, backoff 1s x2 (at most 3600s), jitter 10%, on ..."."""
    if retry is None:
        return "-"
    on = ", ".join(sorted(retry.names))
    return (
        f"{retry.attempts} attempts, backoff {retry.backoff:g}s x{retry.factor:g} "
        f"(at most {retry.max_backoff:g}s), jitter {retry.jitter * 100:g}%, on {on}"
    )


def kinds_table(kinds: Iterable[str], paused: Iterable[str]) -> Table:
    """Kinds, one per row, with whether each is paused."""
    stopped = frozenset(paused)
    table = _table()
    table.add_column("KIND", overflow="fold")
    table.add_column("PAUSED", no_wrap=True)
    for kind in kinds:
        table.add_row(plain(kind), Text("yes", style="bold yellow") if kind in stopped else "no")
    return table


def schedules_table(schedules: Sequence[Schedule], now: datetime) -> Table:
    """Schedules by name, with the next fire time (local time, and how far off it is)."""
    show_tenant = any(item.tenant is not None for item in schedules)
    table = _table()
    if show_tenant:
        table.add_column("TENANT", overflow="fold")
    table.add_column("NAME", overflow="fold")
    table.add_column("KIND", overflow="fold")
    table.add_column("CRON", no_wrap=True)
    table.add_column("TIME ZONE", no_wrap=True)
    table.add_column("PRIO", justify="right", no_wrap=True)
    table.add_column("NEXT RUN", no_wrap=True)
    for item in schedules:
        row: list[str | Text] = [plain(item.tenant or "-")] if show_tenant else []
        row += [
            plain(item.name),
            plain(item.kind),
            plain(item.cron),
            plain(item.timezone),
            str(item.priority),
            when(item.next_run_at, now),
        ]
        table.add_row(*row)
    return table


def names_table(names: Iterable[str]) -> Table:
    """Artifact names, one per row."""
    table = _table()
    table.add_column("ARTIFACT", overflow="fold")
    for name in names:
        table.add_row(plain(name))
    return table


def report_table(report: SweepReport) -> Table:
    """What a sweep did, one count per line."""
    table = _table(title="Sweep report")
    table.add_column("WHAT")
    table.add_column("COUNT", justify="right")
    labels = {
        "expired": "expired jobs deleted",
        "purged": "soft-deleted jobs purged",
        "artifacts_deleted": "artifacts deleted",
        "recovered": "lost jobs recovered",
        "audit_removed": "old audit records removed",
        "promoted": "scheduled jobs made pending",
        "fired": "jobs fired by schedules",
    }
    for field, count in attrs.asdict(report).items():
        table.add_row(labels[field], str(count))
    return table


def _details(details: Any) -> str:
    shown = ("unknown" if value is None else value for value in details.values())
    return ", ".join(f"{key}={value}" for key, value in zip(details, shown, strict=True)) or "-"


def audit_table(records: Sequence[AuditRecord]) -> Table:
    """Audit records, newest first; the host is shown as ``host``."""
    table = _table()
    table.add_column("AT", no_wrap=True)
    table.add_column("ACTION", no_wrap=True)
    table.add_column("ACTOR", overflow="fold")
    table.add_column("TENANT", overflow="fold")
    table.add_column("JOB", no_wrap=True, min_width=32)
    table.add_column("DETAILS", overflow="fold")
    for record in records:
        table.add_row(
            when(record.at),
            record.action.value,
            plain(record.actor_id) if record.actor_id else Text("host", style="dim"),
            plain(record.tenant or "-"),
            plain(record.job_id or "-"),
            plain(_details(record.details)),
        )
    return table


def watch_progress(console: Console) -> Progress:
    """The live bar of ``jobkit jobs watch``: the job, its progress, status and message
    (every text column shown as is, never as markup)."""
    return Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[status]}", markup=False),
        TextColumn("{task.fields[message]}", markup=False),
        console=console,
    )


def show_progress(bar: Progress, task: TaskID, job: Job) -> None:
    """Put ``job``'s progress (all of it once completed), status and message on the bar."""
    done = 1.0 if job.status is JobStatus.COMPLETED else (job.progress or 0.0)
    message = plain(job.progress_message or "").plain
    bar.update(task, completed=done, status=job.status.value, message=message)


def make_console(*, stderr: bool = False) -> Console:
    """A console on the current stdout (or stderr), without automatic highlighting.

    Output that is not a terminal (a pipe, a file) gets wide lines, so that tables are
    never cut to 80 columns.
    """
    console = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 200
    return console
