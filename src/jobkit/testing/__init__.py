"""Helpers for testing code that uses jobkit, and the backend conformance suites.

``FakeClock`` moves time by hand. ``JobStoreSuite`` and ``BlobStoreSuite`` are pytest
test classes: subclass one, provide a ``store`` fixture that yields an opened backend,
and pytest runs the whole contract against it (they need ``pytest`` and ``anyio``'s
pytest plugin, and are imported only when asked for).
"""

from typing import TYPE_CHECKING, Any

from ._clock import FakeClock as FakeClock

if TYPE_CHECKING:
    from ._blob_suite import BlobStoreSuite as BlobStoreSuite
    from ._store_suite import JobStoreSuite as JobStoreSuite

__all__ = ["BlobStoreSuite", "FakeClock", "JobStoreSuite"]


def __getattr__(name: str) -> Any:
    if name == "JobStoreSuite":
        from ._store_suite import JobStoreSuite

        return JobStoreSuite
    if name == "BlobStoreSuite":
        from ._blob_suite import BlobStoreSuite

        return BlobStoreSuite
    raise AttributeError(f"module 'jobkit.testing' has no attribute {name!r}")
