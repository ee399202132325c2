"""The demo app behind ``jobkit demo``: the job API and the console on SQLite + local files.

**Insecure, for a local demo only.** Whoever calls the API says who they are: the actor
comes from the headers ``X-Actor``, ``X-Tenant`` and ``X-Roles`` (comma-separated), or
from the query parameters ``actor``, ``tenant`` and ``roles`` (for a plain link to an
endpoint). No actor id means the trusted host, which sees everything. Open the
console as a tenant with ``/console/?actor=alice&tenant=acme``, as an admin with
``/console/?actor=root&roles=admin``.

Three handlers take a few seconds each, report progress and write artifacts:

- ``thumbnail`` (async): renders small PNG thumbnails of ``payload["image"]``, keeping
  the ones already made as a partial result when cancelled.
- ``report`` (sync, in a worker thread): aggregates rows into a CSV artifact.
- ``transcode`` (async): encodes segments in child processes (``ctx.run_process``), which
  a cancel terminates; ``{"fail": true}`` makes one segment fail.

Each takes optional ``steps`` (or ``segments``) and ``delay`` (seconds per step) in its
payload. Finished jobs are kept only for minutes, so the sweeper visibly expires them.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
import struct
import sys
import threading
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio

try:
    from fastapi import FastAPI, Request
    from fastapi.responses import RedirectResponse
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("jobkit.integrations.fastapi needs FastAPI: pip install 'jobkit[fastapi]'") from exc

from .._context import JobContext, SyncJobContext
from .._manager import JobManager
from .._policies import Retention
from .._records import Actor
from ..blobs import FileBlobStore
from ..stores import SQLiteStore
from ._console import console_router
from ._http import AS_HOST
from .fastapi import install_error_handlers, job_router, lifespan

__all__ = ["create_demo_app", "demo_actor", "register_demo_handlers"]

#: The demo's tenants and their users, used to seed jobs.
ALICE = Actor(id="alice", tenant="acme")
BOB = Actor(id="bob", tenant="globex")

#: How long finished jobs are kept: short, so that expiry can be watched.
DEMO_RETENTION = Retention(
    completed=timedelta(minutes=15),
    failed=timedelta(minutes=15),
    cancelled=timedelta(minutes=5),
)

_THUMBNAIL_SIZES = (32, 64, 128, 256)
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")

# The "encoder" a transcode job runs per segment: it works for a while, then reports.
_ENCODER = (
    "import sys, time\n"
    "seconds, segment, status = float(sys.argv[1]), sys.argv[2], int(sys.argv[3])\n"
    "time.sleep(seconds)\n"
    "if status:\n"
    "    sys.stderr.write(f'segment {segment}: invalid data found when processing input\\n')\n"
    "    sys.exit(status)\n"
    "sys.stdout.write(f'segment {segment}: encoded\\n')\n"
)


# -- identity --------------------------------------------------------------------------


def _identity(request: Request, header: str, query: str) -> str | None:
    # All from the headers when X-Actor is there, else all from the query (a download link
    # carries no headers): so a `tenant` filter in the query never rebinds a signed-in admin.
    source = request.headers if "x-actor" in request.headers else request.query_params
    value = source.get(header if source is request.headers else query)
    value = value.strip() if value is not None else None
    return value or None


async def demo_actor(request: Request) -> object:
    """The demo's (insecure) actor dependency: ``X-Actor``/``X-Tenant``/``X-Roles`` headers,
    else (no ``X-Actor`` header) the ``actor``/``tenant``/``roles`` query parameters; no
    actor id = the trusted host (an insecure demo says so explicitly: :data:`AS_HOST`)."""
    actor_id = _identity(request, "x-actor", "actor")
    if actor_id is None:
        return AS_HOST
    roles = _identity(request, "x-roles", "roles") or ""
    return Actor(
        id=actor_id,
        tenant=_identity(request, "x-tenant", "tenant"),
        roles=frozenset(role.strip() for role in roles.split(",") if role.strip()),
    )


# -- handlers ----------------------------------------------------------------------------


def _options(payload: Any) -> dict[str, Any]:
    return payload if isinstance(payload, dict) else {}


def _number(options: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return min(max(float(value), low), high)


def _name(options: dict[str, Any], key: str, default: str) -> str:
    value = options.get(key)
    text = _SAFE_NAME.sub("-", value).strip(".-") if isinstance(value, str) else ""
    return text[:60] or default


def _png(size: int, seed: str) -> bytes:
    """A small, valid PNG: a diagonal gradient in a colour picked from ``seed``."""
    rng = random.Random(seed)
    base = (rng.randrange(40, 200), rng.randrange(40, 200), rng.randrange(40, 200))
    rows = bytearray()
    for y in range(size):
        rows.append(0)  # filter type: none
        for x in range(size):
            shade = (x + y) * 55 // (2 * size)
            rows += bytes(min(255, channel + shade) for channel in base)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(rows)))
        + chunk(b"IEND", b"")
    )


async def thumbnail(ctx: JobContext, payload: Any) -> dict[str, Any]:
    """Render thumbnails of an image, one size every few steps."""
    options = _options(payload)
    image = _name(options, "image", "image.jpg")
    stem = image.rsplit(".", 1)[0] or "image"
    steps = int(_number(options, "steps", 8, 1, 10_000))
    delay = _number(options, "delay", 0.6, 0, 60)
    # the step after which each size is written, spread over the steps
    due = {
        max(1, round(steps * (i + 1) / len(_THUMBNAIL_SIZES))): size
        for i, size in enumerate(_THUMBNAIL_SIZES)
    }
    made: list[str] = []
    await ctx.progress(0.0, f"Loading {image}")
    for step in range(1, steps + 1):
        await ctx.checkpoint()
        await anyio.sleep(delay)
        message = f"Step {step} of {steps}"
        if step in due:
            name = f"thumbnails/{stem}-{due[step]}px.png"
            await ctx.put_artifact(name, _png(due[step], image))
            made.append(name)
            await ctx.set_result({"thumbnails": made})  # kept if the job is cancelled later
            message = f"Rendered {due[step]}px thumbnail"
        await ctx.progress(step / steps, message)
    return {"thumbnails": made}


def report(ctx: SyncJobContext, payload: Any) -> dict[str, Any]:
    """Aggregate rows into a CSV report (a sync handler: it runs in a worker thread)."""
    options = _options(payload)
    name = _name(options, "name", "report")
    rows = int(_number(options, "rows", 240, 1, 100_000))
    steps = int(_number(options, "steps", 6, 1, 1000))
    delay = _number(options, "delay", 0.5, 0, 60)
    stop = threading.Event()
    unregister = ctx.token.on_cancel(stop.set)
    try:
        rng = random.Random(name)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["day", "region", "orders", "revenue"])
        written = 0
        for step in range(1, steps + 1):
            stop.wait(delay)  # the "work"; a cancel ends it early
            ctx.checkpoint()
            target = rows * step // steps
            for row in range(written, target):
                orders = rng.randrange(1, 400)
                region = rng.choice(("north", "south", "east", "west"))
                writer.writerow([row // 4 + 1, region, orders, f"{orders * rng.uniform(8, 40):.2f}"])
            written = target
            ctx.progress(step / steps, f"Aggregated {written} of {rows} rows")
        ctx.put_artifact(f"{name}.csv", out.getvalue())
    finally:
        unregister()
    return {"rows": rows, "file": f"{name}.csv"}


async def transcode(ctx: JobContext, payload: Any) -> dict[str, Any]:
    """Encode a file segment by segment, each in a child process."""
    options = _options(payload)
    source = _name(options, "file", "video.mov")
    preset = _name(options, "preset", "720p")
    segments = int(_number(options, "segments", 5, 1, 1000))
    delay = _number(options, "delay", 0.7, 0, 60)
    failing = segments // 2 + 1 if options.get("fail") is True else None
    log: list[str] = []
    await ctx.progress(0.0, f"Probing {source}")
    try:
        for segment in range(1, segments + 1):
            status = 1 if segment == failing else 0
            argv = [sys.executable, "-c", _ENCODER, str(delay), str(segment), str(status)]
            done = await ctx.run_process(argv, check=False, terminate_grace=2.0)
            log.append((done.stdout + done.stderr).decode(errors="replace").strip())
            if done.returncode != 0:
                raise RuntimeError(f"The encoder exited with status {done.returncode} on segment {segment}.")
            await ctx.progress(segment / segments, f"Encoded segment {segment} of {segments} ({preset})")
    finally:
        if log:
            with anyio.CancelScope(shield=True):
                await ctx.put_artifact("encode.log", "\n".join(log) + "\n")
    manifest = {"source": source, "preset": preset, "segments": segments}
    await ctx.put_artifact(f"{source.rsplit('.', 1)[0]}-{preset}.json", json.dumps(manifest, indent=2))
    return manifest


def register_demo_handlers(manager: JobManager) -> None:
    """Register the demo's ``thumbnail``, ``report`` and ``transcode`` handlers."""
    manager.register("thumbnail", thumbnail)
    manager.register("report", report)
    manager.register("transcode", transcode)


# -- the app -----------------------------------------------------------------------------


async def seed_jobs(manager: JobManager) -> None:
    """Submit a handful of jobs for two tenants, unless the store already has jobs."""
    if (await manager.list(limit=1)).items:
        return
    await manager.submit("thumbnail", {"image": "holiday.jpg"}, actor=ALICE)
    await manager.submit("report", {"name": "q3-sales", "rows": 480}, actor=ALICE)
    await manager.submit("transcode", {"file": "intro.mov", "preset": "1080p"}, actor=ALICE)
    await manager.submit("thumbnail", {"image": "logo.png", "steps": 12}, actor=BOB, priority=5)
    await manager.submit("transcode", {"file": "broken.avi", "fail": True}, actor=BOB)
    await manager.submit("report", {"name": "inventory", "rows": 900, "steps": 10}, actor=BOB)
    # kept one minute after it finishes: watch the sweeper remove it
    await manager.submit("report", {"name": "short-lived", "steps": 3}, actor=ALICE, ttl=60)


def create_demo_app(data_dir: Path, *, seed: bool = True, concurrency: int = 2) -> FastAPI:
    """The demo app: the job API at ``/api/v1`` and the console at ``/console/``.

    Jobs live in ``data_dir/jobs.db`` (SQLite), artifacts under ``data_dir/artifacts``.
    With ``seed``, a handful of jobs for the tenants ``acme`` and ``globex`` are
    submitted at startup when the store is empty. Insecure: see the module docstring.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    manager = JobManager(
        SQLiteStore(data_dir / "jobs.db"),
        FileBlobStore(data_dir / "artifacts"),
        concurrency=concurrency,
        retention=DEMO_RETENTION,
        sweep_interval=10.0,
        cancel_grace=5.0,
    )
    register_demo_handlers(manager)
    run_manager = lifespan(manager)

    @asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[None]:
        async with run_manager(app):
            if seed:
                await seed_jobs(manager)
            yield

    app = FastAPI(
        title="jobkit demo",
        description="The jobkit job API and console (an insecure local demo: the actor is taken "
        "from the X-Actor, X-Tenant and X-Roles headers).",
        lifespan=run,
    )
    install_error_handlers(app)
    app.include_router(job_router(manager, actor=demo_actor), prefix="/api/v1")
    app.include_router(console_router(api_prefix="/api/v1", title="jobkit demo console"), prefix="/console")

    @app.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        return RedirectResponse("/console/")

    app.state.jobkit_manager = manager
    return app
