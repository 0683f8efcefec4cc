"""Project rules, enforced: the core imports no Dagster, is fully typed, and lints clean."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.unit


def test_core_imports_no_orchestrator() -> None:
    offenders = []
    for path in (ROOT / "agentlake").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0].startswith("dagster")]
    assert offenders == [], "agentlake/ is the orchestrator-free core; move these to assets/ or sensors/"


def test_nothing_reads_the_environment_but_config() -> None:
    readers = [
        path.name
        for path in (ROOT / "agentlake").rglob("*.py")
        if "os.environ" in path.read_text() or "getenv" in path.read_text()
    ]
    assert readers == ["config.py"]


def test_core_type_checks() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_lint() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "agentlake", "platform_defs", "assets", "sensors", "tests", "bench"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
