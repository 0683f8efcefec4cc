"""Project rules, enforced: the core imports no Dagster, is fully typed, and lints clean."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
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


def _reads_the_environment(source: str) -> bool:
    """``os.environ`` / ``os.getenv`` / ``os.putenv`` in any form (attribute, ``from os import ...``)."""
    names = {"environ", "getenv", "environb", "getenvb", "putenv", "unsetenv"}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in names:
            return True
        if isinstance(node, ast.ImportFrom) and node.module == "os" and {a.name for a in node.names} & names:
            return True
    return False


def test_nothing_reads_the_environment_but_config() -> None:
    readers = [
        str(path.relative_to(ROOT / "agentlake"))
        for path in sorted((ROOT / "agentlake").rglob("*.py"))
        if _reads_the_environment(path.read_text())
    ]
    assert readers == ["config.py"]
    assert _reads_the_environment("import os\nos.getenv('X')") and _reads_the_environment("from os import environ")


def test_core_type_checks() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_lint() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "agentlake", "platform_defs", "assets", "sensors", "tests", "bench"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=root,
                          capture_output=True, text=True, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


def test_the_core_keeps_its_layers_and_has_no_import_cycles() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    declared = len(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"])
    assert declared >= 4 and f"{declared} kept, 0 broken" in result.stdout, result.stdout


@pytest.mark.parametrize(("module", "planted", "contract"), [
    ("storage/store.py", "import agentlake.sources.demo", "The core's layers"),  # a lower layer reaching up
    ("log/events.py", "import agentlake.log.writer", "No import cycles"),  # a cycle inside a sub-package
    ("tables/schemas.py", "import dagster", "The core imports no orchestrator"),
])
def test_the_layering_check_fails_on_a_planted_violation(tmp_path: Path, module: str, planted: str,
                                                          contract: str) -> None:
    import shutil

    shutil.copytree(ROOT / "agentlake", tmp_path / "agentlake", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "agentlake" / module
    target.write_text(target.read_text() + f"\n{planted}  # planted by the test\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0, result.stdout
    assert contract in result.stdout.split("Broken contracts", 1)[1], result.stdout
