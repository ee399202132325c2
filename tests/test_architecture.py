"""The package's shape: imports point down only, and no module imports one above it.

DESIGN.md "Layers" and docs/architecture.md draw the graph; this test keeps the code to it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "jobkit"

# What each core module may import from jobkit (besides itself). Anything not listed
# here is above it. Integrations, the CLI and testing sit on top and are checked apart.
ALLOWED: dict[str, set[str]] = {
    "_errors": set(),
    "_log": set(),  # the loggers: every module may log
    "_process": set(),
    "_version": set(),
    "_records": {"_errors"},
    "_policies": {"_errors", "_records"},
    "_validate": {"_errors", "_records"},
    "_token": {"_errors"},
    "_codec": {"_records"},
    "_machine": {"_errors", "_policies", "_records"},
    "abc": {"_policies", "_records"},
    "_notify": {"abc", "_records"},
    "_events": {"abc", "_records"},
    "_context": {"_errors", "_process", "_records", "_token", "_validate"},
    "_core": {"abc", "_errors", "_policies", "_records"},
    "_deleter": {"_core", "_errors", "_machine", "_policies", "_records", "_validate", "abc"},
    "_cron": {"_errors"},
    "_sweeper": {"_core", "_cron", "_deleter", "_errors", "_machine", "_records", "_validate", "abc"},
    "telemetry": set(),
    "_telemetry": {"_machine", "_records", "_token", "_version", "abc", "telemetry"},
    "_worker": {
        "_context",
        "_core",
        "_errors",
        "_machine",
        "_records",
        "_telemetry",
        "_token",
        "_validate",
        "abc",
    },
    "_manager": {
        "_context",
        "_core",
        "_cron",
        "_deleter",
        "_errors",
        "_events",
        "_machine",
        "_notify",
        "_policies",
        "_records",
        "_sweeper",
        "_telemetry",
        "_validate",
        "_worker",
        "abc",
        "stores",
        "blobs",
        "telemetry",
    },
    "_blocking": {"_errors", "_events", "_manager", "_policies", "_records", "abc", "telemetry"},
}
#: Backends know the interfaces and the records, never the manager or its roles.
BACKEND_ALLOWED = {"_errors", "_log", "_process", "_records", "_machine", "_notify", "abc", "_validate"}


def jobkit_imports(path: Path) -> set[str]:
    """The top-level jobkit modules ``path`` imports (relative or absolute)."""
    tree = ast.parse(path.read_text())
    package_depth = len(path.relative_to(PACKAGE).parts) - 1
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                if node.level - 1 < package_depth:
                    continue  # within its own subpackage
                target = node.module
                names = [alias.name for alias in node.names]
            elif node.module and node.module.startswith("jobkit"):
                target = node.module.removeprefix("jobkit").lstrip(".") or None
                names = [alias.name for alias in node.names]
            else:
                continue
            if target:
                found.add(target.split(".")[0])
            else:
                found.update(names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("jobkit."):
                    found.add(alias.name.split(".")[1])
    return found


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_core_module_imports_only_what_is_below_it(module: str) -> None:
    """Each core module imports only the modules below it in the layer graph."""
    imported = jobkit_imports(PACKAGE / f"{module}.py") - {module, "_log"}
    assert imported <= ALLOWED[module], f"{module} imports {sorted(imported - ALLOWED[module])}"


def test_every_core_module_has_a_place_in_the_graph() -> None:
    """A new top-level module must be given its place here (and in docs/architecture.md)."""
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert modules == set(ALLOWED)


@pytest.mark.parametrize("package", ["stores", "blobs"])
def test_backends_never_import_the_manager_or_its_roles(package: str) -> None:
    """Stores and blob stores see the interfaces and records only."""
    for path in (PACKAGE / package).glob("*.py"):
        imported = jobkit_imports(path)
        assert imported <= BACKEND_ALLOWED, f"{path.name} imports {sorted(imported - BACKEND_ALLOWED)}"


def test_the_graph_has_no_cycles() -> None:
    """Following the allowed imports never leads back to where it started."""
    state: dict[str, int] = {}

    def visit(module: str, path: tuple[str, ...]) -> None:
        if state.get(module) == 2:
            return
        assert state.get(module) != 1, f"import cycle: {' -> '.join((*path, module))}"
        state[module] = 1
        for below in ALLOWED.get(module, set()):
            visit(below, (*path, module))
        state[module] = 2

    for module in ALLOWED:
        visit(module, ())


def test_the_cli_does_not_need_the_web_integration_to_print_json() -> None:
    """The CLI encodes records with jobkit._codec, not the integrations' HTTP helpers."""
    for path in (PACKAGE / "cli").glob("*.py"):
        text = path.read_text()
        assert "integrations._http" not in text, path.name
