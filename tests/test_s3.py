"""S3BlobStore against a real S3-compatible server (moto in server mode on 127.0.0.1).

The store's client is never patched: requests are counted by observing it (botocore's
event hooks) or by a loopback proxy in front of moto, which also fails on demand.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from jobkit import BackendError, DeletePolicy, InvalidInput, JobContext, JobManager, JobStatus
from jobkit.abc import BlobStore
from jobkit.blobs import open_blobs
from jobkit.blobs.s3 import DELETE_BATCH, MAX_CONNECTIONS, DeletePrefixError, S3BlobStore
from jobkit.stores import MemoryStore
from jobkit.testing import BlobStoreSuite
from s3_server import FailingProxy, raw_client, seed, start_moto

pytestmark = pytest.mark.anyio

_FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
_CLEARED_ENV = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server for the session, with fake credentials in the environment.

    Outside CI a machine without moto skips these tests; under CI=true it fails them.
    """
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's request log
    saved = {name: os.environ.get(name) for name in (*_FAKE_ENV, *_CLEARED_ENV)}
    os.environ.update(_FAKE_ENV)
    for name in _CLEARED_ENV:
        os.environ.pop(name, None)
    try:
        try:
            server = start_moto()
            endpoint = server.__enter__()
        except Exception as exc:
            message = f"cannot start moto's S3 server (pip install 'moto[s3]' flask flask-cors): {exc!r}"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)
        try:
            yield endpoint
        finally:
            server.__exit__(None, None, None)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    """A fresh, empty bucket for one test."""
    name = f"jk-{uuid.uuid4().hex[:24]}"
    raw_client(s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
async def s3(s3_endpoint: str, bucket: str) -> AsyncIterator[S3BlobStore]:
    store = S3BlobStore(bucket, endpoint_url=s3_endpoint, region="us-east-1")
    await store.open()
    yield store
    await store.close()


class TestS3BlobStore(BlobStoreSuite):
    @pytest.fixture
    def store(self, s3: S3BlobStore) -> BlobStore:
        return s3


class TestS3BlobStoreWithPrefix(BlobStoreSuite):
    """The whole contract holds inside a prefix of a bucket that holds other objects."""

    @pytest.fixture
    async def store(self, s3_endpoint: str, bucket: str) -> AsyncIterator[BlobStore]:
        raw = raw_client(s3_endpoint)
        for key in ("apps/other/jobs/1/a", "apps/one", "apps/one0/x", "top"):
            raw.put_object(Bucket=bucket, Key=key, Body=b"not ours")
        store = S3BlobStore(bucket, "apps/one", endpoint_url=s3_endpoint, region="us-east-1")
        await store.open()
        yield store
        await store.close()
        pages = raw.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        left = sorted(o["Key"] for page in pages for o in page.get("Contents", []))
        assert [k for k in left if not k.startswith("apps/one/")] == [
            "apps/one",
            "apps/one0/x",
            "apps/other/jobs/1/a",
            "top",
        ]


class Calls:
    """The API calls a boto3 client makes (observed with a botocore event hook, not patched)."""

    def __init__(self, client: Any) -> None:
        self.count: Counter[str] = Counter()
        self.delete_batches: list[int] = []
        client.meta.events.register("provide-client-params.s3", self._seen)

    def _seen(self, params: dict[str, Any], model: Any, **kwargs: Any) -> None:
        self.count[model.name] += 1
        if model.name == "DeleteObjects":
            self.delete_batches.append(len(params["Delete"]["Objects"]))


async def put_many(store: BlobStore, keys: list[str], workers: int = 16) -> None:
    send, receive = anyio.create_memory_object_stream[str](len(keys))
    with send:
        for key in keys:
            send.send_nowait(key)

    async def worker() -> None:
        async for key in receive:
            await store.put(key, b"x")

    with receive:
        async with anyio.create_task_group() as tg:
            for _ in range(workers):
                tg.start_soon(worker)


class TestS3Requests:
    async def test_2500_keys_page_through_tokens_and_delete_in_batches_of_1000(self, s3: S3BlobStore) -> None:
        """2,500 blobs: list takes 3 ListObjectsV2 (continuation tokens); delete_prefix takes
        3 listings and 3 DeleteObjects of 1,000, 1,000 and 500 keys."""
        keys = [f"jobs/big/{i % 7}/{i:04d}" for i in range(2500)]
        seed(s3.bucket, keys)
        calls = Calls(s3.client)
        assert await s3.list("jobs/big/") == sorted(keys)
        assert calls.count == {"ListObjectsV2": 3}
        calls.count.clear()
        assert await s3.list_page("jobs/big/", limit=2499) == sorted(keys)[:2499]
        assert calls.count == {"ListObjectsV2": 3}
        calls.count.clear()
        assert await s3.delete_prefix("jobs/big/") == 2500
        assert calls.delete_batches == [1000, 1000, 500]
        assert calls.count == {"ListObjectsV2": 3, "DeleteObjects": 3}
        assert await s3.list("") == []

    async def test_delete_of_a_missing_key_is_false(self, s3: S3BlobStore) -> None:
        """S3 answers 204 for a missing key; the store still says False (and True once)."""
        await s3.put("jobs/1/a", b"x")
        calls = Calls(s3.client)
        assert await s3.delete("jobs/1/a") is True
        assert await s3.delete("jobs/1/a") is False
        assert calls.count == {"HeadObject": 2, "DeleteObject": 1}

    async def test_delete_prefix_of_nothing_makes_one_listing(self, s3: S3BlobStore) -> None:
        """An empty prefix costs one ListObjectsV2 and no DeleteObjects."""
        calls = Calls(s3.client)
        assert await s3.delete_prefix("jobs/none/") == 0
        assert calls.count == {"ListObjectsV2": 1}


class TestS3Threads:
    async def test_requests_run_in_the_stores_own_threads_16_at_a_time(self, s3: S3BlobStore) -> None:
        """16 requests run at once even when anyio's default thread limiter allows 1, never 17."""
        barrier = threading.Barrier(MAX_CONNECTIONS, timeout=30)
        lock = threading.Lock()
        in_flight = peak = started = 0

        def begin(**kwargs: Any) -> None:
            nonlocal in_flight, peak, started
            with lock:
                in_flight += 1
                peak = max(peak, in_flight)
                started += 1
                first = started <= MAX_CONNECTIONS
            if first:
                barrier.wait()  # the first 16 calls are all in flight together

        def end(**kwargs: Any) -> None:
            nonlocal in_flight
            with lock:
                in_flight -= 1

        s3.client.meta.events.register("provide-client-params.s3.PutObject", begin)
        s3.client.meta.events.register("after-call.s3.PutObject", end)
        default = anyio.to_thread.current_default_thread_limiter()
        tokens, default.total_tokens = default.total_tokens, 1
        try:
            async with anyio.create_task_group() as tg:
                for i in range(48):
                    tg.start_soon(s3.put, f"jobs/1/{i:02d}", b"x")
        finally:
            default.total_tokens = tokens
        assert peak == MAX_CONNECTIONS
        assert len(await s3.list("jobs/1/")) == 48


class TestS3Validation:
    @pytest.mark.parametrize(
        "key",
        ["", "/abs", "a//b", "a/../b", "./a", "a/.", "a\\b", "a\x00b", "jobs/1/", 5, None],
    )
    async def test_unsafe_keys_are_invalid_input(self, s3: S3BlobStore, key: Any) -> None:
        """Keys FileBlobStore refuses are refused by S3BlobStore too, before any request."""
        calls = Calls(s3.client)
        with pytest.raises(InvalidInput):
            await s3.put(key, b"x")
        with pytest.raises(InvalidInput):
            await s3.get(key)
        with pytest.raises(InvalidInput):
            await s3.delete(key)
        assert calls.count == {}

    async def test_a_key_longer_than_s3_allows_is_invalid_input(self, s3_endpoint: str, bucket: str) -> None:
        """The full object key (store prefix included) may not pass S3's 1,024 bytes."""
        store = S3BlobStore(bucket, "p" * 200, endpoint_url=s3_endpoint)
        key = "/".join(["a" * 200] * 4)  # 803 bytes: 1,004 with the prefix
        await store.put(key, b"ok")
        with pytest.raises(InvalidInput, match="1024 bytes"):
            await store.put(key + "/" + "b" * 30, b"x")
        await store.close()

    @pytest.mark.parametrize("prefix", ["/abs", "a//b", "../x", "a/./b", "a\\b", "a\x00", 3])
    async def test_unsafe_prefixes_are_invalid_input(self, s3: S3BlobStore, prefix: Any) -> None:
        """list, list_page and delete_prefix refuse the prefixes FileBlobStore refuses."""
        for call in (s3.list, s3.list_page, s3.delete_prefix):
            with pytest.raises(InvalidInput):
                await call(prefix)

    @pytest.mark.parametrize(
        ("args", "kwargs"),
        [
            (("",), {}),
            (("a",), {}),
            (("-bad",), {}),
            (("has/slash",), {}),
            (("b..b",), {}),
            ((None,), {}),
            (("bucket", "/abs"), {}),
            (("bucket", "a//b"), {}),
            (("bucket", "../up"), {}),
            (("bucket",), {"endpoint_url": "127.0.0.1:9000"}),
            (("bucket",), {"endpoint_url": "ftp://host"}),
            (("bucket",), {"region": "US East"}),
        ],
    )
    def test_bad_arguments_are_invalid_input(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """A malformed bucket, prefix, endpoint or region is InvalidInput at construction."""
        with pytest.raises(InvalidInput):
            S3BlobStore(*args, **kwargs)

    def test_prefix_is_a_folder(self) -> None:
        """The store prefix always ends with one '/', whether or not it was given."""
        assert S3BlobStore("bucket", "a/b").prefix == "a/b/"
        assert S3BlobStore("bucket", "a/b/").prefix == "a/b/"
        assert S3BlobStore("bucket").prefix == ""
        assert repr(S3BlobStore("bucket", "p", endpoint_url="http://127.0.0.1:9")) == (
            "S3BlobStore(bucket='bucket', prefix='p/', endpoint_url='http://127.0.0.1:9')"
        )

    def test_is_a_blob_store(self) -> None:
        assert isinstance(S3BlobStore("bucket"), BlobStore)


def test_without_boto3_the_error_names_the_extra() -> None:
    """Importing jobkit.blobs.s3 (or opening an s3:// URL) without boto3 says what to install."""
    code = (
        "import sys; sys.modules['boto3'] = None\n"
        "from jobkit.blobs import open_blobs\n"
        "open_blobs('memory://')\n"
        "open_blobs('s3://bucket')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "ImportError: jobkit.blobs.s3 needs boto3: pip install 'jobkit[s3]'" in result.stderr


class TestS3Url:
    def test_url_gives_bucket_prefix_endpoint_and_region(self) -> None:
        """s3://bucket/prefix?endpoint_url=...&region=... builds the matching store."""
        store = open_blobs("s3://my-bucket/apps/r%20one?endpoint_url=http://127.0.0.1:9000&region=eu-west-1")
        assert isinstance(store, S3BlobStore)
        assert (store.bucket, store.prefix) == ("my-bucket", "apps/r one/")
        assert repr(store).endswith("endpoint_url='http://127.0.0.1:9000')")
        assert open_blobs("s3://my-bucket").prefix == ""  # type: ignore[attr-defined]
        assert open_blobs("s3://my-bucket/").prefix == ""  # type: ignore[attr-defined]

    @pytest.mark.parametrize(
        "url",
        [
            "s3://",
            "s3:///prefix",
            "s3://user@bucket/p",
            "s3://bucket/p#frag",
            "s3://bucket/p?endpoint=http://x",
            "s3://bucket/p?region=us-east-1&region=eu-west-1",
            "s3://bucket/p?region=",
            "s3://bucket/p?region",
            "s3://bucket/a//b",
            "s3://bucket/p?endpoint_url=localhost:9000",
        ],
    )
    def test_malformed_urls_are_invalid_input(self, url: str) -> None:
        with pytest.raises(InvalidInput):
            open_blobs(url)


class TestS3Failures:
    async def test_missing_bucket_fails_to_open(self, s3_endpoint: str) -> None:
        """open() checks the bucket: a missing one is a BackendError that names it."""
        store = S3BlobStore("no-such-bucket-here", endpoint_url=s3_endpoint)
        with pytest.raises(BackendError, match=r"'no-such-bucket-here' .* does not exist"):
            await store.open()
        await store.close()

    async def test_unreachable_endpoint_is_a_backend_error(self) -> None:
        """A server that is not there is a BackendError (after boto3's retries), not a hang."""
        with unused_port() as port:
            store = S3BlobStore("bucket", endpoint_url=f"http://127.0.0.1:{port}")
            with pytest.raises(BackendError, match=r"127\.0\.0\.1"):
                await store.open()
            await store.close()

    async def test_missing_credentials_are_a_backend_error(
        self, s3_endpoint: str, bucket: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """No credentials anywhere in the chain: a BackendError saying how to provide them."""
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
        store = S3BlobStore(bucket, endpoint_url=s3_endpoint)
        with pytest.raises(BackendError, match="No AWS credentials"):
            await store.open()
        await store.close()

    async def test_close_twice_then_reopen(self, s3: S3BlobStore) -> None:
        """close is safe twice; the store opens again with a new client."""
        await s3.put("jobs/1/a", b"x")
        await s3.close()
        await s3.close()
        await s3.open()
        assert await s3.get("jobs/1/a") == b"x"

    async def test_per_key_refusals_raise_with_the_keys(self, s3_endpoint: str, bucket: str) -> None:
        """Keys S3 refuses are collected over every page; the others are deleted and counted."""
        with FailingProxy(s3_endpoint, failures=1) as proxy:
            store = S3BlobStore(bucket, "ns", endpoint_url=proxy.endpoint_url)
            await store.open()
            keys = [f"jobs/1/{i:04d}" for i in range(1200)]
            seed(bucket, [f"ns/{key}" for key in keys])
            with pytest.raises(DeletePrefixError) as caught:
                await store.delete_prefix("jobs/1/")
            assert isinstance(caught.value, BackendError)
            assert sorted(caught.value.failed) == keys[0:1000:2]
            assert caught.value.deleted == 700  # 500 of the first page, all 200 of the second
            assert "InternalError" in caught.value.failed["jobs/1/0000"]
            assert await store.list("jobs/") == keys[0:1000:2]
            assert await store.delete_prefix("jobs/1/") == 500
            assert await store.list("") == []
            await store.close()

    async def test_a_failing_request_is_a_backend_error(self, s3_endpoint: str, bucket: str) -> None:
        """DeleteObjects answering 503 past boto3's retries: BackendError; a retry finishes."""
        with FailingProxy(s3_endpoint, failures=3, mode="http") as proxy:
            store = S3BlobStore(bucket, endpoint_url=proxy.endpoint_url)
            await store.open()
            await put_many(store, [f"jobs/1/{i}" for i in range(10)])
            with pytest.raises(BackendError, match="SlowDown") as caught:
                await store.delete_prefix("jobs/1/")
            assert not isinstance(caught.value, DeletePrefixError)
            assert proxy.requests["DeleteObjects"] == 3  # boto3's standard mode: 3 attempts
            assert await store.delete_prefix("jobs/1/") == 10
            await store.close()


class unused_port:
    """A port on 127.0.0.1 that nothing listens on (bound, never listening, for the test)."""

    def __enter__(self) -> int:
        import socket

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        return int(self._sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self._sock.close()


# -- through the manager ---------------------------------------------------------------


def artifact_writer(count: int) -> Any:
    async def produce(ctx: JobContext, payload: Any) -> None:
        send, receive = anyio.create_memory_object_stream[int](count)
        with send:
            for i in range(count):
                send.send_nowait(i)

        async def worker() -> None:
            async for i in receive:
                await ctx.put_artifact(f"part/{i:04d}.bin", b"x")

        with receive:
            async with anyio.create_task_group() as tg:
                for _ in range(16):
                    tg.start_soon(worker)

    return produce


class TestS3WithTheManager:
    async def test_a_job_with_2500_artifacts_is_listed_and_deleted(self, s3: S3BlobStore) -> None:
        """artifacts() sees all 2,500; a hard delete takes <= 3 listings and 3 DeleteObjects."""
        jobs = JobManager(MemoryStore(), s3, sweep_interval=None)
        jobs.register("produce", artifact_writer(16))
        async with jobs:
            job = await jobs.submit("produce")
            assert (await jobs.wait(job.id)).status is JobStatus.COMPLETED
            names = [f"part/{i:04d}.bin" for i in range(2500)]
            seed(s3.bucket, [f"jobs/{job.id}/{name}" for name in names[16:]])  # the rest, quickly
            assert await jobs.artifacts(job.id) == names
            calls = Calls(s3.client)
            await jobs.delete(job.id)
            [record] = await jobs.audit(job.id)
            assert record.details["artifacts_deleted"] == 2500
        # Counted before the record goes, deleted after it from that one listing.
        assert calls.delete_batches == [1000, 1000, 500]
        assert calls.count == {"ListObjectsV2": 3, "DeleteObjects": 3}
        assert await s3.list("") == []

    async def test_deleting_job_ab_never_touches_job_abc(self, s3: S3BlobStore) -> None:
        """A job's prefix is jobs/<id>/: the blobs of jobs/abc/ and jobs/ab0 survive deleting ab."""
        store = MemoryStore()
        jobs = JobManager(store, s3, sweep_interval=None)
        jobs.register("produce", artifact_writer(3))
        async with jobs:
            job = await jobs.submit("produce")
            await jobs.wait(job.id)
            neighbours = [f"jobs/{job.id}c/part/x", f"jobs/{job.id}0", f"jobs/{job.id}.bin"]
            for key in neighbours:
                await s3.put(key, b"neighbour")
            await jobs.delete(job.id)
        assert await s3.list("") == sorted(neighbours)


class TestS3FailuresThroughTheManager:
    @pytest.mark.parametrize(
        ("mode", "failures", "after_each"),
        [
            # Each failing DeleteObjects refuses half of its keys: 40 -> 20 -> 10 -> 0.
            ("keys", 2, [20, 10, 0]),
            # 503s: boto3's 3 attempts all fail on the delete, the first sweep works.
            ("http", 3, [40, 0]),
        ],
    )
    async def test_defer_deletes_the_job_and_the_sweeper_finishes(
        self, s3_endpoint: str, bucket: str, mode: str, failures: int, after_each: list[int]
    ) -> None:
        """A server that fails N times then works: the job is deleted at once, its prefix is
        queued and stays queued while sweeps fail, and a sweep after the server recovers
        deletes the rest; nothing is orphaned (the bucket ends empty)."""
        with FailingProxy(s3_endpoint, failures=failures, mode=mode) as proxy:
            blobs = S3BlobStore(bucket, endpoint_url=proxy.endpoint_url)
            store = MemoryStore()
            jobs = JobManager(
                store,
                blobs,
                sweep_interval=None,
                delete_policy=DeletePolicy(mode="hard", on_artifact_error="defer"),
            )
            jobs.register("produce", artifact_writer(40))
            async with jobs:
                job = await jobs.submit("produce")
                await jobs.wait(job.id)
                await jobs.delete(job.id)
                assert await store.get(job.id) is None
                names = [f"jobs/{job.id}/part/{i:04d}.bin" for i in range(40)]
                for left, last in zip(after_each, [*after_each[1:], None], strict=True):
                    assert len(await blobs.list("")) == left
                    assert await store.pending_purges(10) == ([f"jobs/{job.id}/"] if left else [])
                    if last is None:
                        break
                    report = await jobs.sweep()
                    # A sweep whose purge fails deletes "nothing" (the purge is retried whole).
                    assert report.artifacts_deleted == (left if last == 0 else 0)
                assert proxy.failures == 0
                assert proxy.refused_keys == (names[::2] + names[::4] if mode == "keys" else [])
            assert raw_client(s3_endpoint).list_objects_v2(Bucket=bucket)["KeyCount"] == 0

    async def test_fail_keeps_the_job(self, s3_endpoint: str, bucket: str) -> None:
        """on_artifact_error='fail': the delete raises BackendError, the job stays as it was,
        and a retry once the server works deletes it with every object."""
        with FailingProxy(s3_endpoint, failures=1) as proxy:
            blobs = S3BlobStore(bucket, endpoint_url=proxy.endpoint_url)
            store = MemoryStore()
            jobs = JobManager(
                store, blobs, sweep_interval=None, delete_policy=DeletePolicy(on_artifact_error="fail")
            )
            jobs.register("produce", artifact_writer(10))
            async with jobs:
                job = await jobs.submit("produce")
                done = await jobs.wait(job.id)
                with pytest.raises(BackendError, match="refused to delete 5"):
                    await jobs.delete(job.id)
                assert await jobs.get(job.id) == done
                assert await store.pending_purges(10) == []
                assert len(await jobs.artifacts(job.id)) == 5
                await jobs.delete(job.id)
                assert await store.get(job.id) is None
                assert await blobs.list("") == []


def test_delete_batch_is_s3s_limit() -> None:
    assert DELETE_BATCH == 1000


# -- the command line ------------------------------------------------------------------


class TestS3FromTheCommandLine:
    """Management commands reach S3 through --blobs s3://... (open_blobs)."""

    @staticmethod
    def invoke(*args: str) -> Any:
        from typer.testing import CliRunner

        from jobkit.cli._app import app

        return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})

    def test_artifacts_delete_and_sweep_with_s3_blobs(
        self, s3_endpoint: str, bucket: str, tmp_path: Path
    ) -> None:
        """`jobs artifacts` lists the job's objects; `jobs delete --yes` removes them."""
        from jobkit.stores import SQLiteStore

        db = tmp_path / "jobs.db"
        url = f"s3://{bucket}/app?endpoint_url={s3_endpoint}&region=us-east-1"

        async def prepare() -> str:
            jobs = JobManager(SQLiteStore(db), open_blobs(url), sweep_interval=None)
            jobs.register("produce", artifact_writer(3))
            async with jobs:
                job = await jobs.submit("produce")
                await jobs.wait(job.id)
                return job.id

        job_id = anyio.run(prepare)
        base = ("--store", f"sqlite:///{db}", "--blobs", url)
        listed = self.invoke(*base, "--json", "jobs", "artifacts", job_id)
        assert listed.exit_code == 0, listed.output
        assert json.loads(listed.stdout) == {"items": [f"part/{i:04d}.bin" for i in range(3)]}
        deleted = self.invoke(*base, "jobs", "delete", job_id, "--yes")
        assert deleted.exit_code == 0, deleted.output
        assert raw_client(s3_endpoint).list_objects_v2(Bucket=bucket)["KeyCount"] == 0
        assert self.invoke(*base, "sweep").exit_code == 0

    def test_a_missing_bucket_is_a_one_line_backend_error(self, s3_endpoint: str, tmp_path: Path) -> None:
        """A mistyped bucket fails with exit 7 and says which bucket; nothing is created."""
        from jobkit.stores import SQLiteStore

        db = tmp_path / "jobs.db"

        async def prepare() -> None:
            async with JobManager(SQLiteStore(db), sweep_interval=None):
                pass

        anyio.run(prepare)
        url = f"s3://no-such-bucket-typo?endpoint_url={s3_endpoint}"
        result = self.invoke("--store", f"sqlite:///{db}", "--blobs", url, "jobs", "artifacts", "x")
        assert result.exit_code == 7, result.output
        assert "Traceback" not in result.output
        assert "'no-such-bucket-typo'" in result.stderr
        assert "does not exist" in result.stderr
        buckets = raw_client(s3_endpoint).list_buckets()["Buckets"]
        assert "no-such-bucket-typo" not in [b["Name"] for b in buckets]


S3_WORKER_APP = """
import os

from jobkit import JobManager
from jobkit.blobs import open_blobs
from jobkit.stores import SQLiteStore

jobs = JobManager(
    SQLiteStore("jobs.db"), open_blobs(os.environ["JOBKIT_BLOBS"]), sweep_interval=None, poll_interval=0.05
)


@jobs.handler("write")
async def write(ctx, payload):
    for i in range(payload["n"]):
        await ctx.put_artifact(f"out/{i}.txt", f"{ctx.job.id}:{i}")
    return {"pid": os.getpid()}
"""


#: A host module with a factory: `jobkit worker --store … --blobs …` calls it with both.
SCALE_OUT_APP = """
import os

from jobkit import JobManager


def build(store=None, blobs=None):
    jobs = JobManager(store, blobs, sweep_interval=None, poll_interval=0.05)

    @jobs.handler("write")
    async def write(ctx, payload):
        for i in range(payload["n"]):
            await ctx.put_artifact(f"out/{i}.txt", f"{ctx.job.id}:{i}")
        return {"pid": os.getpid()}

    return jobs
"""


class TestS3Workers:
    def test_workers_on_postgres_and_s3_from_the_command_line(
        self, s3_endpoint: str, bucket: str, tmp_path: Path, pg_dsn: str
    ) -> None:
        """Two `jobkit --store postgresql://… --blobs s3://… worker --app app:build` processes
        (a factory given both backends) run every job once, artifacts in the bucket; a delete
        from a third process removes a job's objects and audits their number."""
        from jobkit.stores import open_store
        from pgserver import new_schema

        (tmp_path / "scale_out_app.py").write_text(SCALE_OUT_APP)
        store_url = f"{pg_dsn}?schema={new_schema()}"
        blobs_url = f"s3://{bucket}/pg?endpoint_url={s3_endpoint}&region=us-east-1"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"}
        env.pop("JOBKIT_STORE", None)
        env.pop("JOBKIT_BLOBS", None)
        argv = [sys.executable, "-m", "jobkit.cli", "--store", store_url, "--blobs", blobs_url]
        argv += ["worker", "--app", "scale_out_app:build"]
        workers = [
            subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)
        ]
        try:
            for proc in workers:
                assert proc.stdout is not None
                assert "worker: running" in proc.stdout.readline()

            async def drive() -> None:
                blobs = open_blobs(blobs_url)
                jobs = JobManager(open_store(store_url), blobs, concurrency=0, sweep_interval=None)
                jobs.declare("write")
                async with jobs:
                    submitted = [await jobs.submit("write", {"n": 3}) for _ in range(12)]
                    done = [await jobs.wait(job.id, timeout=60) for job in submitted]
                    assert {job.status for job in done} == {JobStatus.COMPLETED}
                    assert {job.result["pid"] for job in done} <= {proc.pid for proc in workers}
                    for job in submitted:
                        assert await jobs.artifacts(job.id) == ["out/0.txt", "out/1.txt", "out/2.txt"]
                    await jobs.delete(submitted[0].id)
                    [record] = await jobs.audit(submitted[0].id)
                    assert record.details["artifacts_deleted"] == 3
                    assert len(await blobs.list("jobs/")) == 11 * 3

            anyio.run(drive)
        finally:
            for proc in workers:
                proc.send_signal(signal.SIGTERM)
            for proc in workers:
                proc.communicate(timeout=30)
        assert [proc.returncode for proc in workers] == [0, 0]

    def test_two_worker_processes_share_one_bucket(
        self, s3_endpoint: str, bucket: str, tmp_path: Path
    ) -> None:
        """Two `jobkit worker` processes whose app opens JOBKIT_BLOBS=s3://... run every job
        once; each job's artifacts land in the bucket, and a delete elsewhere removes them."""
        from jobkit.stores import SQLiteStore

        (tmp_path / "s3_worker_app.py").write_text(S3_WORKER_APP)
        url = f"s3://{bucket}/shared?endpoint_url={s3_endpoint}&region=us-east-1"
        env = {**os.environ, "JOBKIT_BLOBS": url, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"}
        argv = [sys.executable, "-m", "jobkit.cli", "worker", "--app", "s3_worker_app:jobs"]
        workers = [
            subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)
        ]
        try:
            for proc in workers:
                assert proc.stdout is not None
                assert "worker: running" in proc.stdout.readline()

            async def drive() -> None:
                blobs = open_blobs(url)
                jobs = JobManager(
                    SQLiteStore(tmp_path / "jobs.db"), blobs, concurrency=0, sweep_interval=None
                )
                jobs.register("write", artifact_writer(0))  # never runs here: no workers
                async with jobs:
                    submitted = [await jobs.submit("write", {"n": 3}) for _ in range(12)]
                    done = [await jobs.wait(job.id, timeout=60) for job in submitted]
                    assert {job.status for job in done} == {JobStatus.COMPLETED}
                    assert {job.result["pid"] for job in done} <= {proc.pid for proc in workers}
                    for job in submitted:
                        assert await jobs.artifacts(job.id) == ["out/0.txt", "out/1.txt", "out/2.txt"]
                        assert await jobs.read_artifact(job.id, "out/2.txt") == f"{job.id}:2".encode()
                    await jobs.delete(submitted[0].id)
                    assert len(await blobs.list("jobs/")) == 11 * 3

            anyio.run(drive)
        finally:
            for proc in workers:
                proc.send_signal(signal.SIGTERM)
            for proc in workers:
                proc.communicate(timeout=30)
        assert [proc.returncode for proc in workers] == [0, 0]
