"""Input checks shared by the manager and the integrations. Each raises InvalidInput."""

from __future__ import annotations

import binascii
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from ._errors import InvalidInput
from ._records import MAX_DURATION, JobStatus, text_problem

__all__ = [
    "MAX_PRIORITY",
    "MIN_ID_PREFIX",
    "MIN_PRIORITY",
    "artifact_key",
    "check_idempotency_key",
    "check_job_id",
    "check_kind",
    "check_name",
    "check_run_at",
    "check_id_prefix",
    "check_labels",
    "check_tenant",
    "check_limit",
    "check_max_attempts",
    "check_priority",
    "check_statuses",
    "decode_cursor",
    "encode_cursor",
    "json_value",
]

MIN_PRIORITY = -1_000_000
MAX_PRIORITY = 1_000_000
MAX_KIND_LENGTH = 200
MAX_NAME_LENGTH = 1024
#: The longest cancel reason or progress message, in characters.
MAX_TEXT_LENGTH = 10_000

_json: tuple[Callable[[Any], str], Callable[[str], Any]] | None = None


def _json_codec() -> tuple[Callable[[Any], str], Callable[[str], Any]]:
    """The compact, NaN-refusing JSON encoder and the decoder, made on first use (json is
    left out of `import jobkit`)."""
    global _json
    if _json is None:
        import json

        _json = (
            json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(",", ":")).encode,
            json.loads,
        )
    return _json


def json_value(value: Any, what: str = "payload") -> Any:
    """A private JSON copy of ``value``; InvalidInput when it is not plain JSON.

    Plain JSON means ``None``, bool, int, finite float, str (valid Unicode), and lists,
    tuples and dicts with string keys of those. The copy keeps later changes by the
    caller out.
    """
    if value is None or value.__class__ is bool:
        return value
    dumps, loads = _json or _json_codec()
    try:
        text = dumps(value)
        text.encode("utf-8")  # lone surrogates cannot be stored as JSON text
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidInput(f"The {what} must be JSON-serialisable: {exc}.") from None
    if value.__class__ in (str, int, float):
        return value
    _check_keys(value, what)
    return loads(text)


def _check_keys(value: Any, what: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInput(f"The {what} has a non-string key {key!r}: JSON keys are strings.")
            _check_keys(item, what)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_keys(item, what)


def check_text(value: str, what: str) -> str:
    """``value`` if every store can keep it as text, else InvalidInput: valid UTF-8 (no
    lone surrogates) without NUL characters (which PostgreSQL's text refuses)."""
    problem = text_problem(value)
    if problem is not None:
        raise InvalidInput(f"The {what} {problem}.")
    return value


def check_optional_text(value: object, what: str, max_length: int) -> str | None:
    """None, or a string of at most ``max_length`` characters that is valid UTF-8 text."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"The {what} must be a string, got {type(value).__name__}.")
    if len(value) > max_length:
        raise InvalidInput(f"The {what} is longer than {max_length} characters.")
    return check_text(value, what)


def safe_text(value: str) -> str:
    """``value`` made storable: lone surrogates and NUL (e.g. in an exception message) escaped."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value.replace("\x00", "\\x00") if "\x00" in value else value


def check_kind(kind: object) -> str:
    if not isinstance(kind, str) or not kind.strip():
        raise InvalidInput(f"The job kind must be a non-empty string, got {kind!r}.")
    if len(kind) > MAX_KIND_LENGTH:
        raise InvalidInput(f"The job kind is longer than {MAX_KIND_LENGTH} characters.")
    return check_text(kind, "job kind")


def check_job_id(job_id: object) -> str:
    if not isinstance(job_id, str) or not job_id or len(job_id) > 200:
        raise InvalidInput(f"A job id must be a non-empty string, got {job_id!r}.")
    return check_text(job_id, "job id")


#: The shortest id prefix :meth:`JobManager.resolve` accepts.
MIN_ID_PREFIX = 4
_HEX = frozenset("0123456789abcdef")


def check_id_prefix(prefix: object, minimum: int = 1) -> str:
    """A lowercase id prefix of ``minimum`` to 32 hexadecimal characters (any case given)."""
    if not isinstance(prefix, str):
        raise InvalidInput(f"An id prefix must be a string, got {type(prefix).__name__}.")
    lowered = prefix.lower()
    if not minimum <= len(lowered) <= 32 or not _HEX.issuperset(lowered):
        raise InvalidInput(
            f"An id prefix must be {minimum} to 32 hexadecimal characters (0-9, a-f), got {prefix!r}."
        )
    return lowered


def check_tenant(tenant: object) -> str:
    if not isinstance(tenant, str) or not tenant or len(tenant) > 200:
        raise InvalidInput(f"A tenant must be a non-empty string of at most 200 characters, got {tenant!r}.")
    return check_text(tenant, "tenant")


def check_priority(priority: object) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise InvalidInput(f"The priority must be an integer, got {type(priority).__name__}.")
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise InvalidInput(f"The priority must be between {MIN_PRIORITY} and {MAX_PRIORITY}, got {priority}.")
    return priority


MAX_KEY_LENGTH = 200


def _printable_name(value: object, what: str, example: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"The {what} must be a non-empty string (e.g. {example!r}), got {value!r}.")
    if len(value) > MAX_KEY_LENGTH:
        raise InvalidInput(f"The {what} is longer than {MAX_KEY_LENGTH} characters.")
    if not value.isprintable():
        raise InvalidInput(
            f"The {what} must be printable characters only (no control characters), got {value!r}."
        )
    return check_text(value, what)


def check_idempotency_key(key: object) -> str | None:
    """None, or 1-200 printable characters."""
    if key is None:
        return None
    return _printable_name(key, "idempotency key", "order-1234")


def check_name(name: object) -> str:
    """A schedule's name: 1-200 printable characters."""
    return _printable_name(name, "schedule name", "nightly-report")


def check_run_at(value: object, now: datetime) -> datetime:
    """An aware datetime, in UTC, at most :data:`MAX_DURATION` from ``now``."""
    if not isinstance(value, datetime):
        raise InvalidInput(f"run_at must be a datetime, got {type(value).__name__}.")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(
            "run_at must be timezone-aware (a naive datetime is ambiguous): "
            "use e.g. datetime.now(UTC) + timedelta(hours=1)."
        )
    value = value.astimezone(UTC)
    try:
        too_late = value - now > MAX_DURATION
    except OverflowError:  # pragma: no cover - both are within datetime's range
        too_late = True
    if too_late:
        raise InvalidInput(f"run_at can be at most {MAX_DURATION.days} days (100 years) from now.")
    return value


def check_max_attempts(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
        raise InvalidInput(f"max_attempts must be an integer from 1 to 1000, got {value!r}.")
    return value


def check_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
        raise InvalidInput(f"The limit must be an integer from 1 to 1000, got {limit!r}.")
    return limit


def check_labels(labels: object) -> Mapping[str, str] | None:
    if labels is None:
        return None
    if not isinstance(labels, Mapping):
        raise InvalidInput("Labels must be a mapping of strings to strings.")
    for key, value in labels.items():
        if not isinstance(key, str) or not key or not isinstance(value, str):
            raise InvalidInput(f"Labels must map non-empty strings to strings, got {key!r}: {value!r}.")
        if len(key) > 200 or len(value) > 1000:
            raise InvalidInput(f"The label {key[:50]!r} is too long.")
        check_text(key, "label name")
        check_text(value, f"value of label {key[:50]!r}")
    return labels


def check_statuses(status: object) -> frozenset[JobStatus] | None:
    if status is None:
        return None
    values: Iterable[object] = (status,) if isinstance(status, str) else status  # type: ignore[assignment]
    try:
        found = frozenset(JobStatus(v) for v in values)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        allowed = ", ".join(s.value for s in JobStatus)
        raise InvalidInput(f"Unknown status {status!r}; use one or several of: {allowed}.") from None
    return found or None


def artifact_key(job_id: str, name: object) -> str:
    """The blob key of artifact ``name`` of ``job_id``; InvalidInput for unsafe names."""
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"An artifact name must be a non-empty string, got {name!r}.")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidInput(f"An artifact name must be at most {MAX_NAME_LENGTH} characters.")
    if "\x00" in name:
        raise InvalidInput("An artifact name cannot contain NUL characters.")
    check_text(name, "artifact name")
    if "\\" in name:
        raise InvalidInput(f"An artifact name cannot contain backslashes: {name!r}; use '/'.")
    if name.startswith("/"):
        raise InvalidInput(f"An artifact name must be relative, got the absolute path {name!r}.")
    for segment in name.split("/"):
        if not segment:
            raise InvalidInput(f"An artifact name cannot have empty segments: {name!r}.")
        if segment in (".", ".."):
            raise InvalidInput(f"An artifact name cannot contain {segment!r} segments: {name!r}.")
    return f"{artifact_prefix(job_id)}{name}"


def artifact_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/"


_CURSOR_TAG = "j1."


def encode_cursor(seq: int) -> str:
    raw = f"{_CURSOR_TAG}{seq}".encode()
    import base64  # paging only: not on `import jobkit`'s path

    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: object) -> int | None:
    if cursor is None:
        return None
    bad = InvalidInput("Malformed cursor: pass the next_cursor of a previous page unchanged.")
    if not isinstance(cursor, str) or not 0 < len(cursor) <= 64:
        raise bad
    try:
        import base64

        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raise bad from None
    if not raw.startswith(_CURSOR_TAG) or not raw[len(_CURSOR_TAG) :].isdigit():
        raise bad
    seq = int(raw[len(_CURSOR_TAG) :])
    if seq >= 2**63 or encode_cursor(seq) != cursor:  # a store's sequence is a 64-bit integer
        raise bad
    return seq
