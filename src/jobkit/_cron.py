"""Cron expressions and time zones for schedules (``pip install 'jobkit[cron]'``: cronsim, tzdata).

Five-field expressions (minute, hour, day of month, month, day of week), evaluated in an IANA
time zone with its daylight-saving rules (cronsim's: a fire time in a skipped hour runs at
the first minute after it; in a repeated hour, once). Imported only when a schedule is made
or fired.
"""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime
from typing import Any

from ._errors import InvalidInput, JobkitError

__all__ = ["check_cron", "check_timezone", "next_fire"]

MAX_CRON_LENGTH = 200


def _cronsim() -> Any:
    try:
        import cronsim
    except ImportError as exc:
        raise JobkitError("Cron schedules need cronsim: pip install 'jobkit[cron]'") from exc
    return cronsim


def check_timezone(name: object) -> zoneinfo.ZoneInfo:
    """The time zone of an IANA name (``"Europe/Berlin"``, ``"UTC"``).

    :raises InvalidInput: not a string, or no such time zone.
    """
    if not isinstance(name, str) or not name or len(name) > 100 or not name.isprintable():
        raise InvalidInput(f"A time zone must be an IANA name such as 'Europe/Berlin', got {name!r}.")
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidInput(
            f"Unknown time zone {name!r}: use an IANA name such as 'Europe/Berlin' or 'UTC'."
        ) from None


def check_cron(expression: object, timezone: object = "UTC") -> str:
    """``expression`` when it is a valid five-field cron expression that fires at all.

    :raises InvalidInput: malformed, not five fields, or never firing (e.g. ``0 0 30 2 *``).
    """
    if not isinstance(expression, str) or not expression.strip() or len(expression) > MAX_CRON_LENGTH:
        raise InvalidInput(
            f"A cron expression must be a non-empty string of five fields, got {expression!r}."
        )
    fields = expression.split()
    if len(fields) != 5:
        raise InvalidInput(
            f"A cron expression has five fields (minute hour day-of-month month day-of-week), "
            f"got {len(fields)} in {expression!r}."
        )
    next_fire(expression, timezone, datetime(2000, 1, 1, tzinfo=UTC))
    return expression


def next_fire(expression: str, timezone: object, after: datetime) -> datetime:
    """The first fire time strictly after ``after``, in UTC.

    :raises InvalidInput: malformed expression or time zone, or one that never fires.
    """
    cronsim = _cronsim()
    zone = check_timezone(timezone)
    try:
        fire: datetime = next(cronsim.CronSim(expression, after.astimezone(zone)))
    except cronsim.CronSimError as exc:
        raise InvalidInput(f"Malformed cron expression {expression!r}: {exc}.") from None
    except StopIteration:  # pragma: no cover - cronsim raises CronSimError for impossible dates
        raise InvalidInput(f"The cron expression {expression!r} never fires.") from None
    return fire.astimezone(UTC)
