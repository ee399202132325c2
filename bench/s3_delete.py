"""S3 delete: hard delete of a finished job that has 2,500 artifacts on S3BlobStore (moto).

moto's S3 runs in server mode on 127.0.0.1 in this process (``moto[s3]``, flask,
flask-cors: the test extra). Each repetition finishes a job, gives it 2,500 artifacts (put
straight into moto's memory, which is set-up and not timed), then times ``jobs.delete``
(record and every object) and counts the S3 requests the store's client made (a botocore
event hook). Floor: the same 2,500 objects deleted by a plain boto3 loop in the same run
(``list_objects_v2`` page, ``delete_objects`` of that page, until the listing ends).

Target: <= 3 list and <= 3 delete requests per job.

    .venv/bin/python bench/s3_delete.py [--backend asyncio|trio]
"""

from __future__ import annotations

import sys

# bench/http.py would shadow the standard library's `http` package, which botocore needs:
# import it first with this folder off the path, then put the folder back for _common.
_HERE = sys.path.pop(0)
import http.client  # noqa: E402, F401

sys.path.insert(0, _HERE)

import logging  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
from collections import Counter  # noqa: E402
from typing import Any  # noqa: E402

import _common  # noqa: E402
import anyio  # noqa: E402

from jobkit import JobContext, JobManager  # noqa: E402
from jobkit.blobs.s3 import S3BlobStore  # noqa: E402
from jobkit.stores import MemoryStore  # noqa: E402

ARTIFACTS = 2500
RUNS = 5
TARGET_LISTS = 3
TARGET_DELETES = 3


async def nothing(ctx: JobContext, payload: Any) -> None:
    pass


def seed(bucket: str, prefix: str) -> None:
    """2,500 objects of 1 KiB under ``prefix``, straight into moto's memory (not timed)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["global"]
    for i in range(ARTIFACTS):
        backend.put_object(bucket, f"{prefix}frames/{i:04d}.bin", b"x" * 1024)


async def run_jobkit(endpoint: str, bucket: str) -> tuple[list[float], list[Counter[str]]]:
    blobs = S3BlobStore(bucket, endpoint_url=endpoint, region="us-east-1")
    jobs = JobManager(MemoryStore(), blobs, sweep_interval=None)
    jobs.register("nothing", nothing)
    times: list[float] = []
    counts: list[Counter[str]] = []
    async with jobs:
        calls: Counter[str] = Counter()

        def seen(model: Any, **kwargs: Any) -> None:
            calls[model.name] += 1

        blobs.client.meta.events.register("provide-client-params.s3", seen)
        for _ in range(RUNS):
            job = await jobs.submit("nothing")
            await jobs.wait(job.id)
            seed(bucket, f"jobs/{job.id}/")
            calls.clear()
            start = _common.now()
            await jobs.delete(job.id)
            times.append(_common.now() - start)
            counts.append(Counter(calls))
            assert await blobs.list("") == []
    return times, counts


def floor(client: Any, bucket: str) -> list[float]:
    times = []
    for run in range(RUNS):
        prefix = f"floor/{run}/"
        seed(bucket, prefix)
        start = _common.now()
        token: str | None = None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            page = client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1000, **extra)
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
            token = page.get("NextContinuationToken") if page.get("IsTruncated") else None
            if token is None:
                break
        times.append(_common.now() - start)
        assert client.list_objects_v2(Bucket=bucket, Prefix=prefix)["KeyCount"] == 0
    return times


def main() -> None:
    args = _common.parse_args(__doc__ or "")
    _common.quiet_logs()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    os.environ.pop("AWS_PROFILE", None)
    import boto3
    from botocore.config import Config
    from moto.server import ThreadedMotoServer

    _common.header(
        f"s3 delete: a finished job with {ARTIFACTS} artifacts on S3BlobStore (moto)", args.backend
    )
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        config = Config(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint, region_name="us-east-1", config=config
        )
        client.create_bucket(Bucket="bench-jobkit")
        client.create_bucket(Bucket="bench-floor")
        jk, counts = anyio.run(run_jobkit, endpoint, "bench-jobkit", backend=args.backend)
        fl = floor(client, "bench-floor")
        client.close()
    finally:
        server.stop()
    lists = max(c["ListObjectsV2"] for c in counts)
    deletes = max(c["DeleteObjects"] for c in counts)
    others = sorted({name for c in counts for name in c} - {"ListObjectsV2", "DeleteObjects"})
    median, floor_median = statistics.median(jk), statistics.median(fl)
    _common.line("jobkit", f"median {median * 1000:.0f} ms over {RUNS} deletes (min {min(jk) * 1000:.0f} ms)")
    _common.line(
        "requests", f"{lists} ListObjectsV2 + {deletes} DeleteObjects per job; other: {others or 'none'}"
    )
    _common.line(
        "floor",
        f"boto3 list+delete_objects median {floor_median * 1000:.0f} ms (ratio {median / floor_median:.2f}x)",
    )
    met = lists <= TARGET_LISTS and deletes <= TARGET_DELETES
    _common.line(
        "target", f"<= {TARGET_LISTS} list + <= {TARGET_DELETES} delete requests: {_common.verdict(met)}"
    )


if __name__ == "__main__":
    main()
