"""The project's layering, read from its source with `ast` (nothing is imported): one direction of imports
(`core` <- `datamodules`, `heads` <- `lightning_modules` <- entry points), no cycle between project modules, no
project import hidden inside a function, and no private member of a Lightning object."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGES = ("core", "datamodules", "heads", "lightning_modules")
ENTRY_POINTS = ("train.py", "cli_errors.py")
# package -> project packages it may import (besides itself)
ALLOWED = {"core": set(), "datamodules": {"core"}, "heads": {"core"},
           "lightning_modules": {"core", "datamodules", "heads"}}
LIGHTNING_OBJECTS = re.compile(r"\b(trainer|strategy|checkpoint_callback|fit_loop|epoch_loop|pl_module|"
                               r"lightning_module|callback_metrics|logger_connector|loggers?)\b")


def project_files(root: Path = ROOT) -> dict[str, Path]:
    """module name -> file, for the packages and the entry points."""
    files = {p.stem: root / p for p in map(Path, ENTRY_POINTS) if (root / p).is_file()}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def imports(tree: ast.AST, modules: set[str]) -> list[tuple[str, ast.stmt, bool]]:
    """(imported project module, statement, inside a function) for every import of a project module."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            names = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                names = [f"{child.module}.{alias.name}" for alias in child.names] + [child.module]
            for name in names:
                target = next((m for m in (name, name.rsplit(".", 1)[0]) if m in modules), None)
                if target is not None:
                    found.append((target, child, inside))
                    break
            visit(child, inside)
    visit(tree, False)
    return found


def graph_problems(root: Path = ROOT) -> list[str]:
    files = project_files(root)
    problems, edges = [], {name: set() for name in files}
    for name, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        package = name.split(".")[0]
        for target, node, inside in imports(tree, set(files)):
            where = f"{path.relative_to(root)}:{node.lineno}"
            if inside:
                problems.append(f"{where}: imports {target} inside a function")
            target_package = target.split(".")[0]
            if package in ALLOWED and target_package != package and target_package not in ALLOWED[package]:
                allowed = sorted(ALLOWED[package])
                problems.append(f"{where}: {package} imports {target} ({package} may import {allowed})")
            if target != name:
                edges[name].add(target)
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(edges)]
    return problems


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of modules that import each other (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def connect(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges.get(node, ())):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group) + [sorted(group)[0]])
    for node in sorted(edges):
        if node not in index:
            connect(node)
    return found


def private_lightning_members(root: Path = ROOT) -> list[str]:
    problems = []
    for path in project_files(root).values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                owner = ast.unparse(node.value)
                if LIGHTNING_OBJECTS.search(owner) or node.attr in ("_trainer", "_fabric", "_logger_connector"):
                    problems.append(f"{path.relative_to(root)}:{node.lineno}: {owner}.{node.attr}")
    return problems


def test_imports_run_one_way_without_cycles_or_hidden_imports():
    assert graph_problems() == []


def test_no_private_member_of_a_lightning_object():
    assert private_lightning_members() == []


@pytest.mark.parametrize("plant, expected", [
    ({"heads/planted.py": "from lightning_modules.muppet import MuppetModule\n"}, "heads imports lightning_modules"),
    ({"core/planted.py": "from datamodules.catalogue import Catalogue\n"}, "core imports datamodules"),
    ({"datamodules/a_planted.py": "from datamodules.b_planted import x\n",
      "datamodules/b_planted.py": "from datamodules.a_planted import y\n"}, "import cycle: datamodules.a_planted"),
    ({"lightning_modules/planted.py": "def f():\n    from lightning_modules.muppet import MuppetModule\n"},
     "imports lightning_modules.muppet inside a function"),
])
def test_the_checks_fail_on_a_planted_problem(plant, expected, tmp_path):
    for package in PACKAGES:  # a copy of the tree's sources, then the planted files
        for path in (ROOT / package).rglob("*.py"):
            target = tmp_path / path.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(path.read_text())
    assert graph_problems(tmp_path) == []
    for name, text in plant.items():
        (tmp_path / name).write_text(text)
    assert any(expected in problem for problem in graph_problems(tmp_path)), graph_problems(tmp_path)


def test_a_private_lightning_member_is_found(tmp_path):
    (tmp_path / "lightning_modules").mkdir()
    planted = "def f(trainer):\n    return trainer._logger_connector\n"
    (tmp_path / "lightning_modules" / "planted.py").write_text(planted)
    assert private_lightning_members(tmp_path) == ["lightning_modules/planted.py:2: trainer._logger_connector"]


def family_names_outside_their_files(root: Path = ROOT) -> list[str]:
    """String constants that name a family or a family's own batch key, outside that family's two files and the
    registries (docstrings and comments aside: only a constant equal to the name counts)."""
    from core import batch
    from datamodules.families import FAMILIES
    generic = {batch.LENGTH, batch.ROWS, batch.SOURCE_INDEX}  # the batch contract's own columns (core/batch.py)
    owners: dict[str, set[str]] = {}
    own_fields: dict[str, set[str]] = {}
    for name, family in FAMILIES.items():
        files = {f"datamodules/families/{name}.py", f"heads/{name}.py"}
        for word in (name, *(k.key for k in family.batch_keys), *(k.column for k in family.batch_keys)):
            if word not in generic:
                owners.setdefault(word, set()).update(files)
        for file in files:
            own_fields[file] = set(family.Fields.__dataclass_fields__)
    registries = {"datamodules/families/__init__.py", "heads/registry.py"}
    problems = []
    for path in project_files(root).values():
        where = str(path.relative_to(root))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in owners \
                    and where not in owners[node.value] | registries and node.value not in own_fields.get(where, ()):
                problems.append(f"{where}:{node.lineno}: {node.value!r}")
    return problems


def test_nothing_outside_a_family_names_it_or_its_batch_keys():
    assert family_names_outside_their_files() == []


def test_a_family_named_outside_its_files_is_found(tmp_path):
    (tmp_path / "lightning_modules").mkdir()
    (tmp_path / "lightning_modules" / "planted.py").write_text(
        "def f(spec, batch):\n    return spec.family == 'span' and batch['start_positions']\n")
    assert family_names_outside_their_files(tmp_path) == ["lightning_modules/planted.py:2: 'span'",
                                                          "lightning_modules/planted.py:2: 'start_positions'"]
