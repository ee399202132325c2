"""LocalNotifier: the in-process :class:`~jobkit.abc.Notifier`.

Wake-ups for idle workers, cancel notes for running jobs, "this job changed" for
``wait()``, and events for subscribers all go through one notifier per manager. Stores
that signal across processes build on this class (it sits beside ``abc``: stores may
import it) and add their own listener in :meth:`run`.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio

from ._log import get_logger
from ._records import Job
from .abc import Note, NoteCallback, NoteKind

__all__ = ["LocalNotifier", "Waiters"]

log = get_logger("jobkit")


class LocalNotifier:
    """Fans notes out to this process's listeners, synchronously, in registration order."""

    __slots__ = ("_event_listeners", "_listeners")

    def __init__(self) -> None:
        self._listeners: list[NoteCallback] = []
        self._event_listeners: list[NoteCallback] = []

    def __repr__(self) -> str:
        return f"{type(self).__name__}(listeners={len(self._listeners) + len(self._event_listeners)})"

    async def run(self) -> None:
        """Nothing to do in one process: wait until cancelled."""
        await anyio.sleep_forever()

    def notify(self, note: Note) -> None:
        self.deliver(note)

    def deliver(self, note: Note) -> None:
        """Call this process's listeners (never raises: a failing listener is logged)."""
        # The lists are replaced, never changed in place: iterating them is safe.
        listeners = self._event_listeners if note.kind is NoteKind.EVENT else self._listeners
        for callback in listeners:
            try:
                callback(note)
            except Exception:
                log.exception("note listener failed", note=note.kind.value, job_id=note.job_id)

    def listen(self, callback: NoteCallback, *, events: bool = False) -> Callable[[], None]:
        self._set_listeners(events, [*self._get_listeners(events), callback])
        if events and len(self._event_listeners) == 1:
            self.events_wanted()

        def stop() -> None:
            listeners = self._get_listeners(events)
            if callback in listeners:
                self._set_listeners(events, [c for c in listeners if c is not callback])
                if events and not self._event_listeners:
                    self.events_idle()

        return stop

    def _get_listeners(self, events: bool) -> list[NoteCallback]:
        return self._event_listeners if events else self._listeners

    def _set_listeners(self, events: bool, listeners: list[NoteCallback]) -> None:
        if events:
            self._event_listeners = listeners
        else:
            self._listeners = listeners

    @property
    def wants_events(self) -> bool:
        return bool(self._event_listeners)

    # Hooks for cross-process notifiers: the first event listener arrived / the last left.
    def events_wanted(self) -> None:
        pass

    def events_idle(self) -> None:
        pass


class _Waiter:
    __slots__ = ("event", "job", "noted")

    def __init__(self) -> None:
        self.event: anyio.Event | None = None  # made only when the caller has to block
        self.job: Job | None = None  # the finished job, when a note carried it
        self.noted = False


class Waiters:
    """The callers of ``wait()``, woken by ``changed`` notes for their job.

    A note that carries the finished job hands it over (no re-read); a note without a job
    (deleted here, or changed in another process) makes the waiter re-read the store.
    """

    __slots__ = ("_by_job",)

    def __init__(self) -> None:
        self._by_job: dict[str, list[_Waiter]] = {}

    def add(self, job_id: str) -> _Waiter:
        waiter = _Waiter()
        self._by_job.setdefault(job_id, []).append(waiter)
        return waiter

    def discard(self, job_id: str, waiter: _Waiter) -> None:
        waiters = self._by_job.get(job_id)
        if waiters is not None and waiter in waiters:
            waiters.remove(waiter)
            if not waiters:
                del self._by_job[job_id]

    @staticmethod
    async def wait(waiter: _Waiter) -> None:
        """Block until a note arrives for the waiter (or the poll tick, see :meth:`poke`)."""
        if not waiter.noted:
            waiter.event = anyio.Event()
            await waiter.event.wait()
        waiter.noted = False

    def poke(self) -> None:
        """The poll tick: every waiter re-reads its job (another process may have finished it)."""
        self.wake_all()

    def on_note(self, note: Note) -> None:
        if note.kind is not NoteKind.CHANGED or not self._by_job:
            return
        if note.job_id is None:
            self.wake_all()
            return
        found = self._by_job.get(note.job_id)
        if found is None:
            return
        job = note.job
        if job is not None and not job.is_terminal:
            return  # still on its way: nothing to tell
        for waiter in found:
            self._wake(waiter, job)

    def wake_all(self) -> None:
        """Every waiter re-reads its job (also how waiters learn that the manager closed)."""
        for waiters in self._by_job.values():
            for waiter in waiters:
                self._wake(waiter, None)

    @staticmethod
    def _wake(waiter: _Waiter, job: Job | None) -> None:
        if job is not None:
            waiter.job = job
        waiter.noted = True
        if waiter.event is not None:
            waiter.event.set()
