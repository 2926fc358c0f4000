"""The import rules of docs/architecture.md, checked on the source: which folder may import which, that the
measuring core does no I/O, that nothing but the CLI and the simulator imports the simulator, and no cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "spxbatch"

#: Folder -> the spxbatch folders (and top-level modules) it may import besides itself.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "files": {"errors"},
    "sky": set(),
    "level2": {"errors"},
    "archive": {"errors", "files", "level2"},
    "photometry": {"errors", "level2", "sky"},
    "plan": {"errors", "files", "sky", "level2", "archive"},
    "fetch": {"errors", "files", "sky", "level2", "archive"},
    "cube": {"errors", "files", "level2", "photometry"},
    "pipeline": {"errors", "files", "sky", "level2", "archive", "plan", "fetch", "photometry", "cube"},
    "figures": {"errors", "files", "level2", "photometry", "cube"},
    "cli": {"errors", "files", "sky", "level2", "archive", "plan", "fetch", "photometry", "cube", "pipeline",
            "figures", "sim"},
    "sim": {"errors", "files", "level2", "plan"},
    "__init__": {"pipeline", "cube", "figures", "plan"},
}
#: Third-party modules that do I/O or distribute work: the pure stages must not import them.
IO_MODULES = {"fsspec", "aiohttp", "requests", "pyvo", "s3fs", "distributed", "dask", "dask_jobqueue", "zarr",
              "socket", "urllib"}
PURE = {"sky", "level2", "photometry"}
#: Files that break a rule today and the issue-12 work that removes it (strict xfail: once a rule holds, the
#: entry must go, so the list can only shrink).
KNOWN_VIOLATIONS: set[str] = set()


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path) -> list[str]:
    """Every module a file imports, at any depth (function-level imports included), made absolute."""
    tree = ast.parse(path.read_text())
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append(mod)
            out.extend(f"{mod}.{a.name}" for a in node.names)  # `from pkg import submodule`
    return out


def _folder(module: str) -> str:
    """'spxbatch.fetch.cache' -> 'fetch'; 'spxbatch' -> '__init__'; 'spxbatch.errors' -> 'errors'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


FILES = sorted(PACKAGE.rglob("*.py"))
MODULES = {_module_name(p) for p in FILES}
GRAPH = {_module_name(p): sorted({m for m in _imports(p) if m in MODULES and m != _module_name(p)}) for p in FILES}


def test_every_folder_is_known():
    assert {_folder(m) for m in MODULES} <= set(ALLOWED)


def _with_known(paths: list[Path]) -> list:
    """The paths, those in KNOWN_VIOLATIONS marked as strict expected failures."""
    known = pytest.mark.xfail(strict=True, reason="known, being removed")
    return [pytest.param(p, marks=known) if str(p.relative_to(PACKAGE)) in KNOWN_VIOLATIONS else p for p in paths]


@pytest.mark.parametrize("path", _with_known(FILES), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layers(path):
    me = _folder(_module_name(path))
    bad = sorted({m for m in GRAPH[_module_name(path)] if _folder(m) not in ALLOWED[me] | {me}
                  and m != "spxbatch"})
    assert not bad, f"{path.relative_to(PACKAGE)} ({me}/) may not import {bad}"


@pytest.mark.parametrize("path", [p for p in FILES if _folder(_module_name(p)) in PURE],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_pure_stages_do_no_io(path):
    used = {m.split(".")[0] for m in _imports(path)}
    assert not used & IO_MODULES, f"{path.relative_to(PACKAGE)} imports {sorted(used & IO_MODULES)}"


def test_no_import_cycles():
    """Depth-first search over the module graph (function-level imports count: they hide cycles)."""
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in GRAPH.get(m, []):
            if n.startswith(m + ".") or m.startswith(n + "."):
                continue  # a package and its own modules
            if state.get(n) == 1:
                cycles.append([*stack[stack.index(n):], n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
