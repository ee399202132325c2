"""Handlers and the test identity shared by the FastAPI, Flask and OpenAPI fuzz tests."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Header

from jobkit import Actor, JobContext
from jobkit.integrations._http import AS_HOST


def actor_from_headers(actor: str | None, tenant: str | None, roles: str | None) -> Any:
    """The test identity: X-Actor, X-Tenant and X-Roles (comma-separated); none = the host
    (explicitly, AS_HOST); ``X-Actor: -`` = nobody signed in."""
    if actor == "-":
        return None
    if not actor:
        return AS_HOST
    role_set = frozenset(role.strip() for role in (roles or "").split(",") if role.strip())
    return Actor(actor, tenant=tenant or None, roles=role_set)


async def header_actor(
    x_actor: Annotated[str | None, Header()] = None,
    x_tenant: Annotated[str | None, Header()] = None,
    x_roles: Annotated[str | None, Header()] = None,
) -> Any:
    """The FastAPI dependency for the test identity."""
    return actor_from_headers(x_actor, x_tenant, x_roles)


async def echo(ctx: JobContext, payload: Any) -> Any:
    """Writes the artifacts named in ``payload["artifacts"]`` and returns the payload."""
    if isinstance(payload, dict):
        for name, text in payload.get("artifacts", {}).items():
            await ctx.put_artifact(name, text.encode())
    return payload


async def steps(ctx: JobContext, payload: Any) -> str:
    await ctx.progress(0.5, "half way")
    return "done"


async def block(ctx: JobContext, payload: Any) -> None:
    """Runs until cancelled."""
    await ctx.token.wait()
    await ctx.checkpoint()


HANDLERS = {"echo": echo, "steps": steps, "block": block}
