"""Which process wrote a leftover: a tag for file names, and whether that process still runs.

Scratch folders and temporary blob files carry the writing process's tag, so a later
process can remove what a killed one left at once, instead of waiting for it to age.
"""

from __future__ import annotations

import os
import zlib

__all__ = ["HOST_TAG", "alive", "left_by_dead_process", "process_tag"]


def _host_name() -> str:
    if hasattr(os, "uname"):
        return os.uname().nodename
    import socket  # pragma: no cover - Windows

    return socket.gethostname()  # pragma: no cover


#: Eight hex digits naming this host: a pid is only meaningful on the host that gave it.
#: (A checksum, not a secure hash: hashlib and socket cost more to import than all of jobkit.)
HOST_TAG = f"{zlib.crc32(_host_name().encode('utf-8', 'replace')):08x}"


def alive(pid: int) -> bool:
    """False only when no process ``pid`` runs on this host (ours is always alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # someone else's process, or not a pid at all: leave it
    return True


def left_by_dead_process(tag: str) -> bool:
    """True when ``tag`` (``<host>-<pid>``, as :func:`process_tag` makes) names a process
    of this host that is gone; False for another host's, a live one's, or a malformed tag."""
    host, _, pid = tag.partition("-")
    return host == HOST_TAG and pid.isdigit() and not alive(int(pid))


def process_tag() -> str:
    """``<host>-<pid>`` of the calling process (the pid is read now: forks differ)."""
    return f"{HOST_TAG}-{os.getpid()}"
