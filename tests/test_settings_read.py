"""Every setting is read: a config field that no code reads is a knob that does nothing.

The settings are the fields of every config dataclass a scenario or experiment file can reach
(WorldConfig, ExperimentConfig and everything under them), and of every dataclass in the config
modules. A field counts as read where the platform's code (not tests, not benches) loads it as an
attribute, `x.name`, or asks for it by name, `getattr(x, "name")`, outside a `validate` method:
checking a setting's range is not using it (ExperimentConfig.seed was validated, and seeded nothing).
A name is not tied to its class here (no types in an AST), so configs sharing a field name share a
read: this catches a setting whose name nothing reads (QuantizerConfig.beta was one), not one whose
name another config's reads cover (ExperimentConfig.seed passed on the models' `cfg.seed`; it was
found by reading, and removed).
"""
from __future__ import annotations

import ast
import dataclasses
import importlib
import typing
from pathlib import Path

from components.ranking import RANKERS
from components.recall import CHANNELS
from components.experiment import ExperimentConfig
from sim.config import WorldConfig

REPO = Path(__file__).resolve().parents[1]
# Where the platform's code lives: every top-level package but the tests and the benchmarks.
NOT_PLATFORM = {"tests", "bench"}
CONFIG_MODULES = sorted({WorldConfig.__module__, ExperimentConfig.__module__, "components.serving.config",
                         "components.ab.analysis", "components.recall_eval",
                         "components.recall.generative.quantize"})
ModelsConfig = typing.get_type_hints(ExperimentConfig)["models"]

# Fields read generically, not by name: class -> the names so read, and where.
GENERIC: dict[type, tuple[set[str], str]] = {
    # components/training.py (and the logging policy's fit) build each channel and ranker an
    # experiment uses from getattr(exp.models, name), name being its key in CHANNELS or RANKERS.
    ModelsConfig: (set(CHANNELS) | set(RANKERS), "getattr(exp.models, <channel or ranker name>)"),
}


def platform_files() -> list[Path]:
    packages = [p for p in REPO.iterdir() if (p / "__init__.py").is_file() and p.name not in NOT_PLATFORM]
    return sorted(f for p in packages for f in p.rglob("*.py"))


class Reads(ast.NodeVisitor):
    def __init__(self) -> None:
        self.names: set[str] = set()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if node.name != "validate":
            self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.ctx, ast.Load):
            self.names.add(node.attr)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        if (isinstance(node.func, ast.Name) and node.func.id == "getattr" and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
            self.names.add(node.args[1].value)
        self.generic_visit(node)


def read_names() -> set[str]:
    reads = Reads()
    for path in platform_files():
        reads.visit(ast.parse(path.read_text(), str(path)))
    return reads.names


def _dataclasses_in(tp: object) -> list[type]:
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return [tp]
    return [c for arg in typing.get_args(tp) for c in _dataclasses_in(arg)]


def config_classes() -> set[type]:
    todo: list[type] = [WorldConfig, ExperimentConfig]
    for name in CONFIG_MODULES:
        module = importlib.import_module(name)
        todo += [v for v in vars(module).values() if isinstance(v, type) and dataclasses.is_dataclass(v)
                 and v.__module__ == module.__name__]
    seen: set[type] = set()
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            todo += _dataclasses_in(hints[f.name])
    return seen


def test_the_walk_reaches_the_nested_configs():
    names = {c.__name__ for c in config_classes()}
    assert {"WorldConfig", "ExperimentConfig", "ArmConfig", "ModelsConfig", "AnalysisConfig",
            "QuantizerConfig", "GenerativeConfig", "MLPConfig"} <= names, names


def test_the_reader_ignores_validate_and_sees_getattr():
    reads = Reads()
    reads.visit(ast.parse("class C:\n    def validate(self, where):\n        require(self.only_checked >= 0)\n"
                          "def use(c):\n    return c.used + getattr(c, 'by_name')\n"))
    assert reads.names >= {"used", "by_name"} and "only_checked" not in reads.names


def test_every_config_field_is_read_somewhere():
    read = read_names()
    unread = sorted(f"{cls.__module__}.{cls.__name__}.{f.name}" for cls in config_classes()
                    for f in dataclasses.fields(cls)
                    if f.name not in read and f.name not in GENERIC.get(cls, (set(), ""))[0])
    assert unread == [], f"settings that no code reads (wire them or remove them): {unread}"


def test_generic_reads_cover_only_fields_of_their_class():
    # A registry name without a ModelsConfig field would mean a model built from no settings.
    for cls, (names, _) in GENERIC.items():
        fields = {f.name for f in dataclasses.fields(cls)}
        assert names <= fields, names - fields
