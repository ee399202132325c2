from __future__ import annotations

from pathlib import Path

import pytest
import structlog

from jobkit.testing import FakeClock
from managers import STORE_KINDS, ManagerFactory, StoreKind
from pgserver import pg_cluster, pg_dsn  # noqa: F401 - session fixtures


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "store(kind, *, reason): run a `make_manager` test on that one store kind only, and say why",
    )
    config.addinivalue_line(
        "markers",
        "xfail_on_store(kind, *, reason, unreliable_on=()): a known bug of that store kind; "
        "a strict xfail there, non-strict on the anyio backends in unreliable_on",
    )


def _store_kind_of(nodeid: str, marker: pytest.Mark) -> StoreKind:
    [kind] = marker.args
    if kind not in STORE_KINDS or not marker.kwargs.get("reason"):
        raise pytest.UsageError(
            f"{nodeid}: use @pytest.mark.{marker.name}({'|'.join(STORE_KINDS)}, reason=...)"
        )
    return kind  # type: ignore[no-any-return]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`store_kind` (and so `make_manager`) is every store kind, unless the test's
    ``@pytest.mark.store(kind, reason=...)`` picks one."""
    if "store_kind" not in metafunc.fixturenames:
        return
    only = metafunc.definition.get_closest_marker("store")
    kinds = STORE_KINDS if only is None else (_store_kind_of(metafunc.definition.nodeid, only),)
    metafunc.parametrize("store_kind", kinds)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``@pytest.mark.xfail_on_store(kind, reason=...)``: expect the test to fail on that store
    kind only; strictly, except on the anyio backends named in ``unreliable_on``."""
    for item in items:
        params = (
            item.callspec.params if isinstance(item, pytest.Function) and hasattr(item, "callspec") else {}
        )
        for mark in item.iter_markers("xfail_on_store"):
            if params.get("store_kind") == _store_kind_of(item.nodeid, mark):
                strict = params.get("anyio_backend") not in mark.kwargs.get("unreliable_on", ())
                item.add_marker(pytest.mark.xfail(strict=strict, reason=mark.kwargs["reason"]))


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every async test runs on asyncio and on trio."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def make_manager(store_kind: StoreKind, tmp_path: Path, request: pytest.FixtureRequest) -> ManagerFactory:
    """``make_manager(**kwargs) -> JobManager`` on the store kind under test (memory, sqlite,
    postgres): sweep_interval=None by default, a fresh store per call unless ``store=`` is
    passed (on PostgreSQL: a new schema in the session's cluster)."""
    dsn = request.getfixturevalue("pg_dsn") if store_kind == "postgres" else None
    return ManagerFactory(store_kind, tmp_path, dsn)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(autouse=True)
def _quiet_structlog() -> None:
    """Tests capture logs where they assert on them; elsewhere keep the output clean."""
    structlog.configure(
        processors=[structlog.processors.KeyValueRenderer()],
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=False,
    )
