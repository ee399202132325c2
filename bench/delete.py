"""Delete latency: hard delete of a finished job that has 100 artifacts on FileBlobStore.

Each repetition runs a job that writes 100 small artifacts, then times ``jobs.delete``
(record and every artifact). Floor: ``shutil.rmtree`` of a folder holding 100 files of
the same size, plus nothing else.

Target: p99 <= 100 ms.

    .venv/bin/python bench/delete.py [--backend asyncio|trio]
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import _common
import anyio

from jobkit import JobContext, JobManager
from jobkit.blobs import FileBlobStore
from jobkit.stores import SQLiteStore

ARTIFACTS = 100
RUNS = 100
TARGET_MS = 100.0


async def produce(ctx: JobContext, payload: Any) -> None:
    for i in range(ARTIFACTS):
        await ctx.put_artifact(f"frames/{i:03d}.bin", b"x" * 1024)


async def run_jobkit(root: Path) -> list[float]:
    jobs = JobManager(SQLiteStore(root / "jobs.db"), FileBlobStore(root / "blobs"), sweep_interval=None)
    jobs.register("produce", produce)
    times = []
    async with jobs:
        for _ in range(RUNS):
            job = await jobs.submit("produce")
            await jobs.wait(job.id)
            start = _common.now()
            await jobs.delete(job.id)
            times.append(_common.now() - start)
    return times


def floor(root: Path) -> list[float]:
    times = []
    for run in range(RUNS):
        folder = root / f"f{run}"
        folder.mkdir()
        for i in range(ARTIFACTS):
            (folder / f"{i:03d}.bin").write_bytes(b"x" * 1024)
        start = _common.now()
        shutil.rmtree(folder)
        times.append(_common.now() - start)
    return times


def main() -> None:
    args = _common.parse_args(__doc__ or "")
    _common.quiet_logs()
    _common.header(f"delete: a finished job with {ARTIFACTS} artifacts on FileBlobStore", args.backend)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "jk").mkdir()
        jk = anyio.run(run_jobkit, base / "jk", backend=args.backend)
        fl = floor(base)
    p50, p99 = _common.percentile(jk, 50) * 1000, _common.percentile(jk, 99) * 1000
    f99 = _common.percentile(fl, 99) * 1000
    _common.line("jobkit", f"p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    _common.line("floor", f"rmtree p99 {f99:.2f} ms  (ratio {p99 / f99:.1f}x)")
    _common.line("target", f"p99 <= {TARGET_MS:g} ms: {_common.verdict(p99 <= TARGET_MS)}")


if __name__ == "__main__":
    main()
