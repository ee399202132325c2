"""PostgresNotifier: notes between the processes sharing one PostgresStore schema.

Two ``LISTEN``/``NOTIFY`` channels per schema, on one dedicated (unpooled) listener
connection that waits on its socket with :func:`anyio.wait_readable` (asyncio and trio):

- ``jobkit_<schema>_ctl``, always listened to: cancel notes (``c <origin> <job id>``, sent
  by the store *in the transaction* that writes ``cancelling``, so a rolled-back cancel
  sends nothing), wake-ups after submits (``w <origin>``, at most one per
  ``WAKE_DEBOUNCE`` per process), "the set of event listeners changed" (``l <origin>``) and
  the listener's own health probe (``p <origin> <n>``);
- ``jobkit_<schema>_evt``, listened to only while this process has event listeners: the
  events of every process (``<origin> <n> <event JSON>``). A process publishes events only
  while some other process has registered (the ``listeners`` table, refreshed while it
  listens). A payload must stay under PostgreSQL's 8,000 bytes: a larger event is sent
  without its ``data``, with ``data = {"truncated": true}`` instead.

Health: every ``PING_EVERY`` seconds the listener sends itself a probe; no echo within
``PING_TIMEOUT`` (or a broken connection) and it reconnects with backoff (0.1 s doubling to
5 s). Once connected (at start, and after each reconnect) it tells this process's
listeners that anything may have changed (running jobs are re-read: a read-only cancel
check; idle workers claim); after a reconnect it also gives event listeners an
``overflow`` event (events sent meanwhile were lost). While it is unhealthy,
the manager's own poll timer and heartbeat (every ``poll_interval`` at most) find what
notes would have said.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from .._log import get_logger
from .._notify import LocalNotifier
from .._records import JobEvent, JobStatus
from ..abc import Note, NoteKind
from ._sqlite_notify import _overflow, decode_event, encode_event

if TYPE_CHECKING:
    from .postgres import PostgresStore

__all__ = ["PostgresNotifier", "event_payload"]

log = get_logger("jobkit")

#: Longest NOTIFY payload sent (PostgreSQL refuses 8,000 bytes and more).
MAX_PAYLOAD = 7_900
WAKE_DEBOUNCE = 0.05
PING_EVERY = 5.0
PING_TIMEOUT = 2.0
LISTENER_TTL = 30.0
LISTENER_REFRESH = 10.0
LISTENERS_RECHECK = 5.0
OUTBOX_LIMIT = 10_000
_MAX_BACKOFF = 5.0
_FIRST_BACKOFF = 0.1

_WAKE = Note(kind=NoteKind.WAKE)
_CHANGED = Note(kind=NoteKind.CHANGED, job_id=None)


def event_payload(origin: str, number: int, event: JobEvent) -> str:
    """The NOTIFY payload of an event: under ``MAX_PAYLOAD`` bytes, without its data if need be."""
    text = f"{origin} {number} {encode_event(event)}"
    if len(text.encode()) <= MAX_PAYLOAD:
        return text
    slim = JobEvent(
        type=event.type,
        job_id=event.job_id,
        tenant=event.tenant,
        status=event.status,
        at=event.at,
        data={"truncated": True},
    )
    return f"{origin} {number} {encode_event(slim)}"


class PostgresNotifier(LocalNotifier):
    """A :class:`~jobkit.abc.Notifier` for one manager, reaching every process on the schema."""

    __slots__ = (
        "_conn",
        "_echo",
        "_kick",
        "_last_wake",
        "_listening_events",
        "_number",
        "_origin",
        "_others_listen",
        "_outbox",
        "_ping",
        "_ping_sent",
        "_registered",
        "_regkick",
        "_send",
        "_store",
        "_wake_due",
        "_want_check",
        "connects",
        "healthy",
    )

    def __init__(self, store: PostgresStore) -> None:
        super().__init__()
        self._store = store
        self._origin = secrets.token_hex(8)
        self._conn: Any = None
        self._outbox: list[str] = []
        self._number = 0
        self._wake_due = False
        self._last_wake = 0.0
        self._send = anyio.Event()  # something to send
        self._kick = anyio.Event()  # the listener should look at its subscriptions
        self._regkick = anyio.Event()  # the registrar should look at them (or re-check others)
        self._others_listen = False
        self._listening_events = False
        self._registered = 0.0  # when our listeners row was last written (0: none)
        self._want_check = True
        self._ping = 0
        self._ping_sent = 0.0  # when the unanswered probe was sent (0: none)
        self._echo = 0
        #: True while the listener is connected and answers its probes.
        self.healthy = False
        #: Successful (re)connections of the listener so far.
        self.connects = 0

    def __repr__(self) -> str:
        schema, origin = self._store.schema, self._origin
        return f"PostgresNotifier(schema={schema!r}, origin={origin!r}, healthy={self.healthy})"

    # -- the Notifier protocol -----------------------------------------------------------

    def notify(self, note: Note) -> None:
        self.deliver(note)
        kind = note.kind
        if kind is NoteKind.WAKE:
            if not self._wake_due:
                self._wake_due = True
                self._send.set()
        elif kind is NoteKind.EVENT and note.event is not None and self._others_listen:
            try:
                self._number += 1
                payload = event_payload(self._origin, self._number, note.event)
            except Exception:  # never raise into the caller
                log.exception("event could not be encoded for other processes", job_id=note.event.job_id)
                return
            if len(self._outbox) < OUTBOX_LIMIT:
                self._outbox.append(payload)
                self._send.set()
        # CANCEL notes cross processes from the store's own transaction; CHANGED stay here.

    @property
    def wants_events(self) -> bool:
        return bool(self._event_listeners) or self._others_listen

    def events_wanted(self) -> None:
        self._kick.set()
        self._regkick.set()

    def events_idle(self) -> None:
        self._kick.set()
        self._regkick.set()

    async def run(self) -> None:
        """Listen, send, and keep the registration, until cancelled. Never raises."""
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._sender)
                tg.start_soon(self._registrar)
                await self._listen(tg)
        finally:
            with anyio.CancelScope(shield=True):
                await self._disconnect()
                if self._registered:
                    with anyio.move_on_after(1.0), contextlib.suppress(Exception):
                        await self._store._run(
                            f"DELETE FROM {self._table} WHERE origin = %s", (self._origin,)
                        )

    @property
    def _table(self) -> str:
        return f'"{self._store.schema}".listeners'

    # -- sending -------------------------------------------------------------------------

    async def _sender(self) -> None:
        store = self._store
        channel, events = store.control_channel, store.event_channel
        while True:
            await self._send.wait()
            self._send = anyio.Event()
            wait = self._last_wake + WAKE_DEBOUNCE - time.monotonic()
            if self._wake_due and not self._outbox and wait > 0:
                await anyio.sleep(wait)  # debounce: one wake-up per WAKE_DEBOUNCE
            payloads = [(events, p) for p in self._outbox]
            self._outbox = []
            if self._wake_due:
                self._wake_due = False
                self._last_wake = time.monotonic()
                payloads.append((channel, f"w {self._origin}"))
            if not payloads:
                continue
            try:
                await self._notify_all(payloads)
            except Exception:
                log.warning("notifications could not be sent; other processes poll", count=len(payloads))

    async def _notify_all(self, payloads: list[tuple[str, str]]) -> None:
        channels = [c for c, _ in payloads]
        texts = [p for _, p in payloads]
        await self._store._run(
            "SELECT pg_notify(c, p) FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS t(c, p, n) "
            "ORDER BY n",
            (channels, texts),
        )

    # -- the registration of event listeners ---------------------------------------------

    async def _registrar(self) -> None:
        """Keep our listeners row while we have event listeners; know whether others have one."""
        store = self._store
        last_check = 0.0
        while True:
            self._regkick = anyio.Event()
            now = time.monotonic()
            try:
                if self._event_listeners:
                    # Only once LISTEN on the event channel is done: a process that sees our
                    # row sends its events, and any sent before we listened would be lost.
                    due = not self._registered or now - self._registered >= LISTENER_REFRESH
                    if due and self._listening_events:
                        first = not self._registered
                        await store._run(
                            f"INSERT INTO {self._table} (origin, expires_at) VALUES "
                            f"(%s, now() + %s::float8 * interval '1 second') ON CONFLICT (origin) DO UPDATE "
                            "SET expires_at = excluded.expires_at",
                            (self._origin, LISTENER_TTL),
                        )
                        self._registered = now
                        if first:
                            await self._notify_all([(store.control_channel, f"l {self._origin}")])
                elif self._registered:
                    await store._run(f"DELETE FROM {self._table} WHERE origin = %s", (self._origin,))
                    self._registered = 0.0
                    await self._notify_all([(store.control_channel, f"l {self._origin}")])
                if self._want_check or now - last_check >= LISTENERS_RECHECK:
                    self._want_check = False
                    last_check = now
                    row = await store._run(
                        f"SELECT count(*) FROM {self._table} WHERE origin <> %s AND expires_at > now()",
                        (self._origin,),
                        lambda cursor: cursor.fetchone(),
                    )
                    self._others_listen = bool(row[0])
            except Exception:
                log.warning("event listener registration failed; retrying")
            with anyio.move_on_after(1.0):
                await self._regkick.wait()

    # -- listening -----------------------------------------------------------------------

    async def _connect(self) -> None:
        import psycopg

        store = self._store
        kwargs = store.connection_kwargs(role="listener")
        kwargs.update(keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3)

        def connect() -> Any:
            conn = psycopg.Connection.connect(store.dsn, **kwargs)
            try:
                conn.execute(f'LISTEN "{store.control_channel}"')
            except BaseException:
                conn.close()  # connected but not listening: never leave it to the collector
                raise
            return conn

        with anyio.CancelScope(shield=True):  # never lose a connection made as we are cancelled
            self._conn = await anyio.to_thread.run_sync(connect)
        self._listening_events = False

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        self.healthy = False
        if conn is not None:
            # Shielded: a cancel arriving now would otherwise stop the close before its
            # thread starts, and the connection (no longer ours to find) would leak.
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await anyio.to_thread.run_sync(conn.close)

    async def _listen(self, tg: Any) -> None:
        backoff = _FIRST_BACKOFF
        while True:
            try:
                await self._connect()
            except Exception as exc:
                log.warning(
                    "notification listener cannot connect; retrying", retry_in=backoff, error=str(exc)
                )
                await anyio.sleep(backoff)
                backoff = min(_MAX_BACKOFF, backoff * 2)
                continue
            backoff = _FIRST_BACKOFF
            self.healthy = True
            self.connects += 1
            # What happened before we listened (at start, or while we were away) is
            # unknown: running jobs are re-read (a read-only cancel check), idle workers claim.
            self.deliver(_CHANGED)
            self.deliver(_WAKE)
            if self.connects > 1 and self._event_listeners:
                self.deliver(_overflow(0))
            try:
                await self._serve(tg)
            except Exception as exc:
                log.warning("notification listener lost; reconnecting", error=str(exc))
            await self._disconnect()
            await anyio.sleep(backoff)

    async def _serve(self, tg: Any) -> None:
        """Read notifications until the connection breaks or stops answering probes."""
        conn = self._conn
        pgconn = conn.pgconn
        received: list[tuple[str, str]] = []

        def on_notify(notify: Any) -> None:  # notifications that arrive during a command
            received.append((notify.channel, notify.payload))

        conn.add_notify_handler(on_notify)
        next_ping = time.monotonic() + PING_EVERY
        while True:
            want = bool(self._event_listeners)
            if want != self._listening_events:
                verb = "LISTEN" if want else "UNLISTEN"
                await anyio.to_thread.run_sync(conn.execute, f'{verb} "{self._store.event_channel}"')
                self._listening_events = want
                self._regkick.set()  # now others may be told we listen (or that we stopped)
            self._kick = anyio.Event()
            now = time.monotonic()
            if self._ping_sent and now - self._ping_sent > PING_TIMEOUT:
                raise ConnectionError("the listener's probe got no answer")
            if not self._ping_sent and now >= next_ping:
                self._ping += 1
                self._ping_sent = now
                next_ping = now + PING_EVERY
                tg.start_soon(self._probe, self._ping)
            timeout = (self._ping_sent + PING_TIMEOUT if self._ping_sent else next_ping) - now
            with anyio.move_on_after(max(0.0, timeout)):
                async with anyio.create_task_group() as waits:
                    waits.start_soon(self._wait_kick, waits.cancel_scope)
                    await anyio.wait_readable(pgconn.socket)
                    waits.cancel_scope.cancel()
            pgconn.consume_input()
            if pgconn.status != 0:  # psycopg.pq.ConnStatus.OK
                raise ConnectionError("the listener's connection broke")
            while (notify := pgconn.notifies()) is not None:
                received.append((notify.relname.decode(), notify.extra.decode()))
            batch, received[:] = list(received), []
            for channel, payload in batch:
                self._on_notification(channel, payload, tg)

    async def _wait_kick(self, scope: anyio.CancelScope) -> None:
        await self._kick.wait()
        scope.cancel()

    async def _probe(self, number: int) -> None:
        try:
            await self._notify_all([(self._store.control_channel, f"p {self._origin} {number}")])
        except Exception:
            log.debug("listener probe not sent")

    def _on_notification(self, channel: str, payload: str, tg: Any) -> None:
        store = self._store
        if channel == store.control_channel:
            tag, _, rest = payload.partition(" ")
            origin, _, rest = rest.partition(" ")
            if tag == "c":
                # Also from this process: another manager on the same store may run it.
                tg.start_soon(self._cancelled, rest)
            elif origin == self._origin:
                if tag == "p" and rest == str(self._ping):
                    self._ping_sent = 0.0
            elif tag == "w":
                self.deliver(_WAKE)
            elif tag == "l":
                self._want_check = True
                self._regkick.set()
        elif channel == store.event_channel and self._event_listeners:
            origin, _, rest = payload.partition(" ")
            if origin == self._origin:
                return
            _, _, body = rest.partition(" ")
            event = decode_event(body)
            if event is not None:
                self.deliver(Note(kind=NoteKind.EVENT, job_id=event.job_id, event=event))

    async def _cancelled(self, job_id: str) -> None:
        """A cancel note: read the job (its reason) and tell the process's listeners."""
        try:
            job = await self._store.get(job_id)
        except Exception:
            job = None
        if job is not None and job.status is not JobStatus.CANCELLING:
            job = None
        self.deliver(Note(kind=NoteKind.CANCEL, job_id=job_id, job=job))
