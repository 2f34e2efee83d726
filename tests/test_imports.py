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


def test_the_checker_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from flows import tracking\n    import sim.world\n")
    assert imported(module) == {"flows", "sim"}


def test_no_module_is_over_400_lines():
    long = [f"{p.relative_to(REPO)}: {n}" for package in ALLOWED for p in modules(package)
            if (n := len(p.read_text().splitlines())) > 400]
    assert long == []
