"""The documentation: the Sphinx build is warning-free, the reference lists every public
name, and the Python code blocks of the Markdown pages run.

A fenced ``python`` block in ``docs/*.md`` or ``README.md`` is **run** (as its own
program, in an empty folder, with this interpreter) unless the line before its fence is
an HTML comment ``<!-- not-run: why -->``; such a fragment (top-level ``await``, names from
the text around it, a module of the reader's) is compiled instead, so its syntax is still
checked. A block that runs must exit 0 with nothing on stderr (deprecation warnings of the
libraries it uses aside: those are not the page's to fix).
"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

from jobkit_docs import public_modules  # noqa: E402

PAGES = [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]
NOT_RUN = re.compile(r"^\s*<!--\s*not-run:\s*\S.*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)(?P<info>.*)$")
BUILD_LIMIT = 300  # seconds; the build takes about 10 on two cores
BLOCK_LIMIT = 60  # seconds per code block
# Deprecations in the libraries a block uses; Starlette's (a UserWarning) asks for httpx2.
QUIET_LIBRARIES = (
    "-W",
    "ignore::DeprecationWarning",
    "-W",
    "ignore:Using `httpx` with `starlette.testclient` is deprecated",
)


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    code: str
    run: bool

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def python_blocks(path: Path) -> list[Block]:
    """The fenced ``python`` blocks of one Markdown page, each marked run or not-run."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        start = i
        i += 1
        body: list[str] = []
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        i += 1
        if opening["info"].strip() != "python":
            continue
        previous = next((line for line in reversed(lines[:start]) if line.strip()), "")
        blocks.append(Block(path, start + 1, "\n".join(body) + "\n", not NOT_RUN.match(previous)))
    return blocks


BLOCKS = [block for page in PAGES for block in python_blocks(page)]
RUN = [block for block in BLOCKS if block.run]
FRAGMENTS = [block for block in BLOCKS if not block.run]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The HTML reference, built as ``make docs`` builds it (warnings are errors)."""
    out = tmp_path_factory.mktemp("docs")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-n",
            "-q",
            "-b",
            "html",
            "-d",
            str(out / "doctrees"),
            str(DOCS),
            str(out / "html"),
        ],
        capture_output=True,
        text=True,
        timeout=BUILD_LIMIT,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, f"sphinx-build failed:\n{result.stdout}\n{result.stderr}"
    assert result.stderr == "", result.stderr
    return out / "html"


def documented_names(html: Path) -> set[str]:
    """Every Python object the built reference documents, from its ``objects.inv``."""
    from sphinx.util.inventory import InventoryFile

    with (html / "objects.inv").open("rb") as stream:
        inventory = InventoryFile.load(stream, "", lambda base, uri: uri)
    items = inventory.data if hasattr(inventory, "data") else inventory
    return {name for kind, entries in items.items() if kind.startswith("py:") for name in entries}


class TestReference:
    def test_finds_the_public_modules(self) -> None:
        """The module walk finds the public modules (an empty walk would check nothing)."""
        assert {
            "jobkit",
            "jobkit.abc",
            "jobkit.stores",
            "jobkit.stores.postgres",
            "jobkit.blobs",
            "jobkit.blobs.s3",
            "jobkit.testing",
            "jobkit.integrations.fastapi",
            "jobkit.integrations.flask",
            "jobkit.cli",
        } <= set(public_modules())

    def test_builds_warning_free_with_every_public_name(self, built: Path) -> None:
        """``sphinx-build -W -n`` (nitpicky: no warning, no dangling reference) succeeds, and
        each public module and each name in its ``__all__`` has an entry in the reference.

        One test, so that the build runs once per test run (a module fixture would run in
        each xdist worker that gets one of several tests)."""
        assert (built / "api.html").is_file()
        assert (built / "deployment.html").is_file()
        names = documented_names(built)
        missing = []
        for module_name in public_modules():
            module = importlib.import_module(module_name)
            if module_name not in names:
                missing.append(module_name)
            missing += [
                f"{module_name}.{name}"
                for name in getattr(module, "__all__", ())
                if f"{module_name}.{name}" not in names
            ]
        assert missing == [], f"add these to docs/api.md: {missing}"

    def test_error_table_matches_the_codes(self) -> None:
        """The error table of docs/api.md gives each error class its real ``code``."""
        import jobkit

        rows = re.findall(r"^\| `(\w+)` \|[^|]*\| `(\w+)` \|", (DOCS / "api.md").read_text("utf-8"), re.M)
        errors = {
            name
            for name in jobkit.__all__
            if isinstance(getattr(jobkit, name), type)
            and issubclass(getattr(jobkit, name), jobkit.JobkitError)
        }
        assert {name for name, _ in rows} == errors
        for name, code in rows:
            assert getattr(jobkit, name).code == code, name


class TestCodeBlocks:
    def test_there_are_blocks_to_run(self) -> None:
        """The parser finds blocks that run and fragments (an empty list would test nothing)."""
        assert len(RUN) >= 8
        assert len(FRAGMENTS) >= 10
        assert any(block.path.name == "deployment.md" for block in RUN)

    @pytest.mark.parametrize("block", RUN, ids=lambda block: block.name)
    def test_complete_block_runs(self, block: Block, tmp_path: Path) -> None:
        """A block without the not-run marker runs as a program and exits cleanly."""
        script = tmp_path / "block.py"
        script.write_text(block.code, encoding="utf-8")
        result = subprocess.run(
            [sys.executable, *QUIET_LIBRARIES, str(script)],
            capture_output=True,
            text=True,
            timeout=BLOCK_LIMIT,
            cwd=tmp_path,
            check=False,
        )
        assert result.returncode == 0, f"{block.name} exited {result.returncode}:\n{result.stderr}"
        assert result.stderr == "", f"{block.name} wrote to stderr:\n{result.stderr}"

    @pytest.mark.parametrize("block", FRAGMENTS, ids=lambda block: block.name)
    def test_fragment_compiles(self, block: Block) -> None:
        """A block marked not-run is still valid Python (top-level ``await`` allowed)."""
        compile(block.code, block.name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
