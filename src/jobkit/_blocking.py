"""BlockingJobManager: the JobManager for synchronous code (Flask, scripts, bots)."""

from __future__ import annotations

import builtins
import functools
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from concurrent.futures import CancelledError
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

from ._errors import JobkitError
from ._manager import Handler, JobManager
from ._policies import DeletePolicy, Retention
from ._records import Actor, AuditRecord, Job, JobEvent, JobStatus, Page, Retry, Schedule, SweepReport
from .abc import Authorizer, BlobStore, JobStore
from .telemetry import Telemetry

__all__ = ["BlockingJobManager"]

H = TypeVar("H", bound=Handler)
T = TypeVar("T")
_END = object()


class BlockingJobManager:
    """The same API as :class:`JobManager` as plain calls, run on an event loop in a
    background thread (an anyio blocking portal). Use it as ``with jobs:``.

    Takes the same arguments as :class:`JobManager`, plus ``backend`` (``"asyncio"`` or
    ``"trio"``) for the loop in the background thread.
    """

    def __init__(
        self,
        store: JobStore | None = None,
        blobs: BlobStore | None = None,
        *,
        concurrency: int = 10,
        retention: Retention = Retention(),  # noqa: B008 - frozen value
        delete_policy: DeletePolicy = DeletePolicy(),  # noqa: B008 - frozen value
        authorizer: Authorizer | None = None,
        sweep_interval: timedelta | float | None = 60.0,
        cancel_grace: timedelta | float | None = None,
        audit_retention: timedelta | float | None = timedelta(days=90),
        clock: Callable[[], datetime] | None = None,
        lease_duration: timedelta | float = 60.0,
        poll_interval: timedelta | float = 1.0,
        telemetry: Telemetry | bool | None = None,
        backend: str = "asyncio",
    ) -> None:
        self.manager = JobManager(
            store,
            blobs,
            concurrency=concurrency,
            retention=retention,
            delete_policy=delete_policy,
            authorizer=authorizer,
            sweep_interval=sweep_interval,
            cancel_grace=cancel_grace,
            audit_retention=audit_retention,
            clock=clock,
            lease_duration=lease_duration,
            poll_interval=poll_interval,
            telemetry=telemetry,
        )
        self._backend = backend
        self._portal: BlockingPortal | None = None
        self._portal_cm: AbstractContextManager[BlockingPortal] | None = None
        self._manager_cm: AbstractContextManager[JobManager] | None = None

    def __repr__(self) -> str:
        return f"Blocking{self.manager!r}"

    def handler(self, kind: str, *, retry: Retry | None = None) -> Callable[[H], H]:
        """Decorator registering a handler for ``kind`` (see :meth:`JobManager.handler`)."""
        return self.manager.handler(kind, retry=retry)

    def register(self, kind: str, fn: Handler, *, retry: Retry | None = None) -> None:
        """Register ``fn`` as the handler of ``kind``."""
        self.manager.register(kind, fn, retry=retry)

    def declare(self, kind: str) -> None:
        """Submit ``kind`` here while another process runs it (see :meth:`JobManager.declare`)."""
        self.manager.declare(kind)

    def __enter__(self) -> BlockingJobManager:
        portal_cm = start_blocking_portal(self._backend)
        portal = portal_cm.__enter__()
        try:
            manager_cm = portal.wrap_async_context_manager(self.manager)
            manager_cm.__enter__()
        except BaseException as exc:
            portal_cm.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._portal, self._portal_cm, self._manager_cm = portal, portal_cm, manager_cm
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        portal, portal_cm, manager_cm = self._portal, self._portal_cm, self._manager_cm
        self._portal = self._portal_cm = self._manager_cm = None
        if portal is None or portal_cm is None or manager_cm is None:
            return
        try:
            manager_cm.__exit__(exc_type, exc, tb)
        finally:
            # Subscriptions still open in other threads hold tasks in the portal; the
            # manager has ended their streams, so cancel what is left instead of waiting.
            try:
                portal.call(portal.stop, True)
            finally:
                portal_cm.__exit__(exc_type, exc, tb)

    def _call(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        portal = self._portal
        if portal is None:
            raise JobkitError("The BlockingJobManager is not started: use it inside `with jobs:`.")
        return portal.call(functools.partial(fn, *args, **kwargs))

    def submit(
        self,
        kind: str,
        payload: Any = None,
        *,
        actor: Actor | None = None,
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
        """See :meth:`JobManager.submit`."""
        job, _ = self.submit_once(
            kind, payload, actor=actor, priority=priority, ttl=ttl, timeout=timeout,
            max_attempts=max_attempts, labels=labels, run_at=run_at, delay=delay, retry=retry,
            idempotency_key=idempotency_key,
        )  # fmt: skip
        return job

    def submit_once(
        self,
        kind: str,
        payload: Any = None,
        *,
        actor: Actor | None = None,
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
        """See :meth:`JobManager.submit_once`."""
        result: tuple[Job, bool] = self._call(
            self.manager.submit_once, kind, payload, actor=actor, priority=priority, ttl=ttl,
            timeout=timeout, max_attempts=max_attempts, labels=labels, run_at=run_at, delay=delay,
            retry=retry, idempotency_key=idempotency_key,
        )  # fmt: skip
        return result

    def get(self, job_id: str, *, actor: Actor | None = None, include_deleted: bool = False) -> Job:
        """See :meth:`JobManager.get`."""
        job: Job = self._call(self.manager.get, job_id, actor=actor, include_deleted=include_deleted)
        return job

    def list(
        self,
        *,
        actor: Actor | None = None,
        status: JobStatus | str | Iterable[JobStatus | str] | None = None,
        kind: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        include_deleted: bool = False,
        tenant: str | None = None,
        id_prefix: str | None = None,
    ) -> Page:
        """See :meth:`JobManager.list`."""
        page: Page = self._call(
            self.manager.list,
            actor=actor,
            status=status,
            kind=kind,
            limit=limit,
            cursor=cursor,
            include_deleted=include_deleted,
            tenant=tenant,
            id_prefix=id_prefix,
        )
        return page

    def resolve(self, id_or_prefix: str, *, actor: Actor | None = None) -> str:
        """See :meth:`JobManager.resolve`."""
        job_id: str = self._call(self.manager.resolve, id_or_prefix, actor=actor)
        return job_id

    def counts(
        self, *, actor: Actor | None = None, kind: str | None = None, tenant: str | None = None
    ) -> dict[JobStatus, int]:
        """See :meth:`JobManager.counts`."""
        found: dict[JobStatus, int] = self._call(self.manager.counts, actor=actor, kind=kind, tenant=tenant)
        return found

    def cancel(self, job_id: str, *, actor: Actor | None = None, reason: str | None = None) -> Job:
        """See :meth:`JobManager.cancel`."""
        job: Job = self._call(self.manager.cancel, job_id, actor=actor, reason=reason)
        return job

    def delete(self, job_id: str, *, actor: Actor | None = None) -> None:
        """See :meth:`JobManager.delete`."""
        self._call(self.manager.delete, job_id, actor=actor)

    def artifacts(
        self, job_id: str, *, actor: Actor | None = None, include_deleted: bool = False
    ) -> builtins.list[str]:
        """See :meth:`JobManager.artifacts`."""
        names: builtins.list[str] = self._call(
            self.manager.artifacts, job_id, actor=actor, include_deleted=include_deleted
        )
        return names

    def read_artifact(
        self, job_id: str, name: str, *, actor: Actor | None = None, include_deleted: bool = False
    ) -> bytes:
        """See :meth:`JobManager.read_artifact`."""
        data: bytes = self._call(
            self.manager.read_artifact, job_id, name, actor=actor, include_deleted=include_deleted
        )
        return data

    def delete_artifact(self, job_id: str, name: str, *, actor: Actor | None = None) -> None:
        """See :meth:`JobManager.delete_artifact`."""
        self._call(self.manager.delete_artifact, job_id, name, actor=actor)

    def set_priority(self, job_id: str, priority: int, *, actor: Actor | None = None) -> tuple[Job, int]:
        """See :meth:`JobManager.set_priority`."""
        result: tuple[Job, int] = self._call(self.manager.set_priority, job_id, priority, actor=actor)
        return result

    def position(self, job_id: str, *, actor: Actor | None = None) -> int | None:
        """See :meth:`JobManager.position`."""
        position: int | None = self._call(self.manager.position, job_id, actor=actor)
        return position

    def wait(
        self, job_id: str, *, timeout: timedelta | float | None = None, actor: Actor | None = None
    ) -> Job:
        """See :meth:`JobManager.wait`."""
        job: Job = self._call(self.manager.wait, job_id, timeout=timeout, actor=actor)
        return job

    def retry(self, job_id: str, *, actor: Actor | None = None, run_at: datetime | None = None) -> Job:
        """See :meth:`JobManager.retry`."""
        job: Job = self._call(self.manager.retry, job_id, actor=actor, run_at=run_at)
        return job

    def pause(self, kind: str, *, actor: Actor | None = None) -> None:
        """See :meth:`JobManager.pause`."""
        self._call(self.manager.pause, kind, actor=actor)

    def resume(self, kind: str, *, actor: Actor | None = None) -> None:
        """See :meth:`JobManager.resume`."""
        self._call(self.manager.resume, kind, actor=actor)

    def paused(self, *, actor: Actor | None = None) -> frozenset[str]:
        """See :meth:`JobManager.paused`."""
        kinds: frozenset[str] = self._call(self.manager.paused, actor=actor)
        return kinds

    def schedule(
        self,
        name: str,
        kind: str,
        payload: Any = None,
        *,
        cron: str,
        timezone: str = "UTC",
        actor: Actor | None = None,
        priority: int = 0,
    ) -> Schedule:
        """See :meth:`JobManager.schedule`."""
        item: Schedule = self._call(
            self.manager.schedule, name, kind, payload, cron=cron, timezone=timezone, actor=actor,
            priority=priority,
        )  # fmt: skip
        return item

    def unschedule(self, name: str, *, actor: Actor | None = None) -> None:
        """See :meth:`JobManager.unschedule`."""
        self._call(self.manager.unschedule, name, actor=actor)

    def schedules(self, *, actor: Actor | None = None) -> builtins.list[Schedule]:
        """See :meth:`JobManager.schedules`."""
        items: builtins.list[Schedule] = self._call(self.manager.schedules, actor=actor)
        return items

    def sweep(self) -> SweepReport:
        """See :meth:`JobManager.sweep`."""
        report: SweepReport = self._call(self.manager.sweep)
        return report

    def audit(
        self, job_id: str | None = None, limit: int = 100, *, actor: Actor | None = None
    ) -> builtins.list[AuditRecord]:
        """See :meth:`JobManager.audit`."""
        records: builtins.list[AuditRecord] = self._call(self.manager.audit, job_id, limit, actor=actor)
        return records

    @contextmanager
    def subscribe(
        self, *, actor: Actor | None = None, job_id: str | None = None, buffer: int = 1000
    ) -> Iterator[Iterator[JobEvent]]:
        """See :meth:`JobManager.subscribe`; iterate the yielded object with a plain ``for``."""
        portal = self._portal
        if portal is None:
            raise JobkitError("The BlockingJobManager is not started: use it inside `with jobs:`.")
        cm = portal.wrap_async_context_manager(
            self.manager.subscribe(actor=actor, job_id=job_id, buffer=buffer)
        )
        stream = cm.__enter__()
        try:
            yield _iterate(portal, stream)
        except BaseException as exc:
            _close_quietly(cm, exc)
            raise
        else:
            _close_quietly(cm, None)


def _close_quietly(cm: AbstractContextManager[Any], exc: BaseException | None) -> None:
    """Leave a subscription; once the manager has stopped, there is nothing left to close."""
    try:
        if exc is None:
            cm.__exit__(None, None, None)
        else:
            cm.__exit__(type(exc), exc, exc.__traceback__)
    except (RuntimeError, CancelledError):
        pass


def _iterate(portal: BlockingPortal, stream: AsyncIterator[JobEvent]) -> Iterator[JobEvent]:
    """The events of ``stream`` (on the portal's loop) as a plain iterator; shared with
    :class:`jobkit.client.BlockingJobClient`."""
    while True:
        try:
            event = portal.call(_next, stream)
        except (RuntimeError, CancelledError):
            return  # the manager stopped: the stream has ended

        if event is _END:
            return
        yield event


async def _next(stream: AsyncIterator[JobEvent]) -> Any:
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return _END
