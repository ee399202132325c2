"""BlockingJobClient: JobClient for synchronous code, over an anyio blocking portal."""

from __future__ import annotations

import builtins
import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal

from .._blocking import _close_quietly, _iterate
from .._errors import JobkitError
from .._records import Actor, AuditRecord, Job, JobEvent, JobStatus, Page, Retry, Schedule
from ._async import DEFAULT_BUFFER, JobClient

__all__ = ["BlockingJobClient"]


class BlockingJobClient:
    """The same methods as :class:`JobClient` as plain calls: ``with BlockingJobClient(url) as
    jobs:``. The calls run on an event loop in a background thread (an anyio blocking portal,
    as :class:`~jobkit.BlockingJobManager` does), so both classes share one implementation:
    the same requests, decoding, errors and reconnecting event streams.

    Takes :class:`JobClient`'s arguments, plus ``backend`` (``"asyncio"`` or ``"trio"``) for
    the loop in the background thread.
    """

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        backend: str = "asyncio",
    ) -> None:
        self.client = JobClient(base_url, headers=headers, timeout=timeout)
        self._backend = backend
        self._portal: BlockingPortal | None = None
        self._portal_cm: AbstractContextManager[BlockingPortal] | None = None
        self._client_cm: AbstractContextManager[JobClient] | None = None

    def __repr__(self) -> str:
        return f"Blocking{self.client!r}"

    def __enter__(self) -> BlockingJobClient:
        portal_cm = start_blocking_portal(self._backend)
        portal = portal_cm.__enter__()
        try:
            client_cm = portal.wrap_async_context_manager(self.client)
            client_cm.__enter__()
        except BaseException as exc:
            portal_cm.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._portal, self._portal_cm, self._client_cm = portal, portal_cm, client_cm
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        portal, portal_cm, client_cm = self._portal, self._portal_cm, self._client_cm
        self._portal = self._portal_cm = self._client_cm = None
        if portal is None or portal_cm is None or client_cm is None:
            return
        try:
            client_cm.__exit__(exc_type, exc, tb)
        finally:
            try:
                portal.call(portal.stop, True)  # subscriptions left open in other threads
            finally:
                portal_cm.__exit__(exc_type, exc, tb)

    def _started(self) -> BlockingPortal:
        if self._portal is None:
            raise JobkitError(
                "The BlockingJobClient is not open: use it inside `with BlockingJobClient(url):`."
            )
        return self._portal

    def _call(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        return self._started().call(functools.partial(fn, *args, **kwargs))

    def submit(
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
        """See :meth:`JobClient.submit`."""
        job, _ = self.submit_once(
            kind, payload, priority=priority, ttl=ttl, timeout=timeout, max_attempts=max_attempts,
            labels=labels, run_at=run_at, delay=delay, retry=retry, idempotency_key=idempotency_key,
        )  # fmt: skip
        return job

    def submit_once(
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
        """See :meth:`JobClient.submit_once`."""
        result: tuple[Job, bool] = self._call(
            self.client.submit_once, kind, payload, priority=priority, ttl=ttl, timeout=timeout,
            max_attempts=max_attempts, labels=labels, run_at=run_at, delay=delay, retry=retry,
            idempotency_key=idempotency_key,
        )  # fmt: skip
        return result

    def get(self, job_id: str, *, include_deleted: bool = False) -> Job:
        """See :meth:`JobClient.get`."""
        job: Job = self._call(self.client.get, job_id, include_deleted=include_deleted)
        return job

    def list(
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
        """See :meth:`JobClient.list`."""
        page: Page = self._call(
            self.client.list, status=status, kind=kind, limit=limit, cursor=cursor,
            include_deleted=include_deleted, tenant=tenant, id_prefix=id_prefix,
        )  # fmt: skip
        return page

    def resolve(self, id_or_prefix: str) -> str:
        """See :meth:`JobClient.resolve`."""
        job_id: str = self._call(self.client.resolve, id_or_prefix)
        return job_id

    def counts(self, *, kind: str | None = None, tenant: str | None = None) -> dict[JobStatus, int]:
        """See :meth:`JobClient.counts`."""
        found: dict[JobStatus, int] = self._call(self.client.counts, kind=kind, tenant=tenant)
        return found

    def cancel(self, job_id: str, *, reason: str | None = None) -> Job:
        """See :meth:`JobClient.cancel`."""
        job: Job = self._call(self.client.cancel, job_id, reason=reason)
        return job

    def delete(self, job_id: str) -> None:
        """See :meth:`JobClient.delete`."""
        self._call(self.client.delete, job_id)

    def artifacts(self, job_id: str, *, include_deleted: bool = False) -> builtins.list[str]:
        """See :meth:`JobClient.artifacts`."""
        names: builtins.list[str] = self._call(self.client.artifacts, job_id, include_deleted=include_deleted)
        return names

    def read_artifact(self, job_id: str, name: str, *, include_deleted: bool = False) -> bytes:
        """See :meth:`JobClient.read_artifact`."""
        data: bytes = self._call(self.client.read_artifact, job_id, name, include_deleted=include_deleted)
        return data

    def delete_artifact(self, job_id: str, name: str) -> None:
        """See :meth:`JobClient.delete_artifact`."""
        self._call(self.client.delete_artifact, job_id, name)

    def set_priority(self, job_id: str, priority: int) -> tuple[Job, int]:
        """See :meth:`JobClient.set_priority`."""
        result: tuple[Job, int] = self._call(self.client.set_priority, job_id, priority)
        return result

    def position(self, job_id: str) -> int | None:
        """See :meth:`JobClient.position`."""
        position: int | None = self._call(self.client.position, job_id)
        return position

    def wait(self, job_id: str, *, timeout: timedelta | float | None = None) -> Job:
        """See :meth:`JobClient.wait`."""
        job: Job = self._call(self.client.wait, job_id, timeout=timeout)
        return job

    def retry(self, job_id: str, *, run_at: datetime | None = None) -> Job:
        """See :meth:`JobClient.retry`."""
        job: Job = self._call(self.client.retry, job_id, run_at=run_at)
        return job

    def audit(self, job_id: str | None = None, limit: int = 100) -> builtins.list[AuditRecord]:
        """See :meth:`JobClient.audit`."""
        records: builtins.list[AuditRecord] = self._call(self.client.audit, job_id, limit)
        return records

    def pause(self, kind: str) -> None:
        """See :meth:`JobClient.pause`."""
        self._call(self.client.pause, kind)

    def resume(self, kind: str) -> None:
        """See :meth:`JobClient.resume`."""
        self._call(self.client.resume, kind)

    def paused(self) -> frozenset[str]:
        """See :meth:`JobClient.paused`."""
        kinds: frozenset[str] = self._call(self.client.paused)
        return kinds

    def known_kinds(self) -> dict[str, bool]:
        """See :meth:`JobClient.known_kinds`."""
        kinds: dict[str, bool] = self._call(self.client.known_kinds)
        return kinds

    def schedule(
        self,
        name: str,
        kind: str,
        payload: Any = None,
        *,
        cron: str,
        timezone: str = "UTC",
        priority: int = 0,
    ) -> Schedule:
        """See :meth:`JobClient.schedule`."""
        item: Schedule = self._call(
            self.client.schedule, name, kind, payload, cron=cron, timezone=timezone, priority=priority
        )
        return item

    def unschedule(self, name: str) -> None:
        """See :meth:`JobClient.unschedule`."""
        self._call(self.client.unschedule, name)

    def schedules(self) -> builtins.list[Schedule]:
        """See :meth:`JobClient.schedules`."""
        items: builtins.list[Schedule] = self._call(self.client.schedules)
        return items

    def me(self) -> Actor | None:
        """See :meth:`JobClient.me`."""
        actor: Actor | None = self._call(self.client.me)
        return actor

    @contextmanager
    def subscribe(
        self, *, job_id: str | None = None, buffer: int = DEFAULT_BUFFER
    ) -> Iterator[Iterator[JobEvent]]:
        """See :meth:`JobClient.subscribe`; iterate the yielded object with a plain ``for``."""
        portal = self._started()
        cm = portal.wrap_async_context_manager(self.client.subscribe(job_id=job_id, buffer=buffer))
        stream = cm.__enter__()
        try:
            yield _iterate(portal, stream)
        except BaseException as exc:
            _close_quietly(cm, exc)
            raise
        else:
            _close_quietly(cm, None)
