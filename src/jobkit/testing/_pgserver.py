"""A throwaway PostgreSQL cluster for tests and benchmarks.

:func:`start_cluster` runs ``initdb`` in a fresh temporary directory and starts the server
on ``127.0.0.1`` and a free port, with durability switched off (``fsync``,
``synchronous_commit`` and ``full_page_writes``: a test cluster is thrown away anyway), unix
sockets in the same directory. :meth:`PostgresCluster.stop` stops it and removes the
directory. ``initdb`` refuses to run as root: as root, the cluster runs as ``nobody``
(through ``runuser``), which owns the directory.

The binaries are looked up on ``PATH``, then through ``pg_config --bindir``, then in
Debian's ``/usr/lib/postgresql/<version>/bin``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

__all__ = ["ClusterUnavailable", "PostgresCluster", "find_bindir", "start_cluster"]

#: Settings of a test cluster: fast, not durable.
SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "64MB",
}


class ClusterUnavailable(Exception):
    """No PostgreSQL binaries were found, or the cluster did not start."""


def find_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``, or None when PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            )
            bindir = Path(out.stdout.strip())
            if (bindir / "initdb").is_file():
                return bindir
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return candidates[-1].parent if candidates else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresCluster:
    """A running throwaway cluster; :attr:`dsn` connects as its superuser ``postgres``."""

    def __init__(self, directory: Path, bindir: Path, port: int, as_user: str | None) -> None:
        self.directory = directory
        self.bindir = bindir
        self.port = port
        self._as_user = as_user
        self._running = False

    def __repr__(self) -> str:
        return f"PostgresCluster(port={self.port}, running={self._running})"

    @property
    def dsn(self) -> str:
        """A libpq URL of the cluster's ``postgres`` database."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def _command(self, *args: str) -> list[str]:
        if self._as_user is None:
            return list(args)
        return ["runuser", "-u", self._as_user, "--", *args]

    def _run(self, *args: str, timeout: float = 60) -> None:
        result = subprocess.run(
            self._command(*args), capture_output=True, text=True, timeout=timeout, cwd=self.directory
        )
        if result.returncode != 0:
            said = result.stderr.strip() or result.stdout.strip()
            raise ClusterUnavailable(f"{Path(args[0]).name} failed ({result.returncode}): {said}")

    def _start(self) -> None:
        options = " ".join(
            [f"-h 127.0.0.1 -p {self.port} -k {self.directory}"]
            + [f"-c {name}={value}" for name, value in SETTINGS.items()]
        )
        log = self.directory / "server.log"
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(log), "-w", "-o", options, "start"
        )
        self._running = True

    def stop(self) -> None:
        """Stop the server (at once: the data is thrown away) and remove its directory. Idempotent."""
        try:
            if self._running:
                self._running = False
                with contextlib.suppress(ClusterUnavailable, subprocess.SubprocessError, OSError):
                    self._run(
                        str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"
                    )
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


def start_cluster(*, bindir: Path | None = None) -> PostgresCluster:
    """Create and start a throwaway cluster (a few seconds).

    :raises ClusterUnavailable: PostgreSQL is not installed, or initdb/pg_ctl failed.
    """
    bindir = bindir or find_bindir()
    if bindir is None:
        raise ClusterUnavailable(
            "PostgreSQL is not installed (no initdb on PATH, via pg_config or in /usr/lib/postgresql)"
        )
    as_user = "nobody" if os.geteuid() == 0 else None
    directory = Path(tempfile.mkdtemp(prefix="jobkit-pg-"))
    try:
        if as_user is not None:
            shutil.chown(directory, user=as_user)
        return _initdb_and_start(directory, bindir, as_user)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def _initdb_and_start(directory: Path, bindir: Path, as_user: str | None) -> PostgresCluster:
    last: ClusterUnavailable | None = None
    for _ in range(3):
        cluster = PostgresCluster(directory, bindir, _free_port(), as_user)
        if not cluster.data.exists():
            cluster._run(
                str(bindir / "initdb"), "-D", str(cluster.data), "-A", "trust", "-U", "postgres",
                "--no-sync", "-E", "UTF8", "--locale=C",
            )  # fmt: skip
        try:
            cluster._start()
        except ClusterUnavailable as exc:  # most likely the port was taken meanwhile
            last = exc
            continue
        return cluster
    assert last is not None
    raise last
