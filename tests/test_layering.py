"""Dependencies flow one way: stages import the core; the core imports no stage."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = {"features", "training", "serving", "monitoring", "dags", "transact_cli"}


def imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_package_imports_no_stage():
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_top_levels(path) & STAGES)
        for path in (ROOT / "transact").rglob("*.py")
        if imported_top_levels(path) & STAGES
    }
    assert offenders == {}


def test_the_layering_check_sees_stage_imports(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from features.stream import x\nimport training.train\n")
    assert imported_top_levels(bad) >= {"features", "training"}
