"""Import time: ``import jobkit`` against ``import anyio``, each in a fresh interpreter.

Each figure is the cumulative time ``python -X importtime -c "import <name>"`` reports for
the top-level module, from bytecode caches written by a warm-up run (so no run compiles).
The two imports alternate, 25 runs each; the report gives the fastest and the median run.
Floor: ``import anyio`` (jobkit's own asynchronous layer) in the same run. Also lists the
heavier modules an ``import jobkit`` leaves out (they load on first use).

Target: jobkit's median <= 3x anyio's.

    .venv/bin/python bench/import_time.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile

import _common

RUNS = 25
DEFERRED = ("structlog", "logging", "asyncio", "concurrent.futures", "hashlib", "subprocess", "socket")


def _env(cache: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = cache  # caches outside the source tree, written by the warm-up
    return env


def _import_us(name: str, env: dict[str, str]) -> int:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {name}"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    for row in reversed(done.stderr.splitlines()):
        fields = row.split("|")
        if len(fields) == 3 and fields[2].strip() == name:
            return int(fields[1])
    raise RuntimeError(f"no import time for {name!r}")


def main() -> None:
    _common.parse_args(__doc__ or "")
    _common.header("Import time: import jobkit vs import anyio, fresh interpreters")
    with tempfile.TemporaryDirectory() as cache:
        env = _env(cache)
        for name in ("jobkit", "anyio"):
            _import_us(name, env)  # warm-up: writes the bytecode caches
        times: dict[str, list[int]] = {"jobkit": [], "anyio": []}
        for _ in range(RUNS):
            for name in times:
                times[name].append(_import_us(name, env))
        probe = f"import sys, jobkit; print(' '.join(m for m in {DEFERRED!r} if m in sys.modules))"
        loaded = subprocess.run(
            [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
        ).stdout.split()
    medians = {name: statistics.median(found) for name, found in times.items()}
    for name, found in times.items():
        _common.line(name, f"fastest {min(found) / 1000:6.1f} ms, median {medians[name] / 1000:6.1f} ms")
    ratio = medians["jobkit"] / medians["anyio"]
    _common.line("ratio", f"{ratio:.2f}x anyio's median (target <= 3x): {_common.verdict(ratio <= 3)}")
    left_out = [name for name in DEFERRED if name not in loaded]
    _common.line("deferred", ", ".join(left_out) + (f"; still loaded: {', '.join(loaded)}" if loaded else ""))


if __name__ == "__main__":
    main()
