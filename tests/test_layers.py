"""The packages form a one-way stack: a module imports only its own layer and the layers below.

Every import counts, at module level or inside a function, absolute or relative: a lazy import
still couples the layers, it only hides the coupling until run time.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "instructerc"

# Lowest first. Packages with one rank are siblings and may not import each other either.
# ``base`` is the package's own root modules (errors, files, config) and ``instructerc`` itself.
# ``labels`` sits below ``data``: every reader maps its corpus onto a label set, and label sets
# need nothing from the data.
RANKS: dict[str, int] = {
    "base": 0,
    "labels": 1,
    "data": 2,
    "retrieval": 3,
    "prompts": 4,
    "modeling": 5,
    "training": 6,
    "inference": 6,
    "evaluation": 7,
    "experiments": 8,
    "service": 9,
    "cli": 10,
}

# (importing file, imported module) pairs allowed to break the stack, each with its reason.
ALLOWED: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True)
class Import:
    path: Path
    line: int
    module: str  # absolute dotted name

    def describe(self) -> str:
        return f"{self.path.relative_to(PACKAGE.parent)}:{self.line} imports {self.module}"


def module_name(path: Path, root: Path = PACKAGE) -> list[str]:
    parts = ["instructerc", *path.relative_to(root).with_suffix("").parts]
    return parts[:-1] if parts[-1] == "__init__" else parts


def imports_of(path: Path, root: Path = PACKAGE) -> list[Import]:
    """The instructerc modules ``path`` imports, relative imports resolved."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            # ``from instructerc import cli`` or ``from . import forward`` names modules, not attributes.
            targets = [f"{module}.{alias.name}" for alias in node.names] if node.module is None or module == "instructerc" else [module]
        else:
            continue
        found += [Import(path, node.lineno, target) for target in targets if target.split(".")[0] == "instructerc"]
    return found


def layer_of_module(dotted: str) -> str:
    parts = dotted.split(".")
    if len(parts) == 1 or parts[1] not in RANKS:
        if len(parts) > 1 and parts[1] == "__main__":
            return "cli"  # ``python -m instructerc`` is the CLI's entry point
        return "base"
    return parts[1]


def layer_of_file(path: Path) -> str:
    return layer_of_module(".".join(module_name(path)))


def all_imports() -> list[Import]:
    return [found for path in sorted(PACKAGE.rglob("*.py")) for found in imports_of(path)]


def test_every_package_has_a_place_in_the_stack():
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert packages <= set(RANKS), f"place the new package(s) {sorted(packages - set(RANKS))} in RANKS"
    roots = {p.stem for p in PACKAGE.glob("*.py")}
    assert not roots & set(RANKS)


def test_no_module_imports_a_layer_above_or_beside_its_own():
    wrong = []
    for found in all_imports():
        source, target = layer_of_file(found.path), layer_of_module(found.module)
        if source == target or RANKS[target] < RANKS[source]:
            continue
        if (str(found.path.relative_to(PACKAGE.parent)), found.module) in ALLOWED:
            continue
        wrong.append(f"{found.describe()} ({source} may not import {target})")
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_no_two_packages_import_each_other():
    edges = {(layer_of_file(f.path), layer_of_module(f.module)) for f in all_imports()}
    edges = {(a, b) for a, b in edges if a != b}
    mutual = sorted({tuple(sorted(edge)) for edge in edges if edge[::-1] in edges})
    assert not mutual, f"packages importing each other: {mutual}"


def test_allowed_exceptions_are_still_needed():
    # A stale exception would quietly permit the edge again later.
    present = {(str(f.path.relative_to(PACKAGE.parent)), f.module) for f in all_imports()}
    assert ALLOWED <= present, f"no longer imported, remove from ALLOWED: {sorted(ALLOWED - present)}"


def test_the_checker_resolves_relative_and_function_level_imports(tmp_path):
    root = tmp_path / "instructerc"
    module = root / "modeling" / "example.py"
    module.parent.mkdir(parents=True)
    module.write_text(
        "from . import forward\n"
        "from .wrappers import underlying_model\n"
        "from ..data import dialogue\n"
        "import os\n"
        "def late():\n"
        "    from instructerc import cli\n"
        "    import instructerc.training.trainer\n"
    )
    assert [f.module for f in imports_of(module, root)] == [
        "instructerc.modeling.forward",
        "instructerc.modeling.wrappers",
        "instructerc.data",
        "instructerc.cli",
        "instructerc.training.trainer",
    ]
    assert layer_of_module("instructerc") == "base" and layer_of_module("instructerc.errors") == "base"
    assert layer_of_module("instructerc.__main__") == "cli"
