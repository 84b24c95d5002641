"""The shape of app/: imports run one way between layers and no modules import each other
in a circle. The layer contracts live in pyproject.toml ([tool.importlinter])."""

import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent


def module_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every import cycle between app modules, each as the list of modules on it."""
    modules = sorted(m for m in graph.modules if m.startswith("app"))
    edges = {m: sorted(graph.find_modules_directly_imported_by(m) & set(modules)) for m in modules}
    cycles, state, stack = [], {}, []

    def visit(m: str) -> None:
        state[m] = "open"
        stack.append(m)
        for n in edges[m]:
            if state.get(n) == "open":
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = "done"

    for m in modules:
        if m not in state:
            visit(m)
    return cycles


def test_no_import_cycles_in_app():
    graph = grimp.build_graph("app", exclude_type_checking_imports=True)
    assert module_cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for m in ("app.a", "app.b", "app.c"):
        graph.add_module(m)
    graph.add_import(importer="app.a", imported="app.b")
    graph.add_import(importer="app.b", imported="app.c")
    graph.add_import(importer="app.c", imported="app.a")
    assert module_cycles(graph) == [["app.a", "app.b", "app.c", "app.a"]]


def test_layer_contracts_hold():
    exe = Path(sys.executable).parent / "lint-imports"
    cmd = [str(exe)] if exe.exists() else [shutil.which("lint-imports") or "lint-imports"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 kept, 0 broken" in out.stdout


def test_the_architecture_diagram_names_every_module():
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    diagram = doc.split("```mermaid", 1)[1].split("```", 1)[0]
    modules = {p.stem for p in (ROOT / "app").rglob("*.py") if p.stem != "__init__"}
    missing = sorted(m for m in modules if m not in diagram)
    assert missing == [], f"modules missing from docs/ARCHITECTURE.md's diagram: {missing}"
    import re

    for pkg in set(re.findall(r"app/(\w+)", doc)) | set(re.findall(r"app\.(\w+)", doc)):
        assert (ROOT / "app" / pkg).is_dir() or (ROOT / "app" / f"{pkg}.py").is_file(), pkg
