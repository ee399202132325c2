"""The HTTP translation both web integrations share, free of any framework.

Jobs and events become JSON values, errors become a status code and the body
``{"error": {"code": ..., "message": ...}}``, and request bodies and query strings
become manager arguments (raising :class:`~jobkit.InvalidInput` for malformed ones).
The FastAPI router and the Flask blueprint only wire these to their framework.
"""

from __future__ import annotations

import json
import queue
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from .._codec import audit_to_json, dumps, event_to_json, job_to_json, schedule_to_json
from .._errors import (
    BackendError,
    InvalidInput,
    InvalidState,
    JobkitError,
    JobNotFound,
    PermissionDenied,
    Unauthenticated,
)
from .._log import get_logger
from .._records import Actor, JobEvent, Retry
from .._validate import check_statuses

__all__ = [
    "AS_HOST",
    "BODY_LIMITS",
    "EventFrames",
    "read_body",
    "audit_arguments",
    "audit_to_json",
    "HTTP_ERROR_CODES",
    "PayloadTooLarge",
    "http_error_body",
    "check_body_size",
    "CSRF_HEADER",
    "CANCEL_FIELDS",
    "ERROR_STATUS",
    "IDEMPOTENCY_HEADER",
    "PRIORITY_FIELDS",
    "RETRY_FIELDS",
    "RETRY_POLICY_FIELDS",
    "SCHEDULE_FIELDS",
    "SSE_HEADERS",
    "SSE_HEARTBEAT",
    "SSE_OPEN",
    "SUBMIT_FIELDS",
    "cancel_reason",
    "dumps",
    "error_body",
    "error_status",
    "event_to_json",
    "job_to_json",
    "kinds_to_json",
    "me_to_json",
    "parse_run_at",
    "retry_policy",
    "retry_run_at",
    "schedule_arguments",
    "schedule_to_json",
    "check_not_cross_site",
    "resolve_actor",
    "list_arguments",
    "parse_json",
    "priority_value",
    "sse_frame",
    "submit_arguments",
    "validation_message",
]


class PayloadTooLarge(InvalidInput):
    """A request body larger than its route takes (HTTP 413); an :class:`~jobkit.InvalidInput`."""

    code = "payload_too_large"


#: The HTTP status of each error class; the first match in this order wins, so
#: ArtifactNotFound (a JobNotFound) is a 404 too. Any other JobkitError is a 503: the
#: manager is not running (not started yet, or shut down).
ERROR_STATUS: tuple[tuple[type[JobkitError], int], ...] = (
    (Unauthenticated, 401),
    (JobNotFound, 404),
    (InvalidState, 409),
    (PermissionDenied, 403),
    (PayloadTooLarge, 413),
    (InvalidInput, 422),
    (BackendError, 503),
)
_FALLBACK_STATUS = 503

#: The fields ``POST /jobs`` accepts; ``kind`` is required.
SUBMIT_FIELDS = frozenset(
    {
        "kind", "payload", "priority", "ttl", "timeout", "max_attempts", "labels", "run_at", "delay",
        "retry", "idempotency_key",
    }
)  # fmt: skip
#: The fields of the ``retry`` object of ``POST /jobs``; ``attempts`` is required. There is no
#: ``on`` over HTTP: a job submitted through the web retries every Exception.
RETRY_POLICY_FIELDS = frozenset({"attempts", "backoff", "factor", "max_backoff", "jitter"})
#: The fields ``POST /jobs/{id}/retry`` accepts (the body itself is optional).
RETRY_FIELDS = frozenset({"run_at"})
#: The fields ``POST /schedules`` accepts; ``name``, ``kind`` and ``cron`` are required.
SCHEDULE_FIELDS = frozenset({"name", "kind", "payload", "cron", "timezone", "priority"})
#: The request header that carries an idempotency key (as the body's ``idempotency_key`` does).
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: The fields ``POST /jobs/{id}/cancel`` accepts (the body itself is optional).
CANCEL_FIELDS = frozenset({"reason"})
#: The fields ``PATCH /jobs/{id}/priority`` requires.
PRIORITY_FIELDS = frozenset({"priority"})

#: Headers of a server-sent events response: never cached, never buffered by a proxy.
SSE_HEADERS: Mapping[str, str] = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
#: The first bytes of an event stream, sent once the subscription is live: the client's
#: reconnection delay (ms) and a comment a client can wait for before acting.
SSE_OPEN = b"retry: 3000\n: connected\n\n"
#: A comment sent when no event came for a while, so proxies keep the connection and a
#: server learns early that its client has gone.
SSE_HEARTBEAT = b": heartbeat\n\n"


def error_status(exc: JobkitError) -> int:
    """The HTTP status for a jobkit error."""
    for cls, status in ERROR_STATUS:
        if isinstance(exc, cls):
            return status
    return _FALLBACK_STATUS


def error_body(code: str, message: str) -> dict[str, Any]:
    """The error body every route returns: ``{"error": {"code": ..., "message": ...}}``."""
    return {"error": {"code": code, "message": message}}


def sse_frame(event: JobEvent) -> bytes:
    """One server-sent event: ``event: <type>`` and ``data: <event JSON>`` (one line)."""
    return b"event: " + event.type.value.encode() + b"\ndata: " + dumps(event_to_json(event)) + b"\n\n"


def read_body(read: Callable[[int], bytes], content_length: str | None, route: str) -> bytes:
    """A request body read through ``read(n)``, up to the route's limit: a larger one is
    refused (by its ``Content-Length`` before anything is read, else after one byte more).

    :raises PayloadTooLarge: the body is larger than the route takes.
    """
    limit = BODY_LIMITS[route]
    check_body_size(content_length, limit)
    data = read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"The request body is larger than this route takes ({limit} bytes).")
    return data


_END = object()


class EventFrames:
    """One subscription's server-sent event frames for a synchronous server (Flask under
    WSGI, Django): ``next_frame()`` gives ``SSE_OPEN`` first, then a frame per event, a
    heartbeat comment when no event came for ``heartbeat`` seconds (that is also how the
    server learns that the client went away), and None once the stream has ended.

    A helper thread, started by the first call, reads the subscription into a queue.
    ``close()`` (the server's, when the client went away) ends the subscription.
    """

    def __init__(
        self,
        subscription: AbstractContextManager[Iterator[JobEvent]],
        events: Iterator[JobEvent],
        heartbeat: float,
    ) -> None:
        self._subscription = subscription
        self._events = events
        self._heartbeat = heartbeat
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._subscribed = True
        self._closed = False

    def next_frame(self) -> bytes | None:
        """The next frame to send, or None at the end."""
        if self._closed:
            return None
        if self._thread is None:
            self._thread = threading.Thread(target=self._pump, name="jobkit-sse", daemon=True)
            self._thread.start()
            return SSE_OPEN
        try:
            item = self._queue.get(timeout=self._heartbeat)
        except queue.Empty:
            return SSE_HEARTBEAT
        if item is _END:  # the manager closed
            self.close()
            return None
        assert isinstance(item, JobEvent)
        return sse_frame(item)

    def _pump(self) -> None:
        try:
            for event in self._events:
                self._queue.put(event)
        except Exception as exc:  # the manager's loop is gone: the stream just ends
            get_logger("jobkit").debug("event stream ended", error=repr(exc))
        finally:
            # The stream ended (the manager closed, or close() below): leave the
            # subscription at once, while the manager's event loop still takes calls.
            self._unsubscribe()
            self._queue.put(_END)

    def _unsubscribe(self) -> None:
        with self._lock:
            if not self._subscribed:
                return
            self._subscribed = False
        try:
            self._subscription.__exit__(None, None, None)
        except RuntimeError as exc:  # the manager's portal already stopped
            get_logger("jobkit").debug("event subscription closed late", error=repr(exc))

    def close(self) -> None:
        """End the stream and its subscription (safe to call twice)."""
        self._closed = True
        self._unsubscribe()


def parse_json(raw: bytes, *, required: bool) -> Any:
    """Decode a request body; an empty body is None, allowed only when not ``required``.

    :raises InvalidInput: the body is not UTF-8 JSON, or is missing.
    """
    if not raw.strip():
        if required:
            raise InvalidInput("The request needs a JSON body.")
        return None
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput(f"The request body is not valid JSON: {exc}.") from None
    except RecursionError:
        raise InvalidInput("The request body is nested too deeply.") from None


#: The largest request body each state-changing route reads, in bytes (a job's payload is
#: at most 1 MiB of JSON; a cancel reason or a priority much less).
BODY_LIMITS: Mapping[str, int] = {
    "submit": 1 << 20,
    "cancel": 64 << 10,
    "priority": 4 << 10,
    "retry": 4 << 10,
    "kind": 4 << 10,
    "schedule": 1 << 20,
}


def check_body_size(content_length: str | None, limit: int) -> None:
    """Refuse a body the client announces as larger than ``limit`` before reading it.

    :raises PayloadTooLarge: it is larger.
    :raises InvalidInput: the header is not a number.
    """
    if content_length is None:
        return
    try:
        size = int(content_length)
    except ValueError:
        raise InvalidInput("The Content-Length header is not a number.") from None
    if size > limit:
        raise PayloadTooLarge(f"The request body is {size} bytes; this route takes at most {limit}.")


def _object(body: Any, fields: frozenset[str], what: str) -> Mapping[str, Any]:
    if not isinstance(body, dict):
        raise InvalidInput(f"The body of {what} must be a JSON object.")
    unknown = sorted(set(body) - fields)
    if unknown:
        allowed = ", ".join(sorted(fields))
        raise InvalidInput(f"Unknown field(s) {', '.join(unknown)} in {what}; allowed: {allowed}.")
    return body


def submit_arguments(body: Any, header_key: str | None = None) -> dict[str, Any]:
    """The arguments of :meth:`JobManager.submit_once` from a ``POST /jobs`` body and its
    ``Idempotency-Key`` header (``header_key``).

    Only the shape is checked here (an object, known fields, ``kind`` present), ``run_at``
    is read as ISO 8601 and ``retry`` becomes a :class:`~jobkit.Retry`; the manager
    validates every other value and raises InvalidInput with the details.
    """
    fields = _object(body, SUBMIT_FIELDS, "POST /jobs")
    if "kind" not in fields:
        raise InvalidInput("The field 'kind' is required.")
    arguments = dict(fields)
    for name in ("priority", "max_attempts"):
        if arguments.get(name, 0) is None:
            raise InvalidInput(f"The field {name!r} must be an integer, got null.")
    if "run_at" in arguments:
        arguments["run_at"] = parse_run_at(arguments["run_at"])
    if "retry" in arguments:
        arguments["retry"] = retry_policy(arguments["retry"])
    key = arguments.get("idempotency_key")
    if header_key is not None:
        if key is not None and key != header_key:
            raise InvalidInput(
                f"The {IDEMPOTENCY_HEADER} header and the field 'idempotency_key' differ: give one "
                "of them (or the same key in both)."
            )
        arguments["idempotency_key"] = header_key
    return arguments


#: ISO 8601 as RFC 3339 writes it: a date, ``T``, a time with seconds, an optional fraction
#: and (required, checked after) a UTC offset.
_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?P<offset>[Zz]|[+-]\d{2}:\d{2})?", re.ASCII
)


def parse_run_at(value: Any) -> datetime | None:
    """A ``run_at`` from JSON: None, or an ISO 8601 date and time with its UTC offset
    (``2030-01-01T09:00:00+01:00``, ``...Z``); the manager checks its range.

    :raises InvalidInput: not a string, not such a date and time, or no offset (a time
        without one is ambiguous).
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"The field 'run_at' must be an ISO 8601 string or null, got {json.dumps(value)}.")
    found = _DATETIME.fullmatch(value)
    if found is None:
        raise InvalidInput(
            f"The field 'run_at' must be an ISO 8601 date and time such as "
            f"'2030-01-01T09:00:00Z', got {value[:60]!r}."
        )
    if found["offset"] is None:
        raise InvalidInput(
            f"The field 'run_at' needs a UTC offset ('Z' or e.g. '+01:00'), got {value!r}: a time "
            "without one is ambiguous."
        )
    try:
        return datetime.fromisoformat(value.upper())
    except ValueError as exc:
        raise InvalidInput(f"The field 'run_at' is not a valid date and time ({exc}).") from None


def retry_policy(value: Any) -> Retry | None:
    """The :class:`~jobkit.Retry` of a ``retry`` object ``{"attempts", "backoff"?, "factor"?,
    "max_backoff"?, "jitter"?}`` (durations in seconds), or None for null. It retries every
    Exception.

    :raises InvalidInput: not an object, unknown fields, ``attempts`` missing, a value that
        is not a number or is out of range.
    """
    if value is None:
        return None
    fields = _object(value, RETRY_POLICY_FIELDS, "the field 'retry'")
    if "attempts" not in fields:
        raise InvalidInput("The field 'retry.attempts' is required.")
    for name, number in fields.items():
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise InvalidInput(f"The field 'retry.{name}' must be a number, got {json.dumps(number)}.")
    return Retry(**fields)


def retry_run_at(body: Any) -> datetime | None:
    """The ``run_at`` of a manual retry from its optional body ``{"run_at": str | null}``."""
    if body is None:
        return None
    return parse_run_at(_object(body, RETRY_FIELDS, "a retry").get("run_at"))


def schedule_arguments(body: Any) -> dict[str, Any]:
    """The arguments of :meth:`JobManager.schedule` from a ``POST /schedules`` body; the
    manager validates the values (cron, time zone, kind, ...)."""
    fields = _object(body, SCHEDULE_FIELDS, "POST /schedules")
    missing = [name for name in ("name", "kind", "cron") if name not in fields]
    if missing:
        raise InvalidInput(f"The field(s) {', '.join(missing)} are required.")
    arguments = dict(fields)
    for name in ("timezone", "priority"):
        if name in arguments and arguments[name] is None:
            raise InvalidInput(f"The field {name!r} cannot be null.")
    return arguments


def kinds_to_json(known: Iterable[str], paused: Iterable[str]) -> dict[str, Any]:
    """The body of ``GET /kinds``: every kind the manager knows or that is paused, by name."""
    stopped = frozenset(paused)
    return {"items": [{"kind": kind, "paused": kind in stopped} for kind in sorted({*known, *stopped})]}


def cancel_reason(body: Any) -> str | None:
    """The reason of a cancel from its optional body ``{"reason": str | null}``."""
    if body is None:
        return None
    reason = _object(body, CANCEL_FIELDS, "a cancel").get("reason")
    if reason is not None and not isinstance(reason, str):
        raise InvalidInput("The field 'reason' must be a string or null.")
    return reason


def priority_value(body: Any) -> int:
    """The new priority from a body ``{"priority": int}``; the manager checks its range."""
    fields = _object(body, PRIORITY_FIELDS, "a priority change")
    if "priority" not in fields:
        raise InvalidInput("The field 'priority' is required.")
    value = fields["priority"]
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"The field 'priority' must be an integer, got {json.dumps(value)}.")
    return value


def _integer(name: str, text: str) -> int:
    stripped = text.strip()
    digits = stripped[1:] if stripped[:1] in ("-", "+") else stripped
    if not digits.isascii() or not digits.isdigit() or len(digits) > 18:
        raise InvalidInput(f"The query parameter {name!r} must be an integer, got {text!r}.")
    return int(stripped)


def list_arguments(
    status: Sequence[str],
    kind: str | None,
    limit: str | None,
    cursor: str | None,
    tenant: str | None = None,
    id_prefix: str | None = None,
) -> dict[str, Any]:
    """The arguments of :meth:`JobManager.list` from the query of ``GET /jobs``.

    ``status`` holds every ``status`` parameter (it may repeat). Values are passed on as
    given, so an empty ``kind`` or ``cursor`` is rejected like any other bad value.
    """
    return {
        "status": check_statuses(list(status)) if status else None,
        "kind": kind,
        "limit": 50 if limit is None else _integer("limit", limit),
        "cursor": cursor,
        "tenant": tenant,
        "id_prefix": id_prefix,
    }


def audit_arguments(job_id: str | None, limit: str | None) -> dict[str, Any]:
    """The arguments of :meth:`JobManager.audit` from the query of ``GET /audit``."""
    return {"job_id": job_id, "limit": 100 if limit is None else _integer("limit", limit)}


def validation_message(errors: Sequence[Mapping[str, Any]]) -> str:
    """One readable line from a list of validation errors (``loc`` and ``msg`` each)."""
    parts = []
    for error in errors[:5]:
        location = ".".join(str(part) for part in error.get("loc", ()))
        message = str(error.get("msg", "invalid value"))
        parts.append(f"{location}: {message}" if location else message)
    if len(errors) > 5:
        parts.append(f"and {len(errors) - 5} more")
    return "Invalid request: " + "; ".join(parts) + "."


class _AsHost:
    """The type of :data:`AS_HOST`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "AS_HOST"


#: What an actor dependency returns for a request that really acts as the trusted host
#: (an internal job, a health check behind your own auth). Explicit, so it can be grepped:
#: a dependency that returns None means "nobody signed in" and gets 401.
AS_HOST = _AsHost()


def resolve_actor(found: object) -> Actor | None:
    """The manager's ``actor`` for what the host's actor dependency returned.

    :raises Unauthenticated: it returned None (nobody signed in).
    """
    if found is AS_HOST:
        return None
    if isinstance(found, Actor):
        return found
    if found is None:
        raise Unauthenticated("Sign in first: this request has no identity.")
    raise TypeError(
        f"The actor dependency must return a jobkit.Actor, AS_HOST or None, got {type(found).__name__}."
    )


def me_to_json(actor: Actor | None) -> dict[str, Any]:
    """The body of ``GET /me``: who the server thinks is asking."""
    if actor is None:
        return {"id": None, "tenant": None, "roles": [], "host": True}
    return {"id": actor.id, "tenant": actor.tenant, "roles": sorted(actor.roles), "host": False}


#: The header a client may send instead of a JSON content type on a POST without a body.
CSRF_HEADER = "X-Requested-With"


def check_not_cross_site(content_type: str | None, headers: Iterable[str]) -> None:
    """Refuse a state-changing POST that another web page could send without a CORS
    preflight (no body, a form, ``text/plain``): it must say ``Content-Type:
    application/json`` or carry an ``X-Requested-With`` header, which no foreign page can
    send with the user's cookies.

    :raises InvalidInput: neither is there.
    """
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == "application/json" or CSRF_HEADER.lower() in (name.lower() for name in headers):
        return
    raise InvalidInput(
        "Send this request with Content-Type: application/json (an empty body is fine) or an "
        f"{CSRF_HEADER} header: a request without either could come from another web site."
    )


# -- the framework's own errors ----------------------------------------------------------

#: The code in the error body of an HTTP error that the web framework (or the host's code,
#: with its framework's ``HTTPException``) produced; any other status is ``http_<status>``.
HTTP_ERROR_CODES: Mapping[int, str] = {
    400: "invalid_input",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


def http_error_body(
    status: int, detail: str | None, method: str, path: str, allowed: Iterable[str] = ()
) -> dict[str, Any]:
    """The error body for an HTTP error of the framework: ``detail`` is the message the
    raiser gave (None: the framework's default, replaced by a sentence naming the route)."""
    code = HTTP_ERROR_CODES.get(status, f"http_{status}")
    if detail:
        message = detail
    elif status == 401:
        message = "Sign in first: this request has no identity."
    elif status == 403:
        message = "This request is not allowed."
    elif status == 404:
        message = f"There is no route {method} {path}."
    elif status == 405:
        methods = ", ".join(sorted(set(allowed)))
        message = f"{path} does not take {method}" + (f"; it takes {methods}." if methods else ".")
    elif status == 413:
        message = "The request body is larger than this route takes."
    elif status == 500:
        message = "The server failed to answer this request; the host's log has the details."
    else:
        message = f"The request failed with HTTP status {status}."
    return error_body(code, message)
