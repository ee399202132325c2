"""``jobkit_urls()``: the job REST routes and the console as Django views.

The routes, bodies, status codes and error bodies are those of
:func:`jobkit.integrations.fastapi.job_router` (the request and response translation is
:mod:`jobkit.integrations._http`'s, shared with FastAPI and Flask), over the process's
:class:`~jobkit.BlockingJobManager` of a :class:`JobkitBackend`. The views are plain sync
views: under WSGI they run in the server's threads, under ASGI Django runs them in its
thread pool; ``GET /events`` streams with a sync iterator under WSGI and an async one
under ASGI.

CSRF: the views are exempt from Django's ``CsrfViewMiddleware`` (API clients carry no CSRF
token) and refuse instead every state-changing POST that another site could send without
a CORS preflight — the defence of the FastAPI and Flask routes: a POST must say
``Content-Type: application/json`` or carry an ``X-Requested-With`` header.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import URLPattern, path, re_path
from django.views.decorators.csrf import csrf_exempt

from ..._blocking import BlockingJobManager
from ..._errors import JobkitError, Unauthenticated
from ..._log import get_logger
from ..._records import Actor
from .._http import (
    IDEMPOTENCY_HEADER,
    SSE_HEADERS,
    EventFrames,
    audit_arguments,
    audit_to_json,
    cancel_reason,
    check_not_cross_site,
    dumps,
    error_body,
    error_status,
    http_error_body,
    job_to_json,
    kinds_to_json,
    list_arguments,
    me_to_json,
    parse_json,
    priority_value,
    read_body,
    resolve_actor,
    retry_run_at,
    schedule_arguments,
    schedule_to_json,
    submit_arguments,
)
from ._compat import task_backends

__all__ = ["ADMIN_ROLE", "default_actor", "jobkit_urls"]

log = get_logger("jobkit")

#: The role jobkit's admin actions need; :func:`default_actor` gives it to staff and superusers.
ADMIN_ROLE = "admin"
#: Seconds without an event after which ``GET /events`` sends a heartbeat comment.
DEFAULT_HEARTBEAT = 15.0

View = Callable[..., HttpResponse]


def default_actor(request: HttpRequest) -> Actor | None:
    """The actor of a request from ``request.user`` (Django's ``AuthenticationMiddleware``):
    None for an anonymous user (401), else ``Actor(id=str(user.pk))`` with the role
    ``admin`` for staff and superusers. No tenant: give :func:`jobkit_urls` your own
    ``actor`` hook to bind users to tenants (``Actor(id, tenant=…, roles=…)``), or to return
    :data:`~jobkit.integrations.django.AS_HOST` for a request that acts as the host."""
    user = getattr(request, "user", None)
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    admin = bool(getattr(user, "is_staff", False) or getattr(user, "is_superuser", False))
    return Actor(id=str(user.pk), roles=frozenset({ADMIN_ROLE}) if admin else frozenset())


def _json(body: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(dumps(body), status=status, content_type="application/json")


def _no_content() -> HttpResponse:
    response = HttpResponse(status=204)
    del response["Content-Type"]
    return response


def _body(request: HttpRequest, route: str) -> bytes:
    """The request body, read up to the route's limit (a larger one is refused, unread)."""
    return read_body(request.read, request.headers.get("Content-Length"), route)


def _frames(frames: EventFrames) -> Iterator[bytes]:
    """The body of ``GET /events`` under WSGI."""
    try:
        while (frame := frames.next_frame()) is not None:
            yield frame
    finally:
        frames.close()


async def _aframes(frames: EventFrames) -> AsyncIterator[bytes]:
    """The body of ``GET /events`` under ASGI: each wait for a frame in a thread of its own."""
    from asgiref.sync import sync_to_async

    following = sync_to_async(frames.next_frame, thread_sensitive=False)
    try:
        while (frame := await following()) is not None:
            yield frame
    finally:
        frames.close()


def jobkit_urls(
    backend: str = "default",
    *,
    actor: Callable[[HttpRequest], object] | None = default_actor,
    console: bool = True,
    console_title: str = "jobkit console",
    heartbeat: float = DEFAULT_HEARTBEAT,
) -> list[URLPattern]:
    """URL patterns serving the job routes of the JobkitBackend ``TASKS[backend]``, for
    ``path("jobs/", include(jobkit_urls()))``; the console page is at ``console/`` below
    the same prefix.

    :param actor: called with each request, returns its :class:`~jobkit.Actor`,
        :data:`AS_HOST` for a request acting as the trusted host, or None for nobody
        signed in (401; the console redirects to ``settings.LOGIN_URL``). The default,
        :func:`default_actor`, reads ``request.user``. None: every request is the trusted
        host (an internal app only).
    :param console: serve the console page at ``console/``.
    :param heartbeat: seconds without an event after which ``GET /events`` sends a comment.
    """

    def manager() -> BlockingJobManager:
        from ._backend import JobkitBackend

        found: Any = task_backends[backend]
        if not isinstance(found, JobkitBackend):
            raise TypeError(
                f"settings.TASKS[{backend!r}] is not a JobkitBackend, but {type(found).__name__}."
            )
        return found.manager

    def who(request: HttpRequest) -> Actor | None:
        return None if actor is None else resolve_actor(actor(request))

    def route(methods: dict[str, View]) -> View:
        def view(request: HttpRequest, **kwargs: Any) -> HttpResponse:
            handler = methods.get(request.method or "")
            try:
                if handler is None:
                    body = http_error_body(405, None, request.method or "", request.path, methods)
                    response = _json(body, 405)
                    response["Allow"] = ", ".join(sorted(methods))
                    return response
                if request.method == "POST":
                    check_not_cross_site(request.headers.get("Content-Type"), request.headers.keys())
                return handler(request, **kwargs)
            except JobkitError as exc:
                return _json(error_body(exc.code, exc.message), error_status(exc))

        exempt: View = csrf_exempt(view)
        return exempt

    def submit_job(request: HttpRequest) -> HttpResponse:
        body = parse_json(_body(request, "submit"), required=True)
        arguments = submit_arguments(body, request.headers.get(IDEMPOTENCY_HEADER))
        job, created = manager().submit_once(actor=who(request), **arguments)
        return _json(job_to_json(job), 201 if created else 200)

    def list_jobs(request: HttpRequest) -> HttpResponse:
        query = request.GET
        arguments = list_arguments(
            query.getlist("status"),
            query.get("kind"),
            query.get("limit"),
            query.get("cursor"),
            query.get("tenant"),
            query.get("id_prefix"),
        )
        page = manager().list(actor=who(request), **arguments)
        return _json({"items": [job_to_json(job) for job in page.items], "next_cursor": page.next_cursor})

    def count_jobs(request: HttpRequest) -> HttpResponse:
        found = manager().counts(
            actor=who(request), kind=request.GET.get("kind"), tenant=request.GET.get("tenant")
        )
        return _json({"counts": {status.value: count for status, count in found.items()}})

    def get_job(request: HttpRequest, job_id: str) -> HttpResponse:
        return _json(job_to_json(manager().get(job_id, actor=who(request))))

    def delete_job(request: HttpRequest, job_id: str) -> HttpResponse:
        manager().delete(job_id, actor=who(request))
        return _no_content()

    def cancel_job(request: HttpRequest, job_id: str) -> HttpResponse:
        reason = cancel_reason(parse_json(_body(request, "cancel"), required=False))
        return _json(job_to_json(manager().cancel(job_id, actor=who(request), reason=reason)))

    def retry_job(request: HttpRequest, job_id: str) -> HttpResponse:
        run_at = retry_run_at(parse_json(_body(request, "retry"), required=False))
        return _json(job_to_json(manager().retry(job_id, actor=who(request), run_at=run_at)))

    def set_priority(request: HttpRequest, job_id: str) -> HttpResponse:
        priority = priority_value(parse_json(_body(request, "priority"), required=True))
        job, position = manager().set_priority(job_id, priority, actor=who(request))
        return _json({"job": job_to_json(job), "position": position})

    def position(request: HttpRequest, job_id: str) -> HttpResponse:
        return _json({"position": manager().position(job_id, actor=who(request))})

    def audit(request: HttpRequest) -> HttpResponse:
        arguments = audit_arguments(request.GET.get("job_id"), request.GET.get("limit"))
        records = manager().audit(actor=who(request), **arguments)
        return _json({"items": [audit_to_json(record) for record in records]})

    def list_artifacts(request: HttpRequest, job_id: str) -> HttpResponse:
        return _json({"items": manager().artifacts(job_id, actor=who(request))})

    def read_artifact(request: HttpRequest, job_id: str, name: str) -> HttpResponse:
        data = manager().read_artifact(job_id, name, actor=who(request))
        return HttpResponse(data, content_type="application/octet-stream")

    def delete_artifact(request: HttpRequest, job_id: str, name: str) -> HttpResponse:
        manager().delete_artifact(job_id, name, actor=who(request))
        return _no_content()

    def list_kinds(request: HttpRequest) -> HttpResponse:
        jobs = manager()
        known = jobs.manager.kinds | jobs.manager.declared
        return _json(kinds_to_json(known, jobs.paused(actor=who(request))))

    def pause_kind(request: HttpRequest, kind: str) -> HttpResponse:
        _body(request, "kind")
        manager().pause(kind, actor=who(request))
        return _json({"kind": kind, "paused": True})

    def resume_kind(request: HttpRequest, kind: str) -> HttpResponse:
        _body(request, "kind")
        manager().resume(kind, actor=who(request))
        return _json({"kind": kind, "paused": False})

    def list_schedules(request: HttpRequest) -> HttpResponse:
        return _json({"items": [schedule_to_json(item) for item in manager().schedules(actor=who(request))]})

    def create_schedule(request: HttpRequest) -> HttpResponse:
        arguments = schedule_arguments(parse_json(_body(request, "schedule"), required=True))
        return _json(schedule_to_json(manager().schedule(actor=who(request), **arguments)), 201)

    def delete_schedule(request: HttpRequest, name: str) -> HttpResponse:
        manager().unschedule(name, actor=who(request))
        return _no_content()

    def me(request: HttpRequest) -> HttpResponse:
        return _json(me_to_json(who(request)))

    def events(request: HttpRequest) -> HttpResponse:
        subscription = manager().subscribe(actor=who(request), job_id=request.GET.get("job_id"))
        frames = EventFrames(subscription, subscription.__enter__(), heartbeat)
        asynchronous = type(request).__name__ == "ASGIRequest"
        response = StreamingHttpResponse(
            _aframes(frames) if asynchronous else _frames(frames), content_type="text/event-stream"
        )
        for name, value in SSE_HEADERS.items():
            response[name] = value
        return response

    def console_page(request: HttpRequest) -> HttpResponse:
        from django.contrib.auth.views import redirect_to_login

        try:
            who(request)
        except Unauthenticated:
            return redirect_to_login(request.get_full_path())
        from .._console_page import render_console

        api_prefix = request.path[: -len("console/")].rstrip("/")
        page, policy = render_console(api_prefix=api_prefix, title=console_title)
        response = HttpResponse(page, content_type="text/html; charset=utf-8")
        response["Content-Security-Policy"] = policy
        response["Cache-Control"] = "no-store"
        response["X-Content-Type-Options"] = "nosniff"
        response["Referrer-Policy"] = "no-referrer"
        return response

    def not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
        return _json(http_error_body(404, None, request.method or "", request.path), 404)

    patterns = [
        path("jobs", route({"GET": list_jobs, "POST": submit_job}), name="jobkit-jobs"),
        path("jobs/<str:job_id>", route({"GET": get_job, "DELETE": delete_job}), name="jobkit-job"),
        path("jobs/<str:job_id>/cancel", route({"POST": cancel_job}), name="jobkit-cancel"),
        path("jobs/<str:job_id>/retry", route({"POST": retry_job}), name="jobkit-retry"),
        path("jobs/<str:job_id>/priority", route({"PATCH": set_priority}), name="jobkit-priority"),
        path("jobs/<str:job_id>/position", route({"GET": position}), name="jobkit-position"),
        path("jobs/<str:job_id>/artifacts", route({"GET": list_artifacts}), name="jobkit-artifacts"),
        re_path(
            r"^jobs/(?P<job_id>[^/]+)/artifacts/(?P<name>(?s:.*))\Z",
            route({"GET": read_artifact, "DELETE": delete_artifact}),
            name="jobkit-artifact",
        ),
        path("counts", route({"GET": count_jobs}), name="jobkit-counts"),
        path("kinds", route({"GET": list_kinds}), name="jobkit-kinds"),
        path("kinds/<str:kind>/pause", route({"POST": pause_kind}), name="jobkit-pause"),
        path("kinds/<str:kind>/resume", route({"POST": resume_kind}), name="jobkit-resume"),
        path("schedules", route({"GET": list_schedules, "POST": create_schedule}), name="jobkit-schedules"),
        re_path(
            r"^schedules/(?P<name>(?s:.+))\Z", route({"DELETE": delete_schedule}), name="jobkit-schedule"
        ),
        path("audit", route({"GET": audit}), name="jobkit-audit"),
        path("me", route({"GET": me}), name="jobkit-me"),
        path("events", route({"GET": events}), name="jobkit-events"),
    ]
    if console:
        patterns.append(path("console/", route({"GET": console_page}), name="jobkit-console"))
    patterns.append(re_path(r"^(?P<rest>(?s:.*))\Z", csrf_exempt(not_found)))
    return patterns
