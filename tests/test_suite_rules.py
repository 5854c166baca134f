"""Rules of the test suite itself: no test module imports or runs another test module;
what several modules share lives in a conftest.py as fixtures."""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
TEST_FILE = re.compile(r"test_\w*\.py")
# Calls that run a file by its path.
LOADERS = {"spec_from_file_location", "run_path", "SourceFileLoader", "exec_module"}


def imported_test_modules(path: Path) -> list[str]:
    """The test modules (``tests.*`` or ``test_*``) a file imports or loads by path, as
    'line: what' strings."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):  # `from tests.x import test_y` imports a module too
            names = [node.module or ""]
            if not is_test_module(names[0]):
                names = [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.Call):
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if func in LOADERS:
                names = [c.value for c in ast.walk(node) if isinstance(c, ast.Constant) and isinstance(c.value, str)
                         and TEST_FILE.search(c.value)]
                found += [f"{node.lineno}: {func}({name!r})" for name in names]
            continue
        else:
            continue
        found += [f"{node.lineno}: import {name}" for name in names if is_test_module(name)]
    return found


def is_test_module(name: str) -> bool:
    return name == "tests" or name.startswith("tests.") or name.split(".")[-1].startswith("test_")


def test_no_test_module_imports_another():
    bad = [f"{p.relative_to(TESTS)}:{hit}" for p in sorted(TESTS.rglob("*.py")) for hit in imported_test_modules(p)]
    assert not bad, "share fixtures through conftest.py instead:\n" + "\n".join(bad)


def test_the_rule_sees_both_ways(tmp_path):
    path = tmp_path / "test_x.py"
    path.write_text("from tests.portraits.test_prepare import make_folder\n"
                    "import importlib.util\n"
                    "spec = importlib.util.spec_from_file_location('m', HERE.with_name('test_encode.py'))\n")
    assert imported_test_modules(path) == [
        "1: import tests.portraits.test_prepare", "3: spec_from_file_location('test_encode.py')"]
