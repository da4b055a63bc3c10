"""The import rule of docs/architecture.md: a module imports only lower layers and its own package.

The layer table is read from the page itself, so the picture and the rule cannot drift apart.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "anomaly_freq"
ROW = re.compile(r"^\| (\d+) \| `?([\w_]+)`? \|$", re.M)
# The boundaries the architecture exists for (issue #20): no table edit may open them.
FORBIDDEN = [("methods", "metrics"), ("methods", "run"), ("metrics", "methods"),
             ("metrics", "run"), ("data", "methods"), ("freq", "methods"), ("freq", "data"),
             ("viz", "run"), ("contract", "methods"), ("data", "run")]


def layer_table(text: str) -> dict[str, int]:
    layers = {name: int(level) for level, name in ROW.findall(text)}
    if not layers:
        raise AssertionError("docs/architecture.md has no layer table")
    return layers


def unit_of(module: str) -> str:
    """The package (or top-level module) that ``anomaly_freq.<unit>...`` belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(source: str, package: str) -> set[str]:
    """Every ``anomaly_freq`` module that ``source``, a module of ``package``, imports, at any
    depth (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base == "anomaly_freq":
                found |= {f"anomaly_freq.{a.name}" if (PACKAGE / a.name).exists()
                          or (PACKAGE / f"{a.name}.py").exists() else base for a in node.names}
            else:
                found.add(base)
    return {name for name in found if name == "anomaly_freq" or name.startswith("anomaly_freq.")}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def package_edges() -> dict[tuple[str, str], list[str]]:
    """(importer unit, imported unit) → the importing modules, over the whole package."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        src = unit_of(name)
        for target in imports_of(path.read_text(encoding="utf-8"), package):
            dst = unit_of(target)
            if dst != src:
                edges.setdefault((src, dst), []).append(name)
    return edges


def violations(edges: dict[tuple[str, str], list[str]], layers: dict[str, int]) -> list[str]:
    out = []
    for (src, dst), modules in sorted(edges.items()):
        if src not in layers or dst not in layers:
            missing = src if src not in layers else dst
            out.append(f"{missing} is in no layer of docs/architecture.md ({modules[0]})")
        elif layers[dst] >= layers[src]:
            out.append(f"{', '.join(modules)} ({src}, layer {layers[src]}) imports {dst} "
                       f"(layer {layers[dst]})")
    return out


LAYERS = layer_table((ROOT / "docs" / "architecture.md").read_text(encoding="utf-8"))


def test_every_package_has_a_layer():
    units = {unit_of(module_name(p)) for p in PACKAGE.rglob("*.py")}
    assert units <= set(LAYERS), sorted(units - set(LAYERS))


def test_no_module_imports_across_the_layers():
    assert violations(package_edges(), LAYERS) == []


def test_the_table_keeps_the_boundaries_closed():
    opened = [f"{a} → {b}" for a, b in FORBIDDEN if LAYERS[b] < LAYERS[a]]
    assert opened == []


def test_no_cycle_between_packages():
    graph: dict[str, set[str]] = {}
    for src, dst in package_edges():
        graph.setdefault(src, set()).add(dst)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    assert [unit for unit in graph if reaches(unit, unit, {unit})] == []


@pytest.mark.parametrize("source, expected", [
    ("from anomaly_freq.metrics import Evaluator", "metrics"),
    ("import anomaly_freq.run.engine", "run"),
    ("def f():\n    from anomaly_freq.metrics.functional import auroc", "metrics"),
    ("from ...metrics import evaluator", "metrics"),
])
def test_the_check_catches_an_upward_import(source, expected):
    """A method module that imports the evaluator, however it spells it, is a violation."""
    module = "anomaly_freq.methods.fair.model"
    edges = {("methods", unit_of(t)): [module]
             for t in imports_of(source, "anomaly_freq.methods.fair")}
    assert ("methods", expected) in edges
    assert violations(edges, LAYERS)
