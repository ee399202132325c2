"""Handler signatures mypy checks (run by `make lint` with --strict, which warns about unused
`type: ignore` comments): each line marked ``type: ignore[...]`` must stay an error, and every
other line must type-check."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from jobkit import BlockingJobManager, JobContext, JobManager, SyncJobContext

jobs = JobManager()
sync_jobs = BlockingJobManager()


# -- handlers that are right --------------------------------------------------------------


@jobs.handler("resize")
async def resize(ctx: JobContext, payload: dict[str, int]) -> dict[str, int]:
    await ctx.checkpoint()
    return {"width": payload["width"] // 2}


@jobs.handler("report")
def report(ctx: SyncJobContext, payload: Any) -> str:
    ctx.checkpoint()
    return "done"


@jobs.handler("nothing")
async def nothing(ctx: JobContext, payload: None) -> None:
    return None


def lines(ctx: SyncJobContext, payload: list[str]) -> list[str]:
    return sorted(payload)


jobs.register("lines", lines)
sync_jobs.register("lines", lines)
sync_jobs.handler("resize")(resize)

# The decorator gives the function back with its own type.
kept: Callable[[SyncJobContext, Any], str] = report
kept_async: Callable[[JobContext, dict[str, int]], Awaitable[dict[str, int]]] = resize


# -- handlers that are wrong ---------------------------------------------------------------


async def no_context(payload: Any) -> None:
    return None


jobs.register("no-context", no_context)  # type: ignore[arg-type]


@jobs.handler("no-context-either")  # type: ignore[type-var]
async def also_no_context(payload: Any) -> None:
    return None


@jobs.handler("async-with-sync-context")  # type: ignore[type-var]
async def async_with_sync_context(ctx: SyncJobContext, payload: Any) -> None:
    ctx.checkpoint()


async def async_sync_ctx(ctx: SyncJobContext, payload: Any) -> int:
    return 1


jobs.register("async-with-sync-context-2", async_sync_ctx)  # type: ignore[arg-type]
sync_jobs.register("async-with-sync-context-3", async_sync_ctx)  # type: ignore[arg-type]


@jobs.handler("sync-with-async-context")  # type: ignore[type-var]
def sync_with_async_context(ctx: JobContext, payload: Any) -> None:
    return None


class NotJson:
    pass


@jobs.handler("a-result-that-is-not-json")  # type: ignore[type-var]
def not_json(ctx: SyncJobContext, payload: Any) -> NotJson:
    return NotJson()
