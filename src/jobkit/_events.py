"""The event hub: fan-out of JobEvents to subscribers with bounded buffers."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from datetime import datetime

import anyio

from ._records import EventType, JobEvent

__all__ = ["EventHub", "EventStream"]


class EventStream(AsyncIterator[JobEvent]):
    """The events one subscriber receives. A slow reader never blocks the publisher.

    When the buffer is full, further events are dropped and counted; the reader then
    gets one ``overflow`` event with ``data["missed"]`` at the place they were lost.
    The iteration ends when the subscription or the manager closes.
    """

    __slots__ = (
        "_buffer",
        "_clock",
        "_closed",
        "_job_id",
        "_maxsize",
        "_missed",
        "_tenant",
        "_waiter",
    )

    def __init__(self, tenant: str | None, job_id: str | None, maxsize: int, clock: object) -> None:
        self._tenant = tenant
        self._job_id = job_id
        self._maxsize = maxsize
        self._buffer: deque[JobEvent] = deque()
        self._missed = 0
        self._closed = False
        self._waiter: anyio.Event | None = None
        self._clock = clock

    def _matches(self, event: JobEvent) -> bool:
        if self._tenant is not None and event.tenant != self._tenant:
            return False
        return self._job_id is None or event.job_id == self._job_id

    def _push(self, event: JobEvent) -> None:
        if len(self._buffer) >= self._maxsize:
            self._missed += 1
            return
        if self._missed:
            self._buffer.append(self._overflow())
        self._buffer.append(event)
        if self._waiter is not None:
            self._waiter.set()
            self._waiter = None

    def _overflow(self) -> JobEvent:
        missed, self._missed = self._missed, 0
        now: datetime = self._clock()  # type: ignore[operator]
        return JobEvent(
            type=EventType.OVERFLOW,
            job_id="",
            tenant=self._tenant,
            status=None,
            at=now,
            data={"missed": missed},
        )

    def _close(self) -> None:
        self._closed = True
        if self._waiter is not None:
            self._waiter.set()
            self._waiter = None

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> JobEvent:
        while True:
            if self._buffer:
                await anyio.lowlevel.checkpoint()
                return self._buffer.popleft()
            if self._missed:
                return self._overflow()
            if self._closed:
                raise StopAsyncIteration
            self._waiter = anyio.Event()
            await self._waiter.wait()


class EventHub:
    """Delivers each published event to every matching subscriber."""

    __slots__ = ("_clock", "streams")

    def __init__(self, clock: object) -> None:
        self.streams: list[EventStream] = []
        self._clock = clock

    def open(self, tenant: str | None, job_id: str | None, maxsize: int) -> EventStream:
        stream = EventStream(tenant, job_id, maxsize, self._clock)
        self.streams.append(stream)
        return stream

    def discard(self, stream: EventStream) -> None:
        stream._close()
        if stream in self.streams:
            self.streams.remove(stream)

    def publish(self, event: JobEvent) -> None:
        for stream in self.streams:
            if stream._matches(event):
                stream._push(event)

    def close(self) -> None:
        for stream in self.streams:
            stream._close()
        self.streams.clear()
