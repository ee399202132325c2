"""A small Sphinx extension for jobkit's reference: references to private modules' names.

The annotations name a class where it is defined (``jobkit._records.Job``), the reference
documents it where users import it (``jobkit.Job``). A reference that does not resolve is
tried again under the public name of the same object, found through the ``__all__`` of
every public module.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from typing import Any

import jobkit


def public_modules() -> list[str]:
    """Every importable public module of jobkit: no segment of its name starts with ``_``."""
    names = ["jobkit"]
    for info in pkgutil.walk_packages(jobkit.__path__, "jobkit."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        names.append(info.name)
    return sorted(names)


@functools.cache
def private_to_public() -> dict[str, str]:
    """``module.qualname`` where an object is defined -> the public name it is documented as."""
    mapping: dict[str, str] = {}
    for module_name in public_modules():
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            defined = getattr(obj, "__module__", None)
            qualname = getattr(obj, "__qualname__", None)
            if isinstance(defined, str) and isinstance(qualname, str):
                mapping.setdefault(f"{defined}.{qualname}", f"{module_name}.{name}")
    return mapping


def _retarget(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    public = private_to_public().get(target)
    if public is None:
        # A member of a class: jobkit._records.Job.status -> jobkit.Job.status
        owner, _, member = target.rpartition(".")
        public_owner = private_to_public().get(owner)
        if public_owner is None:
            return None
        public = f"{public_owner}.{member}"
    domain = env.get_domain("py")
    return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], public, node, contnode)


def setup(app: Any) -> dict[str, Any]:
    app.connect("missing-reference", _retarget)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
