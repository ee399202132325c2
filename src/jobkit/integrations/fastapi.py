"""FastAPI integration: the job routes as an ``APIRouter``, and the manager tied to the app.

Install with ``pip install 'jobkit[fastapi]'``. The recipe::

    from fastapi import FastAPI, Request
    from jobkit import Actor, JobManager
    from jobkit.integrations.fastapi import install_error_handlers, job_router, lifespan

    jobs = JobManager()

    async def current_actor(request: Request) -> Actor | None:
        ...  # who is asking, from your authentication; None = nobody signed in (401)

    app = FastAPI(lifespan=lifespan(jobs))
    install_error_handlers(app)
    app.include_router(job_router(jobs, actor=current_actor), prefix="/api/v1")

Routes (relative to the prefix): ``POST /jobs`` (201; 200 with the existing job for a
repeated idempotency key), ``GET /jobs``, ``GET /jobs/{id}``, ``POST /jobs/{id}/cancel``,
``POST /jobs/{id}/retry``, ``DELETE /jobs/{id}`` (204), ``PATCH /jobs/{id}/priority``,
``GET /jobs/{id}/artifacts``, ``GET|DELETE /jobs/{id}/artifacts/{name}``, ``GET /counts``,
``GET /kinds``, ``POST /kinds/{kind}/pause|resume``, ``GET|POST /schedules``,
``DELETE /schedules/{name}`` (204), ``GET /me`` and ``GET /events`` (server-sent events).
Every error has the body ``{"error": {"code": ..., "message": ...}}``: 401 nobody signed
in, 404 not found (also another tenant's job), 409 not allowed in the job's status, 403
forbidden, 413 body too large, 422 invalid input, 503 backend failure or manager not running.

The router's own routes answer with that body even without :func:`install_error_handlers`
(also for an ``HTTPException`` raised by the host's actor dependency); installing it
extends the same shape to the whole app: a path that matches no route (404
``not_found``), a wrong method (405 ``method_not_allowed``), request validation errors of
every route, and jobkit errors and ``HTTPException`` raised by the host's own routes.
"""

import signal
import socket
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from datetime import datetime
from http import HTTPStatus
from types import FrameType
from typing import Annotated, Any

import anyio
from anyio.abc import TaskGroup

try:
    from fastapi import APIRouter, Body, Depends, FastAPI, Header, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.routing import APIRoute
    from pydantic import BaseModel, ConfigDict, Field
    from starlette.convertors import Convertor, register_url_convertor
    from starlette.exceptions import HTTPException
    from starlette.responses import Response
    from starlette.routing import Match
    from starlette.types import Message, Receive, Scope, Send
except ImportError as exc:
    raise ImportError("jobkit.integrations.fastapi needs FastAPI: pip install 'jobkit[fastapi]'") from exc

from .._errors import InvalidInput, JobkitError
from .._events import EventStream
from .._manager import JobManager
from .._records import MAX_DURATION, Actor, JobStatus
from .._validate import MAX_KEY_LENGTH, MAX_KIND_LENGTH, MAX_PRIORITY, MIN_PRIORITY
from ._http import (
    AS_HOST,
    BODY_LIMITS,
    IDEMPOTENCY_HEADER,
    SSE_HEADERS,
    SSE_HEARTBEAT,
    SSE_OPEN,
    PayloadTooLarge,
    audit_to_json,
    check_body_size,
    check_not_cross_site,
    dumps,
    error_body,
    error_status,
    http_error_body,
    job_to_json,
    kinds_to_json,
    me_to_json,
    resolve_actor,
    retry_run_at,
    schedule_arguments,
    schedule_to_json,
    sse_frame,
    submit_arguments,
    validation_message,
)

__all__ = [
    "AS_HOST",
    "console_router",
    "end_event_streams",
    "install_error_handlers",
    "job_router",
    "lifespan",
]

#: Seconds without an event after which the event stream sends a heartbeat comment.
DEFAULT_HEARTBEAT = 15.0


# -- request and response schemas (documentation and request validation) -------------

_MAX_SECONDS = MAX_DURATION.total_seconds()
#: ISO 8601 with a UTC offset (RFC 3339); read by the shared code, so Flask reads it alike.
_DATETIME_TEXT: dict[str, Any] = {"format": "date-time"}


class RetryPolicy(BaseModel):
    """Retry failures: attempt *n* that fails waits ``min(max_backoff, backoff * factor **
    (n - 1))`` seconds, spread by ±``jitter``, while ``n < attempts``. Every Exception counts."""

    model_config = ConfigDict(extra="forbid", strict=True)

    attempts: int = Field(ge=1, le=1000, description="Starts in all (sets max_attempts).")
    backoff: float = Field(default=1.0, ge=0, le=_MAX_SECONDS, allow_inf_nan=False)
    factor: float = Field(default=2.0, ge=1, le=100, allow_inf_nan=False)
    max_backoff: float = Field(default=3600.0, ge=0, le=_MAX_SECONDS, allow_inf_nan=False)
    jitter: float = Field(default=0.1, ge=0, le=1, allow_inf_nan=False, description="A fraction.")


class SubmitJob(BaseModel):
    """The body of ``POST /jobs``. Durations are in seconds."""

    model_config = ConfigDict(extra="forbid", strict=True)

    kind: str = Field(min_length=1, max_length=MAX_KIND_LENGTH, description="A registered job kind.")
    payload: Any = Field(default=None, description="Any JSON value, handed to the handler.")
    priority: int = Field(default=0, ge=MIN_PRIORITY, le=MAX_PRIORITY, description="Higher runs first.")
    ttl: float | None = Field(
        default=None, ge=0, allow_inf_nan=False, description="Seconds to keep the job once finished."
    )
    timeout: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="Fail the job when it runs longer (seconds)."
    )
    max_attempts: int = Field(default=1, ge=1, le=1000, description="Starts allowed when a worker is lost.")
    labels: dict[str, str] | None = Field(default=None, description="Free-form string labels.")
    run_at: str | None = Field(
        default=None,
        json_schema_extra=_DATETIME_TEXT,
        description="Run it then (ISO 8601 with a UTC offset): the job is scheduled until then.",
    )
    delay: float | None = Field(
        default=None,
        ge=0,
        le=_MAX_SECONDS,
        allow_inf_nan=False,
        description="Run it this many seconds from now (instead of run_at).",
    )
    retry: RetryPolicy | None = Field(default=None, description="Retry failures with a backoff.")
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        description="While a job with this key exists, answer with it (200) instead of a new one.",
    )


class RetryJob(BaseModel):
    """The optional body of ``POST /jobs/{id}/retry``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    run_at: str | None = Field(
        default=None,
        json_schema_extra=_DATETIME_TEXT,
        description="Retry then (ISO 8601 with a UTC offset) instead of at once.",
    )


class CreateSchedule(BaseModel):
    """The body of ``POST /schedules``: creates or replaces the tenant's schedule ``name``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1, max_length=MAX_KEY_LENGTH, description="Unique per tenant.")
    kind: str = Field(min_length=1, max_length=MAX_KIND_LENGTH, description="A known job kind.")
    payload: Any = Field(default=None, description="Any JSON value, the payload of every job.")
    cron: str = Field(min_length=1, max_length=200, description="Five fields: minute hour day month weekday.")
    timezone: str = Field(default="UTC", min_length=1, max_length=100, description="An IANA time zone.")
    priority: int = Field(default=0, ge=MIN_PRIORITY, le=MAX_PRIORITY, description="Of every job.")


class CancelJob(BaseModel):
    """The optional body of ``POST /jobs/{id}/cancel``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    reason: str | None = Field(default=None, description="Why; kept on the job as cancel_reason.")


class SetPriority(BaseModel):
    """The body of ``PATCH /jobs/{id}/priority``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    priority: int = Field(
        ge=MIN_PRIORITY, le=MAX_PRIORITY, description="The new priority; higher runs first."
    )


class RetrySettings(BaseModel):
    """A job's retry policy; ``on`` names the exception classes it covers."""

    attempts: int
    backoff: float
    factor: float
    max_backoff: float
    jitter: float
    on: list[str]


class Job(BaseModel):
    """A job. Datetimes are ISO 8601 UTC, ``ttl`` and ``timeout`` seconds."""

    id: str
    kind: str
    status: JobStatus
    payload: Any
    tenant: str | None
    priority: int
    progress: float | None = Field(description="0..1, when the handler reports it.")
    progress_message: str | None
    result: Any
    error: str | None
    cancel_reason: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    expires_at: datetime | None
    deleted_at: datetime | None
    version: int
    attempts: int
    max_attempts: int
    labels: dict[str, str]
    ttl: float | None
    timeout: float | None
    run_at: datetime | None = Field(description="When a scheduled job becomes due.")
    idempotency_key: str | None
    retry: RetrySettings | None


class JobPage(BaseModel):
    """One page of jobs, newest first; pass ``next_cursor`` as ``cursor`` for the next page."""

    items: list[Job]
    next_cursor: str | None


class Counts(BaseModel):
    """How many of the caller's visible jobs have each status (every status present)."""

    counts: dict[JobStatus, int]


class Position(BaseModel):
    """A job's 1-based place among the pending jobs (1 runs next); null when it is not pending."""

    position: int | None


class PriorityChange(BaseModel):
    """The job after a priority change and its 1-based place in the queue (1 runs next)."""

    job: Job
    position: int


class Kind(BaseModel):
    """A job kind and whether it is paused (in every process sharing the store)."""

    kind: str
    paused: bool


class KindList(BaseModel):
    """The kinds this server knows (handlers and declared ones) and every paused kind, by name."""

    items: list[Kind]


class Schedule(BaseModel):
    """A cron schedule: a job of ``kind`` at every fire time of ``cron`` in ``timezone``."""

    name: str
    kind: str
    payload: Any
    cron: str
    timezone: str
    tenant: str | None
    priority: int
    next_run_at: datetime
    created_at: datetime


class ScheduleList(BaseModel):
    """The schedules of the caller's tenant (the host: every tenant's), by name."""

    items: list[Schedule]


class AuditEntry(BaseModel):
    """Who did what to which job (or kind, or schedule), and when."""

    id: str
    at: datetime
    action: str
    actor_id: str | None
    tenant: str | None
    job_id: str | None
    details: dict[str, Any]


class AuditList(BaseModel):
    """Audit records, newest first."""

    items: list[AuditEntry]


class ArtifactList(BaseModel):
    """The names of a job's artifacts, sorted."""

    items: list[str]


class ErrorDetail(BaseModel):
    """What went wrong: a stable code and a message saying what to do."""

    code: str
    message: str


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    described = {
        401: "Nobody is signed in (the actor dependency found no identity).",
        403: "The actor is not allowed to do this.",
        404: "No such job (or artifact, or schedule) visible to the actor.",
        409: "Not allowed in the job's current status; the message says what to do.",
        413: "The request body is larger than this route takes (payload_too_large).",
        422: "Invalid input (body, query or path).",
        503: "A backend failed, or the job manager is not running; retry later.",
    }
    every = (401, *statuses)  # any route may find nobody signed in
    return {status: {"model": ErrorResponse, "description": described[status]} for status in every}


# -- error translation -----------------------------------------------------------------


def _json(body: Any, status_code: int = 200) -> Response:
    return Response(dumps(body), status_code=status_code, media_type="application/json")


def _jobkit_error(exc: JobkitError) -> Response:
    return _json(error_body(exc.code, exc.message), error_status(exc))


def _validation_error(exc: RequestValidationError) -> Response:
    return _json(error_body("invalid_input", validation_message(list(exc.errors()))), 422)


#: What FastAPI says when it cannot decode a body (e.g. JSON that is not UTF-8): answered
#: as a 422 ``invalid_input``, as any other malformed body.
_UNREADABLE_BODY = "There was an error parsing the body"


def _http_error(request: Request, exc: HTTPException) -> Response:
    """The error body for an ``HTTPException``: the framework's own (unknown route, wrong
    method) or one raised by the host's code; its status and headers are kept."""
    status, headers = exc.status_code, dict(exc.headers or {})
    if status < 400:  # not an error (e.g. 304): nothing to say
        return Response(status_code=status, headers=headers)
    try:
        default = HTTPStatus(status).phrase
    except ValueError:
        default = None
    if status == 400 and exc.detail == _UNREADABLE_BODY:
        message = f"Invalid request: the body could not be read ({exc.detail})."
        return _json(error_body("invalid_input", message), 422)
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != default else None
    allowed: list[str] = []
    if status == 405 and detail is None:  # Starlette names the methods of one route only
        allowed = _allowed_methods(request)
        headers = {name: value for name, value in headers.items() if name.lower() != "allow"}
        headers["Allow"] = ", ".join(allowed)
    body = http_error_body(status, detail, request.method, request.url.path, allowed)
    response = _json(body, status)
    response.headers.update(headers)
    return response


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app takes on the request's path (asked of the
    routes themselves, one method at a time)."""
    routes = getattr(request.app, "routes", ())
    return [
        method
        for method in _METHODS
        if any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes)
    ]


async def _handle_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _http_error(request, exc)


async def _handle_jobkit_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, JobkitError)
    return _jobkit_error(exc)


async def _handle_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return _validation_error(exc)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error in ``app`` with the jobkit error body (``{"error": {"code",
    "message"}}``): jobkit errors, request validation errors (422 ``invalid_input``) and
    every ``HTTPException`` — the framework's own (an unknown route is 404 ``not_found``,
    a wrong method 405 ``method_not_allowed``) and the host's (its status and headers
    kept, its ``detail`` as the message).

    The job router answers its own routes with that body by itself; only the app can
    answer for a path that matches no route, hence this function."""
    app.add_exception_handler(JobkitError, _handle_jobkit_error)
    app.add_exception_handler(RequestValidationError, _handle_validation_error)
    app.add_exception_handler(HTTPException, _handle_http_error)


class _JobRoute(APIRoute):
    """A route that turns jobkit and validation errors into the jobkit error body itself,
    since an ``APIRouter`` cannot install exception handlers on the app."""

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except JobkitError as exc:
                return _jobkit_error(exc)
            except RequestValidationError as exc:
                return _validation_error(exc)
            except HTTPException as exc:  # FastAPI's own, or raised by the host's dependency
                return _http_error(request, exc)

        return handle


class _ArtifactName(Convertor[str]):
    """The rest of the path, whatever it holds (even newlines, which Starlette's ``path``
    does not match): the manager rejects unsafe names with a 422 itself."""

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("jobkit_artifact", _ArtifactName())
#: A schedule's name is the rest of the path too (it may hold '/'): the manager checks it.
register_url_convertor("jobkit_name", _ArtifactName())


# -- server-sent events ----------------------------------------------------------------


class _EventStreamResponse(Response):
    """Streams a live subscription as ``text/event-stream`` until the client disconnects,
    the manager closes or the server is told to stop (``drain``, see :func:`lifespan`); a
    comment every ``heartbeat`` seconds without events."""

    media_type = "text/event-stream"

    def __init__(
        self,
        subscription: AbstractAsyncContextManager[EventStream],
        events: EventStream,
        heartbeat: float,
        drain: anyio.Event | None,
    ) -> None:
        self.status_code = 200
        self.background = None
        self._subscription = subscription
        self._events = events
        self._heartbeat = heartbeat
        self._drain = drain
        self.init_headers(SSE_HEADERS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_cancel_on_disconnect, receive, tg.cancel_scope)
                await self._stream(send, tg)
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._subscription.__aexit__(None, None, None)

    async def _stream(self, send: Send, tg: TaskGroup) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": SSE_OPEN, "more_body": True})
            with anyio.CancelScope() as streaming:
                if self._drain is not None:
                    tg.start_soon(_cancel_when_set, self._drain, streaming)
                events = self._events
                while True:
                    chunk = SSE_HEARTBEAT
                    with anyio.move_on_after(self._heartbeat):
                        event = await anext(events, None)
                        if event is None:  # the manager closed
                            break
                        chunk = sse_frame(event)
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the client went away while we wrote
            return


async def _cancel_when_set(event: anyio.Event, scope: anyio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    message: Message = {"type": ""}
    while message["type"] != "http.disconnect":
        message = await receive()
    scope.cancel()


# -- the router ------------------------------------------------------------------------


async def _trusted_host() -> Actor | None:
    return None


_TENANT_HELP = (
    "Only jobs of this tenant. The host and actors without a tenant may name any tenant; "
    "a tenant's actor only its own (403 otherwise)."
)


def job_router(
    manager: JobManager,
    *,
    actor: Callable[..., Any] | None = None,
    heartbeat: float = DEFAULT_HEARTBEAT,
) -> APIRouter:
    """The job routes over ``manager``, to mount with ``app.include_router(router, prefix=...)``.

    :param actor: a FastAPI dependency returning the request's :class:`~jobkit.Actor`;
        :data:`AS_HOST` for a request that acts as the trusted host; None when nobody is
        signed in (the route answers 401 ``unauthenticated``). Without ``actor``, every
        request is the trusted host: only for an internal app.
    :param heartbeat: seconds without an event after which ``GET /events`` sends a comment.

    Call :func:`install_error_handlers` on the app too (see the module docstring).
    """
    if isinstance(heartbeat, bool) or not isinstance(heartbeat, int | float) or not heartbeat > 0:
        raise InvalidInput(f"heartbeat must be a positive number of seconds, got {heartbeat!r}.")

    async def not_cross_site(request: Request) -> None:
        check_not_cross_site(request.headers.get("content-type"), request.headers.keys())

    def sized(route: str) -> list[Any]:
        limit = BODY_LIMITS[route]

        async def body_size(request: Request) -> None:
            length = request.headers.get("content-length")
            check_body_size(length, limit)
            # A chunked body announces no length: FastAPI has read it by now; refuse it too.
            if length is None and len(await request.body()) > limit:
                raise PayloadTooLarge(f"The request body is larger than this route takes ({limit} bytes).")

        return [Depends(not_cross_site), Depends(body_size)]

    async def resolved(found: Annotated[Any, Depends(actor or _trusted_host)]) -> Actor | None:
        return None if actor is None else resolve_actor(found)

    ActorDep = Annotated[Actor | None, Depends(resolved)]
    router = APIRouter(route_class=_JobRoute, tags=["jobs"])

    @router.post(
        "/jobs",
        dependencies=sized("submit"),
        status_code=201,
        response_model=Job,
        responses={
            200: {"model": Job, "description": "The existing job of a repeated idempotency key."},
            **_errors(403, 413, 422, 503),
        },
        summary="Submit a job",
    )
    async def submit_job(
        body: SubmitJob,
        actor: ActorDep,
        key: Annotated[
            str | None,
            Header(alias=IDEMPOTENCY_HEADER, description="An idempotency key (as the body's field)."),
        ] = None,
    ) -> Response:
        arguments = submit_arguments(body.model_dump(exclude_unset=True), key)
        job, created = await manager.submit_once(actor=actor, **arguments)
        return _json(job_to_json(job), 201 if created else 200)

    @router.get("/jobs", response_model=JobPage, responses=_errors(403, 422, 503), summary="List jobs")
    async def list_jobs(
        actor: ActorDep,
        status: Annotated[
            list[JobStatus] | None, Query(description="Only jobs in these statuses (repeatable).")
        ] = None,
        kind: Annotated[str | None, Query(description="Only jobs of this kind.")] = None,
        limit: Annotated[int, Query(ge=1, le=1000, description="Most jobs on the page.")] = 50,
        cursor: Annotated[str | None, Query(description="next_cursor of the previous page.")] = None,
        tenant: Annotated[str | None, Query(description=_TENANT_HELP)] = None,
        id_prefix: Annotated[
            str | None,
            Query(
                description="Only jobs whose id starts with these hexadecimal characters "
                "(at most `limit` of them, on one page: pass no cursor)."
            ),
        ] = None,
    ) -> Response:
        page = await manager.list(
            actor=actor,
            status=status,
            kind=kind,
            limit=limit,
            cursor=cursor,
            tenant=tenant,
            id_prefix=id_prefix,
        )
        return _json({"items": [job_to_json(job) for job in page.items], "next_cursor": page.next_cursor})

    @router.get("/counts", response_model=Counts, responses=_errors(403, 422, 503), summary="Count jobs")
    async def count_jobs(
        actor: ActorDep,
        kind: Annotated[str | None, Query(description="Only jobs of this kind.")] = None,
        tenant: Annotated[str | None, Query(description=_TENANT_HELP)] = None,
    ) -> Response:
        found = await manager.counts(actor=actor, kind=kind, tenant=tenant)
        return _json({"counts": {status.value: count for status, count in found.items()}})

    @router.get(
        "/jobs/{job_id}", response_model=Job, responses=_errors(403, 404, 422, 503), summary="Get a job"
    )
    async def get_job(job_id: str, actor: ActorDep) -> Response:
        return _json(job_to_json(await manager.get(job_id, actor=actor)))

    @router.post(
        "/jobs/{job_id}/cancel",
        dependencies=sized("cancel"),
        response_model=Job,
        responses=_errors(403, 404, 409, 413, 422, 503),
        summary="Cancel a job",
    )
    async def cancel_job(
        job_id: str, actor: ActorDep, body: Annotated[CancelJob | None, Body()] = None
    ) -> Response:
        reason = None if body is None else body.reason
        return _json(job_to_json(await manager.cancel(job_id, actor=actor, reason=reason)))

    @router.post(
        "/jobs/{job_id}/retry",
        dependencies=sized("retry"),
        response_model=Job,
        responses=_errors(403, 404, 409, 413, 422, 503),
        summary="Retry a failed or cancelled job",
    )
    async def retry_job(
        job_id: str, actor: ActorDep, body: Annotated[RetryJob | None, Body()] = None
    ) -> Response:
        run_at = retry_run_at(None if body is None else body.model_dump(exclude_unset=True))
        return _json(job_to_json(await manager.retry(job_id, actor=actor, run_at=run_at)))

    @router.delete(
        "/jobs/{job_id}",
        status_code=204,
        response_class=Response,
        responses=_errors(403, 404, 409, 422, 503),
        summary="Delete a finished job",
    )
    async def delete_job(job_id: str, actor: ActorDep) -> Response:
        await manager.delete(job_id, actor=actor)
        return Response(status_code=204)

    @router.patch(
        "/jobs/{job_id}/priority",
        dependencies=sized("priority")[1:],  # PATCH needs a preflight: only the size check
        response_model=PriorityChange,
        responses=_errors(403, 404, 409, 413, 422, 503),
        summary="Change a pending job's priority",
    )
    async def set_priority(job_id: str, body: SetPriority, actor: ActorDep) -> Response:
        job, position = await manager.set_priority(job_id, body.priority, actor=actor)
        return _json({"job": job_to_json(job), "position": position})

    @router.get(
        "/jobs/{job_id}/position",
        response_model=Position,
        responses=_errors(403, 404, 422, 503),
        summary="A job's place in the queue",
    )
    async def position(job_id: str, actor: ActorDep) -> Response:
        return _json({"position": await manager.position(job_id, actor=actor)})

    @router.get(
        "/jobs/{job_id}/artifacts",
        response_model=ArtifactList,
        responses=_errors(403, 404, 422, 503),
        summary="List a job's artifacts",
    )
    async def list_artifacts(job_id: str, actor: ActorDep) -> Response:
        return _json({"items": await manager.artifacts(job_id, actor=actor)})

    @router.get(
        "/jobs/{job_id}/artifacts/{name:jobkit_artifact}",
        response_class=Response,
        responses={
            200: {
                "description": "The artifact's bytes.",
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            },
            **_errors(403, 404, 422, 503),
        },
        summary="Download an artifact",
    )
    async def read_artifact(job_id: str, name: str, actor: ActorDep) -> Response:
        data = await manager.read_artifact(job_id, name, actor=actor)
        return Response(data, media_type="application/octet-stream")

    @router.delete(
        "/jobs/{job_id}/artifacts/{name:jobkit_artifact}",
        status_code=204,
        response_class=Response,
        responses=_errors(403, 404, 409, 422, 503),
        summary="Delete an artifact",
    )
    async def delete_artifact(job_id: str, name: str, actor: ActorDep) -> Response:
        await manager.delete_artifact(job_id, name, actor=actor)
        return Response(status_code=204)

    def known_kinds() -> frozenset[str]:
        return manager.kinds | manager.declared

    @router.get("/kinds", response_model=KindList, responses=_errors(403, 422, 503), summary="List kinds")
    async def list_kinds(actor: ActorDep) -> Response:
        return _json(kinds_to_json(known_kinds(), await manager.paused(actor=actor)))

    async def set_paused(kind: str, actor: Actor | None, paused: bool) -> Response:
        if paused:
            await manager.pause(kind, actor=actor)
        else:
            await manager.resume(kind, actor=actor)
        return _json({"kind": kind, "paused": paused})

    @router.post(
        "/kinds/{kind}/pause",
        dependencies=sized("kind"),
        response_model=Kind,
        responses=_errors(403, 413, 422, 503),
        summary="Stop starting jobs of a kind (admins)",
    )
    async def pause_kind(kind: str, actor: ActorDep) -> Response:
        return await set_paused(kind, actor, True)

    @router.post(
        "/kinds/{kind}/resume",
        dependencies=sized("kind"),
        response_model=Kind,
        responses=_errors(403, 413, 422, 503),
        summary="Start jobs of a paused kind again (admins)",
    )
    async def resume_kind(kind: str, actor: ActorDep) -> Response:
        return await set_paused(kind, actor, False)

    @router.get(
        "/schedules", response_model=ScheduleList, responses=_errors(403, 422, 503), summary="List schedules"
    )
    async def list_schedules(actor: ActorDep) -> Response:
        items = await manager.schedules(actor=actor)
        return _json({"items": [schedule_to_json(item) for item in items]})

    @router.post(
        "/schedules",
        dependencies=sized("schedule"),
        status_code=201,
        response_model=Schedule,
        responses=_errors(403, 413, 422, 503),
        summary="Create or replace a schedule (admins)",
    )
    async def create_schedule(body: CreateSchedule, actor: ActorDep) -> Response:
        arguments = schedule_arguments(body.model_dump(exclude_unset=True))
        return _json(schedule_to_json(await manager.schedule(actor=actor, **arguments)), 201)

    @router.delete(
        "/schedules/{name:jobkit_name}",
        status_code=204,
        response_class=Response,
        responses=_errors(403, 404, 422, 503),
        summary="Remove a schedule (admins)",
    )
    async def delete_schedule(name: str, actor: ActorDep) -> Response:
        await manager.unschedule(name, actor=actor)
        return Response(status_code=204)

    @router.get(
        "/audit", response_model=AuditList, responses=_errors(403, 422, 503), summary="The audit trail"
    )
    async def audit(
        actor: ActorDep,
        job_id: Annotated[
            str | None, Query(description="Only the records of this job (which may be long deleted).")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000, description="Most records, newest first.")] = 100,
    ) -> Response:
        records = await manager.audit(job_id, limit, actor=actor)
        return _json({"items": [audit_to_json(record) for record in records]})

    @router.get("/me", responses=_errors(422), summary="Who the server thinks is asking")
    async def me(actor: ActorDep) -> Response:
        return _json(me_to_json(actor))

    @router.get(
        "/events",
        response_class=Response,
        responses={
            200: {
                "description": (
                    "Server-sent events: `event: <type>` and `data: <JobEvent JSON>` "
                    "(type, job_id, tenant, status, at, data), only of the actor's tenant."
                ),
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            **_errors(403, 404, 422, 503),
        },
        summary="Live job events",
    )
    async def events(
        actor: ActorDep,
        job_id: Annotated[str | None, Query(description="Only this job's events.")] = None,
    ) -> Response:
        subscription = manager.subscribe(actor=actor, job_id=job_id)
        stream = await subscription.__aenter__()
        drain = _DRAINS.get(manager)
        return _EventStreamResponse(subscription, stream, heartbeat, None if drain is None else drain.event)

    return router


def lifespan(manager: JobManager) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """A lifespan for ``FastAPI(lifespan=lifespan(jobs))``: the manager runs (``async with``)
    for as long as the app does.

    It also ends the event streams of ``job_router(jobs)`` as soon as the server is told to
    stop (SIGINT or SIGTERM, caught by uvicorn, hypercorn or any server that handles them
    in the main thread): a server waits for open responses before it shuts the app down,
    and an event stream would otherwise last until the manager stops — which comes only
    after. Running jobs then go back to ``pending`` when the manager stops. Inside your own
    lifespan: ``async with lifespan(jobs)(app): yield``.
    """

    @asynccontextmanager
    async def run(app: Any) -> AsyncIterator[None]:
        async with manager, _streams_end_on_signals(manager):
            yield

    return run


class _Drain:
    """Ends the event streams of one running manager: ``event`` is set once a byte arrives
    on ``sender`` (a signal handler, or :func:`end_event_streams` from any thread)."""

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.receiver, self.sender = socket.socketpair()
        self.sender.setblocking(False)

    def trip(self) -> None:
        with suppress(OSError):  # closed (the app stopped) or full (tripped already)
            self.sender.send(b"\0")


#: The drain of each manager that runs under :func:`lifespan`.
_DRAINS: weakref.WeakKeyDictionary[JobManager, _Drain] = weakref.WeakKeyDictionary()
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: anyio 4.7 renamed wait_socket_readable to wait_readable.
_wait_readable: Callable[[socket.socket], Any] = getattr(anyio, "wait_readable", None) or (
    anyio.wait_socket_readable
)


def end_event_streams(manager: JobManager) -> None:
    """End every open ``GET /events`` stream of ``manager``'s routers now; safe from any
    thread. :func:`lifespan` does it by itself on SIGINT and SIGTERM: call this when you stop
    a server some other way (``server.should_exit = True`` from another thread, say), so it
    need not wait for the streams' clients. Does nothing unless the manager runs under
    :func:`lifespan`."""
    drain = _DRAINS.get(manager)
    if drain is not None:
        drain.trip()


@asynccontextmanager
async def _streams_end_on_signals(manager: JobManager) -> AsyncIterator[None]:
    """Trip the manager's drain when SIGINT or SIGTERM arrives, then let the signal do what
    it did before (the server's own handler runs as ever). The handler only writes a byte
    to a socket, which a task here waits for: safe on any event loop."""
    drain = _DRAINS[manager] = _Drain()
    previous: dict[int, Any] = {}

    def on_signal(signum: int, frame: FrameType | None) -> Any:
        drain.trip()
        handler = previous.get(signum)
        if callable(handler):
            return handler(signum, frame)
        return None

    try:
        if threading.current_thread() is threading.main_thread():
            for signum in _STOP_SIGNALS:
                handler = signal.getsignal(signum)
                if callable(handler):  # a server (or Python's SIGINT) handles it: add to that
                    previous[signum] = handler
                    signal.signal(signum, on_signal)
        async with anyio.create_task_group() as tg:

            async def set_when_tripped() -> None:
                await _wait_readable(drain.receiver)
                drain.event.set()

            tg.start_soon(set_when_tripped)
            try:
                yield
            finally:
                drain.event.set()
                tg.cancel_scope.cancel()
    finally:
        for number, handler in previous.items():
            if signal.getsignal(number) is on_signal:
                signal.signal(number, handler)
        if _DRAINS.get(manager) is drain:
            del _DRAINS[manager]
        drain.receiver.close()
        drain.sender.close()


# The console page is its own module; re-exported here, where the contract names it.
from ._console import console_router as console_router  # noqa: E402
