"""A process that listens for cross-process events on a SQLite file (run as a script).

usage: sqlite_notify_worker.py DB_PATH
Prints "listening" once it listens for events (its registration reaches the other
processes with its next check), then each event it receives from other processes as one
JSON line, until terminated.
"""

from __future__ import annotations

import sys

import anyio
import structlog

from jobkit.abc import Note
from jobkit.stores import SQLiteStore
from jobkit.stores._sqlite_notify import encode_event


async def main(db: str) -> None:
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())
    store = SQLiteStore(db)
    await store.open()
    notifier = store.notifier()

    def show(note: Note) -> None:
        if note.event is not None:
            print(encode_event(note.event), flush=True)

    notifier.listen(show, events=True)
    print("listening", flush=True)
    await notifier.run()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
