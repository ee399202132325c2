"""What a handler gets: JobContext (async handlers) and SyncJobContext (sync handlers)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from ._errors import InvalidInput
from ._log import get_logger
from ._process import alive
from ._records import Job
from ._token import CancelToken
from ._validate import MAX_TEXT_LENGTH, check_optional_text

if TYPE_CHECKING:
    import subprocess
    from pathlib import Path

# subprocess, shutil, tempfile, pathlib and anyio.from_thread are imported where they are
# used: most handlers need none of them, and `import jobkit` stays quick.

__all__ = ["JobContext", "RunPort", "SyncJobContext"]

StrPath = str | os.PathLike[str]
Argv = Sequence[StrPath]


def _check_fraction(fraction: float | None) -> float | None:
    if fraction is None:
        return None
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        raise InvalidInput(f"Progress must be a number from 0 to 1, got {fraction!r}.")
    if not 0.0 <= fraction <= 1.0:
        raise InvalidInput(f"Progress must be from 0 to 1, got {fraction!r}.")
    return float(fraction)


def _as_bytes(data: bytes | bytearray | memoryview | str) -> bytes:
    if isinstance(data, str):
        return data.encode()
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    raise InvalidInput(f"Artifact data must be bytes or str, got {type(data).__name__}.")


class RunPort(Protocol):
    """What a context needs of the run it belongs to; the worker pool implements it."""

    @property
    def job(self) -> Job:
        """The job as last stored."""

    @property
    def token(self) -> CancelToken:
        """The job's cancel token."""

    async def report_progress(self, fraction: float | None, message: str | None) -> None:
        """Store progress (already checked) and announce it."""

    async def store_result(self, value: Any) -> None:
        """Store a (partial) result.

        :raises InvalidInput: ``value`` is not JSON.
        """

    async def put_artifact(self, name: str, data: bytes) -> None:
        """Write an artifact under the job's prefix.

        :raises InvalidInput: ``name`` is not a safe relative name.
        """


class JobContext:
    """Given to an async handler: the job, its cancel token and the tools to report back.

    ``scratch`` is a private temporary directory, created on first use and removed when
    the job ends, however it ends.
    """

    __slots__ = ("_log", "_run", "_scratch")

    def __init__(self, run: RunPort) -> None:
        self._run = run
        self._scratch: Path | None = None
        self._log: Any = None

    def __repr__(self) -> str:
        return f"JobContext(job_id={self._run.job.id!r}, kind={self._run.job.kind!r})"

    @property
    def job(self) -> Job:
        """The job as last stored (status, progress, result...)."""
        return self._run.job

    @property
    def token(self) -> CancelToken:
        """The job's cancel token."""
        return self._run.token

    @property
    def scratch(self) -> Path:
        """A private temporary directory, removed when the job ends."""
        if self._scratch is None:
            import tempfile
            from pathlib import Path

            # The process id in the name lets a later start remove what a killed process left.
            prefix = f"{SCRATCH_PREFIX}{os.getpid()}-{self._run.job.id[:12]}-"
            self._scratch = Path(tempfile.mkdtemp(prefix=prefix))
        return self._scratch

    @property
    def log(self) -> Any:
        """A structlog logger bound to ``job_id``, ``kind`` and ``tenant``."""
        if self._log is None:
            job = self._run.job
            self._log = get_logger("jobkit.job").bind(job_id=job.id, kind=job.kind, tenant=job.tenant)
        return self._log

    async def checkpoint(self) -> None:
        """Raise :class:`JobCancelled` if the job was asked to stop; else yield to the loop."""
        self._run.token.raise_if_cancelled()
        await anyio.lowlevel.checkpoint()

    async def progress(self, fraction: float | None, message: str | None = None) -> None:
        """Record progress (0..1) and an optional message; subscribers see a ``progress`` event."""
        fraction = _check_fraction(fraction)
        check_optional_text(message, "progress message", MAX_TEXT_LENGTH)
        await self._run.report_progress(fraction, message)

    async def set_result(self, value: Any) -> None:
        """Store a (partial) result now; it is kept if the job is then cancelled or fails."""
        await self._run.store_result(value)

    async def put_artifact(self, name: str, data: bytes | bytearray | memoryview | str) -> None:
        """Write an artifact under the job's prefix (``jobs/<job_id>/<name>``)."""
        await self._run.put_artifact(name, _as_bytes(data))

    async def run_process(
        self,
        argv: Argv,
        *,
        input: bytes | None = None,
        cwd: StrPath | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        terminate_grace: float = 5.0,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a subprocess to completion, capturing its output.

        When the job is cancelled the process gets SIGTERM, then SIGKILL after
        ``terminate_grace`` seconds, and :class:`JobCancelled` is raised.

        :raises subprocess.CalledProcessError: ``check`` is true and it exited non-zero.
        """
        import subprocess

        token = self._run.token
        token.raise_if_cancelled()
        stdout = bytearray()
        stderr = bytearray()
        process = await anyio.open_process(
            [os.fspath(a) for a in argv],
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            cwd=cwd,
            env=env,
        )
        try:
            async with anyio.create_task_group() as watcher:
                watcher.start_soon(_stop_on_cancel, process, token, terminate_grace)
                async with anyio.create_task_group() as io:
                    assert process.stdout is not None
                    assert process.stderr is not None
                    io.start_soon(_drain, process.stdout, stdout)
                    io.start_soon(_drain, process.stderr, stderr)
                    if input is not None and process.stdin is not None:
                        io.start_soon(_feed, process.stdin, input)
                returncode = await process.wait()
                watcher.cancel_scope.cancel()
        except BaseException:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    process.kill()
                await process.aclose()
            raise
        await process.aclose()
        token.raise_if_cancelled()
        args = [os.fspath(a) for a in argv]
        if check and returncode != 0:
            raise subprocess.CalledProcessError(returncode, args, bytes(stdout), bytes(stderr))
        return subprocess.CompletedProcess(args, returncode, bytes(stdout), bytes(stderr))

    def _cleanup(self) -> Path | None:
        scratch, self._scratch = self._scratch, None
        return scratch


async def _drain(stream: anyio.abc.ByteReceiveStream, into: bytearray) -> None:
    async for chunk in stream:
        into += chunk


async def _feed(stream: anyio.abc.ByteSendStream, data: bytes) -> None:
    try:
        await stream.send(data)
    finally:
        await stream.aclose()


async def _stop_on_cancel(process: anyio.abc.Process, token: CancelToken, grace: float) -> None:
    await token.wait()
    if process.returncode is not None:
        return
    process.terminate()
    with anyio.move_on_after(grace):
        await process.wait()
        return
    process.kill()


def remove_scratch(path: Path | None) -> None:
    if path is not None:
        import shutil

        shutil.rmtree(path, ignore_errors=True)


SCRATCH_PREFIX = "jobkit-"


def remove_stale_scratch() -> int:
    """Remove the scratch folders of processes that are gone (killed before their jobs'
    cleanup ran); return how many. A folder whose process still runs is left alone."""
    import shutil
    import tempfile

    removed = 0
    try:
        entries = list(os.scandir(tempfile.gettempdir()))
    except OSError:
        return 0
    for entry in entries:
        name = entry.name
        if not name.startswith(SCRATCH_PREFIX) or not entry.is_dir(follow_symlinks=False):
            continue
        pid_text = name[len(SCRATCH_PREFIX) :].split("-", 1)[0]
        if not pid_text.isdigit() or alive(int(pid_text)):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed += 1
    return removed


class SyncJobContext:
    """Given to a sync handler (run in a worker thread): :class:`JobContext` as plain calls."""

    __slots__ = ("_context",)

    def __init__(self, context: JobContext) -> None:
        self._context = context

    def __repr__(self) -> str:
        return f"Sync{self._context!r}"

    @property
    def job(self) -> Job:
        """The job as last stored."""
        return self._context.job

    @property
    def token(self) -> CancelToken:
        """The job's cancel token (safe to use from this thread)."""
        return self._context.token

    @property
    def scratch(self) -> Path:
        """A private temporary directory, removed when the job ends."""
        return self._context.scratch

    @property
    def log(self) -> Any:
        """A structlog logger bound to the job."""
        return self._context.log

    def checkpoint(self) -> None:
        """Raise :class:`JobCancelled` if the job was asked to stop."""
        self._context.token.raise_if_cancelled()

    def progress(self, fraction: float | None, message: str | None = None) -> None:
        """Record progress (0..1) and an optional message."""
        import anyio.from_thread

        anyio.from_thread.run(self._context.progress, fraction, message)

    def set_result(self, value: Any) -> None:
        """Store a (partial) result now."""
        import anyio.from_thread

        anyio.from_thread.run(self._context.set_result, value)

    def put_artifact(self, name: str, data: bytes | bytearray | memoryview | str) -> None:
        """Write an artifact under the job's prefix."""
        import anyio.from_thread

        anyio.from_thread.run(self._context.put_artifact, name, data)

    def run_process(
        self,
        argv: Argv,
        *,
        input: bytes | None = None,
        cwd: StrPath | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        terminate_grace: float = 5.0,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a subprocess; on cancel it is terminated, then killed, and JobCancelled raised."""
        import subprocess

        token = self._context.token
        token.raise_if_cancelled()
        args = [os.fspath(a) for a in argv]
        process = subprocess.Popen(
            args,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
        )
        unregister = token.on_cancel(process.terminate)
        cancelled_at: float | None = None
        pending_input = input
        try:
            while True:
                try:
                    out, err = process.communicate(pending_input, timeout=0.05)
                    break
                except subprocess.TimeoutExpired:
                    pending_input = None
                    if token.cancelled:
                        if cancelled_at is None:
                            cancelled_at = time.monotonic()
                        elif time.monotonic() - cancelled_at > terminate_grace:
                            process.kill()
        except BaseException:
            process.kill()
            process.wait()
            raise
        finally:
            unregister()
        token.raise_if_cancelled()
        if check and process.returncode != 0:
            raise subprocess.CalledProcessError(process.returncode, args, out, err)
        return subprocess.CompletedProcess(args, process.returncode, out, err)
