from __future__ import annotations

from pathlib import Path

import pytest
import structlog

from jobkit.testing import FakeClock
from managers import STORE_KINDS, ManagerFactory, StoreKind


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "store(kind, *, reason): run a `make_manager` test on that one store kind only, and say why",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`store_kind` (and so `make_manager`) is every store kind, unless the test's
    ``@pytest.mark.store(kind, reason=...)`` picks one."""
    if "store_kind" not in metafunc.fixturenames:
        return
    kinds: tuple[StoreKind, ...] = STORE_KINDS
    marker = metafunc.definition.get_closest_marker("store")
    if marker is not None:
        [kind] = marker.args
        if kind not in STORE_KINDS or not marker.kwargs.get("reason"):
            raise pytest.UsageError(
                f"{metafunc.definition.nodeid}: use @pytest.mark.store({'|'.join(STORE_KINDS)}, reason=...)"
            )
        kinds = (kind,)
    metafunc.parametrize("store_kind", kinds)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every async test runs on asyncio and on trio."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def make_manager(store_kind: StoreKind, tmp_path: Path) -> ManagerFactory:
    """``make_manager(**kwargs) -> JobManager`` on the store kind under test (memory, sqlite):
    sweep_interval=None by default, a fresh store per call unless ``store=`` is passed."""
    return ManagerFactory(store_kind, tmp_path)


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
