"""Flask integration: the job routes as a ``Blueprint`` over a :class:`~jobkit.BlockingJobManager`.

Install with ``pip install 'jobkit[flask]'``. The recipe::

    from flask import Flask
    from jobkit import Actor, BlockingJobManager
    from jobkit.integrations.flask import init_app

    jobs = BlockingJobManager()

    def current_actor() -> Actor | None:
        ...  # who is asking (flask.request, flask.g); None = nobody signed in (401)

    def create_app() -> Flask:
        app = Flask(__name__)
        init_app(app, jobs, actor=current_actor, url_prefix="/api/v1")  # starts jobs too
        return app

``init_app`` registers :func:`job_blueprint`, starts the manager and calls
:func:`stop_on_signals`, so SIGTERM or Ctrl-C requeues the running jobs and ends the
event streams before the process exits.

The routes, bodies, status codes and error bodies are those of
:func:`jobkit.integrations.fastapi.job_router`; ``GET /events`` streams server-sent
events from a generator (one extra thread per open stream).
"""

from __future__ import annotations

import functools
import signal
import threading
import weakref
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

try:
    from flask import Blueprint, Flask, Response, request
    from flask.blueprints import BlueprintSetupState
    from werkzeug.exceptions import HTTPException, MethodNotAllowed
    from werkzeug.routing import PathConverter
except ImportError as exc:
    raise ImportError("jobkit.integrations.flask needs Flask: pip install 'jobkit[flask]'") from exc


from .._blocking import BlockingJobManager
from .._errors import InvalidInput, JobkitError
from .._log import get_logger
from .._records import Actor
from ._http import (
    AS_HOST,
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

__all__ = ["AS_HOST", "init_app", "job_blueprint", "stop_on_signals"]

log = get_logger("jobkit")

#: Seconds without an event after which the event stream sends a heartbeat comment.
DEFAULT_HEARTBEAT = 15.0


def _json(body: Any, status: int = 200) -> Response:
    return Response(dumps(body), status=status, mimetype="application/json")


def _no_content() -> Response:
    response = Response(status=204)
    del response.headers["Content-Type"]
    return response


def _jobkit_error(exc: JobkitError) -> Response:
    return _json(error_body(exc.code, exc.message), error_status(exc))


class _ArtifactName(PathConverter):
    """Any rest of the path, even one starting with '/' or holding newlines: the manager
    rejects unsafe names with InvalidInput (422), as the FastAPI router does, instead of
    a bare 404."""

    regex = "(?s:.*)"
    part_isolating = False


def _add_converter(state: BlueprintSetupState) -> None:
    state.app.url_map.converters.setdefault("jobkit_artifact", _ArtifactName)


def _http_error(exc: HTTPException) -> Response:
    """The error body for a werkzeug ``HTTPException``: Flask's own (unknown route, wrong
    method, body too large) or one the host's code raised (``abort(403, "...")``); its
    status and headers are kept, its description is the message unless it is the default."""
    if exc.response is not None:  # the raiser built the whole response itself
        return exc.response  # type: ignore[return-value]
    status = exc.code or 500
    detail = exc.description if exc.description != type(exc).description else None
    allowed = (exc.valid_methods or ()) if isinstance(exc, MethodNotAllowed) else ()
    response = _json(http_error_body(status, detail, request.method, request.path, allowed), status)
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


_APP_PREFIXES = "jobkit.error_prefixes"


def _answer_under_prefix(state: BlueprintSetupState) -> None:
    """Answer Flask's own errors for every path under the blueprint's ``url_prefix`` — an
    unknown route or a wrong method is raised before any blueprint is chosen, so only an
    app-level handler sees it. Paths elsewhere go to the handler the app had before."""
    app = state.app
    prefixes: list[str] | None = app.extensions.get(_APP_PREFIXES)
    if prefixes is None:
        prefixes = app.extensions[_APP_PREFIXES] = []
        previous = app.error_handler_spec[None][None].get(HTTPException)

        def answer(exc: HTTPException) -> Any:
            path = request.path
            if any(path == prefix or path.startswith(prefix.rstrip("/") + "/") for prefix in prefixes):
                return _http_error(exc)
            return exc if previous is None else previous(exc)

        app.register_error_handler(HTTPException, answer)
    prefixes.append(state.url_prefix or "/")


class _EventStream:
    """The body of ``GET /events``: a WSGI iterable over the frames of one subscription.
    ``close()`` — called by the server when the client disconnects or the stream ends —
    ends the subscription."""

    def __init__(self, frames: EventFrames) -> None:
        self._frames = frames

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        frame = self._frames.next_frame()
        if frame is None:
            raise StopIteration
        return frame

    def close(self) -> None:
        self._frames.close()


def job_blueprint(
    manager: BlockingJobManager,
    *,
    actor: Callable[[], object] | None = None,
    heartbeat: float = DEFAULT_HEARTBEAT,
    name: str = "jobkit",
) -> Blueprint:
    """The job routes over ``manager``; register with ``app.register_blueprint(bp, url_prefix=...)``.

    :param actor: called in each request, returns its :class:`~jobkit.Actor`,
        :data:`AS_HOST` for a request that acts as the trusted host, or None when nobody is
        signed in (401 ``unauthenticated``). Without ``actor``, every request is the
        trusted host: only for an internal app.
    :param heartbeat: seconds without an event after which ``GET /events`` sends a comment.
    :param name: the blueprint's name (change it to register the routes twice).
    """
    if isinstance(heartbeat, bool) or not isinstance(heartbeat, int | float) or not heartbeat > 0:
        raise InvalidInput(f"heartbeat must be a positive number of seconds, got {heartbeat!r}.")
    bp = Blueprint(name, __name__)
    bp.register_error_handler(JobkitError, _jobkit_error)
    bp.register_error_handler(HTTPException, _http_error)
    bp.record_once(_add_converter)
    bp.record(_answer_under_prefix)

    def who() -> Actor | None:
        return None if actor is None else resolve_actor(actor())

    def route(rule: str, methods: list[str]) -> Callable[[Callable[..., Response]], Callable[..., Response]]:
        def register(view: Callable[..., Response]) -> Callable[..., Response]:
            if "POST" in methods:
                bare = view

                @functools.wraps(bare)
                def view(*args: Any, **kwargs: Any) -> Response:
                    check_not_cross_site(request.headers.get("Content-Type"), request.headers.keys())
                    return bare(*args, **kwargs)

            bp.add_url_rule(rule, view_func=view, methods=methods, merge_slashes=False)
            return view

        return register

    @route("/jobs", ["POST"])
    def submit_job() -> Response:
        body = parse_json(_body("submit"), required=True)
        arguments = submit_arguments(body, request.headers.get(IDEMPOTENCY_HEADER))
        job, created = manager.submit_once(actor=who(), **arguments)
        return _json(job_to_json(job), 201 if created else 200)

    @route("/jobs", ["GET"])
    def list_jobs() -> Response:
        args = request.args
        arguments = list_arguments(
            args.getlist("status"),
            args.get("kind"),
            args.get("limit"),
            args.get("cursor"),
            args.get("tenant"),
            args.get("id_prefix"),
        )
        page = manager.list(actor=who(), **arguments)
        return _json({"items": [job_to_json(job) for job in page.items], "next_cursor": page.next_cursor})

    @route("/counts", ["GET"])
    def count_jobs() -> Response:
        found = manager.counts(actor=who(), kind=request.args.get("kind"), tenant=request.args.get("tenant"))
        return _json({"counts": {status.value: count for status, count in found.items()}})

    @route("/jobs/<job_id>", ["GET"])
    def get_job(job_id: str) -> Response:
        return _json(job_to_json(manager.get(job_id, actor=who())))

    @route("/jobs/<job_id>/cancel", ["POST"])
    def cancel_job(job_id: str) -> Response:
        reason = cancel_reason(parse_json(_body("cancel"), required=False))
        return _json(job_to_json(manager.cancel(job_id, actor=who(), reason=reason)))

    @route("/jobs/<job_id>/retry", ["POST"])
    def retry_job(job_id: str) -> Response:
        run_at = retry_run_at(parse_json(_body("retry"), required=False))
        return _json(job_to_json(manager.retry(job_id, actor=who(), run_at=run_at)))

    @route("/jobs/<job_id>", ["DELETE"])
    def delete_job(job_id: str) -> Response:
        manager.delete(job_id, actor=who())
        return _no_content()

    @route("/jobs/<job_id>/priority", ["PATCH"])
    def set_priority(job_id: str) -> Response:
        priority = priority_value(parse_json(_body("priority"), required=True))
        job, position = manager.set_priority(job_id, priority, actor=who())
        return _json({"job": job_to_json(job), "position": position})

    @route("/jobs/<job_id>/position", ["GET"])
    def position(job_id: str) -> Response:
        return _json({"position": manager.position(job_id, actor=who())})

    @route("/jobs/<job_id>/artifacts", ["GET"])
    def list_artifacts(job_id: str) -> Response:
        return _json({"items": manager.artifacts(job_id, actor=who())})

    @route("/jobs/<job_id>/artifacts/<jobkit_artifact:name>", ["GET"])
    def read_artifact(job_id: str, name: str) -> Response:
        data = manager.read_artifact(job_id, name, actor=who())
        return Response(data, mimetype="application/octet-stream")

    @route("/jobs/<job_id>/artifacts/<jobkit_artifact:name>", ["DELETE"])
    def delete_artifact(job_id: str, name: str) -> Response:
        manager.delete_artifact(job_id, name, actor=who())
        return _no_content()

    @route("/kinds", ["GET"])
    def list_kinds() -> Response:
        known = manager.manager.kinds | manager.manager.declared
        return _json(kinds_to_json(known, manager.paused(actor=who())))

    @route("/kinds/<kind>/pause", ["POST"])
    def pause_kind(kind: str) -> Response:
        _body("kind")  # nothing to read, but no more than the limit either
        manager.pause(kind, actor=who())
        return _json({"kind": kind, "paused": True})

    @route("/kinds/<kind>/resume", ["POST"])
    def resume_kind(kind: str) -> Response:
        _body("kind")
        manager.resume(kind, actor=who())
        return _json({"kind": kind, "paused": False})

    @route("/schedules", ["GET"])
    def list_schedules() -> Response:
        return _json({"items": [schedule_to_json(item) for item in manager.schedules(actor=who())]})

    @route("/schedules", ["POST"])
    def create_schedule() -> Response:
        arguments = schedule_arguments(parse_json(_body("schedule"), required=True))
        return _json(schedule_to_json(manager.schedule(actor=who(), **arguments)), 201)

    @route("/schedules/<jobkit_artifact:name>", ["DELETE"])
    def delete_schedule(name: str) -> Response:
        manager.unschedule(name, actor=who())
        return _no_content()

    @route("/audit", ["GET"])
    def audit() -> Response:
        arguments = audit_arguments(request.args.get("job_id"), request.args.get("limit"))
        records = manager.audit(actor=who(), **arguments)
        return _json({"items": [audit_to_json(record) for record in records]})

    @route("/me", ["GET"])
    def me() -> Response:
        return _json(me_to_json(who()))

    @route("/events", ["GET"])
    def events() -> Response:
        subscription = manager.subscribe(actor=who(), job_id=request.args.get("job_id"))
        stream = subscription.__enter__()
        body = _EventStream(EventFrames(subscription, stream, heartbeat))
        return Response(body, mimetype="text/event-stream", headers=dict(SSE_HEADERS))

    return bp


def _body(route: str) -> bytes:
    """The request body, read up to the route's limit (a larger one is refused, unread)."""
    return read_body(request.stream.read, request.headers.get("Content-Length"), route)


# -- the manager's life in a Flask process ------------------------------------------------

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_HOOKED: weakref.WeakSet[BlockingJobManager] = weakref.WeakSet()


def stop_on_signals(manager: BlockingJobManager) -> None:
    """Stop ``manager`` first when SIGINT or SIGTERM arrives: running jobs go back to
    ``pending`` and every event stream of its blueprints ends. Then the signal does what it
    did before — the server's own handler (gunicorn's, say), Ctrl-C's KeyboardInterrupt —
    and a SIGTERM nobody handled ends the process with ``SystemExit(143)`` (so ``finally``
    blocks run) instead of killing it on the spot. A signal that was ignored stays ignored.

    Call it in the main thread (signals can be handled only there), once the manager is
    started; calling it again for the same manager does nothing.
    """
    if manager in _HOOKED:
        return
    if threading.current_thread() is not threading.main_thread():
        raise InvalidInput("stop_on_signals() must be called in the main thread (signals are handled there).")
    previous: dict[int, Any] = {}
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> Any:
        if not stopping.is_set():  # a second Ctrl-C while stopping goes straight on
            stopping.set()
            log.info("stopping the job manager", signal=signal.Signals(signum).name)
            manager.__exit__(None, None, None)
        handler = previous[signum]
        if callable(handler):
            return handler(signum, frame)
        raise SystemExit(128 + signum)

    for signum in _STOP_SIGNALS:
        handler = signal.getsignal(signum)
        if handler == signal.SIG_IGN:
            continue
        previous[signum] = handler
        signal.signal(signum, on_signal)
    _HOOKED.add(manager)


def init_app(
    app: Flask,
    manager: BlockingJobManager,
    *,
    actor: Callable[[], object] | None = None,
    url_prefix: str = "/api/v1",
    heartbeat: float = DEFAULT_HEARTBEAT,
    name: str = "jobkit",
) -> Blueprint:
    """The app-factory recipe in one call: register :func:`job_blueprint` on ``app`` at
    ``url_prefix``, start ``manager`` (once, however many apps share it) and
    :func:`stop_on_signals` — so a SIGTERM or Ctrl-C requeues the running jobs and ends
    the event streams before the process exits. Call it in the main thread.

    :returns: the registered blueprint.
    """
    if threading.current_thread() is not threading.main_thread():
        raise InvalidInput("init_app() must be called in the main thread (signals are handled there).")
    bp = job_blueprint(manager, actor=actor, heartbeat=heartbeat, name=name)
    app.register_blueprint(bp, url_prefix=url_prefix)
    if manager not in _HOOKED:
        manager.__enter__()
        stop_on_signals(manager)
    return bp
