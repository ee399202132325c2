"""CancelToken: how a handler learns that it should stop, and why."""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable

import anyio

from ._errors import JobCancelled

__all__ = ["CancelSource", "CancelToken"]


class CancelSource(enum.StrEnum):
    """Why a job's token was set."""

    #: Someone called :meth:`JobManager.cancel`.
    USER = "user"
    #: The manager is shutting down; the job will run again later.
    SHUTDOWN = "shutdown"
    #: The job ran longer than its ``timeout``.
    TIMEOUT = "timeout"


class CancelToken:
    """A one-shot cancellation signal, like an ``AbortSignal``.

    Safe to read and wait on from a worker thread (``cancelled``,
    ``raise_if_cancelled()``, ``wait_blocking()``, ``on_cancel()``); set only by the
    manager, on its event loop.
    """

    __slots__ = (
        "_callbacks",
        "_cancelled",
        "_event",
        "_lock",
        "_reason",
        "_source",
        "_thread_event",
    )

    def __init__(self) -> None:
        self._cancelled = False
        self._reason: str | None = None
        self._source: CancelSource | None = None
        self._callbacks: list[Callable[[], object]] | None = None
        self._event: anyio.Event | None = None
        self._thread_event: threading.Event | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        if not self._cancelled:
            return "CancelToken(cancelled=False)"
        return f"CancelToken(cancelled=True, source={self._source}, reason={self._reason!r})"

    @property
    def cancelled(self) -> bool:
        """True once the job has been asked to stop."""
        return self._cancelled

    @property
    def reason(self) -> str | None:
        """The reason given to cancel, if any."""
        return self._reason

    @property
    def source(self) -> CancelSource | None:
        """Who stopped the job: ``user``, ``shutdown`` or ``timeout``; None until cancelled."""
        return self._source

    def raise_if_cancelled(self) -> None:
        """Raise :class:`JobCancelled` once the token is set."""
        if self._cancelled:
            raise JobCancelled(self._reason, self._source)

    async def wait(self) -> None:
        """Return once the token is set (call on the manager's event loop)."""
        if self._cancelled:
            return
        if self._event is None:
            self._event = anyio.Event()
        await self._event.wait()

    def wait_blocking(self, timeout: float | None = None) -> bool:
        """Block the calling thread until the token is set or ``timeout`` passes; return ``cancelled``."""
        with self._lock:
            if self._cancelled:
                return True
            if self._thread_event is None:
                self._thread_event = threading.Event()
            event = self._thread_event
        return event.wait(timeout)

    def on_cancel(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Call ``callback()`` when the token is set (at once if it already is).

        The callback runs on the thread that sets the token (the manager's event loop)
        and must not block. Returns a function that unregisters it.
        """
        with self._lock:
            if not self._cancelled:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(callback)
                return lambda: self._remove(callback)
        callback()
        return lambda: None

    def _remove(self, callback: Callable[[], object]) -> None:
        with self._lock:
            if self._callbacks is not None and callback in self._callbacks:
                self._callbacks.remove(callback)

    def _set(self, reason: str | None, source: CancelSource) -> bool:
        """Set the token; False when it already was. Called by the manager on its loop."""
        with self._lock:
            if self._cancelled:
                return False
            self._cancelled = True
            self._reason = reason
            self._source = source
            callbacks, self._callbacks = self._callbacks, None
            thread_event = self._thread_event
        if self._event is not None:
            self._event.set()
        if thread_event is not None:
            thread_event.set()
        for callback in callbacks or ():
            callback()
        return True
