"""Tests share code through tests/helpers (and tests/pki.py), never by
importing another test module or a conftest."""
import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
TEST_FILES = sorted(p for p in TESTS.rglob("*.py") if p.name.startswith(("test_", "conftest")))


def imported_modules(path: Path):
    """Every module path an import in path names, relative ones with their dots."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            yield base
            # 'from tests.unit import test_x' names the module as an imported name
            yield from (f"{base}.{alias.name}" for alias in node.names)


def is_test_module(name: str) -> bool:
    if not (name.startswith(".") or name.split(".")[0] == "tests"):
        return False
    return any(part.startswith("test_") or part == "conftest"
               for part in name.lstrip(".").split("."))


def test_there_are_test_files():
    assert len(TEST_FILES) > 10


@pytest.mark.parametrize("path", TEST_FILES, ids=[str(p.relative_to(TESTS)) for p in TEST_FILES])
def test_no_test_imports_another_test_module(path):
    assert [m for m in imported_modules(path) if is_test_module(m)] == []


def test_the_check_sees_such_imports():
    assert is_test_module("tests.unit.test_rabbit")
    assert is_test_module(".conftest")
    assert is_test_module("..unit.test_trove_certs_hook.Guest")
    assert not is_test_module("tests.helpers.cli")
    assert not is_test_module("tests.pki")
    assert not is_test_module("trove_image_builder.verify.checks.test_offline")
