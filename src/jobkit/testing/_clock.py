"""Helpers for testing code that uses jobkit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = ["FakeClock"]


class FakeClock:
    """A clock you move by hand: pass it as ``JobManager(clock=...)``.

    TTLs, retention, leases and audit retention are then tested by advancing it, never
    by sleeping.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2030, 1, 1, tzinfo=UTC)
        if self.now.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware start time.")

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta | float) -> datetime:
        """Move the clock forward by ``delta`` (seconds or a timedelta); return the new time."""
        self.now += delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        return self.now

    def __repr__(self) -> str:
        return f"FakeClock({self.now.isoformat()})"
