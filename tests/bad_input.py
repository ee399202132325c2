"""Hypothesis strategies for bad input, shared by the Python API and the web tests.

Two layers. Python values (:data:`bad_durations`, :data:`bad_submits`) for calling the
manager directly. JSON *texts* for the web routes, since some of the worst input cannot
be written as a Python value and then encoded: ``NaN``, ``Infinity`` and ``1e400`` as
JSON tokens, 30-digit integers, lone surrogates as ``\\ud800`` escapes, bodies nested
100,000 levels deep, bytes that are not UTF-8. A body strategy draws ``bytes``; a query
strategy draws an already percent-encoded query string.

Every value drawn here is wrong: a route must answer it with 422 ``invalid_input`` (or
404 for a well-formed id no job has) and change nothing.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import quote, unquote

from hypothesis import strategies as st

from jobkit import InvalidInput
from jobkit._records import MAX_DURATION
from jobkit._validate import (
    MAX_KIND_LENGTH,
    MAX_NAME_LENGTH,
    MAX_PRIORITY,
    MAX_TEXT_LENGTH,
    decode_cursor,
)
from jobkit.integrations._http import BODY_LIMITS

__all__ = [
    "Raw",
    "artifact_names",
    "bad_durations",
    "bad_text",
    "cancel_bodies",
    "cursors",
    "deep",
    "job_ids",
    "list_queries",
    "priority_bodies",
    "retry_bodies",
    "schedule_bodies",
    "submit_bodies",
    "unknown_kinds",
    "to_json",
]

#: The kinds the web tests register; any other is unknown, so refused.
KNOWN_KINDS = frozenset({"echo", "later"})
#: The idempotency key of the web tests' seeded pending job (kind ``later``, no payload).
SEEDED_KEY = "seeded-key"
#: How deep the deeply nested bodies go (Python's recursion limit is ~1,000).
DEPTH = 100_000

# -- text --------------------------------------------------------------------------------

_surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
#: Text that holds a lone surrogate somewhere: not valid Unicode, cannot be stored as UTF-8.
bad_text = st.builds(lambda a, s, b: a + s + b, st.text(max_size=6), _surrogates, st.text(max_size=6))


def over_long(limit: int) -> st.SearchStrategy[str]:
    """A string a few characters longer than ``limit``."""
    return st.builds(lambda n, c: c * n, st.integers(limit + 1, limit + 40), st.sampled_from("xé✓"))


# -- JSON texts --------------------------------------------------------------------------


class Raw(str):
    """A JSON token written as is: ``1e400``, ``NaN``, ``Infinity``, a 30-digit integer."""


def to_json(value: Any) -> str:
    """JSON text for ``value``: :class:`Raw` tokens unchanged, every other string with
    ``\\u`` escapes (so a lone surrogate becomes the escape ``\\ud800``, valid JSON text)."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{to_json(str(k))}:{to_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(to_json(item) for item in value) + "]"
    return json.dumps(value)


def deep(depth: int = DEPTH, inner: str = "") -> str:
    """``inner`` nested ``depth`` levels deep in arrays and objects."""
    return '{"a":[' * (depth // 2) + inner + "]}" * (depth // 2)


#: Numbers JSON cannot hold as a finite float (``1e400`` overflows to infinity when read).
non_finite = st.sampled_from([Raw("NaN"), Raw("Infinity"), Raw("-Infinity"), Raw("1e400"), Raw("-1e400")])
#: Numbers no field takes: not finite, or far too large for any bound.
huge_numbers = st.one_of(
    non_finite,
    st.integers(min_value=10**29, max_value=10**40).map(lambda n: Raw(str(n))),
    st.integers(min_value=10**29, max_value=10**40).map(lambda n: Raw(str(-n))),
    st.floats(min_value=1e300, max_value=1.7e308),
)

_json_values: dict[str, st.SearchStrategy[Any]] = {
    "null": st.none(),
    "bool": st.booleans(),
    "int": st.integers(-(10**6), 10**6),
    "float": st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: x != int(x)),
    "string": st.text(max_size=5),
    "array": st.lists(st.integers(0, 9), max_size=3),
    "object": st.dictionaries(st.text(max_size=3), st.integers(0, 9), max_size=2),
}


def wrong_types(*allowed: str) -> st.SearchStrategy[Any]:
    """JSON values of none of the ``allowed`` types (``null``, ``bool``, ``int``, ...)."""
    return st.one_of([strategy for name, strategy in _json_values.items() if name not in allowed])


#: A duration (ttl, timeout) no route takes: negative, past the 100-year bound, not finite,
#: a 30-digit integer.
bad_json_durations = st.one_of(
    huge_numbers,
    st.floats(max_value=-1e-9, allow_infinity=False),
    st.integers(max_value=-1),
    st.floats(min_value=MAX_DURATION.total_seconds() * 1.000001, max_value=1e300),
    st.integers(min_value=int(MAX_DURATION.total_seconds()) + 1, max_value=10**28),
)

_bad_labels = st.one_of(
    wrong_types("null", "object"),
    st.builds(lambda v: {"k": v}, wrong_types("string")),
    st.builds(lambda k: {k: "v"}, bad_text),
    st.builds(lambda v: {"k": v}, bad_text),
    st.just({"": "empty name"}),
    st.builds(lambda k: {k: "v"}, over_long(200)),
    st.builds(lambda v: {"k": v}, over_long(1000)),
)
#: A submit with 60,000 fine labels: more than its body may hold (1 MiB).
HUGE_LABELS = (
    '{"kind":"echo","labels":{' + ",".join(f'"k{i}":"vvvvvvvv"' for i in range(60_000)) + "}}"
).encode()

#: A ``run_at`` no route takes: not a string, not ISO 8601, without a UTC offset (naive),
#: more than 100 years away, or no real date.
bad_run_ats = st.one_of(
    wrong_types("null", "string"),
    st.sampled_from(
        [
            "2030-01-01T09:00:00",
            "2030-01-01 09:00:00",
            "2030-01-01",
            "2030-01-01T09:00:00.5",
            "9999-12-31T23:59:59Z",
            "2030-02-30T00:00:00Z",
            "2030-01-01T25:00:00Z",
            "2030-01-01T09:00:00+24:00",
            "tomorrow",
            "",
            "2030-01-01T09:00:00Z ",
        ]
    ),
    bad_text,
    st.text(max_size=12).filter(lambda t: not t[:1].isdigit()),
)
#: A ``retry`` object of ``POST /jobs`` that is refused: not an object, unknown fields (``on``
#: too: not over HTTP), ``attempts`` missing or out of range, values of the wrong type or range.
bad_retries = st.one_of(
    wrong_types("null", "object"),
    st.sampled_from(
        [
            {},
            {"backoff": 1},
            {"attempts": 0},
            {"attempts": 1001},
            {"attempts": 2.5},
            {"attempts": True},
            {"attempts": "3"},
            {"attempts": 3, "backoff": -1},
            {"attempts": 3, "factor": 0.5},
            {"attempts": 3, "factor": 101},
            {"attempts": 3, "jitter": 1.5},
            {"attempts": 3, "jitter": -0.1},
            {"attempts": 3, "max_backoff": "1h"},
            {"attempts": 3, "on": ["ValueError"]},
            {"attempts": 3, "delay": 1},
        ]
    ),
    st.builds(lambda d: {"attempts": 3, "backoff": d}, bad_json_durations),
    st.builds(lambda d: {"attempts": 3, "max_backoff": d}, bad_json_durations),
    st.builds(lambda n: {"attempts": 3, "factor": n}, huge_numbers),
)
#: An idempotency key that is refused: empty, longer than 200, not printable, not valid text.
bad_keys = st.one_of(
    wrong_types("null", "string"),
    st.sampled_from(["", "a\nb", "\x00", "tab\there", "\u200b", "\x7f"]),
    over_long(200),
    bad_text,
)

#: Each field of ``POST /jobs`` with a value it does not take.
_bad_submit_fields: dict[str, st.SearchStrategy[Any]] = {
    "kind": st.one_of(
        wrong_types("string"),
        bad_text,
        over_long(MAX_KIND_LENGTH),
        st.sampled_from(["", " ", "\t\n"]),
        st.text(min_size=1, max_size=20).filter(lambda k: k.strip() and k not in KNOWN_KINDS),
    ),
    "payload": st.one_of(
        st.builds(lambda t: {"text": [t]}, bad_text),
        st.builds(lambda t: {t: 1}, bad_text),
        non_finite,  # a huge but finite number is a fine payload
        st.builds(lambda n: {"n": [n]}, non_finite),
    ),
    "priority": st.one_of(
        wrong_types("int"),
        huge_numbers,
        st.integers(min_value=MAX_PRIORITY + 1, max_value=10**18),
        st.integers(min_value=-(10**18), max_value=-MAX_PRIORITY - 1),
    ),
    "ttl": st.one_of(wrong_types("null", "int", "float"), bad_json_durations),
    "timeout": st.one_of(wrong_types("null", "int", "float"), bad_json_durations, st.just(0)),
    "max_attempts": st.one_of(
        wrong_types("int"), huge_numbers, st.sampled_from([0, -1, 1001, 10**6]), st.just(Raw("1" * 30))
    ),
    "labels": _bad_labels,
    "run_at": bad_run_ats,
    "delay": st.one_of(wrong_types("null", "int", "float"), bad_json_durations),
    "retry": bad_retries,
    "idempotency_key": bad_keys,
}


@st.composite
def _submit_with_one_bad_field(draw: st.DrawFn) -> bytes:
    body: dict[str, Any] = {"kind": "echo"}
    field = draw(st.sampled_from(sorted(_bad_submit_fields)))
    body[field] = draw(_bad_submit_fields[field])
    return to_json(body).encode()


def _body_shapes(
    required: frozenset[str], fields: frozenset[str], limit: int, large: bool
) -> st.SearchStrategy[bytes]:
    """Bodies wrong whatever their fields: not JSON, not UTF-8, not an object, unknown
    fields, a required field missing and, if ``large``, nested 100,000 levels or larger
    than the route takes."""
    known = sorted(fields)
    small = st.one_of(
        st.sampled_from(
            [b"{", b"{'a': 1}", b"nul", b"[1,]", b'{"a":1}}', b"\xff\xfe{}", b'{"k": "\xed\xa0\x80"}']
        ),
        st.builds(lambda v: to_json(v).encode(), wrong_types("object", "null")),
        st.builds(
            lambda extra: to_json({**dict.fromkeys(required), extra: 1}).encode(),
            st.text(min_size=1, max_size=8).filter(lambda k: k not in fields),
        ),
    )
    if not large:
        return small
    return st.one_of(
        small,
        st.just(deep().encode()),
        st.builds(lambda name: ('{"' + name + '":' + deep() + "}").encode(), st.sampled_from(known)),
        st.just(b'{"' + known[0].encode() + b'":"' + b"x" * (limit + 1) + b'"}'),
    )


def submit_bodies(*, large: bool = True) -> st.SearchStrategy[bytes]:
    """Bodies of ``POST /jobs`` that must be refused (422) without storing a job; with
    ``large``, also the 100,000-deep and the megabyte ones."""
    bodies = [
        _submit_with_one_bad_field(),
        _body_shapes(frozenset({"kind"}), frozenset(_bad_submit_fields), BODY_LIMITS["submit"], large),
        st.just(b""),  # the body is required
        st.just(b'{"payload": 1}'),  # and so is kind
        # run_at and delay together; retry.attempts against max_attempts
        st.just(b'{"kind": "echo", "run_at": "2030-01-01T00:00:00Z", "delay": 5}'),
        st.just(b'{"kind": "echo", "retry": {"attempts": 3}, "max_attempts": 5}'),
        # the seeded job's key with another payload or kind
        st.sampled_from([{"payload": {"other": 1}}, {"kind": "echo"}, {"payload": 0}]).map(
            lambda change: to_json({"kind": "later", "idempotency_key": SEEDED_KEY, **change}).encode()
        ),
    ]
    if large:
        bodies.append(st.just(HUGE_LABELS))
    return st.one_of(bodies)


def cancel_bodies(*, large: bool = True) -> st.SearchStrategy[bytes]:
    """Bodies of ``POST /jobs/{id}/cancel`` that must be refused without cancelling."""
    reason = st.one_of(wrong_types("null", "string"), bad_text, over_long(MAX_TEXT_LENGTH))
    return st.one_of(
        st.builds(lambda r: to_json({"reason": r}).encode(), reason),
        _body_shapes(frozenset(), frozenset({"reason"}), BODY_LIMITS["cancel"], large),
    )


def priority_bodies(*, large: bool = True) -> st.SearchStrategy[bytes]:
    """Bodies of ``PATCH /jobs/{id}/priority`` that must be refused without a change."""
    return st.one_of(
        st.builds(lambda p: to_json({"priority": p}).encode(), _bad_submit_fields["priority"]),
        _body_shapes(frozenset({"priority"}), frozenset({"priority"}), BODY_LIMITS["priority"], large),
        st.sampled_from([b"", b"{}", b'{"priority": null}']),
    )


def retry_bodies(*, large: bool = True) -> st.SearchStrategy[bytes]:
    """Bodies of ``POST /jobs/{id}/retry`` that must be refused without retrying."""
    return st.one_of(
        st.builds(lambda r: to_json({"run_at": r}).encode(), bad_run_ats),
        _body_shapes(frozenset(), frozenset({"run_at"}), BODY_LIMITS["retry"], large),
    )


#: Each field of ``POST /schedules`` with a value it does not take.
_bad_schedule_fields: dict[str, st.SearchStrategy[Any]] = {
    "name": bad_keys,
    "kind": _bad_submit_fields["kind"],
    "payload": _bad_submit_fields["payload"],
    "cron": st.one_of(
        wrong_types("string"),
        st.sampled_from(
            [
                "",
                " ",
                "* * * *",
                "* * * * * *",
                "61 * * * *",
                "* 25 * * *",
                "0 0 31 2 *",
                "a b c d e",
                "@daily",
            ]
        ),
        over_long(200),
        bad_text,
    ),
    "timezone": st.one_of(
        wrong_types("string"),
        st.sampled_from(["", "Mars/Olympus", "../etc/passwd", "UTC\x00", "Europe/", "/UTC", "utc+1"]),
        over_long(100),
        bad_text,
    ),
    "priority": _bad_submit_fields["priority"],
}
_GOOD_SCHEDULE = {"name": "nightly", "kind": "later", "cron": "0 3 * * *"}


@st.composite
def _schedule_with_one_bad_field(draw: st.DrawFn) -> bytes:
    body: dict[str, Any] = dict(_GOOD_SCHEDULE)
    field = draw(st.sampled_from(sorted(_bad_schedule_fields)))
    body[field] = draw(_bad_schedule_fields[field])
    return to_json(body).encode()


def schedule_bodies(*, large: bool = True) -> st.SearchStrategy[bytes]:
    """Bodies of ``POST /schedules`` that must be refused without storing a schedule."""
    required = frozenset({"name", "kind", "cron"})
    return st.one_of(
        _schedule_with_one_bad_field(),
        _body_shapes(required, frozenset(_bad_schedule_fields), BODY_LIMITS["schedule"], large),
        st.sampled_from(
            [b"", b"{}", b'{"name": "n", "kind": "later"}', b'{"kind": "later", "cron": "* * * * *"}']
        ),
    )


#: Content types a page on another site can send without a CORS preflight (no
#: X-Requested-With header either): a state-changing POST must refuse them.
cross_site_content_types = st.sampled_from(
    [
        None,
        "text/plain",
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ]
)

# -- paths and queries -------------------------------------------------------------------


def _percent(text: str) -> str:
    """``text`` percent-encoded as UTF-8; a lone surrogate as the bytes CESU would give it
    (``%ED%A0%80``), which no UTF-8 decoder accepts."""
    # Dots too, so no client takes a '..' for a dot-segment and sends another path.
    return quote(text.encode("utf-8", "surrogatepass"), safe="").replace(".", "%2E")


#: A job id segment (already percent-encoded) that is no job's id and must not reach one:
#: too long, not UTF-8, or simply unknown. Never holds a '/', so it stays one segment.
job_ids = st.one_of(
    st.builds(_percent, over_long(200)),
    st.builds(_percent, bad_text.filter(lambda t: "/" not in t)),
    st.sampled_from(["%FF", "%C0%AF", "%ED%A0%80", "%00", "%20", "%2E%2E", "%2E"]),
    st.builds(_percent, st.text(min_size=1, max_size=30).filter(lambda t: "/" not in t)),
)

#: A kind path segment (already percent-encoded) no manager knows: pausing it is refused.
unknown_kinds = st.one_of(
    st.builds(
        _percent, st.text(min_size=1, max_size=20).filter(lambda k: "/" not in k and k not in KNOWN_KINDS)
    ),
    st.builds(_percent, over_long(MAX_KIND_LENGTH)),
    st.builds(_percent, bad_text.filter(lambda t: "/" not in t)),
    st.sampled_from(["%20", "%00", "%FF"]),
)

#: An artifact name (already percent-encoded) that is unsafe or malformed.
artifact_names = st.one_of(
    st.sampled_from(
        ["%2E%2E", "%2E%2E/x", "a/%2E%2E/b", "a//b", "%2E/a", "a/%2E/b", "a/", "%2Fabs", "a%5Cb", "a%00b"]
    ),
    st.sampled_from(["%FF", "%ED%A0%80", "%C0%AE%C0%AE"]),
    st.builds(lambda t: "out/" + _percent(t), bad_text),
    st.builds(lambda n: "x" * n, st.integers(MAX_NAME_LENGTH + 1, MAX_NAME_LENGTH + 50)),
    # A segment longer than a file name may be (255 bytes): no file store can hold it.
    st.builds(lambda n, c: "out/" + _percent(c * n), st.integers(130, 300), st.sampled_from("xé")),
)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _not_a_cursor(text: str) -> bool:
    try:
        decode_cursor(unquote(text))
    except InvalidInput:
        return True
    return False


#: Cursors no page ever handed out (already percent-encoded): huge or negative numbers in
#: the right wrapping, the wrong tag, garbage, wrong padding, not base64, not ASCII, too long.
cursors = st.one_of(
    st.integers(min_value=2**63, max_value=10**40).map(lambda n: _b64(f"j1.{n}".encode())),
    st.sampled_from([_b64(b"j1." + b"1" * 30), _b64(b"j1.-1"), _b64(b"j1.01"), _b64(b"j1."), _b64(b"j1.1 ")]),
    st.sampled_from([_b64(b"j2.5"), _b64(b"5"), _b64(b"j1.\xff"), "", "=", "====", "j1.5", "!!!!"]),
    st.binary(max_size=30)
    .map(_b64)
    .filter(lambda c: not base64.urlsafe_b64decode(c + "===").startswith(b"j1.")),
    st.text(min_size=1, max_size=20).map(_percent),
    st.builds(lambda c: c + "==", st.integers(0, 99).map(lambda n: _b64(f"j1.{n}".encode()))),
    st.just("A" * 65),
    st.just("%ED%A0%80"),
).filter(_not_a_cursor)

#: Values of the ``limit`` query parameter outside 1..1000 or not an integer.
limits = st.one_of(
    st.sampled_from(["0", "-1", "1001", "", "1e3", "1.5", "abc", "%EF%BC%95", "1" * 30, "0x10", "+"]),
    st.integers(min_value=1001, max_value=10**40).map(str),
    st.integers(max_value=0).map(str),
)


_bad_query_parameters = st.one_of(
    cursors.map(lambda c: "cursor=" + c),
    limits.map(lambda n: "limit=" + n),
    st.sampled_from(["status=", "status=done", "status=PENDING", "status=%ED%A0%80", "kind=", "kind=%20"]),
    st.builds(lambda t: "kind=" + t, over_long(MAX_KIND_LENGTH)),
)

#: A ``kind`` filter whose bytes are not UTF-8 (a lone surrogate, CESU-style): the web
#: frameworks decode it with U+FFFD in place of the bad bytes, so it becomes a valid kind
#: no job has (an empty page) or, where they refuse it, a 422; never a 5xx.
undecodable_kinds = st.one_of(
    st.builds(lambda t: "kind=" + _percent(t), bad_text), st.sampled_from(["kind=%FF", "kind=%C0%AF"])
)


@st.composite
def list_queries(draw: st.DrawFn) -> str:
    """A query string of ``GET /jobs`` with one bad parameter, and good ones of the others
    (never a good value of the bad one's name: a framework may take either)."""
    bad = draw(_bad_query_parameters)
    name = bad.split("=", 1)[0]
    good = {"status": "status=pending", "kind": "kind=echo", "limit": "limit=10"}
    chosen = draw(st.lists(st.sampled_from(sorted(set(good) - {name})), unique=True))
    query = [good[other] for other in chosen]
    query.insert(draw(st.integers(0, len(query))), bad)
    return "&".join(query)


# -- Python values for the manager's own API --------------------------------------------

#: A cancel reason ``JobManager.cancel`` refuses: not a string, not valid text, too long.
bad_reasons = st.one_of(
    st.integers(),
    st.binary(max_size=4),
    st.lists(st.text(max_size=2), max_size=2),
    bad_text,
    over_long(MAX_TEXT_LENGTH),
)
#: A priority ``JobManager.set_priority`` refuses: not an int (bools, floats), out of range.
bad_priorities = st.one_of(
    st.booleans(),
    st.floats(),
    st.text(max_size=3),
    st.integers().filter(lambda p: abs(p) > MAX_PRIORITY),
    st.integers(min_value=10**29, max_value=10**40),
)
#: A cursor ``JobManager.list`` refuses: the crafted ones, decoded, and other types.
bad_cursors = st.one_of(
    cursors.map(lambda c: unquote(c, errors="surrogateescape")),
    st.integers(),
    st.binary(max_size=8),
    bad_text,
)

#: A duration the Python API refuses: past the bound, NaN, negative, an overflowing timedelta.
bad_durations = st.one_of(
    st.floats(min_value=MAX_DURATION.total_seconds() * 1.01, allow_infinity=True),
    st.floats(allow_nan=True).filter(lambda x: x != x),
    st.integers(min_value=int(MAX_DURATION.total_seconds()) + 1, max_value=10**40),
    st.floats(max_value=-1e-9),
    st.timedeltas(min_value=MAX_DURATION + timedelta(seconds=1)),
    st.timedeltas(max_value=-timedelta(microseconds=1)),
)

#: Keyword arguments of ``JobManager.submit`` (``kind``, ``payload`` and the options)
#: with one wrong value.
bad_submits = st.one_of(
    st.builds(lambda kind: {"kind": kind}, bad_text),
    st.builds(lambda kind: {"kind": kind}, over_long(MAX_KIND_LENGTH)),
    st.builds(lambda t: {"labels": {"k": t}}, bad_text),
    st.builds(lambda t: {"labels": {t: "v"}}, bad_text),
    st.builds(lambda t: {"payload": {"nested": [t]}}, bad_text),
    st.builds(lambda t: {"payload": {t: 1}}, bad_text),
    st.builds(lambda d: {"ttl": d}, bad_durations),
    st.builds(lambda d: {"timeout": d}, bad_durations),
    st.builds(lambda p: {"priority": p}, st.integers().filter(lambda p: abs(p) > MAX_PRIORITY)),
    st.builds(
        lambda n: {"max_attempts": n}, st.one_of(st.integers(max_value=0), st.integers(min_value=1001))
    ),
    st.builds(
        lambda n: {"payload": n},
        st.floats(allow_nan=True, allow_infinity=True).filter(
            lambda x: x != x or x in (float("inf"), float("-inf"))
        ),
    ),
    st.builds(lambda v: {"labels": {"k": v}}, over_long(1000)),
)
