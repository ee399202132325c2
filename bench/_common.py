"""Shared helpers for the benchmarks: arguments, quiet logging, timing and the report lines.

Every benchmark prints jobkit's figure beside a floor measured in the same run, the
ratio between them and the target, then exits 0: they inform, they do not fail a build.
"""

from __future__ import annotations

import argparse
import gc
import logging
import statistics
import time
from collections.abc import Sequence

import structlog

__all__ = [
    "BACKENDS",
    "fresh_heap",
    "header",
    "line",
    "now",
    "parse_args",
    "percentile",
    "quiet_logs",
    "verdict",
]

BACKENDS = ("asyncio", "trio")
_LABEL_WIDTH = 10


def parse_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """``--backend asyncio|trio`` (default asyncio), the option every benchmark takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--backend", choices=BACKENDS, default="asyncio", help="anyio backend to run on")
    return parser.parse_args(argv)


def quiet_logs() -> None:
    """Drop every log line cheaply, so jobkit's (audit) logging does not distort timings.

    No processors, a logger that returns instead of printing, a level filter that makes
    each call a no-op, and the logger cached on first use (what a production app would
    configure too).
    """
    structlog.configure(
        processors=[],
        logger_factory=structlog.ReturnLoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL),
        cache_logger_on_first_use=True,
    )


def fresh_heap() -> None:
    """Collect garbage left by a previous run, so it is not collected during the next one."""
    gc.collect()


def now() -> float:
    return time.perf_counter()


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile (0..100) of ``values``, linearly interpolated."""
    if len(values) == 1:
        return values[0]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    if pct <= 0:
        return min(values)
    if pct >= 100:
        return max(values)
    return cuts[round(pct) - 1]


def header(title: str, backend: str | None = None) -> None:
    suffix = f" [{backend}]" if backend else ""
    print(f"{title}{suffix}")


def line(label: str, text: str) -> None:
    print(f"  {label:<{_LABEL_WIDTH}}: {text}")


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"
