"""The package's layout stays one-way: no module of `workbench` imports, directly or through others, a module that
imports it back. Imports inside functions count too - a deferred import is how an import circle usually hides."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "workbench"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The `workbench` modules that `path` imports anywhere in its body (a name imported from a package counts as the
    submodule of that name when there is one, else as the package)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source not in modules:
                continue
            submodules = {f"{source}.{alias.name}" for alias in node.names} & modules
            found.update(submodules or {source})
            if len(submodules) < len(node.names):
                found.add(source)
    return found - {name}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imported_modules(p, modules) for p in paths}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module, or a module importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 20 and "workbench.cli" in graph  # the graph really was read
    found = cycles(graph)
    assert not found, "import cycles inside workbench/: " + "; ".join(" <-> ".join(c) for c in found)


def test_one_rule_for_where_a_thought_ends():
    """`end_of_thought` is the only definition: the sampler, the vLLM backend and the TRL adapter call it."""
    defined = [p.relative_to(PACKAGE.parent) for p in PACKAGE.rglob("*.py") if "def end_of_thought(" in p.read_text()]
    assert [str(p) for p in defined] == ["workbench/engine/thought.py"]
    for user in ("engine/sampler.py", "engine/vllm_backend.py", "trl_rewards.py"):
        assert "end_of_thought(" in (PACKAGE / user).read_text(), user


def test_the_code_is_clean_under_ruff():
    """`ruff check .` with the rules in pyproject.toml ([tool.ruff.lint]) and `ruff format --check .`: the CI runs both
    through this test, before the slow tests (tests/conftest.py orders it first)."""
    import shutil
    import subprocess
    import sys

    import pytest

    ruff = Path(sys.executable).with_name("ruff")  # the environment's own, as pyproject.toml pins it
    ruff = str(ruff) if ruff.exists() else shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install ruff, or the dev extra)")
    proc = subprocess.run([ruff, "check", "--no-cache", "."], cwd=PACKAGE.parent, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    # and formatted as `ruff format` writes it (line length 120): run `ruff format .` before committing
    proc = subprocess.run(
        [ruff, "format", "--check", "--no-cache", "."], cwd=PACKAGE.parent, capture_output=True, text=True
    )
    assert proc.returncode == 0, "not formatted (run `ruff format .`): " + proc.stdout[-3000:]


def test_every_shipped_config_loads():
    """Every file in configs/ parses and validates (the arena's through load_arena): a renamed field or a typo in a
    recipe nobody runs in the suite fails here, not in a user's first command."""
    from workbench.arena import load_arena
    from workbench.training.configs import load_config

    configs = sorted((PACKAGE.parent / "configs").glob("*.yaml"))
    assert len(configs) > 10
    for path in configs:
        if path.name == "arena.yaml":
            load_arena(path)
        else:
            assert load_config(path).trainer in ("rlp", "ntp", "warmstart"), path
