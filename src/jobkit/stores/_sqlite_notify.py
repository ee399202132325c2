"""SQLiteNotifier: notes between the processes that share one SQLite file.

Every ``interval`` (10 ms by default; 50 ms once nothing changed for 2 s: each timer
wake-up costs some 50-150 us of CPU, so an idle process stays well under 1 % of a core)
:meth:`SQLiteNotifier.run` reads ``PRAGMA data_version`` on the store's connection: a
check without disk I/O, whose value changes only when *another* connection committed.
When it changed, something may have been submitted, cancelled or finished elsewhere:
local listeners get ``WAKE`` (idle workers claim) and ``CHANGED`` with ``job_id=None``
(running jobs are re-checked for cancels, waited jobs re-read).

Events cross processes only while some process wants them: a process with event listeners
keeps a row in the ``listeners`` table (refreshed while it listens, expiring when it stops
or dies). Then every process writes the events it publishes into the ``events`` table, in
the background and grouped with the store's other writes, and each listening process reads
the rows of the other processes after a change and delivers them locally. Rows are pruned
after a minute; a process that fell further behind gets an ``overflow`` event.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio

from .._log import get_logger
from .._notify import LocalNotifier
from .._records import EMPTY_MAPPING, EventType, JobEvent, JobStatus
from ..abc import Note, NoteKind
from ._sqlite import _is_busy, _micros, _time, operation

if TYPE_CHECKING:
    from ._sqlite import SQLiteStore

__all__ = ["SQLiteNotifier"]

log = get_logger("jobkit")

#: How long a listener registration lives without a refresh, and how often it is refreshed.
LISTENER_TTL = 30.0
LISTENER_REFRESH = 10.0
#: How often the listeners table is re-read (registrations of others also show up as a change).
LISTENERS_RECHECK = 5.0
#: Event rows older than this are pruned (every PRUNE_EVERY seconds, by a process writing them).
EVENT_TTL = 60.0
PRUNE_EVERY = 10.0
#: Most events queued for writing; beyond that the oldest are dropped (readers get an overflow).
OUTBOX_LIMIT = 10_000
_READ_BATCH = 1000
_MAX_BACKOFF = 5.0

_WAKE = Note(kind=NoteKind.WAKE)
_CHANGED = Note(kind=NoteKind.CHANGED, job_id=None)
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


def _wall() -> int:
    return int(time.time() * 1_000_000)


def encode_event(event: JobEvent) -> str:
    """The JSON text of an event (values JSON cannot hold are written as their ``str``)."""
    return _encode(
        {
            "type": event.type.value,
            "job_id": event.job_id,
            "tenant": event.tenant,
            "status": None if event.status is None else event.status.value,
            "at": _micros(event.at),
            "data": dict(event.data),
        }
    )


def decode_event(body: str) -> JobEvent | None:
    """The event of a row, or None for something this jobkit does not know."""
    try:
        fields = json.loads(body)
        status = fields["status"]
        data = fields["data"]
        return JobEvent(
            type=EventType(fields["type"]),
            job_id=fields["job_id"],
            tenant=fields["tenant"],
            status=None if status is None else JobStatus(status),
            at=_time(fields["at"]),  # type: ignore[arg-type]
            data=data if isinstance(data, Mapping) and data else EMPTY_MAPPING,
        )
    except (ValueError, KeyError, TypeError):
        return None


def _overflow(missed: int) -> Note:
    return Note(
        kind=NoteKind.EVENT,
        event=JobEvent(
            type=EventType.OVERFLOW,
            job_id="",
            tenant=None,
            status=None,
            at=_time(_wall()),  # type: ignore[arg-type]
            data={"missed": missed, "reason": "events of other processes were lost"},
        ),
    )


class SQLiteNotifier(LocalNotifier):
    """A :class:`~jobkit.abc.Notifier` for one manager, reaching every process on the file.

    :param store: the manager's store (its connection is used on the event loop's thread).
    :param interval: seconds between two checks for other processes' commits.
    :param idle_interval: the same once nothing changed for ``idle_after`` seconds.
    """

    __slots__ = (
        "_backoff",
        "_cursor",
        "_data_version",
        "_dropped",
        "_idle_after",
        "_idle_interval",
        "_interval",
        "_last_change",
        "_last_listeners_check",
        "_last_prune",
        "_last_refresh",
        "_listening",
        "_origin",
        "_others_listen",
        "_outbox",
        "_store",
    )

    def __init__(
        self,
        store: SQLiteStore,
        *,
        interval: float = 0.01,
        idle_interval: float = 0.05,
        idle_after: float = 2.0,
    ) -> None:
        super().__init__()
        self._store = store
        self._interval = interval
        self._idle_interval = max(interval, idle_interval)
        self._idle_after = idle_after
        self._last_change = time.monotonic()
        self._origin = secrets.token_hex(8)
        self._data_version: int | None = None
        self._outbox: list[tuple[str, int, str]] = []
        self._dropped = 0
        self._cursor: int | None = None  # the last event row read (None: not reading)
        self._listening = False  # our row is in the listeners table
        self._others_listen = False
        self._last_refresh = 0.0
        self._last_listeners_check = 0.0
        self._last_prune = 0.0
        self._backoff = 0.0

    def __repr__(self) -> str:
        return f"SQLiteNotifier({self._store.path!r}, origin={self._origin!r})"

    # -- the Notifier protocol -----------------------------------------------------------

    def notify(self, note: Note) -> None:
        self.deliver(note)
        if note.kind is NoteKind.EVENT and note.event is not None and self._others_listen:
            try:
                body = encode_event(note.event)
            except Exception:  # never raise into the caller
                log.exception("event could not be encoded for other processes", job_id=note.event.job_id)
                return
            self._outbox.append((self._origin, _wall(), body))
            if len(self._outbox) > OUTBOX_LIMIT:
                del self._outbox[0]
                self._dropped += 1

    @property
    def wants_events(self) -> bool:
        return bool(self._event_listeners) or self._others_listen

    def events_wanted(self) -> None:
        # The first local event listener: register at the next (fast) check.
        self._last_change = time.monotonic()

    def events_idle(self) -> None:
        # The last one left: unregister at the next (fast) check.
        self._last_change = time.monotonic()

    async def run(self) -> None:
        """Check for other processes' commits every ``interval`` until cancelled.

        Never raises: a failing check is logged and retried with a growing pause (up to 5 s).
        """
        try:
            while True:
                try:
                    await self._step()
                    self._backoff = 0.0
                except Exception:
                    self._backoff = min(_MAX_BACKOFF, max(self._interval, self._backoff * 2))
                    log.exception("cross-process notifier failed; retrying", retry_in=self._backoff)
                    await anyio.sleep(self._backoff)
                    continue
                quiet = time.monotonic() - self._last_change >= self._idle_after
                await anyio.sleep(self._idle_interval if quiet else self._interval)
        finally:
            if self._listening:
                with anyio.CancelScope(shield=True), anyio.move_on_after(1.0):
                    try:
                        await self._store._run(_unregister, self._origin)
                    except Exception:
                        log.debug("listener row left to expire", origin=self._origin)

    # -- the work ------------------------------------------------------------------------

    async def _step(self) -> None:
        store = self._store
        conn = store._conn
        if conn is None:
            return  # not open (yet, or any more)
        changed = False
        if not store._in_thread:  # the connection is ours to use (nothing else runs now)
            try:
                version = conn.execute("PRAGMA data_version").fetchone()[0]
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
            else:
                changed = self._data_version is not None and version != self._data_version
                self._data_version = version
        now = time.monotonic()
        if self._event_listeners or self._listening:
            await self._keep_registration(now)
        if changed or now - self._last_listeners_check >= LISTENERS_RECHECK:
            self._last_listeners_check = now
            self._others_listen = bool(await store._run(_others_listening, self._origin, _wall()))
        if changed or self._event_listeners or self._outbox:
            self._last_change = now
        if changed:
            self.deliver(_WAKE)
            self.deliver(_CHANGED)
            if self._cursor is not None:
                await self._read_events()
        if self._outbox or self._dropped:
            await self._write_events(now)

    async def _keep_registration(self, now: float) -> None:
        store = self._store
        if self._event_listeners:
            if not self._listening or now - self._last_refresh >= LISTENER_REFRESH:
                if self._cursor is None:
                    # Start from what exists now: events written before we listen are not ours.
                    self._cursor = await store._run(_last_event_seq)
                await store._run(_register, self._origin, _wall() + int(LISTENER_TTL * 1_000_000))
                self._listening = True
                self._last_refresh = now
        elif self._listening:
            await store._run(_unregister, self._origin)
            self._listening = False
            self._cursor = None

    async def _read_events(self) -> None:
        while self._cursor is not None:
            rows = await self._store._run(_events_after, self._cursor, _READ_BATCH)
            if not rows:
                return
            if rows[0][0] > self._cursor + 1:  # pruned before we read them
                self.deliver(_overflow(rows[0][0] - self._cursor - 1))
            for seq, origin, body in rows:
                self._cursor = seq
                if origin == self._origin:
                    continue
                event = decode_event(body)
                if event is not None:
                    self.deliver(Note(kind=NoteKind.EVENT, event=event))
                elif body.startswith('{"overflow":'):
                    self.deliver(_overflow(int(json.loads(body)["overflow"])))
            if len(rows) < _READ_BATCH:
                return

    async def _write_events(self, now: float) -> None:
        rows, self._outbox = self._outbox, []
        if self._dropped:
            rows.append((self._origin, _wall(), json.dumps({"overflow": self._dropped})))
            self._dropped = 0
        prune = now - self._last_prune >= PRUNE_EVERY
        try:
            await self._store._run(
                _insert_events, rows, _wall() - int(EVENT_TTL * 1_000_000) if prune else None
            )
        except BaseException:
            self._outbox[:0] = rows[-OUTBOX_LIMIT:]  # try again next time
            raise
        if prune:
            self._last_prune = now


# Store operations (see jobkit.stores._sqlite: run on the loop thread or a worker thread).


@operation()
def _register(conn: sqlite3.Connection, origin: str, expires_at: int) -> None:
    conn.execute("INSERT OR REPLACE INTO listeners (origin, expires_at) VALUES (?, ?)", (origin, expires_at))


@operation()
def _unregister(conn: sqlite3.Connection, origin: str) -> None:
    conn.execute("DELETE FROM listeners WHERE origin = ?", (origin,))


@operation(reads=True)
def _others_listening(conn: sqlite3.Connection, origin: str, now: int) -> int:
    row = conn.execute(
        "SELECT count(*) FROM listeners WHERE origin != ? AND expires_at > ?", (origin, now)
    ).fetchone()
    return int(row[0])


@operation(reads=True)
def _last_event_seq(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    return 0 if row is None else int(row[0])


@operation(reads=True)
def _events_after(conn: sqlite3.Connection, cursor: int, limit: int) -> list[Any]:
    return conn.execute(
        "SELECT seq, origin, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (cursor, limit)
    ).fetchall()


@operation(single=False)
def _insert_events(
    conn: sqlite3.Connection, rows: list[tuple[str, int, str]], prune_before: int | None
) -> None:
    conn.executemany("INSERT INTO events (origin, at, body) VALUES (?, ?, ?)", rows)
    if prune_before is not None:
        # Rows are in time order (nearly: clocks of processes differ a little), so the old
        # ones are at the start; this reads only those.
        conn.execute(
            "DELETE FROM events WHERE seq < coalesce((SELECT seq FROM events WHERE at >= ? "
            "ORDER BY seq LIMIT 1), (SELECT max(seq) FROM events))",
            (prune_before,),
        )
        conn.execute("DELETE FROM listeners WHERE expires_at < ?", (prune_before,))
