"""Services tests skip in one place only: the shared fixtures (``tests/features/conftest.py``),
and carry the ``services`` marker, so that in CI a missing service fails them
(``tests/conftest.py``) instead of letting them pass as skipped."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
SERVICE_FIXTURES = {"production_profile", "redis_client"}


def _is_skip_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return name in {"skip", "skipif", "importorskip"}


def _markers(func: ast.FunctionDef) -> set[str]:
    names = set()
    for deco in func.decorator_list:
        target = deco.func if isinstance(deco, ast.Call) else deco
        if isinstance(target, ast.Attribute):
            names.add(target.attr)
    return names


def offenders(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = [f"{path.name}:{node.lineno}: own skip logic" for node in ast.walk(tree)
             if _is_skip_call(node)]
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            uses = {a.arg for a in node.args.args} & SERVICE_FIXTURES
            if uses and "services" not in _markers(node):
                found.append(f"{path.name}:{node.lineno}: uses {sorted(uses)} without "
                             f"@pytest.mark.services")
    return found


def test_services_tests_use_the_shared_fixtures_and_the_marker():
    bad = [o for path in sorted(TESTS.rglob("test_*.py")) for o in offenders(path)]
    assert bad == []


def test_the_check_sees_own_skip_logic_and_missing_markers(tmp_path):
    sample = tmp_path / "test_sample.py"
    sample.write_text(
        "import pytest\n\n"
        "def test_a(redis_client):\n    pass\n\n"
        "@pytest.mark.services\ndef test_b(production_profile):\n    pass\n\n"
        "def test_c():\n    pytest.skip('no redis')\n")
    found = offenders(sample)
    assert len(found) == 2
    assert "test_sample.py:3: uses ['redis_client']" in found[1] or \
        "test_sample.py:3: uses ['redis_client']" in found[0]
    assert any("own skip logic" in o for o in found)
