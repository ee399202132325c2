"""JobClient: the management methods of JobManager over a jobkit REST API (httpx)."""

from __future__ import annotations

import builtins
import json
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any
from urllib.parse import quote

import anyio
import httpx
from httpx_sse import EventSource, ServerSentEvent

from .._errors import BackendError, InvalidInput, JobkitError, JobNotFound
from .._records import (
    TERMINAL,
    Actor,
    AuditRecord,
    EventType,
    Job,
    JobEvent,
    JobStatus,
    Page,
    Retry,
    Schedule,
)
from .._validate import MIN_ID_PREFIX, check_id_prefix, check_statuses
from ._decode import (
    NotSupported,
    actor_from_json,
    audit_from_json,
    error_from_response,
    event_from_json,
    job_from_json,
    schedule_from_json,
)

__all__ = ["DEFAULT_BUFFER", "JobClient"]

#: The buffer of a server-side subscription (``GET /events`` has no parameter for it).
DEFAULT_BUFFER = 1000
#: Sent on every request: the web integrations refuse a bodiless POST that a foreign web
#: page could send, unless it carries this header (or a JSON content type).
_CLIENT_HEADERS = {"X-Requested-With": "jobkit-client", "Accept": "application/json"}
#: Event types after which a job does not change any more (deleted: it is gone).
_FINAL_EVENTS = frozenset({EventType.COMPLETED, EventType.FAILED, EventType.CANCELLED, EventType.DELETED})


def _segment(value: str) -> str:
    """``value`` as one path segment: every reserved character quoted, dots too (so a name
    such as ``..`` reaches the server, which rejects it, instead of being resolved away)."""
    return quote(value, safe="").replace(".", "%2E")


def _seconds(value: timedelta | float | None, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{name} must be a number of seconds or a timedelta, got {value!r}.")
    return float(value)


def _iso(value: datetime | None, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidInput(f"{name} must be a datetime, got {type(value).__name__}.")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(f"{name} must be timezone-aware (a naive datetime is ambiguous).")
    return value.astimezone(UTC).isoformat()


def _retry_json(retry: Retry | None) -> dict[str, Any] | None:
    if retry is None:
        return None
    if not isinstance(retry, Retry):
        raise InvalidInput("retry must be a jobkit.Retry or None.")
    if retry.names != frozenset({"builtins.Exception"}):
        raise NotSupported(
            "Over HTTP a Retry covers every Exception: the REST API takes no `on` classes. "
            "Give Retry(on=(Exception,)), or submit in the process that runs the job."
        )
    body = retry.to_json()
    del body["on"]
    return body


def _no_deleted(include_deleted: bool) -> None:
    if include_deleted:
        raise NotSupported(
            "include_deleted is not available over HTTP: the REST API serves no soft-deleted "
            "jobs. Read them with a JobManager on the store (or `jobkit --store URL`)."
        )


def _encode(body: Any) -> bytes:
    try:
        return json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"The request is not JSON: {exc}.") from None
    except RecursionError:
        raise InvalidInput("The request is nested too deeply to send as JSON.") from None


class JobClient:
    """The management methods of :class:`~jobkit.JobManager` against a jobkit REST API
    (the FastAPI router or the Flask blueprint), with the same parameters — except
    ``actor``: the server decides who is asking, from the request (send its credentials
    in ``headers``) — the same return types and the same errors, built from the error body.

    Use it as ``async with JobClient("https://host/api/v1") as jobs:``; it runs on asyncio
    and trio.

    :param base_url: where the job router is mounted, e.g. ``https://example.com/api/v1``.
    :param headers: sent with every request (``Authorization``, cookies, ...).
    :param timeout: seconds for each request (connecting, reading an answer; an event
        stream waits for events as long as it is open).

    What the REST API does not offer raises :class:`NotSupported` before anything is sent:
    ``include_deleted=True``, a :class:`~jobkit.Retry` with ``on``
    classes, a ``buffer`` for :meth:`subscribe`.
    """

    def __init__(
        self, base_url: str, *, headers: Mapping[str, str] | None = None, timeout: float = 30.0
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise InvalidInput(f"base_url must be an http:// or https:// URL, got {base_url!r}.")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
            raise InvalidInput(f"timeout must be a positive number of seconds, got {timeout!r}.")
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self._headers = {**_CLIENT_HEADERS, **dict(headers or {})}
        self._http: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"JobClient({self.base_url!r})"

    async def __aenter__(self) -> JobClient:
        self._http = httpx.AsyncClient(
            base_url=self.base_url + "/", headers=self._headers, timeout=self.timeout
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        http, self._http = self._http, None
        if http is not None:
            with anyio.CancelScope(shield=True):
                await http.aclose()

    # -- plumbing ----------------------------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            raise JobkitError(
                "The JobClient is not open: use it inside `async with JobClient(url) as jobs:`."
            )
        return self._http

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Any = None,
        headers: Mapping[str, str] | None = None,
        job_id: str | None = None,
        name: str | None = None,
    ) -> httpx.Response:
        http = self._client()
        sent = dict(headers or {})
        content = None
        if body is not None:
            content = _encode(body)
            sent["Content-Type"] = "application/json"
        try:
            response = await http.request(method, path, content=content, params=params, headers=sent)
        except httpx.TransportError as exc:
            raise BackendError(
                f"Cannot reach {self.base_url} ({method} {path}): {exc or type(exc).__name__}."
            ) from exc
        if response.status_code >= 400:
            raise self._error(response, f"{method} /{path}", job_id=job_id, name=name)
        return response

    @staticmethod
    def _error(response: httpx.Response, what: str, *, job_id: str | None, name: str | None) -> JobkitError:
        try:
            body = response.json()
        except ValueError:
            body = None
        return error_from_response(response.status_code, body, what=what, job_id=job_id, name=name)

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise BackendError(f"{method} /{path}: the server did not answer with JSON.") from None

    @staticmethod
    def _job_path(job_id: str, *rest: str) -> str:
        if not isinstance(job_id, str) or not job_id:
            raise InvalidInput(f"A job id must be a non-empty string, got {job_id!r}.")
        return "/".join(("jobs", _segment(job_id), *rest))

    # -- jobs --------------------------------------------------------------------------

    async def submit(
        self,
        kind: str,
        payload: Any = None,
        *,
        priority: int = 0,
        ttl: timedelta | float | None = None,
        timeout: timedelta | float | None = None,
        max_attempts: int = 1,
        labels: Mapping[str, str] | None = None,
        run_at: datetime | None = None,
        delay: timedelta | float | None = None,
        retry: Retry | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """See :meth:`~jobkit.JobManager.submit` (``POST /jobs``)."""
        job, _ = await self.submit_once(
            kind, payload, priority=priority, ttl=ttl, timeout=timeout, max_attempts=max_attempts,
            labels=labels, run_at=run_at, delay=delay, retry=retry, idempotency_key=idempotency_key,
        )  # fmt: skip
        return job

    async def submit_once(
        self,
        kind: str,
        payload: Any = None,
        *,
        priority: int = 0,
        ttl: timedelta | float | None = None,
        timeout: timedelta | float | None = None,
        max_attempts: int = 1,
        labels: Mapping[str, str] | None = None,
        run_at: datetime | None = None,
        delay: timedelta | float | None = None,
        retry: Retry | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[Job, bool]:
        """See :meth:`~jobkit.JobManager.submit_once`: ``(job, True)`` when the server stored it (201),
        ``(existing job, False)`` for a taken idempotency key (200)."""
        body: dict[str, Any] = {"kind": kind, "payload": payload, "priority": priority}
        if max_attempts != 1:
            body["max_attempts"] = max_attempts
        optional = {
            "ttl": _seconds(ttl, "ttl"),
            "timeout": _seconds(timeout, "timeout"),
            "labels": None if labels is None else dict(labels),
            "run_at": _iso(run_at, "run_at"),
            "delay": _seconds(delay, "delay"),
            "retry": _retry_json(retry),
            "idempotency_key": idempotency_key,
        }
        body.update({field: value for field, value in optional.items() if value is not None})
        response = await self._request("POST", "jobs", body=body)
        return job_from_json(response.json()), response.status_code == 201

    async def get(self, job_id: str, *, include_deleted: bool = False) -> Job:
        """See :meth:`~jobkit.JobManager.get` (``GET /jobs/{id}``); ``include_deleted`` is not available."""
        _no_deleted(include_deleted)
        return job_from_json(await self._json("GET", self._job_path(job_id), job_id=job_id))

    async def list(
        self,
        *,
        status: JobStatus | str | Iterable[JobStatus | str] | None = None,
        kind: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        include_deleted: bool = False,
        tenant: str | None = None,
        id_prefix: str | None = None,
    ) -> Page:
        """See :meth:`~jobkit.JobManager.list` (``GET /jobs``); ``include_deleted`` is not available."""
        _no_deleted(include_deleted)
        params: list[tuple[str, str | int]] = [("limit", limit)]
        for value in sorted(check_statuses(status) or ()):
            params.append(("status", value.value))
        named = {"kind": kind, "cursor": cursor, "tenant": tenant, "id_prefix": id_prefix}
        params += [(name, value) for name, value in named.items() if value is not None]
        body = await self._json("GET", "jobs", params=params)
        return Page(tuple(job_from_json(item) for item in body["items"]), body.get("next_cursor"))

    async def resolve(self, id_or_prefix: str) -> str:
        """See :meth:`~jobkit.JobManager.resolve`: the full id of the job given by its id or a unique
        start of it (at least 4 hexadecimal characters), among the jobs the server lets the
        caller see (``GET /jobs?id_prefix=``, or ``GET /jobs/{id}`` for other ids).

        :raises JobNotFound: no visible job has that id or prefix.
        :raises InvalidInput: the prefix is malformed, or starts several jobs' ids.
        """
        if not isinstance(id_or_prefix, str) or not id_or_prefix:
            raise InvalidInput(f"A job id must be a non-empty string, got {id_or_prefix!r}.")
        try:
            prefix = check_id_prefix(id_or_prefix, MIN_ID_PREFIX)
        except InvalidInput as malformed:
            try:  # not an id prefix: perhaps a whole id of another shape
                return (await self.get(id_or_prefix)).id
            except JobNotFound:
                raise malformed from None
        found = (await self.list(id_prefix=prefix, limit=6)).items
        if not found:
            raise JobNotFound(id_or_prefix)
        if len(found) > 1:
            shown = ", ".join(job.id[: len(prefix) + 4] + "…" for job in found[:5])
            raise InvalidInput(
                f"The id prefix {id_or_prefix!r} starts several jobs' ids ({shown}): give more characters."
            )
        return found[0].id

    async def counts(self, *, kind: str | None = None, tenant: str | None = None) -> dict[JobStatus, int]:
        """See :meth:`~jobkit.JobManager.counts` (``GET /counts``)."""
        named = {"kind": kind, "tenant": tenant}
        params = {name: value for name, value in named.items() if value is not None}
        found = (await self._json("GET", "counts", params=params))["counts"]
        return {status: int(found.get(status.value, 0)) for status in JobStatus}

    async def cancel(self, job_id: str, *, reason: str | None = None) -> Job:
        """See :meth:`~jobkit.JobManager.cancel` (``POST /jobs/{id}/cancel``)."""
        body = None if reason is None else {"reason": reason}
        path = self._job_path(job_id, "cancel")
        return job_from_json(await self._json("POST", path, body=body, job_id=job_id))

    async def delete(self, job_id: str) -> None:
        """See :meth:`~jobkit.JobManager.delete` (``DELETE /jobs/{id}``)."""
        await self._request("DELETE", self._job_path(job_id), job_id=job_id)

    async def artifacts(self, job_id: str, *, include_deleted: bool = False) -> builtins.list[str]:
        """See :meth:`~jobkit.JobManager.artifacts` (``GET /jobs/{id}/artifacts``)."""
        _no_deleted(include_deleted)
        body = await self._json("GET", self._job_path(job_id, "artifacts"), job_id=job_id)
        return [str(name) for name in body["items"]]

    def _artifact_path(self, job_id: str, name: str) -> str:
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"An artifact name must be a non-empty string, got {name!r}.")
        return self._job_path(job_id, "artifacts", _segment(name))

    async def read_artifact(self, job_id: str, name: str, *, include_deleted: bool = False) -> bytes:
        """See :meth:`~jobkit.JobManager.read_artifact` (``GET /jobs/{id}/artifacts/{name}``)."""
        _no_deleted(include_deleted)
        path = self._artifact_path(job_id, name)
        response = await self._request("GET", path, headers={"Accept": "*/*"}, job_id=job_id, name=name)
        return response.content

    async def delete_artifact(self, job_id: str, name: str) -> None:
        """See :meth:`~jobkit.JobManager.delete_artifact` (``DELETE /jobs/{id}/artifacts/{name}``)."""
        await self._request("DELETE", self._artifact_path(job_id, name), job_id=job_id, name=name)

    async def set_priority(self, job_id: str, priority: int) -> tuple[Job, int]:
        """See :meth:`~jobkit.JobManager.set_priority` (``PATCH /jobs/{id}/priority``)."""
        path = self._job_path(job_id, "priority")
        body = await self._json("PATCH", path, body={"priority": priority}, job_id=job_id)
        return job_from_json(body["job"]), int(body["position"])

    async def position(self, job_id: str) -> int | None:
        """See :meth:`~jobkit.JobManager.position` (``GET /jobs/{id}/position``)."""
        body = await self._json("GET", self._job_path(job_id, "position"), job_id=job_id)
        position = body["position"]
        return None if position is None else int(position)

    async def wait(self, job_id: str, *, timeout: timedelta | float | None = None) -> Job:
        """See :meth:`~jobkit.JobManager.wait`: follows the job's event stream (no polling) and reads
        the job once it has finished. The stream is open before the job is first read, so a
        finish at any moment is seen.

        :raises TimeoutError: it did not finish within ``timeout`` seconds.
        :raises JobNotFound: it does not exist, or was deleted while waiting.
        """
        limit = _seconds(timeout, "timeout")
        with anyio.fail_after(limit):
            async with self.subscribe(job_id=job_id) as events:
                job = await self.get(job_id)
                if job.is_terminal:
                    return job
                async for event in events:
                    if event.type is EventType.DELETED:
                        raise JobNotFound(job_id, f"Job {job_id!r} was deleted while waiting for it.")
                    if event.type in _FINAL_EVENTS or event.type is EventType.OVERFLOW:
                        # Finished (or events were missed): the stored job tells.
                        job = await self.get(job_id)
                        if job.status in TERMINAL:
                            return job
        raise BackendError(f"The event stream of {self.base_url} ended before job {job_id} finished.")

    async def retry(self, job_id: str, *, run_at: datetime | None = None) -> Job:
        """See :meth:`~jobkit.JobManager.retry` (``POST /jobs/{id}/retry``)."""
        when = _iso(run_at, "run_at")
        body = None if when is None else {"run_at": when}
        path = self._job_path(job_id, "retry")
        return job_from_json(await self._json("POST", path, body=body, job_id=job_id))

    async def audit(self, job_id: str | None = None, limit: int = 100) -> builtins.list[AuditRecord]:
        """See :meth:`~jobkit.JobManager.audit` (``GET /audit``).

        :raises NotSupported: the server has no ``GET /audit`` route.
        """
        params: dict[str, str | int] = {"limit": limit}
        if job_id is not None:
            params["job_id"] = job_id
        body = await self._json("GET", "audit", params=params, job_id=job_id)
        return [audit_from_json(item) for item in body["items"]]

    # -- kinds and schedules -----------------------------------------------------------

    async def pause(self, kind: str) -> None:
        """See :meth:`~jobkit.JobManager.pause` (``POST /kinds/{kind}/pause``)."""
        await self._request("POST", f"kinds/{_segment(kind)}/pause")

    async def resume(self, kind: str) -> None:
        """See :meth:`~jobkit.JobManager.resume` (``POST /kinds/{kind}/resume``)."""
        await self._request("POST", f"kinds/{_segment(kind)}/resume")

    async def paused(self) -> frozenset[str]:
        """See :meth:`~jobkit.JobManager.paused` (``GET /kinds``)."""
        return frozenset(kind for kind, paused in (await self.known_kinds()).items() if paused)

    async def known_kinds(self) -> dict[str, bool]:
        """Every kind the server knows (its handlers and declared kinds) or that is paused,
        by name, and whether it is paused (``GET /kinds``). Not a JobManager method."""
        body = await self._json("GET", "kinds")
        return {str(item["kind"]): bool(item["paused"]) for item in body["items"]}

    async def schedule(
        self,
        name: str,
        kind: str,
        payload: Any = None,
        *,
        cron: str,
        timezone: str = "UTC",
        priority: int = 0,
    ) -> Schedule:
        """See :meth:`~jobkit.JobManager.schedule` (``POST /schedules``)."""
        body = {
            "name": name, "kind": kind, "payload": payload, "cron": cron, "timezone": timezone,
            "priority": priority,
        }  # fmt: skip
        return schedule_from_json(await self._json("POST", "schedules", body=body))

    async def unschedule(self, name: str) -> None:
        """See :meth:`~jobkit.JobManager.unschedule` (``DELETE /schedules/{name}``)."""
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"A schedule name must be a non-empty string, got {name!r}.")
        await self._request("DELETE", f"schedules/{_segment(name)}", job_id=name)

    async def schedules(self) -> builtins.list[Schedule]:
        """See :meth:`~jobkit.JobManager.schedules` (``GET /schedules``)."""
        body = await self._json("GET", "schedules")
        return [schedule_from_json(item) for item in body["items"]]

    async def me(self) -> Actor | None:
        """Who the server thinks is asking (``GET /me``); None: the trusted host."""
        return actor_from_json(await self._json("GET", "me"))

    # -- events ------------------------------------------------------------------------

    @asynccontextmanager
    async def subscribe(
        self, *, job_id: str | None = None, buffer: int = DEFAULT_BUFFER
    ) -> AsyncIterator[AsyncIterator[JobEvent]]:
        """See :meth:`~jobkit.JobManager.subscribe`: the server's live events (``GET /events``), of the
        actor's tenant, optionally of one job. The subscription is live when this is entered.

        A dropped connection is opened again (at once, then every few seconds as the server
        asks, for up to ``timeout`` seconds), with ``Last-Event-ID`` when the server gave
        event ids. A server that gives none (jobkit's) cannot resume: after a reconnect the
        stream yields an ``overflow`` event with ``data={"missed": None, "reconnected": True}``
        — events may have been missed, read the jobs again. ``buffer`` is the server's (1000).

        :raises JobNotFound: ``job_id`` does not exist (or is not visible).
        :raises BackendError: the server cannot be reached (also after a drop, once
            reconnecting failed for ``timeout`` seconds).
        """
        if buffer != DEFAULT_BUFFER:
            raise NotSupported(
                f"buffer is the server's over HTTP ({DEFAULT_BUFFER} events): GET /events takes no buffer."
            )
        if job_id is not None and (not isinstance(job_id, str) or not job_id):
            raise InvalidInput(f"A job id must be a non-empty string, got {job_id!r}.")
        stream = _EventStream(self, job_id)
        await stream.connect()
        try:
            yield stream
        finally:
            with anyio.CancelScope(shield=True):
                await stream.aclose()


async def _finish(response: httpx.Response, sse: AsyncGenerator[ServerSentEvent, None]) -> None:
    """Close an event stream so that none of the async generators beneath it (httpx_sse's,
    httpx's, httpcore's) is left suspended: the connection is closed first, then the
    outermost generator is driven until the failed read ends them all. (Closing only the
    outermost one leaves the inner ones to the garbage collector, which trio reports.)"""
    await response.aclose()
    with anyio.move_on_after(5):
        while True:
            try:
                await anext(sse)
            except (StopAsyncIteration, Exception):
                return
    await sse.aclose()


class _EventStream(AsyncIterator[JobEvent]):
    """The events of one ``GET /events`` connection, opened again when it drops."""

    def __init__(self, client: JobClient, job_id: str | None) -> None:
        self._client = client
        self._job_id = job_id
        self._stack: AsyncExitStack | None = None
        self._sse: AsyncGenerator[ServerSentEvent, None] | None = None
        self._last_id: str | None = None
        #: The server's reconnection delay (the stream's ``retry:`` field), in seconds.
        self._retry = 3.0
        self._pending: deque[JobEvent] = deque()
        self._closed = False
        self._opened_at: float | None = None
        #: Whether the current connection brought an event.
        self._heard = False

    async def connect(self) -> None:
        """Open the stream and read up to its opening frame (the subscription is then live)."""
        stack = AsyncExitStack()
        self._heard = False
        try:
            sse = await self._open(stack)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await stack.aclose()
            raise
        self._stack, self._sse = stack, sse
        self._opened_at = anyio.current_time()

    async def _open(self, stack: AsyncExitStack) -> AsyncGenerator[ServerSentEvent, None]:
        http = self._client._client()
        params = {} if self._job_id is None else {"job_id": self._job_id}
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        if self._last_id is not None:
            headers["Last-Event-ID"] = self._last_id
        try:
            # Reading waits for events: servers send heartbeats (jobkit's every 15 s), so only
            # a connection silent for a minute (or `timeout`, when longer) counts as lost.
            waiting = httpx.Timeout(self._client.timeout, read=max(self._client.timeout, 60.0))
            request = http.build_request("GET", "events", params=params, headers=headers, timeout=waiting)
            response = await http.send(request, stream=True)
            stack.push_async_callback(response.aclose)
            if response.status_code >= 400:
                await response.aread()
                raise self._client._error(response, "GET /events", job_id=self._job_id, name=None)
            sse = EventSource(response).aiter_sse()
            stack.push_async_callback(_finish, response, sse)
            first = await anext(sse, None)
        except httpx.TransportError as exc:
            raise BackendError(f"Cannot reach {self._client.base_url} (GET /events): {exc}.") from exc
        if first is None:
            raise BackendError(f"The event stream of {self._client.base_url} closed at once.")
        self._take(first)
        return sse

    def _take(self, sse: ServerSentEvent) -> None:
        """Note a frame's id and retry; queue its event (the opening frame has none)."""
        if sse.retry is not None:
            self._retry = sse.retry / 1000
        if sse.id:
            self._last_id = sse.id
        if sse.data:
            self._heard = True
            try:
                self._pending.append(event_from_json(json.loads(sse.data)))
            except (ValueError, KeyError, TypeError) as exc:
                raise BackendError(f"GET /events sent an event jobkit cannot read: {exc!r}.") from None

    async def _disconnect(self) -> None:
        stack, self._stack, self._sse = self._stack, None, None
        if stack is not None:
            with anyio.CancelScope(shield=True):
                await stack.aclose()

    async def _reconnect(self) -> None:
        await self._disconnect()
        resumed = self._last_id is not None
        # At once after a connection that brought events or lasted; after one the server
        # ended at once (it is shutting down, say), the delay it asks for: no tight loop.
        opened = self._opened_at
        lasted = opened is not None and anyio.current_time() - opened >= self._retry
        delay = 0.0 if self._heard or lasted else self._retry
        with anyio.move_on_after(self._client.timeout) as waited:
            while True:
                await anyio.sleep(delay)
                try:
                    await self.connect()
                    break
                except BackendError:
                    delay = self._retry
        if waited.cancelled_caught:
            raise BackendError(
                f"Lost the event stream of {self._client.base_url} and could not reconnect "
                f"within {self._client.timeout:g} seconds."
            )
        if not resumed:  # events between the drop and now are lost: say so, as a slow reader hears
            overflow = JobEvent(
                type=EventType.OVERFLOW,
                job_id="",
                tenant=None,
                status=None,
                at=datetime.now(UTC),
                data={"missed": None, "reconnected": True},
            )
            self._pending.appendleft(overflow)

    def __aiter__(self) -> _EventStream:
        return self

    async def __anext__(self) -> JobEvent:
        while True:
            if self._pending:
                return self._pending.popleft()
            if self._closed:
                raise StopAsyncIteration
            if self._sse is None:
                await self._reconnect()
                continue
            try:
                sse = await anext(self._sse, None)  # a stream that is never idle for long
            except httpx.TransportError:
                sse = None
            if sse is None:  # the connection dropped, or the server ended the stream
                await self._reconnect()
                continue
            self._take(sse)

    async def aclose(self) -> None:
        self._closed = True
        self._pending.clear()
        await self._disconnect()
