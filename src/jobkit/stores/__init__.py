"""Job stores: where jobs, leases, audit records and the purge queue live.

``PostgresStore`` lives in :mod:`jobkit.stores.postgres` (``pip install jobkit[postgres]``).
"""

from __future__ import annotations

from ._memory import MemoryStore as MemoryStore
from ._sqlite import SQLiteStore as SQLiteStore
from ._url import open_store as open_store

__all__ = ["MemoryStore", "SQLiteStore", "open_store"]
