"""`make lint`'s shape check: no module of project code over 600 lines, no function over 60 lines unless a
comment on the line above its `def` (or on the `def` line) starts with `# long:` and says why, no import
cycle between modules (import-linter's acyclic contract sees packages as wholes), and every domain module
named in the import-linter contract that keeps the domain free of the entry points.

Tests and migrations are exempt: a test reads best as one story, a migration is written once.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 60
PROJECT = ("newsletter", "worker")
EXEMPT = ("newsletter/migrations",)
# Entry points: everything else directly under newsletter/ is domain and must be in the contract.
ENTRY_POINTS = {"newsletter.cli", "newsletter.web", "newsletter.__main__", "newsletter.migrations"}
DOMAIN_CONTRACT = "The domain imports no entry point, worker, Celery, web or terminal framework"


def project_files() -> list[Path]:
    files = [path for package in PROJECT for path in sorted((ROOT / package).rglob("*.py"))]
    return [path for path in files if not path.relative_to(ROOT).as_posix().startswith(EXEMPT)]


def long_functions(path: Path, source: str) -> list[str]:
    lines = source.splitlines()
    problems = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        first = (node.decorator_list[0].lineno if node.decorator_list else node.lineno) - 1
        length = (node.end_lineno or node.lineno) - first
        if length <= MAX_FUNCTION_LINES:
            continue
        around = [lines[first - 1] if first > 0 else "", lines[node.lineno - 1]]
        if any("# long:" in line for line in around):
            continue
        problems.append(
            f"{path.relative_to(ROOT)}:{node.lineno}: {node.name}() is {length} lines "
            f"(> {MAX_FUNCTION_LINES}): split it, or say why with a '# long: …' comment above it"
        )
    return problems


def uncontracted_domain_modules() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    contract = next(c for c in contracts if c["name"] == DOMAIN_CONTRACT)
    listed = set(contract["source_modules"])
    present = {
        f"newsletter.{path.stem if path.is_file() else path.name}"
        for path in (ROOT / "newsletter").iterdir()
        if (path.suffix == ".py" and path.stem != "__init__") or (path / "__init__.py").exists()
    }
    missing = sorted(present - listed - ENTRY_POINTS)
    return [
        f"pyproject.toml: domain module {name} is missing from the contract {DOMAIN_CONTRACT!r}" for name in missing
    ]


def module_cycles() -> list[str]:
    """Cycles between single modules of newsletter/, deferred imports included."""
    graph = grimp.build_graph("newsletter")
    modules = sorted(m for m in graph.modules if not m.startswith("newsletter.migrations"))
    problems, seen = [], set()
    for module in modules:
        for imported in graph.find_modules_directly_imported_by(module):
            chain = graph.find_shortest_chain(importer=imported, imported=module) if imported != module else None
            if chain and frozenset(chain) not in seen:  # each cycle once, whichever module it is met from
                seen.add(frozenset(chain))
                problems.append("import cycle: " + " -> ".join((module, *chain)))
    return problems


def main() -> int:
    problems: list[str] = []
    for path in project_files():
        source = path.read_text()
        count = source.count("\n")
        if count > MAX_MODULE_LINES:
            problems.append(f"{path.relative_to(ROOT)}: {count} lines (> {MAX_MODULE_LINES}): give its parts homes")
        problems += long_functions(path, source)
    problems += uncontracted_domain_modules()
    problems += module_cycles()
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
