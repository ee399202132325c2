"""LocalNotifier: the in-process :class:`~jobkit.abc.Notifier`.

Wake-ups for idle workers, cancel notes for running jobs, "this job changed" for
``wait()``, and events for subscribers all go through one notifier per manager. Stores
that signal across processes build on this class (it sits beside ``abc``: stores may
import it) and add their own listener in :meth:`run`.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import structlog

from .abc import Note, NoteCallback, NoteKind

__all__ = ["LocalNotifier"]

log = structlog.get_logger("jobkit")


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
        listeners = self._event_listeners if note.kind is NoteKind.EVENT else self._listeners
        for callback in tuple(listeners):
            try:
                callback(note)
            except Exception:
                log.exception("note listener failed", note=note.kind.value, job_id=note.job_id)

    def listen(self, callback: NoteCallback, *, events: bool = False) -> Callable[[], None]:
        listeners = self._event_listeners if events else self._listeners
        listeners.append(callback)

        def stop() -> None:
            if callback in listeners:
                listeners.remove(callback)
                if events and not listeners:
                    self.events_idle()

        if events and len(listeners) == 1:
            self.events_wanted()
        return stop

    @property
    def wants_events(self) -> bool:
        return bool(self._event_listeners)

    # Hooks for cross-process notifiers: the first event listener arrived / the last left.
    def events_wanted(self) -> None:
        pass

    def events_idle(self) -> None:
        pass
