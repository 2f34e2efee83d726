"""The house plan's arrows (docs/ARCHITECTURE.md, "Which way imports may go"), read from every
module's imports, including those inside functions, so that no arrow is broken quietly."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Each package of ours -> the packages of ours it may import (itself always).
ALLOWED = {
    "common": set(),
    "sim": {"common"},
    "components": {"common"},
    "story": {"common", "components", "sim"},
    "flows": {"common", "components", "sim", "story"},
    "dashboards": {"common", "components"},
    "bench": {"common", "components", "sim", "story"},
}
# Outside libraries a package may not import: the story and the recommender run without an
# orchestrator or a tracking server; only two modules of flows talk to MLflow.
FORBIDDEN = {
    "story": {"prefect", "mlflow", "streamlit"},
    "components": {"prefect", "mlflow", "streamlit"},
    "sim": {"prefect", "mlflow", "streamlit", "torch"},
}
MLFLOW_MODULES = {"flows/tracking.py", "flows/pipeline_model.py"}


def modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def imported(path: Path) -> set[str]:
    """Top-level names of every absolute import in a module; relative ones resolve to its own package."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module.split(".")[0] if node.level == 0 and node.module else
                      path.relative_to(REPO).parts[0])
    return names


def test_every_package_of_ours_has_a_rule():
    ours = {p.parent.name for p in REPO.glob("*/__init__.py")}
    assert ours == set(ALLOWED)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_follow_the_house_plan(package):
    broken = []
    for path in modules(package):
        rel = path.relative_to(REPO).as_posix()
        names = imported(path)
        for name in sorted((names & set(ALLOWED)) - ALLOWED[package] - {package}):
            broken.append(f"{rel} imports {name}")
        for name in sorted(names & FORBIDDEN.get(package, set())):
            broken.append(f"{rel} imports {name}")
        if "mlflow" in names and package == "flows" and rel not in MLFLOW_MODULES:
            broken.append(f"{rel} imports mlflow (only {sorted(MLFLOW_MODULES)} may)")
    assert broken == []


def module_graph() -> dict[str, set[str]]:
    """Our modules -> our modules they import at module level, `if TYPE_CHECKING:` blocks included
    (a circle hidden from the interpreter is still one for the reader); imports inside functions
    are left out, they run after every module has loaded."""
    names = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
             for package in ALLOWED for p in modules(package)}
    graph = {}
    for name, path in names.items():
        deps = set()
        body = ast.parse(path.read_text()).body
        body += [n for node in body if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                 for n in node.body]
        for node in body:
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                deps |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        graph[name] = {d for d in deps if d in names and d != name}
    return graph


def test_no_import_circles():
    graph, state, circles = module_graph(), {}, []

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                circles.append(" -> ".join(path[path.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert circles == []


def test_the_checker_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from flows import tracking\n    import sim.world\n")
    assert imported(module) == {"flows", "sim"}


def test_no_module_is_over_400_lines():
    long = [f"{p.relative_to(REPO)}: {n}" for package in ALLOWED for p in modules(package)
            if (n := len(p.read_text().splitlines())) > 400]
    assert long == []
