"""The ``jobkit`` command line: typer commands over a JobManager that only manages.

Management commands open ``JobManager(store, blobs, concurrency=0, sweep_interval=None)``
as the trusted host (no actor), do one thing and close it. The CLI cannot know the host's
policies: deletes are hard unless ``--soft``, and ``sweep`` removes audit records only
when given ``--audit-retention`` (audit trails are often kept on purpose). Having no
handlers, ``jobs submit`` and ``schedules add`` declare their kind: workers elsewhere run it.

With ``--url`` the same commands run through :class:`jobkit.client.JobClient` against a
service's REST API instead: the service decides who is asking (from ``--header``) and
applies its own policies.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import signal
import socket
import sys
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeAlias, TypeVar

import anyio
import anyio.to_thread
import attrs
import typer
from rich.text import Text
from typer.core import TyperArgument, TyperCommand

from .._errors import (
    BackendError,
    InvalidInput,
    InvalidState,
    JobkitError,
    JobNotFound,
    PermissionDenied,
    Unauthenticated,
)
from .._manager import JobManager
from .._policies import DeleteMode, DeletePolicy
from .._records import AuditRecord, EventType, Job, JobEvent, JobStatus, Retry, Schedule
from ..abc import BlobStore, JobStore
from . import _render as render

if TYPE_CHECKING:
    from ..client import JobClient

__all__ = ["EXIT_CODES", "Settings", "app"]

#: What a command's action runs against: a manager on the store, or a client of a service.
Jobs: TypeAlias = "JobManager | JobClient"

T = TypeVar("T")

#: Exit code of each error class; the first match wins (ArtifactNotFound is a JobNotFound).
#: Any other JobkitError (a store that cannot be opened, ...) is a backend error.
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (JobNotFound, 3),
    (InvalidState, 4),
    (PermissionDenied, 5),
    (Unauthenticated, 5),  # over --url: the service found no identity in the headers
    (InvalidInput, 6),
    (BackendError, 7),
    (JobkitError, 7),
    (OSError, 7),
)
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_INVALID_INPUT = 6
#: The user answered "no" at a confirmation prompt: nothing was done.
EXIT_ABORTED = 8
#: ``jobs watch``: the job failed, or was cancelled (0: it completed).
EXIT_JOB_FAILED = 9
EXIT_JOB_CANCELLED = 10

_STORE_HELP = "Where jobs live: sqlite:///jobs.db (relative), sqlite:////abs/jobs.db, memory://."
_ID_HELP = "The job id, or a unique start of it (4 or more characters, as the console shows 8)."
_URL_HELP = (
    "Manage the jobs of a running service through its REST API instead of a store: where its job "
    "router is mounted, e.g. https://example.com/api/v1 (not together with --store)."
)
_HEADER_HELP = (
    "A header for every request to --url, e.g. 'Authorization: Bearer TOKEN' (repeatable). "
    "JOBKIT_HEADERS may hold more: one per line, or a JSON object."
)
_BLOBS_HELP = (
    "Where artifacts live: file:///abs/folder, file://folder, memory://, "
    "s3://bucket/prefix?endpoint_url=...&region=... (jobkit[s3]). For commands that touch artifacts."
)
_EPILOG = (
    "Exit codes: 0 ok, 1 unexpected error, 2 usage error (also what --url cannot do), 3 job not "
    "found, 4 invalid state, 5 permission denied or not signed in, 6 invalid input, 7 backend "
    "error, 8 not confirmed; jobs watch: 9 the job failed, 10 it was cancelled."
)


@attrs.define
class Settings:
    """The global options, shared by every command through the click context."""

    store: str | None = None
    blobs: str | None = None
    json: bool = False
    traceback: bool = False
    url: str | None = None
    headers: tuple[str, ...] = ()


app = typer.Typer(
    name="jobkit",
    help="Manage jobkit jobs (submit, list, inspect, cancel, retry, delete, prioritise, sweep, audit), "
    "pause kinds, keep cron schedules; run a worker or the demo.",
    epilog=_EPILOG,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's help: no <bool> after flags, the metavars given below
)
jobs_app = typer.Typer(help="Inspect and manage jobs.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(jobs_app, name="jobs")
kinds_app = typer.Typer(
    help="List job kinds; pause or resume them in every process.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(kinds_app, name="kinds")
schedules_app = typer.Typer(
    help="Cron schedules that submit jobs (jobkit[cron]).", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(schedules_app, name="schedules")

JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
SoftOption = Annotated[
    bool,
    typer.Option(
        "--soft", help="Soft-delete (keep the row and artifacts for audit), as DeletePolicy(mode='soft')."
    ),
]
IncludeDeletedOption = Annotated[
    bool,
    typer.Option("--include-deleted", help="Also soft-deleted jobs (kept for audit by a soft DeletePolicy)."),
]


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"jobkit {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    ctx: typer.Context,
    store: Annotated[
        str | None, typer.Option("--store", envvar="JOBKIT_STORE", metavar="URL", help=_STORE_HELP)
    ] = None,
    blobs: Annotated[
        str | None, typer.Option("--blobs", envvar="JOBKIT_BLOBS", metavar="URL", help=_BLOBS_HELP)
    ] = None,
    url: Annotated[
        str | None, typer.Option("--url", envvar="JOBKIT_URL", metavar="URL", help=_URL_HELP)
    ] = None,
    header: Annotated[
        list[str] | None, typer.Option("--header", "-H", metavar="'NAME: VALUE'", help=_HEADER_HELP)
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")] = False,
    show_traceback: Annotated[
        bool, typer.Option("--traceback", help="Show the traceback of unexpected errors.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print jobkit's version and exit."),
    ] = False,
) -> None:
    ctx.obj = Settings(
        store=store,
        blobs=blobs,
        json=json_output,
        traceback=show_traceback,
        url=url or None,
        headers=tuple(header or ()),
    )


# -- plumbing ------------------------------------------------------------------------


def _settings(ctx: typer.Context, json_output: bool = False) -> Settings:
    settings = ctx.find_object(Settings)
    if settings is None:  # pragma: no cover - the callback always sets it
        settings = Settings()
    if json_output:
        settings.json = True
    return settings


def _unwrap(exc: BaseException) -> BaseException:
    """The one error inside (nested) exception groups, as task groups wrap it."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _exit_code(exc: BaseException) -> int:
    if getattr(exc, "code", None) == "not_supported":  # jobkit.client.NotSupported: not over --url
        return EXIT_USAGE
    for cls, code in EXIT_CODES:
        if isinstance(exc, cls):
            return code
    return EXIT_UNEXPECTED


def _error_code(exc: BaseException) -> str:
    if isinstance(exc, JobkitError):
        return exc.code
    if isinstance(exc, OSError):
        return "backend_error"
    return "unexpected_error"


def _message(exc: BaseException) -> str:
    if isinstance(exc, JobkitError):
        text = exc.message
    elif isinstance(exc, OSError):
        text = str(exc)
    else:
        text = f"unexpected {type(exc).__name__}: {exc} (run with --traceback for details)"
    return " ".join(text.split())  # one line, whatever the message held


def fail(settings: Settings, message: str, code: int, error_code: str = "usage_error") -> NoReturn:
    """Print one error line on stderr (a JSON error body with ``--json``) and exit."""
    line = " ".join(message.split())
    if settings.json:
        body = {"error": {"code": error_code, "message": line}}
        sys.stderr.write(json.dumps(body, ensure_ascii=False) + "\n")
    else:
        sys.stderr.write(f"error: {line}\n")
    raise typer.Exit(code)


def _guarded(settings: Settings, fn: Callable[[], T]) -> T:
    """Call ``fn``, turning errors into one line on stderr and a meaningful exit code."""
    try:
        return fn()
    except BaseException as raised:
        exc = _unwrap(raised)
        if isinstance(exc, typer.Exit | typer.Abort | KeyboardInterrupt):
            raise exc from None
        if not isinstance(exc, Exception):
            raise
        code = _exit_code(exc)
        if code == EXIT_UNEXPECTED and settings.traceback:
            traceback.print_exception(exc)
        fail(settings, _message(exc), code, _error_code(exc))


class _OneLineErrors(logging.Filter):
    """Show a failed demo job as one line (its error is on the job too), not a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()} error={type(exc).__name__}: {exc}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


def _quiet_logs(level: str, *, tracebacks: bool = True) -> None:
    """Send jobkit's logs to stderr (never into ``--json`` output) unless the host configured them."""
    logger = logging.getLogger("jobkit")
    if any(not isinstance(h, logging.NullHandler) for h in logger.handlers) or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)-7s] %(message)s", "%H:%M:%S"))
    if not tracebacks:
        handler.addFilter(_OneLineErrors())
    logger.addHandler(handler)
    logger.setLevel(getattr(logging, level))


def _open_store(settings: Settings) -> JobStore:
    from ..stores import SQLiteStore, open_store

    if not settings.store:
        fail(
            settings,
            "No store given: pass --store URL (e.g. --store sqlite:///jobs.db) or set JOBKIT_STORE.",
            EXIT_USAGE,
        )
    store = open_store(settings.store)
    if isinstance(store, SQLiteStore) and store.path != ":memory:" and not os.path.exists(store.path):
        # Opening would create an empty database: a mistyped path would look like "no jobs".
        raise InvalidInput(
            f"No jobkit database at {store.path!r} (from {settings.store}). "
            "Check --store; the database is created when the host app or a worker first starts."
        )
    return store


def _open_blobs(settings: Settings, command: str, needs_blobs: bool) -> BlobStore:
    from ..blobs import MemoryBlobStore, open_blobs

    if settings.blobs:
        blobs = open_blobs(settings.blobs)
        # A FileBlobStore's folder is checked here; an S3 bucket is checked when the
        # store opens (a missing bucket is a BackendError naming it, never created).
        root = getattr(blobs, "root", None)
        if root is not None and not os.path.isdir(root):
            # Opening would create an empty folder: a mistyped path would delete jobs and
            # orphan their real artifacts.
            raise InvalidInput(
                f"No artifacts folder at {os.fspath(root)!r} (from {settings.blobs}). Check --blobs; "
                "the folder is created when the host app or a worker first writes an artifact."
            )
        return blobs
    if needs_blobs and not (settings.store or "").startswith("memory:"):
        fail(
            settings,
            f"`jobkit {command}` touches artifacts: pass --blobs URL (or set JOBKIT_BLOBS) for where "
            "they live, e.g. --blobs file:///srv/app/artifacts, or --blobs memory:// if there are none.",
            EXIT_USAGE,
        )
    return MemoryBlobStore()


def _headers(settings: Settings) -> dict[str, str]:
    """The headers of ``JOBKIT_HEADERS`` (lines of ``Name: value``, or a JSON object), then
    of each ``--header`` (which wins for a name given twice)."""
    lines: list[str] = []
    found: dict[str, str] = {}
    env = os.environ.get("JOBKIT_HEADERS", "").strip()
    if env.startswith("{"):
        try:
            value = json.loads(env)
        except json.JSONDecodeError as exc:
            fail(settings, f"JOBKIT_HEADERS is not a JSON object ({exc.msg}).", EXIT_USAGE)
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            fail(settings, 'JOBKIT_HEADERS must be a JSON object of strings: {"Name": "value"}.', EXIT_USAGE)
        found.update(value)
    elif env:
        lines += env.splitlines()
    lines += settings.headers
    for line in lines:
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not name or not _TOKEN.fullmatch(name):
            fail(settings, f"A header must read 'Name: value', got {line!r}.", EXIT_USAGE)
        found[name] = value.strip()
    return found


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _manage(
    settings: Settings,
    command: str,
    action: Callable[[Jobs], Awaitable[T]],
    *,
    needs_blobs: bool = False,
    soft: bool = False,
    audit_retention: float | None = None,
) -> T:
    """Run ``action`` with a manager that only manages (no workers, no sweeper), as the host;
    with ``--url``, with a :class:`~jobkit.client.JobClient` of that service instead.

    ``audit_retention`` is in days; None keeps every audit record.
    """
    _quiet_logs("WARNING")
    if settings.url is not None:
        _not_both(settings)
        if soft:
            fail(settings, "--soft needs --store: over --url the service's DeletePolicy decides.", EXIT_USAGE)
        return _remote(settings, action)

    async def session() -> T:
        store = _open_store(settings)
        blobs = _open_blobs(settings, command, needs_blobs)
        jobs = JobManager(
            store,
            blobs,
            concurrency=0,
            sweep_interval=None,
            delete_policy=DeletePolicy(mode=DeleteMode.SOFT if soft else DeleteMode.HARD),
            audit_retention=None if audit_retention is None else timedelta(days=audit_retention),
        )
        async with jobs:
            return await action(jobs)

    return _guarded(settings, lambda: anyio.run(session))


def _not_both(settings: Settings) -> None:
    if settings.store:
        fail(settings, "Give --store or --url, not both (JOBKIT_STORE and JOBKIT_URL count too).", EXIT_USAGE)
    if settings.blobs:
        fail(settings, "--blobs goes with --store: over --url the service has its own artifacts.", EXIT_USAGE)


def _remote(settings: Settings, action: Callable[[JobClient], Awaitable[T]]) -> T:
    """Run ``action`` with a client of ``--url`` (its headers from --header / JOBKIT_HEADERS)."""
    try:
        from ..client import JobClient
    except ImportError as exc:
        fail(settings, str(exc), EXIT_USAGE, "missing_dependency")
    assert settings.url is not None
    headers = _headers(settings)
    url = settings.url

    async def session() -> T:
        async with JobClient(url, headers=headers) as client:
            return await action(client)

    return _guarded(settings, lambda: anyio.run(session))


def _store_only(settings: Settings, command: str, why: str) -> None:
    """Refuse ``--url`` for a command that needs the store itself."""
    if settings.url is not None:
        fail(settings, f"`jobkit {command}` needs --store, not --url: {why}", EXIT_USAGE)


async def _resolve(jobs: Jobs, given: str, *, include_deleted: bool = False) -> str:
    """The whole id of the job ``given`` names: its id, or a unique start of it (the console
    and the tables show 8 characters). A soft-deleted job needs its whole id."""
    if not _PREFIX.fullmatch(given):  # no id prefix: the command looks it up as a whole id
        return given
    try:
        return await jobs.resolve(given)
    except JobNotFound:
        if include_deleted:
            return given
        raise


_PREFIX = re.compile(r"[0-9a-fA-F]{4,32}")


def _out(value: Any) -> None:
    typer.echo(render.dumps(value))


# -- jobs ----------------------------------------------------------------------------


def _statuses(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    found = [part.strip() for value in values for part in value.split(",") if part.strip()]
    return found or None


@jobs_app.command("list")
def list_jobs(
    ctx: typer.Context,
    status: Annotated[
        list[str] | None,
        typer.Option(
            "--status",
            "-s",
            metavar="STATUS",
            help="Only jobs in this status (repeat or comma-separate): "
            "scheduled, pending, running, cancelling, completed, failed, cancelled.",
        ),
    ] = None,
    kind: Annotated[
        str | None, typer.Option("--kind", "-k", metavar="KIND", help="Only jobs of this kind.")
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", metavar="N", help="At most this many jobs (1-1000).")
    ] = 50,
    cursor: Annotated[
        str | None, typer.Option("--cursor", metavar="CURSOR", help="The next_cursor of a previous page.")
    ] = None,
    include_deleted: IncludeDeletedOption = False,
    json_output: JsonOption = False,
) -> None:
    """List jobs, newest first."""
    settings = _settings(ctx, json_output)
    page = _manage(
        settings,
        "jobs list",
        lambda jobs: jobs.list(
            status=_statuses(status),
            kind=kind,
            limit=limit,
            cursor=cursor,
            include_deleted=include_deleted,
        ),
    )
    if settings.json:
        _out(render.page_to_json(page))
        return
    console = render.make_console()
    if not page.items:
        console.print("No jobs." if cursor is None else "No more jobs.")
        return
    console.print(render.jobs_table(page.items, datetime.now(UTC)))
    if page.next_cursor is not None:
        again = ["jobkit", "jobs", "list"]
        for value in _statuses(status) or ():
            again += ["--status", value]
        if kind is not None:
            again += ["--kind", kind]
        if limit != 50:
            again += ["--limit", str(limit)]
        if include_deleted:
            again.append("--include-deleted")
        again += ["--cursor", page.next_cursor]
        console.print(f"More jobs: {shlex.join(again)}", style="dim")


@jobs_app.command("show")
def show_job(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="ID", help=_ID_HELP)],
    include_deleted: IncludeDeletedOption = False,
    json_output: JsonOption = False,
) -> None:
    """Show every field of one job."""
    settings = _settings(ctx, json_output)

    async def action(jobs: Jobs) -> tuple[Job, int | None]:
        found = await _resolve(jobs, job_id, include_deleted=include_deleted)
        job = await jobs.get(found, include_deleted=include_deleted)
        if job.deleted_at is not None or job.status is not JobStatus.PENDING:
            return job, None
        if not isinstance(jobs, JobManager):
            return job, None  # the REST API has no route for a job's place in the queue
        return job, await jobs.position(found)

    job, position = _manage(settings, "jobs show", action)
    if settings.json:
        _out(render.job_json(job))
        return
    render.make_console().print(render.job_detail(job, position=position, now=datetime.now(UTC)))


@jobs_app.command("cancel")
def cancel_job(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="ID", help=_ID_HELP)],
    reason: Annotated[
        str | None, typer.Option("--reason", "-r", metavar="REASON", help="Why; kept on the job.")
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Cancel a job: a pending one at once, a running one at its next checkpoint."""
    settings = _settings(ctx, json_output)

    async def action(jobs: Jobs) -> Job:
        return await jobs.cancel(await _resolve(jobs, job_id), reason=reason)

    job = _manage(settings, "jobs cancel", action)
    if settings.json:
        _out(render.job_json(job))
        return
    console = render.make_console()
    if job.status.is_terminal:
        console.print(f"Job {job.id} is", render.status_text(job.status), end=".\n")
    else:
        console.print(
            f"Job {job.id} is",
            render.status_text(job.status),
            end=": its worker stops it at the next checkpoint.\n",
        )


@jobs_app.command("delete")
def delete_job(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="ID", help=_ID_HELP)],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    soft: SoftOption = False,
    json_output: JsonOption = False,
) -> None:
    """Delete a finished job and its artifacts (asks first unless --yes or --json)."""
    settings = _settings(ctx, json_output)
    ask = not (yes or settings.json)

    async def action(jobs: Jobs) -> str | None:
        found = await _resolve(jobs, job_id)
        if ask:
            job = await jobs.get(found)
            count = len(await jobs.artifacts(found))
            what = (
                "This will mark the job deleted and keep it and its artifacts for audit."
                if soft
                else "This will permanently delete the job and its artifacts."
            )
            question = (
                f"Delete {job.status.value} job {job.id} (kind {job.kind}, {count} artifact"
                f"{'' if count == 1 else 's'})? {what}"
            )
            if not await anyio.to_thread.run_sync(_confirm, question):
                return None
        await jobs.delete(found)
        return found

    deleted = _manage(settings, "jobs delete", action, needs_blobs=settings.url is None, soft=soft)
    if deleted is None:
        fail(settings, "Not confirmed: the job was not deleted.", EXIT_ABORTED, "aborted")
    if settings.json:
        _out({"deleted": deleted})
        return
    render.make_console().print(f"Deleted job {deleted}.")


def _confirm(question: str) -> bool:
    try:
        return typer.confirm(question, default=False, err=True)
    except typer.Abort:  # end of input: not confirmed
        sys.stderr.write("\n")
        return False


@jobs_app.command("priority", context_settings={"ignore_unknown_options": True})
def set_priority(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="ID", help=_ID_HELP)],
    priority: Annotated[
        int, typer.Argument(metavar="PRIORITY", help="The new priority; higher runs first (may be negative).")
    ],
    json_output: JsonOption = False,
) -> None:
    """Change a pending job's priority and print its new place in the queue."""
    settings = _settings(ctx, json_output)

    async def action(jobs: Jobs) -> tuple[Job, int]:
        return await jobs.set_priority(await _resolve(jobs, job_id), priority)

    job, position = _manage(settings, "jobs priority", action)
    if settings.json:
        _out({"job": render.job_json(job), "position": position})
        return
    render.make_console().print(
        f"Job {job.id} now has priority {job.priority}: position {position} in the queue (1 runs next)."
    )


@jobs_app.command("artifacts")
def list_artifacts(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="ID", help=_ID_HELP)],
    json_output: JsonOption = False,
) -> None:
    """List the artifacts a job wrote."""
    settings = _settings(ctx, json_output)

    async def action(jobs: Jobs) -> list[str]:
        return await jobs.artifacts(await _resolve(jobs, job_id))

    names = _manage(settings, "jobs artifacts", action, needs_blobs=settings.url is None)
    if settings.json:
        _out({"items": names})
        return
    console = render.make_console()
    if not names:
        console.print(f"Job {job_id} has no artifacts.")
        return
    console.print(render.names_table(names))


@jobs_app.command("watch")
def watch_job(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="ID", help=_ID_HELP)],
    json_output: JsonOption = False,
) -> None:
    """Follow a job live until it finishes: a progress bar with its status and message.

    Driven by the job's events (no polling). Exit code 0 when the job completed, 9 when it
    failed, 10 when it was cancelled; with --json, the finished job is printed."""
    settings = _settings(ctx, json_output)
    console = render.make_console()

    async def action(jobs: Jobs) -> Job:
        found = await _resolve(jobs, job_id)
        async with jobs.subscribe(job_id=found) as events:
            job = await jobs.get(found)  # after subscribing: a finish now is not missed
            if job.is_terminal or settings.json:
                return job if job.is_terminal else await _finished(jobs, found, events)
            with render.watch_progress(console) as bar:
                task = bar.add_task(
                    render.plain(f"{job.kind} {job.id[:8]}").plain, total=1.0, status="", message=""
                )
                render.show_progress(bar, task, job)
                return await _finished(jobs, found, events, lambda job: render.show_progress(bar, task, job))

    job = _manage(settings, "jobs watch", action)
    if settings.json:
        _out(render.job_json(job))
    else:
        line = Text.assemble(f"Job {job.id} ", render.status_text(job.status))
        if job.error:
            line.append(": ")
            line.append(render.plain(job.error))
        elif job.cancel_reason:
            line.append(": ")
            line.append(render.plain(job.cancel_reason))
        console.print(line, end=".\n")
    if job.status is JobStatus.FAILED:
        raise typer.Exit(EXIT_JOB_FAILED)
    if job.status is JobStatus.CANCELLED:
        raise typer.Exit(EXIT_JOB_CANCELLED)


async def _finished(
    jobs: Jobs, job_id: str, events: AsyncIterator[JobEvent], shown: Callable[[Job], None] | None = None
) -> Job:
    """Read ``events`` until the job has finished; ``shown`` is told of every change (a
    progress event carries the new progress; any other event has the job read again)."""
    job: Job | None = None
    async for event in events:
        if event.type is EventType.DELETED:
            raise JobNotFound(job_id, f"Job {job_id!r} was deleted while watching it.")
        if event.type is EventType.PROGRESS and job is not None and event.status is job.status:
            progress = event.data.get("progress")
            message = event.data.get("message")
            job = attrs.evolve(job, progress=progress, progress_message=message)
        else:
            job = await jobs.get(job_id)
        if shown is not None:
            shown(job)
        if job.is_terminal:
            return job
    return await jobs.get(job_id)  # the stream ended (the manager or the server stopped)


# -- submit, retry -------------------------------------------------------------------

PayloadOption = Annotated[
    str | None,
    typer.Option(
        "--payload",
        metavar="JSON|@FILE",
        help="The payload as JSON text, or @path to read it from a file (@- reads stdin).",
    ),
]


def _payload(value: str | None) -> Any:
    """The ``--payload`` value: JSON text, or ``@file`` (``@-``: standard input) holding JSON.

    :raises InvalidInput: the file cannot be read, or the text is not JSON.
    """
    if value is None:
        return None
    text, source = value, "--payload"
    if value.startswith("@"):
        name = value[1:]
        source = "standard input" if name == "-" else f"--payload file {name!r}"
        try:
            text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInput(f"Cannot read the {source}: {exc.strerror or exc}.") from None
        except UnicodeDecodeError:
            raise InvalidInput(f"The {source} is not UTF-8 text.") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"The {source} is not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
            """a string needs its quotes, e.g. --payload '"text"'."""
        ) from None


def _run_at(value: str | None) -> datetime | None:
    """The ``--run-at`` value: an ISO 8601 time with a UTC offset.

    :raises InvalidInput: malformed, or without an offset (ambiguous).
    """
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            f"--run-at must be an ISO 8601 time with a UTC offset, e.g. 2030-01-01T09:00:00+02:00 "
            f"or 2030-01-01T07:00:00Z; got {value!r}."
        ) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise InvalidInput(
            f"--run-at {value!r} has no UTC offset, so it is ambiguous: add one, e.g. "
            f"{parsed.isoformat()}Z for UTC or {parsed.isoformat()}+02:00."
        )
    return parsed


def _runs(job: Job, now: datetime) -> str:
    """What happens next to a job that was just submitted or retried."""
    if job.status is JobStatus.SCHEDULED:
        return f"runs at {render.when(job.run_at, now)}"
    if job.status is JobStatus.PENDING:
        return "a worker runs it next"
    return job.status.value


@jobs_app.command("submit")
def submit_job(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(metavar="KIND", help="The job kind (a worker elsewhere runs it).")],
    payload: PayloadOption = None,
    delay: Annotated[
        float | None, typer.Option("--delay", metavar="SECONDS", help="Run it this many seconds from now.")
    ] = None,
    run_at: Annotated[
        str | None,
        typer.Option(
            "--run-at",
            metavar="ISO",
            help="Run it at this time, with a UTC offset: 2030-01-01T09:00:00+02:00.",
        ),
    ] = None,
    priority: Annotated[
        int, typer.Option("--priority", "-p", metavar="N", help="Higher runs first (may be negative).")
    ] = 0,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key",
            metavar="KEY",
            help="While a job with this key exists, print it instead of submitting another.",
        ),
    ] = None,
    retry_attempts: Annotated[
        int | None,
        typer.Option(
            "--retry-attempts",
            metavar="N",
            help="Retry a failure, with exponential backoff, until N attempts were made (Retry(attempts=N)).",
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Submit a job of KIND, for the workers that run it (this command runs nothing)."""
    settings = _settings(ctx, json_output)

    async def action(jobs: Jobs) -> tuple[Job, bool, bool]:
        value = _payload(payload)
        when = _run_at(run_at)
        retry = None if retry_attempts is None else Retry(attempts=retry_attempts)
        if isinstance(jobs, JobManager):
            jobs.declare(kind)  # its handler lives in the workers, not here
        job, created = await jobs.submit_once(
            kind,
            value,
            priority=priority,
            run_at=when,
            delay=delay,
            retry=retry,
            idempotency_key=idempotency_key,
        )
        # The first job of its kind here: perhaps a mistyped kind that no worker runs.
        first = created and len((await jobs.list(kind=kind, limit=2)).items) < 2
        return job, created, first and kind not in await jobs.paused()

    job, created, first = _manage(settings, "jobs submit", action)
    if settings.json:
        _out(render.job_json(job))
        return
    now = datetime.now(UTC)
    console = render.make_console()
    if created:
        line = Text.assemble(
            f"Submitted job {job.id}: ", render.status_text(job.status), f", {_runs(job, now)}."
        )
    else:
        line = Text.assemble(
            f"Job {job.id} already has the idempotency key ",
            render.plain(repr(idempotency_key)),
            ": nothing new was submitted.",
        )
    console.print(line)
    console.print(render.job_detail(job, position=None, now=now))
    if first:
        note = Text.assemble(
            "note: this store had no job of kind ",
            render.plain(repr(kind)),
            " before: check that a worker has a handler for it.",
            style="dim",
        )
        render.make_console(stderr=True).print(note)


@jobs_app.command("retry")
def retry_job(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="ID", help=_ID_HELP)],
    run_at: Annotated[
        str | None,
        typer.Option("--run-at", metavar="ISO", help="Run it again at this time (with a UTC offset)."),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Give a failed or cancelled job one more attempt: now, or at --run-at."""
    settings = _settings(ctx, json_output)

    async def action(jobs: Jobs) -> Job:
        when = _run_at(run_at)
        return await jobs.retry(await _resolve(jobs, job_id), run_at=when)

    job = _manage(settings, "jobs retry", action)
    if settings.json:
        _out(render.job_json(job))
        return
    again = f" again (attempt {job.attempts + 1} of {job.max_attempts}): {_runs(job, datetime.now(UTC))}."
    render.make_console().print(Text.assemble(f"Job {job.id} is ", render.status_text(job.status), again))


# -- kinds ---------------------------------------------------------------------------

#: Jobs looked at, newest first, to find the kinds a store holds (no store lists its kinds).
KINDS_SCAN_LIMIT = 10_000


@kinds_app.command("list")
def list_kinds(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """The kinds of the jobs in the store (the newest 10,000) and the paused kinds."""
    settings = _settings(ctx, json_output)

    async def action(jobs: Jobs) -> tuple[list[str], frozenset[str], bool]:
        if not isinstance(jobs, JobManager):  # the service knows its kinds (GET /kinds)
            known = await jobs.known_kinds()
            return sorted(known), frozenset(kind for kind, paused in known.items() if paused), False
        paused = await jobs.paused()
        seen: set[str] = set()
        cursor, scanned = None, 0
        while True:
            page = await jobs.list(limit=1000, cursor=cursor)
            seen.update(job.kind for job in page.items)
            scanned += len(page.items)
            cursor = page.next_cursor
            if cursor is None or scanned >= KINDS_SCAN_LIMIT:
                break
        return sorted(seen | paused), paused, cursor is not None

    kinds, paused, capped = _manage(settings, "kinds list", action)
    if settings.json:
        items = [{"kind": kind, "paused": kind in paused} for kind in kinds]
        _out({"items": items, "capped": capped})
        return
    console = render.make_console()
    if not kinds:
        console.print("No kinds: the store has no jobs and no paused kind.")
        return
    console.print(render.kinds_table(kinds, paused))
    if capped:
        console.print(f"(kinds of the newest {KINDS_SCAN_LIMIT:,} jobs, and the paused ones)", style="dim")


def _set_paused(ctx: typer.Context, kind: str, pause: bool, json_output: bool) -> None:
    settings = _settings(ctx, json_output)
    command = "kinds pause" if pause else "kinds resume"

    async def action(jobs: Jobs) -> bool:
        before = kind in await jobs.paused()
        await (jobs.pause(kind) if pause else jobs.resume(kind))
        return before != pause

    changed = _manage(settings, command, action)
    if settings.json:
        _out({"kind": kind, "paused": pause, "changed": changed})
        return
    name = render.plain(kind)
    if pause:
        what = "paused" if changed else "was already paused"
        line = Text.assemble(
            "Kind ",
            name,
            f" {what}: no worker sharing this store starts its jobs (running ones go on) until ",
            render.plain(shlex.join(["jobkit", "kinds", "resume", kind])),
            ".",
        )
    else:
        line = Text.assemble(
            "Kind ", name, " resumed: workers start its jobs again." if changed else " was not paused."
        )
    render.make_console().print(line)


@kinds_app.command("pause")
def pause_kind(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(metavar="KIND", help="A kind with jobs in the store.")],
    json_output: JsonOption = False,
) -> None:
    """Stop every worker sharing the store from starting jobs of KIND (running ones go on)."""
    _set_paused(ctx, kind, True, json_output)


@kinds_app.command("resume")
def resume_kind(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(metavar="KIND", help="A paused kind.")],
    json_output: JsonOption = False,
) -> None:
    """Let workers start jobs of a paused KIND again."""
    _set_paused(ctx, kind, False, json_output)


# -- schedules -----------------------------------------------------------------------


@schedules_app.command("list")
def list_schedules(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Every schedule (of every tenant), by name, with its next fire time."""
    settings = _settings(ctx, json_output)
    items = _manage(settings, "schedules list", lambda jobs: jobs.schedules())
    if settings.json:
        _out({"items": [render.schedule_to_json(item) for item in items]})
        return
    console = render.make_console()
    if not items:
        console.print("No schedules.")
        return
    console.print(render.schedules_table(items, datetime.now(UTC)))


@schedules_app.command("add")
def add_schedule(
    ctx: typer.Context,
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="The schedule's name (replaces one of that name).")
    ],
    kind: Annotated[str, typer.Argument(metavar="KIND", help="The kind of the jobs it submits.")],
    cron: Annotated[
        str,
        typer.Option(
            "--cron",
            metavar="EXPR",
            help='Five fields: minute hour day-of-month month day-of-week, e.g. "0 3 * * *".',
        ),
    ],
    timezone: Annotated[
        str, typer.Option("--timezone", "--tz", metavar="ZONE", help="The IANA time zone of the cron fields.")
    ] = "UTC",
    payload: PayloadOption = None,
    priority: Annotated[
        int, typer.Option("--priority", "-p", metavar="N", help="The priority of the jobs it submits.")
    ] = 0,
    json_output: JsonOption = False,
) -> None:
    """Submit a job of KIND at every fire time of --cron (the sweeper fires it, once per time)."""
    settings = _settings(ctx, json_output)

    async def action(jobs: Jobs) -> Schedule:
        value = _payload(payload)
        if isinstance(jobs, JobManager):
            jobs.declare(kind)  # its handler lives in the workers, not here
        return await jobs.schedule(name, kind, value, cron=cron, timezone=timezone, priority=priority)

    item = _manage(settings, "schedules add", action)
    if settings.json:
        _out(render.schedule_to_json(item))
        return
    line = Text.assemble(
        "Schedule ",
        render.plain(item.name),
        ": a ",
        render.plain(item.kind),
        " job at ",
        render.plain(repr(item.cron)),
        " (",
        render.plain(item.timezone),
        f"), next at {render.when(item.next_run_at, datetime.now(UTC))}.",
    )
    render.make_console().print(line)


@schedules_app.command("remove")
def remove_schedule(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The schedule's name.")],
    json_output: JsonOption = False,
) -> None:
    """Remove a schedule (the jobs it submitted stay)."""
    settings = _settings(ctx, json_output)
    _manage(settings, "schedules remove", lambda jobs: jobs.unschedule(name))
    if settings.json:
        _out({"removed": name})
        return
    render.make_console().print(Text.assemble("Removed schedule ", render.plain(name), "."))


# -- sweep, audit --------------------------------------------------------------------


@app.command("sweep")
def sweep(
    ctx: typer.Context,
    audit_retention: Annotated[
        float | None,
        typer.Option(
            "--audit-retention",
            metavar="DAYS",
            min=0,
            help="Also remove audit records older than this many days (default: keep them all).",
        ),
    ] = None,
    soft: SoftOption = False,
    json_output: JsonOption = False,
) -> None:
    """Delete expired jobs, retry deferred artifact deletes, recover lost jobs (and trim the audit)."""
    settings = _settings(ctx, json_output)

    _store_only(settings, "sweep", "a service sweeps its own store.")

    async def action(jobs: Jobs) -> Any:
        assert isinstance(jobs, JobManager)
        if settings.json:
            return await jobs.sweep()
        with render.make_console(stderr=True).status("Sweeping…", spinner="dots"):
            return await jobs.sweep()

    report = _manage(settings, "sweep", action, needs_blobs=True, soft=soft, audit_retention=audit_retention)
    if settings.json:
        _out(render.report_to_json(report))
        return
    render.make_console().print(render.report_table(report))


@app.command("audit")
def audit(
    ctx: typer.Context,
    job_id: Annotated[
        str | None,
        typer.Option("--job", metavar="ID", help="Only this job's records (its id or a unique start)."),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", metavar="N", help="At most this many records (1-1000).")
    ] = 100,
    json_output: JsonOption = False,
) -> None:
    """Show the audit trail, newest first: who cancelled, deleted, expired what."""
    settings = _settings(ctx, json_output)

    async def action(jobs: Jobs) -> list[AuditRecord]:
        # The records of a job outlive it: an id that names no job now is taken as it is.
        found = None if job_id is None else await _resolve(jobs, job_id, include_deleted=True)
        return await jobs.audit(job_id=found, limit=limit)

    records = _manage(settings, "audit", action)
    if settings.json:
        _out({"items": [render.audit_to_json(record) for record in records]})
        return
    console = render.make_console()
    if not records:
        console.print("No audit records.")
        return
    console.print(render.audit_table(records))


@app.command("status")
def status(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """What the store holds now: unfinished jobs, due times, paused kinds, leases, listener.

    Unfinished jobs by status, the oldest pending one, when the next scheduled job is due and
    the next schedule fires, the paused kinds, who holds which lease until when, and whether
    the store's cross-process listener connects."""
    from ._status import SCAN_LIMIT, remote_status_report, status_report

    settings = _settings(ctx, json_output)
    _quiet_logs("WARNING")
    if settings.url is not None:
        if settings.store:
            fail(
                settings,
                "Give --store or --url, not both (JOBKIT_STORE and JOBKIT_URL count too).",
                EXIT_USAGE,
            )
        report = _remote(settings, remote_status_report)
    else:
        report = _guarded(settings, lambda: anyio.run(status_report, _open_store(settings)))
    if settings.json:
        _out(report.to_json())
        return
    console = render.make_console()
    now = datetime.now(UTC)
    counts = ", ".join(
        f"{status} {count}{'+' if status in report.capped else ''}" for status, count in report.counts.items()
    )
    console.print(f"Jobs: {counts}", highlight=False)
    if report.capped:
        console.print(f"(counted up to {SCAN_LIMIT:,} per status)", style="dim")
    console.print(f"Oldest pending: {render.when(report.oldest_pending, now)}", highlight=False)
    console.print(f"Next scheduled job due: {render.when(report.next_due, now)}", highlight=False)
    if report.next_schedule is not None:
        console.print(f"Next schedule fires: {render.when(report.next_schedule, now)}", highlight=False)
    if report.paused:
        paused = Text.assemble("Paused kinds: ", render.plain(", ".join(sorted(report.paused))), style="bold")
        console.print(paused)
    else:
        console.print("Paused kinds: none")
    listener = report.listener
    console.print(f"Listener: {listener['listener']} ({listener['detail']})", highlight=False)
    if report.running is not None:
        if not report.running:
            console.print("Running: none.")
        else:
            console.print("Running (the REST API serves no leases or owners):")
            console.print(render.jobs_table(report.running, now))
    elif report.leases is None:
        console.print("Leases: this store does not list them.")
    elif not report.leases:
        console.print("Leases: none (no job is running).")
    else:
        console.print(render.leases_table(report.leases, now))


# -- worker, demo --------------------------------------------------------------------


@app.command(
    "worker",
    help="Run the host's JobManager (its handlers and policies) until SIGINT or SIGTERM.\n\n"
    "--store and --blobs reach the host as JOBKIT_STORE / JOBKIT_BLOBS before its module is "
    "imported, and as the store= / blobs= arguments when --app names a factory "
    "(def build(store, blobs) -> JobManager) instead of a manager.\n\n"
    "On the first signal running jobs are interrupted and go back to pending, and the worker exits 0 "
    "once they have; a second signal forces the stop (exit 1).",
)
def worker(
    ctx: typer.Context,
    app_spec: Annotated[
        str,
        typer.Option(
            "--app",
            metavar="MODULE:ATTR",
            help="The host's JobManager or a factory returning one, e.g. myapp.jobs:jobs "
            "(imported from the current directory).",
        ),
    ],
) -> None:
    from ._worker import load_manager, serve

    settings = _settings(ctx)
    manager = _guarded(settings, lambda: load_manager(app_spec, store=settings.store, blobs=settings.blobs))
    _quiet_logs("INFO")

    def say(line: str) -> None:
        typer.echo(line)
        sys.stdout.flush()

    forced = _guarded(settings, lambda: anyio.run(serve, manager, app_spec, say))
    if forced:
        raise typer.Exit(EXIT_UNEXPECTED)


@app.command("demo")
def demo(
    ctx: typer.Context,
    port: Annotated[
        int,
        typer.Option(
            "--port", "-p", metavar="PORT", min=0, max=65535, help="Port on 127.0.0.1 (0: any free port)."
        ),
    ] = 8000,
    data_dir: Annotated[
        Path,
        typer.Option(
            "--data-dir", metavar="FOLDER", help="Where the demo keeps its SQLite database and artifacts."
        ),
    ] = Path(".jobkit-demo"),
    seed: Annotated[bool, typer.Option("--seed/--no-seed", help="Submit some jobs on startup.")] = True,
) -> None:
    """Run the demo app with the console on SQLite + local files (insecure: a local demo only)."""
    settings = _settings(ctx)
    try:
        import uvicorn

        from ..integrations._demo_app import create_demo_app
    except ImportError as exc:
        fail(
            settings,
            f"jobkit demo needs FastAPI and uvicorn: pip install 'jobkit[cli]' ({exc}).",
            EXIT_UNEXPECTED,
            "missing_dependency",
        )
    _quiet_logs("WARNING", tracebacks=False)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(128)  # connections wait in the backlog until the app has started
    except OSError as exc:
        sock.close()
        fail(
            settings,
            f"Cannot listen on 127.0.0.1:{port}: {exc.strerror}. Pass another --port.",
            EXIT_INVALID_INPUT,
            InvalidInput.code,
        )
    try:
        fastapi_app = _guarded(settings, lambda: create_demo_app(data_dir, seed=seed))
        server = uvicorn.Server(uvicorn.Config(fastapi_app, log_level="warning", access_log=False))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/console/"
        typer.echo(f"jobkit demo: console at {url} (data in {data_dir}). Press Ctrl-C to stop.")
        sys.stdout.flush()
        with _signals_recorded(), suppress(SystemExit):  # uvicorn exits when startup fails
            server.run(sockets=[sock])
    finally:
        sock.close()
    if not server.started:
        fail(settings, "The demo app did not start (see the log above).", EXIT_UNEXPECTED, "startup_failed")
    typer.echo("jobkit demo: stopped.")


@contextmanager
def _signals_recorded() -> Iterator[None]:
    """Keep a signal from crashing the process once uvicorn has stopped gracefully.

    While uvicorn runs, SIGINT and SIGTERM are its own; after a graceful stop it raises
    the signal it caught again, for the handler it found installed: this one, a no-op.
    """
    previous = {sig: signal.signal(sig, _ignore_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _ignore_signal(signum: int, frame: FrameType | None) -> None:
    """A signal raised again by uvicorn after its graceful stop: already handled."""


# -- help that reads like words ------------------------------------------------------


class _WordArgument(TyperArgument):
    """An argument shown by its metavar alone: ``ID  The job id.``, not ``ID <str>``, and
    ``ID`` in the usage line rather than ``{ID}``."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None if self.metavar else super().display_type_rich(ctx)

    def _usage_display_name(self) -> str:
        name = str(self.metavar or self.name or "").upper()
        return name if self.required else f"[{name}]"


class _Command(TyperCommand):
    """A command whose arguments are :class:`_WordArgument`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if type(param) is TyperArgument:
                param.__class__ = _WordArgument


for _typer in (app, jobs_app, kinds_app, schedules_app):
    for _info in _typer.registered_commands:
        if _info.cls in (None, TyperCommand):
            _info.cls = _Command
