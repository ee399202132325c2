"""``jobkit worker``: import the host's JobManager and run it until a signal stops it."""

from __future__ import annotations

import importlib
import os
import signal
import sys
from collections.abc import Callable

import anyio

from .._blocking import BlockingJobManager
from .._errors import InvalidInput
from .._manager import JobManager

__all__ = ["load_manager", "serve"]

#: The signals that stop a worker gracefully; the second one forces it.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _is_missing(module_name: str, exc: ModuleNotFoundError) -> bool:
    """True when the module named in --app (or a parent package) is what is missing."""
    missing = exc.name or ""
    return bool(missing) and (module_name == missing or module_name.startswith(missing + "."))


def load_manager(spec: str, *, store: str | None = None, blobs: str | None = None) -> JobManager:
    """The JobManager named by ``module:attribute`` (e.g. ``myapp.jobs:jobs``).

    The current directory is put on ``sys.path`` first, as ``python -m`` would. A
    :class:`BlockingJobManager` is accepted too: its async manager is run.

    ``store`` and ``blobs`` (the ``--store`` / ``--blobs`` URLs) reach the host two ways:
    as ``JOBKIT_STORE`` / ``JOBKIT_BLOBS`` in the environment before its module is
    imported (for a module that builds its manager from them), and, when the attribute is
    a factory rather than a manager, as the ``store=`` / ``blobs=`` arguments it is called
    with (``open_store`` / ``open_blobs`` of the URLs; those not given are left out).

    :raises InvalidInput: malformed spec, module or attribute missing, not a JobManager
        (nor a factory returning one), or a malformed URL.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise InvalidInput(f"--app must be module:attribute, e.g. myapp.jobs:jobs, got {spec!r}.")
    backends: dict[str, object] = {}
    if store:
        from ..stores import open_store

        backends["store"] = open_store(store)
        os.environ["JOBKIT_STORE"] = store
    if blobs:
        from ..blobs import open_blobs

        backends["blobs"] = open_blobs(blobs)
        os.environ["JOBKIT_BLOBS"] = blobs
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if not _is_missing(module_name, exc):
            raise  # the host's module imports something missing: its own bug, shown as such
        raise InvalidInput(
            f"Cannot import {module_name!r} (from --app {spec}): {exc}. "
            "Run jobkit from the directory that contains it, or add that directory to PYTHONPATH."
        ) from None
    target: object = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise InvalidInput(
                f"Module {module_name!r} has no attribute {attribute!r} (--app {spec})."
            ) from None
    if callable(target) and not isinstance(target, JobManager | BlockingJobManager):
        target = target(**backends)  # a factory: build(store=..., blobs=...) -> JobManager
    if isinstance(target, BlockingJobManager):
        target = target.manager
    if not isinstance(target, JobManager):
        raise InvalidInput(
            f"--app {spec} is a {type(target).__name__}, not a jobkit.JobManager "
            "(nor a factory that returns one)."
        )
    return target


async def serve(manager: JobManager, name: str, say: Callable[[str], None]) -> bool:
    """Run ``manager`` until SIGINT or SIGTERM, then let it drain; True if a second signal forced it.

    On the first signal the manager shuts down as usual: running jobs are interrupted and
    go back to ``pending``. A second signal cancels the rest of the drain (handlers that
    ignore their token); the interrupted jobs are still put back where possible.
    """
    forced = False
    with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
        async with anyio.create_task_group() as tg:
            stop = anyio.Event()

            async def watch() -> None:
                nonlocal forced
                async for signum in signals:
                    what = signal.Signals(signum).name
                    if not stop.is_set():
                        say(f"worker: {what} received, stopping; running jobs go back to pending.")
                        say(f"worker: send {what} again to force the stop.")
                        stop.set()
                    else:
                        say(f"worker: {what} received again, forcing the stop.")
                        forced = True
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(watch)
            async with manager:
                say(f"worker: running {name} ({manager!r}). Press Ctrl-C to stop.")
                await stop.wait()
            tg.cancel_scope.cancel()
    say("worker: stopped." if not forced else "worker: stopped (forced).")
    return forced
