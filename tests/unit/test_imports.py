"""The package boundaries, read from the code's imports.

The operator and the trainer meet only in `marco_contract`: the operator
imports no trainer module, the trainer no operator module, the contract
neither. The demo (`marco_demo`, in neither image) may use the trainer and the
contract, and nothing imports it. No first-party module takes part in an import
cycle. Every import counts, at any depth: a lazy one inside a function, and one
under `if TYPE_CHECKING:` too (a cycle for the type checker is still a tangle).
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.tools import ROOT

PACKAGES = {
    "marco_contract": ROOT / "contract" / "marco_contract",
    "marco_operator": ROOT / "operator" / "marco_operator",
    "marco_trainer": ROOT / "trainer" / "marco_trainer",
    "marco_demo": ROOT / "demo" / "marco_demo",
}
FORBIDDEN = {
    "marco_contract": {"marco_operator", "marco_trainer", "marco_demo"},
    "marco_operator": {"marco_trainer", "marco_demo"},
    "marco_trainer": {"marco_operator", "marco_demo"},
    "marco_demo": {"marco_operator"},
}


def module_files(packages: dict[str, Path]) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the packages."""
    modules = {}
    for name, folder in packages.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [name, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def imported_names(path: Path) -> set[str]:
    """Every module name an import statement in the file names, at any depth."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return names


def import_graph(packages: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the first-party modules it imports."""
    modules = module_files(packages)
    return {
        module: {name for name in imported_names(path) if name in modules and name != module}
        for module, path in modules.items()
    }


def crossings(packages: dict[str, Path], forbidden: dict[str, set[str]]) -> list[str]:
    found = []
    for module, path in module_files(packages).items():
        top = module.split(".")[0]
        for name in sorted(imported_names(path)):
            if name.split(".")[0] in forbidden.get(top, set()):
                found.append(f"{module} imports {name}")
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_the_operator_trainer_contract_and_demo_import_only_what_they_may():
    assert crossings(PACKAGES, FORBIDDEN) == []


def test_no_first_party_import_cycle():
    assert cycles(import_graph(PACKAGES)) == []


def test_the_walk_sees_crossings_and_cycles_lazy_or_for_types_only(tmp_path):
    """The checks above on a made-up tree whose answers are known by construction."""
    operator = tmp_path / "marco_operator"
    trainer = tmp_path / "marco_trainer"
    demo = tmp_path / "marco_demo"
    for folder in (operator, trainer, demo):
        folder.mkdir()
        (folder / "__init__.py").write_text("")
    (operator / "a.py").write_text("from marco_operator import b\n")
    (operator / "b.py").write_text("def f():\n    import marco_operator.a\n")
    (operator / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from marco_trainer import t\n"
    )
    (operator / "d.py").write_text("from marco_trainer.t import x\n")
    (trainer / "t.py").write_text("x = 1\n")
    (trainer / "u.py").write_text("def f():\n    from marco_demo import s\n")
    # The demo may use the trainer (not flagged), not the operator.
    (demo / "s.py").write_text("import marco_trainer.t\nimport marco_operator.a\n")
    packages = {"marco_operator": operator, "marco_trainer": trainer, "marco_demo": demo}
    assert crossings(packages, FORBIDDEN) == [
        "marco_operator.c imports marco_trainer",
        "marco_operator.c imports marco_trainer.t",
        "marco_operator.d imports marco_trainer.t",
        "marco_operator.d imports marco_trainer.t.x",
        "marco_trainer.u imports marco_demo",
        "marco_trainer.u imports marco_demo.s",
        "marco_demo.s imports marco_operator.a",
    ]
    assert cycles(import_graph(packages)) == [["marco_operator.a", "marco_operator.b"]]
