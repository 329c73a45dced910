"""The layer contract in pyproject.toml ([tool.importlinter]): imports flow one way, from cli
down to errors, function-local imports included. Checked on this tree, and shown to catch a
deliberate upward import in a copy of it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("importlinter", reason="import-linter is in the test extra")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    # `lint-imports` imports the package from the working directory, so a copy is checked as is
    exe = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(exe), "--no-cache"], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_the_tree_keeps_its_layers():
    res = lint_imports(ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 kept, 0 broken" in res.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    shutil.copytree(ROOT / "edgeswitch", tmp_path / "edgeswitch",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    base = tmp_path / "edgeswitch" / "models" / "base.py"
    # a function-local import counts as much as one at the top of the module
    base.write_text(base.read_text() + "\n\ndef _upward():\n"
                    "    from edgeswitch.runtime.hybrid import HybridClassifier\n"
                    "    return HybridClassifier\n")
    res = lint_imports(tmp_path)
    assert res.returncode != 0
    assert "edgeswitch.models is not allowed to import edgeswitch.runtime" in res.stdout
    assert "edgeswitch.models.base -> edgeswitch.runtime.hybrid" in res.stdout
