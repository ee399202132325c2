"""The event hub: fan-out of JobEvents to subscribers with bounded buffers."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable
from datetime import datetime

import anyio

from ._records import EventType, JobEvent
from .abc import Note, Notifier

Clock = Callable[[], datetime]

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

    def __init__(self, tenant: str | None, job_id: str | None, maxsize: int, clock: Clock) -> None:
        self._tenant = tenant
        self._job_id = job_id
        self._maxsize = maxsize
        self._buffer: deque[JobEvent] = deque()
        self._missed = 0
        self._closed = False
        self._waiter: anyio.Event | None = None
        self._clock = clock

    def _matches(self, event: JobEvent) -> bool:
        if event.type is EventType.OVERFLOW:
            return True  # events were lost upstream (another process): every reader is told
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
        now = self._clock()
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
    """Delivers each event the notifier carries to every matching subscriber.

    It listens for event notes only while it has subscribers, so nobody builds events
    that nobody reads.
    """

    __slots__ = ("_clock", "_notifier", "_stop", "streams")

    def __init__(self, clock: Clock, notifier: Notifier) -> None:
        self.streams: list[EventStream] = []
        self._clock = clock
        self._notifier = notifier
        self._stop: Callable[[], None] | None = None

    def open(self, tenant: str | None, job_id: str | None, maxsize: int) -> EventStream:
        stream = EventStream(tenant, job_id, maxsize, self._clock)
        self.streams.append(stream)
        if self._stop is None:
            self._stop = self._notifier.listen(self._on_note, events=True)
        return stream

    def discard(self, stream: EventStream) -> None:
        stream._close()
        if stream in self.streams:
            self.streams.remove(stream)
        if not self.streams and self._stop is not None:
            self._stop()
            self._stop = None

    def _on_note(self, note: Note) -> None:
        if note.event is not None:
            self.publish(note.event)

    def publish(self, event: JobEvent) -> None:
        for stream in self.streams:
            if stream._matches(event):
                stream._push(event)

    def close(self) -> None:
        for stream in self.streams:
            stream._close()
        self.streams.clear()
        if self._stop is not None:
            self._stop()
            self._stop = None
