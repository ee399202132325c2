"""HTTP: requests/s for ``GET /jobs/{id}`` through jobkit's router vs. a bare FastAPI route.

The load comes from wrk when it is installed (Debian package ``wrk``), else from httpx.
Both routes live in the same FastAPI app (bench/_http_app.py), served by one uvicorn
process on 127.0.0.1, and are driven in the same run by the same load: CLIENTS concurrent keep-alive
connections (httpx) sending REQUESTS requests. The bare route returns the same JSON
(computed once), so the difference is what the router costs: tenant-scoped load from the
store, authorization, serialisation and error mapping.

Target: ratio (router / bare) >= 0.7.

    .venv/bin/python bench/http.py [--backend asyncio|trio]
"""

from __future__ import annotations

import sys

# This file is named http.py, which would shadow the standard library's `http` package:
# import that first with this folder off the path, then put the folder back for _common.
_HERE = sys.path.pop(0)
import http.client  # noqa: E402, F401

sys.path.insert(0, _HERE)

import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

import _common  # noqa: E402
import anyio  # noqa: E402
import httpx  # noqa: E402

REQUESTS = 5_000
CLIENTS = 20
ROUNDS = 3
TARGET = 0.7


async def load(base: str, path: str) -> float:
    """Requests per second for REQUESTS GETs of ``path`` over CLIENTS connections."""
    per_client = REQUESTS // CLIENTS
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=base, limits=limits) as client:

        async def run() -> None:
            for _ in range(per_client):
                response = await client.get(path)
                response.raise_for_status()

        start = _common.now()
        async with anyio.create_task_group() as tg:
            for _ in range(CLIENTS):
                tg.start_soon(run)
        return REQUESTS / (_common.now() - start)


def wrk(base: str, path: str) -> float:
    """Requests per second measured by wrk (C, one thread, CLIENTS connections, 3 s)."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{CLIENTS}", "-d3s", base + path], capture_output=True, text=True, check=True
    ).stdout
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    raise RuntimeError(f"unexpected wrk output: {out}")


async def measure(base: str) -> tuple[float, float]:
    async with httpx.AsyncClient(base_url=base) as setup:
        with anyio.fail_after(30):
            while True:
                try:
                    await setup.get("/api/v1/jobs")
                    break
                except httpx.TransportError:
                    await anyio.sleep(0.05)
        job = (await setup.post("/api/v1/jobs", json={"kind": "echo", "payload": {"n": 1}})).json()
        with anyio.fail_after(30):
            while job["status"] != "completed":
                job = (await setup.get(f"/api/v1/jobs/{job['id']}")).json()
        (await setup.put("/bare/cache", json=job)).raise_for_status()
    routed_path, bare_path = f"/api/v1/jobs/{job['id']}", f"/bare/jobs/{job['id']}"
    if shutil.which("wrk"):  # a load generator that costs the server far less CPU than httpx
        routed = bare = 0.0
        for _ in range(ROUNDS):
            bare = max(bare, await anyio.to_thread.run_sync(wrk, base, bare_path))
            routed = max(routed, await anyio.to_thread.run_sync(wrk, base, routed_path))
        return routed, bare
    await load(base, bare_path)  # warm-up
    await load(base, routed_path)
    routed = bare = 0.0
    for _ in range(ROUNDS):
        bare = max(bare, await load(base, bare_path))
        routed = max(routed, await load(base, routed_path))
    return routed, bare


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    args = _common.parse_args(__doc__ or "")
    _common.quiet_logs()
    _common.header("http: GET /jobs/{id}, router vs. bare route, same server", args.backend)
    port = free_port()
    server = subprocess.Popen([sys.executable, str(Path(_HERE) / "_http_app.py"), str(port)])
    try:
        routed, bare = anyio.run(measure, f"http://127.0.0.1:{port}", backend=args.backend)
    finally:
        server.terminate()
        server.wait(10)
    ratio = routed / bare
    _common.line("router", f"{routed:,.0f} requests/s")
    _common.line("bare", f"{bare:,.0f} requests/s")
    _common.line("ratio", f"{ratio:.2f}  (target >= {TARGET:g}: {_common.verdict(ratio >= TARGET)})")
    client = "wrk" if shutil.which("wrk") else "httpx (install Debian's wrk for a lighter client)"
    _common.line("note", f"uvicorn in its own process; load from {client}; both share the 2 cores")


if __name__ == "__main__":
    main()
