"""Bad input is refused with InvalidInput, and nothing is stored.

Every check goes through the public API of a running JobManager over a MemoryStore and
a MemoryBlobStore. After each refused call the host sees exactly what it saw before:
the same jobs (ids, versions, statuses, priorities), the same blob keys and the same
audit trail.
"""

from __future__ import annotations

import base64
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bad_input import bad_durations
from jobkit import Actor, InvalidInput, JobContext, JobManager, JobStatus, Retry
from jobkit.blobs import MemoryBlobStore
from jobkit.stores import MemoryStore

pytestmark = pytest.mark.anyio

# Each example builds its own manager, so the function-scoped backend fixture is safe.
FEW = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FEWER = settings(FEW, max_examples=50)


# -- a host with a manager ---------------------------------------------------------------


@attrs.define
class Host:
    """A running manager, its blob store, and what handlers saw."""

    jobs: JobManager
    blobs: MemoryBlobStore
    errors: list[str] = attrs.field(factory=list)

    async def stored(self) -> tuple[Any, ...]:
        """Everything the host can see was stored: jobs, blob keys and audit records."""
        page = await self.jobs.list(limit=1000, include_deleted=True)
        jobs = tuple((j.id, j.version, j.status, j.priority, j.payload) for j in page)
        records = tuple(r.id for r in await self.jobs.audit(limit=1000))
        schedules = tuple(await self.jobs.schedules())
        paused = await self.jobs.paused()
        return jobs, tuple(await self.blobs.list("")), records, schedules, paused

    async def finished(self, kind: str, payload: Any = None) -> str:
        """Submit a job and wait until it has finished; return its id."""
        job = await self.jobs.submit(kind, payload)
        await self.jobs.wait(job.id, timeout=10)
        return job.id


@asynccontextmanager
async def running_host(concurrency: int = 1) -> AsyncIterator[Host]:
    """A started manager with handlers ``noop`` and ``write`` (writes ``[name, text]`` pairs)."""
    blobs = MemoryBlobStore()
    jobs = JobManager(MemoryStore(), blobs, concurrency=concurrency, sweep_interval=None)
    host = Host(jobs, blobs)

    @jobs.handler("noop")
    async def noop(ctx: JobContext, payload: Any) -> None:
        pass

    @jobs.handler("write")
    async def write(ctx: JobContext, payload: Any) -> None:
        for name, text in payload:
            try:
                await ctx.put_artifact(name, text)
            except InvalidInput as exc:
                host.errors.append(exc.message)
                raise

    async with jobs:
        yield host


@pytest.fixture
async def host() -> AsyncIterator[Host]:
    async with running_host(concurrency=0) as host:
        await host.jobs.submit("noop", {"seed": True})
        yield host


@asynccontextmanager
async def refused(host: Host) -> AsyncIterator[None]:
    """The block must raise InvalidInput and leave everything stored as it was."""
    before = await host.stored()
    with pytest.raises(InvalidInput) as caught:
        yield
    assert caught.value.code == "invalid_input"
    assert caught.value.message
    assert await host.stored() == before


# -- payloads ----------------------------------------------------------------------------


def is_plain_json(value: Any) -> bool:
    """None, bool, int, finite float, str, and lists, tuples and str-keyed dicts of those."""
    if value is None or type(value) in (bool, int, str):
        return True
    if type(value) is float:
        return math.isfinite(value)
    if type(value) in (list, tuple):
        return all(is_plain_json(item) for item in value)
    if type(value) is dict:
        return all(type(k) is str and is_plain_json(v) for k, v in value.items())
    return False


json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=5),
)
hostile_leaves = st.one_of(
    st.sets(st.integers(), max_size=2),
    st.frozensets(st.integers(), max_size=2),
    st.builds(object),
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.binary(max_size=4),
    st.binary(max_size=4).map(bytearray),
    st.complex_numbers(max_magnitude=10, allow_nan=False),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.datetimes(),
    st.dictionaries(
        st.one_of(st.integers(), st.none(), st.booleans(), st.floats(), st.tuples(st.integers())),
        json_leaves,
        min_size=1,
        max_size=2,
    ),
)
any_values = st.recursive(
    st.one_of(json_leaves, hostile_leaves),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=3), inner, max_size=3),
    ),
    max_leaves=8,
)
non_json = any_values.filter(lambda value: not is_plain_json(value))
json_values = st.recursive(
    json_leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner)),
    max_leaves=8,
)


def circular_list() -> list[Any]:
    items: list[Any] = [1]
    items.append(items)
    return items


def circular_dict() -> dict[str, Any]:
    mapping: dict[str, Any] = {"a": 1}
    mapping["self"] = mapping
    return mapping


def nested_circle() -> Any:
    inner: list[Any] = []
    outer = {"data": [inner]}
    inner.append(outer)
    return [outer]


class TestPayload:
    @FEW
    @given(payload=non_json)
    async def test_non_json_payload_is_refused(self, payload: Any) -> None:
        """A payload that is not plain JSON (anywhere inside) is InvalidInput; no job is stored."""
        async with running_host(concurrency=0) as host, refused(host):
            await host.jobs.submit("noop", payload)

    @pytest.mark.parametrize("make", [circular_list, circular_dict, nested_circle])
    async def test_circular_payload_is_refused(self, host: Host, make: Any) -> None:
        """A payload that contains itself is InvalidInput."""
        async with refused(host):
            await host.jobs.submit("noop", make())

    @pytest.mark.parametrize(
        "payload",
        [{1: "a"}, {"ok": {None: 1}}, [{True: 1}], {(1, 2): "x"}, {1.5: 2}],
        ids=["int-key", "nested-none-key", "bool-key-in-list", "tuple-key", "float-key"],
    )
    async def test_non_string_keys_are_refused(self, host: Host, payload: Any) -> None:
        """Dict keys must be strings at every depth: JSON would silently turn them into text."""
        async with refused(host):
            await host.jobs.submit("noop", payload)

    @pytest.mark.parametrize("payload", [b"bytes", {1, 2}, object(), math.nan, -math.inf, Decimal("1.5")])
    async def test_non_json_scalars_are_refused(self, host: Host, payload: Any) -> None:
        """Bytes, sets, objects, NaN, infinities and decimals are not JSON."""
        async with refused(host):
            await host.jobs.submit("noop", payload)

    async def test_unencodable_nested_integer_is_refused(self, host: Host) -> None:
        """An integer too long for JSON text, inside a list, is InvalidInput."""
        async with refused(host):
            await host.jobs.submit("noop", [10**5000])

    async def test_unencodable_top_level_integer_is_refused(self, host: Host) -> None:
        """An integer too long for JSON text is InvalidInput at the top level as well as nested."""
        async with refused(host):
            await host.jobs.submit("noop", 10**5000)

    @pytest.mark.parametrize("payload", ["\ud800", {"text": "a\udfffb"}, {"\ud800": 1}])
    async def test_lone_surrogates_are_refused(self, host: Host, payload: Any) -> None:
        """Strings that cannot be encoded as UTF-8 are not JSON text: InvalidInput."""
        async with refused(host):
            await host.jobs.submit("noop", payload)

    @FEW
    @given(payload=json_values)
    async def test_json_payload_is_accepted_as_given(self, payload: Any) -> None:
        """Plain JSON is accepted and stored equal to what was submitted."""
        async with running_host(concurrency=0) as host:
            job = await host.jobs.submit("noop", payload)
            assert (await host.jobs.get(job.id)).payload == payload

    async def test_payload_is_a_private_copy(self, host: Host) -> None:
        """Changing the submitted object afterwards does not change the stored payload."""
        payload = {"items": [1, 2], "tuple": (3, 4)}
        job = await host.jobs.submit("noop", payload)
        payload["items"].append(99)
        assert (await host.jobs.get(job.id)).payload == {"items": [1, 2], "tuple": [3, 4]}


# -- kind and submit options -------------------------------------------------------------


class TestKind:
    @pytest.mark.parametrize(
        "kind",
        ["nope", "Noop", "noop ", "", " ", "\t\n", 5, None, b"noop", ["noop"], "x" * 201],
        ids=[
            "unknown",
            "case",
            "padded",
            "empty",
            "space",
            "whitespace",
            "int",
            "none",
            "bytes",
            "list",
            "long",
        ],
    )
    async def test_bad_kind_is_refused(self, host: Host, kind: Any) -> None:
        """Only a registered kind, exactly as registered, can be submitted."""
        async with refused(host):
            await host.jobs.submit(kind)

    async def test_unknown_kind_message_lists_known_kinds(self, host: Host) -> None:
        """The message for an unknown kind names it and the kinds that exist."""
        with pytest.raises(InvalidInput) as caught:
            await host.jobs.submit("transcode")
        assert "'transcode'" in caught.value.message
        assert "noop" in caught.value.message
        assert "write" in caught.value.message


class TestSubmitOptions:
    @pytest.mark.parametrize(
        "priority",
        [1.5, 1.0, "1", True, False, None, math.nan, 1_000_001, -1_000_001, 10**30],
    )
    async def test_bad_priority_is_refused(self, host: Host, priority: Any) -> None:
        """Priority is an int (not a bool) within ±1_000_000."""
        async with refused(host):
            await host.jobs.submit("noop", priority=priority)

    @pytest.mark.parametrize("priority", [-1_000_000, 1_000_000, 0])
    async def test_priority_bounds_are_accepted(self, host: Host, priority: int) -> None:
        """The extreme priorities themselves are allowed."""
        assert (await host.jobs.submit("noop", priority=priority)).priority == priority

    @pytest.mark.parametrize(
        "ttl",
        [-1, -0.001, math.nan, math.inf, True, False, timedelta(seconds=-1), "60", [60], 1e300],
    )
    async def test_bad_ttl_is_refused(self, host: Host, ttl: Any) -> None:
        """ttl is a finite, non-negative number of seconds or timedelta (never a bool)."""
        async with refused(host):
            await host.jobs.submit("noop", ttl=ttl)

    @pytest.mark.parametrize("timeout", [0, 0.0, timedelta(0), -5, timedelta(seconds=-1), math.nan, True])
    async def test_non_positive_timeout_is_refused(self, host: Host, timeout: Any) -> None:
        """A timeout must be positive."""
        async with refused(host):
            await host.jobs.submit("noop", timeout=timeout)

    async def test_small_positive_durations_are_accepted(self, host: Host) -> None:
        """ttl 0 (expire at once) and a tiny positive timeout are valid."""
        job = await host.jobs.submit("noop", ttl=0, timeout=0.001)
        assert job.ttl == timedelta(0)
        assert job.timeout == timedelta(milliseconds=1)

    @pytest.mark.parametrize("max_attempts", [0, -1, True, False, 1001, 1.0, "2", None])
    async def test_bad_max_attempts_is_refused(self, host: Host, max_attempts: Any) -> None:
        """max_attempts is an int from 1 to 1000, never a bool."""
        async with refused(host):
            await host.jobs.submit("noop", max_attempts=max_attempts)

    @pytest.mark.parametrize(
        "labels",
        [
            [("a", "b")],
            "a=b",
            {1: "a"},
            {"": "a"},
            {"a": 1},
            {"a": None},
            {"k" * 201: "v"},
            {"k": "v" * 1001},
        ],
        ids=["pairs", "text", "int-key", "empty-key", "int-value", "none-value", "long-key", "long-value"],
    )
    async def test_bad_labels_are_refused(self, host: Host, labels: Any) -> None:
        """Labels map non-empty strings to strings, within length limits."""
        async with refused(host):
            await host.jobs.submit("noop", labels=labels)


# -- artifact names ----------------------------------------------------------------------


def is_unsafe_name(name: str) -> bool:
    """The names the contract refuses: empty, NUL, backslash, absolute, empty/./.. segments."""
    return (
        not name
        or len(name) > 1024
        or "\x00" in name
        or "\\" in name
        or name.startswith("/")
        or any(segment in ("", ".", "..") for segment in name.split("/"))
    )


_PIECES = ["..", ".", "/", "//", "\\", "\x00", "", "a", "b.txt", " ", "é", "...", "~"]
_segments = st.one_of(
    st.sampled_from(_PIECES),
    st.text(st.sampled_from("./\\\x00ab"), max_size=4),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=3),
)
hostile_names = st.one_of(
    st.lists(_segments, min_size=1, max_size=5).map("/".join),
    st.lists(st.sampled_from(_PIECES), max_size=8).map("".join),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=12),
).filter(is_unsafe_name)
safe_names = st.lists(
    st.text(
        st.characters(exclude_categories=["Cs"], exclude_characters="/\\\x00"), min_size=1, max_size=8
    ).filter(lambda segment: segment not in (".", "..")),
    min_size=1,
    max_size=4,
).map("/".join)

BAD_NAMES = [
    "",
    ".",
    "..",
    "../x",
    "a/../../x",
    "a/..",
    "./a",
    "a/./b",
    "/etc/passwd",
    "/a",
    "a\\b",
    "..\\x",
    "a\x00b",
    "a//b",
    "a/",
    "//a",
    "a/b//",
    "x" * 1025,
]
GOOD_NAMES = ["a/b.txt", "out/frame-001.png", "ünïcode name.txt", "...", "a.b/c..d", " spaced "]


class TestArtifactNames:
    @FEW
    @given(name=hostile_names)
    async def test_hostile_names_are_refused_when_reading_and_deleting(self, name: str) -> None:
        """read_artifact and delete_artifact refuse unsafe names; no artifact or audit changes."""
        async with running_host() as host:
            job_id = await host.finished("write", [["keep.txt", "kept"]])
            async with refused(host):
                await host.jobs.read_artifact(job_id, name)
            async with refused(host):
                await host.jobs.delete_artifact(job_id, name)
            assert await host.jobs.read_artifact(job_id, "keep.txt") == b"kept"

    @pytest.mark.parametrize("name", BAD_NAMES)
    async def test_listed_bad_names_are_refused(self, name: str) -> None:
        """`..`, `.`, absolute paths, backslashes, NUL, empty segments and double slashes are refused."""
        async with running_host() as host:
            job_id = await host.finished("write", [["keep.txt", "kept"]])
            async with refused(host):
                await host.jobs.read_artifact(job_id, name)
            async with refused(host):
                await host.jobs.delete_artifact(job_id, name)

    @pytest.mark.parametrize("name", [None, 5, b"a.txt", ["a.txt"]])
    async def test_non_string_names_are_refused(self, name: Any) -> None:
        """An artifact name must be a string."""
        async with running_host() as host:
            job_id = await host.finished("write", [["keep.txt", "kept"]])
            async with refused(host):
                await host.jobs.read_artifact(job_id, name)
            async with refused(host):
                await host.jobs.delete_artifact(job_id, name)

    @FEWER
    @given(name=hostile_names)
    async def test_handler_cannot_write_under_a_hostile_name(self, name: str) -> None:
        """put_artifact with an unsafe name fails the job with the message; no blob is written."""
        async with running_host() as host:
            job_id = await host.finished("write", [[name, "evil"]])
            job = await host.jobs.get(job_id)
            assert job.status is JobStatus.FAILED
            [message] = host.errors
            assert job.error is not None
            assert message in job.error
            assert await host.blobs.list("") == []
            assert await host.jobs.artifacts(job_id) == []

    async def test_handler_writes_before_a_hostile_name_are_kept_alone(self) -> None:
        """Artifacts written before the refused one stay; nothing lands outside the job's prefix."""
        async with running_host() as host:
            job_id = await host.finished("write", [["ok.txt", "fine"], ["../other/x", "evil"]])
            assert (await host.jobs.get(job_id)).status is JobStatus.FAILED
            assert await host.blobs.list("") == [f"jobs/{job_id}/ok.txt"]

    @pytest.mark.parametrize("name", GOOD_NAMES)
    async def test_valid_names_round_trip(self, name: str) -> None:
        """Ordinary relative names are written, listed, read back and deleted."""
        async with running_host() as host:
            job_id = await host.finished("write", [[name, f"data of {name}"]])
            assert (await host.jobs.get(job_id)).status is JobStatus.COMPLETED
            assert await host.jobs.artifacts(job_id) == [name]
            assert await host.jobs.read_artifact(job_id, name) == f"data of {name}".encode()
            await host.jobs.delete_artifact(job_id, name)
            assert await host.jobs.artifacts(job_id) == []

    @FEWER
    @given(name=safe_names)
    async def test_any_safe_name_round_trips(self, name: str) -> None:
        """Any name of non-empty segments without NUL, backslash, `.` or `..` is accepted."""
        assume(len(name) <= 1024)
        async with running_host() as host:
            job_id = await host.finished("write", [[name, "x"]])
            assert (await host.jobs.get(job_id)).status is JobStatus.COMPLETED
            assert await host.jobs.read_artifact(job_id, name) == b"x"
            assert await host.blobs.list("") == [f"jobs/{job_id}/{name}"]


# -- listing -----------------------------------------------------------------------------


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


class TestList:
    @pytest.mark.parametrize("limit", [0, -1, 1001, True, False, "10", 1.5, None])
    async def test_bad_limit_is_refused(self, host: Host, limit: Any) -> None:
        """limit is an int from 1 to 1000, never a bool."""
        async with refused(host):
            await host.jobs.list(limit=limit)

    @pytest.mark.parametrize("limit", [1, 1000])
    async def test_limit_bounds_are_accepted(self, host: Host, limit: int) -> None:
        """The extreme limits themselves are allowed."""
        assert len(await host.jobs.list(limit=limit)) == 1

    @pytest.mark.parametrize("status", ["done", "PENDING", ["pending", "bogus"], [None], 5])
    async def test_unknown_status_is_refused(self, host: Host, status: Any) -> None:
        """Statuses are the lowercase JobStatus values; one bad one spoils the filter."""
        async with refused(host):
            await host.jobs.list(status=status)

    @FEW
    @given(cursor=st.text(max_size=80))
    async def test_random_cursor_is_refused(self, cursor: str) -> None:
        """Text that is not a cursor jobkit handed out is InvalidInput."""
        assume(not cursor.startswith(b64("j1.")))  # every real cursor starts so
        async with running_host(concurrency=0) as host, refused(host):
            await host.jobs.list(cursor=cursor)

    async def test_tampered_cursor_is_refused(self, host: Host) -> None:
        """A real cursor with its payload or encoding changed is InvalidInput."""
        for _ in range(3):
            await host.jobs.submit("noop")
        page = await host.jobs.list(limit=1)
        cursor = page.next_cursor
        assert cursor is not None
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        tag, _, seq = raw.partition(".")
        tampered = [
            b64(f"{tag}.x{seq}"),
            b64(f"{tag}.-{seq}"),
            b64(f"{tag}.0{seq}"),
            b64(f"{tag}.{seq} "),
            b64(f"j2.{seq}"),
            b64(seq),
            b64(f"{tag}.{'9' * 60}"),
            cursor + "=",
            cursor + "A",
            cursor[:-1],
            cursor.swapcase(),
            " " + cursor,
        ]
        for bad in tampered:
            async with refused(host):
                await host.jobs.list(cursor=bad)
        assert len(await host.jobs.list(limit=1, cursor=cursor)) == 1

    @pytest.mark.parametrize("cursor", [5, b"ajEuMQ", ["ajEuMQ"]])
    async def test_non_string_cursor_is_refused(self, host: Host, cursor: Any) -> None:
        """A cursor is a string."""
        async with refused(host):
            await host.jobs.list(cursor=cursor)


# -- priority changes --------------------------------------------------------------------


class TestSetPriority:
    @pytest.mark.parametrize("priority", [1_000_001, -1_000_001, 10**12, True, 1.0, "5", None])
    async def test_bad_priority_change_is_refused(self, host: Host, priority: Any) -> None:
        """set_priority refuses non-ints and values beyond ±1_000_000; the job is untouched."""
        [job] = await host.jobs.list()
        async with refused(host):
            await host.jobs.set_priority(job.id, priority)
        assert await host.jobs.get(job.id) == job

    @pytest.mark.parametrize("priority", [1_000_000, -1_000_000])
    async def test_extreme_priorities_can_be_set(self, host: Host, priority: int) -> None:
        """A pending job can be moved to either end of the range."""
        [job] = await host.jobs.list()
        changed, position = await host.jobs.set_priority(job.id, priority)
        assert changed.priority == priority
        assert position == 1


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"id": ""}, "id must be a non-empty string"),
        ({"id": 7}, "id must be a non-empty string"),
        ({"id": "a\x00b"}, "NUL"),
        ({"id": "\ud800"}, "not valid Unicode"),
        ({"id": "a", "tenant": ""}, "tenant must be a non-empty string"),
        ({"id": "a", "tenant": "t\x00"}, "NUL"),
    ],
)
def test_an_actor_must_be_storable(kwargs: dict[str, Any], fragment: str) -> None:
    """An actor's id and tenant are stored in jobs and audit records: bad ones are refused
    when the actor is made, not by a store later."""
    with pytest.raises(InvalidInput, match=fragment):
        Actor(**kwargs)


# -- delays, retries, idempotency keys, pauses, schedules ------------------------------------

naive_datetimes = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9000, 1, 1))
bad_run_ats = st.one_of(
    naive_datetimes,
    st.datetimes(min_value=datetime(2200, 1, 1), timezones=st.just(UTC)),  # past 100 years
    st.sampled_from(["2030-01-01T00:00:00+00:00", 1_900_000_000, date(2030, 1, 1), True]),
)
bad_keys = st.one_of(
    st.just(""),
    st.text(min_size=201, max_size=300),
    st.text(min_size=1, max_size=20).map(lambda t: t + "\n"),
    st.sampled_from(["tab\there", "\x00", "bell\x07", "\ud800", "line\r\n"]),
    st.sampled_from([1, b"key", ["k"], True]),
)


class TestDelayRetryAndKeys:
    @FEW
    @given(run_at=bad_run_ats)
    async def test_bad_run_at_is_refused(self, run_at: Any) -> None:
        """run_at is an aware datetime at most 100 years ahead: naive ones, strings, dates and
        numbers are InvalidInput; nothing is stored."""
        async with running_host(concurrency=0) as host, refused(host):
            await host.jobs.submit("noop", run_at=run_at)

    @FEW
    @given(delay=bad_durations)
    async def test_bad_delay_is_refused(self, delay: Any) -> None:
        """delay follows the duration rules (finite, non-negative, at most 100 years)."""
        async with running_host(concurrency=0) as host, refused(host):
            await host.jobs.submit("noop", delay=delay)

    async def test_run_at_and_delay_together_are_refused(self, host: Host) -> None:
        """Give one of them, not both."""
        async with refused(host):
            await host.jobs.submit("noop", delay=1, run_at=datetime.now(UTC))

    @pytest.mark.parametrize(
        "retry",
        [3, {"attempts": 3}, "Retry(3)", True],
        ids=["int", "dict", "str", "bool"],
    )
    async def test_a_retry_that_is_not_a_retry_is_refused(self, host: Host, retry: Any) -> None:
        """retry= takes a jobkit.Retry."""
        async with refused(host):
            await host.jobs.submit("noop", retry=retry)

    async def test_conflicting_max_attempts_and_retry_attempts_are_refused(self, host: Host) -> None:
        """max_attempts other than 1 (the default) and retry.attempts must agree."""
        async with refused(host):
            await host.jobs.submit("noop", max_attempts=5, retry=Retry(attempts=3))
        job = await host.jobs.submit("noop", max_attempts=3, retry=Retry(attempts=3))
        assert job.max_attempts == 3

    @FEW
    @given(key=bad_keys)
    async def test_bad_idempotency_keys_are_refused(self, key: Any) -> None:
        """A key is 1-200 printable characters of valid text."""
        async with running_host(concurrency=0) as host, refused(host):
            await host.jobs.submit("noop", idempotency_key=key)

    async def test_a_reused_key_with_another_payload_is_refused(self, host: Host) -> None:
        """Once a key is held, the same key with another payload changes nothing."""
        await host.jobs.submit("noop", {"a": 1}, idempotency_key="k")
        async with refused(host):
            await host.jobs.submit("noop", {"a": 2}, idempotency_key="k")
        async with refused(host):
            await host.jobs.submit("write", {"a": 1}, idempotency_key="k")


class TestPausesAndSchedules:
    @pytest.mark.parametrize("kind", ["unknown", "", " ", 7, None, "x" * 300, "\ud800"])
    async def test_bad_or_unknown_kinds_cannot_be_paused(self, host: Host, kind: Any) -> None:
        """pause() and resume() take a kind this manager knows (or the store has jobs of)."""
        async with refused(host):
            await host.jobs.pause(kind)
        async with refused(host):
            await host.jobs.resume(kind)

    @FEW
    @given(
        cron=st.one_of(
            st.text(max_size=30).filter(lambda t: len(t.split()) != 5),
            st.sampled_from(["61 * * * *", "* 25 * * *", "* * 32 * *", "* * * 13 *", "* * * * 8",
                             "*/0 * * * *", "a b c d e", "0 0 30 2 *", "1-0 * * * *", "x" * 500]),
            st.sampled_from([None, 5, ["0", "3", "*", "*", "*"]]),
        )
    )  # fmt: skip
    async def test_malformed_cron_is_refused(self, cron: Any) -> None:
        """A cron expression is five valid fields that fire at some time."""
        async with running_host(concurrency=0) as host, refused(host):
            await host.jobs.schedule("nightly", "noop", cron=cron)

    @pytest.mark.parametrize(
        "timezone", ["Mars/Olympus", "", "utc+2", "../../etc/passwd", "Europe/", 5, None, "\x00"]
    )
    async def test_unknown_time_zones_are_refused(self, host: Host, timezone: Any) -> None:
        """The time zone is an IANA name."""
        async with refused(host):
            await host.jobs.schedule("nightly", "noop", cron="0 3 * * *", timezone=timezone)

    @pytest.mark.parametrize("name", ["", "tab\tname", "x" * 201, 3, None])
    async def test_bad_schedule_names_are_refused(self, host: Host, name: Any) -> None:
        """A schedule name is 1-200 printable characters."""
        async with refused(host):
            await host.jobs.schedule(name, "noop", cron="0 3 * * *")

    async def test_a_schedule_of_an_unknown_kind_or_bad_payload_is_refused(self, host: Host) -> None:
        """The kind must be known here; the payload must be JSON; the priority in range."""
        async with refused(host):
            await host.jobs.schedule("nightly", "unknown", cron="0 3 * * *")
        async with refused(host):
            await host.jobs.schedule("nightly", "noop", {"x": {1, 2}}, cron="0 3 * * *")
        async with refused(host):
            await host.jobs.schedule("nightly", "noop", cron="0 3 * * *", priority=10**9)
