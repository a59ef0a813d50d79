"""No function in the package is longer than a screen: a reader can hold each one whole."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "instructerc"
MAX_LINES = 80


def long_functions(root: Path, limit: int) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_is_longer_than_80_lines():
    assert long_functions(PACKAGE, MAX_LINES) == []


def test_the_check_counts_nested_and_async_functions(tmp_path):
    body = "\n".join(f"        x{k} = {k}" for k in range(6))
    (tmp_path / "m.py").write_text(f"def outer():\n    async def inner():\n{body}\n    return inner\n", encoding="utf-8")
    assert long_functions(tmp_path, 5) == ["m.py:1 outer (9 lines)", "m.py:2 inner (7 lines)"]
