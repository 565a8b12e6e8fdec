"""The architecture holds: import contracts (pyproject.toml, checked by import-linter), the flows
use only public names of the library, and importing offerflow stays light."""

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "offerflow"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint_imports(src_root: Path) -> subprocess.CompletedProcess:
    """Run import-linter on the package under `src_root` with the project's contracts."""
    env = {**os.environ, "PYTHONPATH": f"{src_root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                          capture_output=True, text=True, env=env, cwd=src_root)


def test_import_contracts_hold():
    result = _lint_imports(ROOT / "src")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_planted_violation_breaks_the_contracts(tmp_path):
    """The contracts can fail: core importing a stage, and the library importing Prefect."""
    shutil.copytree(SRC, tmp_path / "offerflow", ignore=shutil.ignore_patterns("__pycache__"))
    config = tmp_path / "offerflow" / "core" / "config.py"
    config.write_text(config.read_text() + "\nfrom offerflow.decisioning import engine  # planted\n")
    scoring = tmp_path / "offerflow" / "ranking" / "publishing.py"
    scoring.write_text(scoring.read_text() + "\nimport prefect  # planted\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "offerflow.core is not allowed to import offerflow.decisioning" in result.stdout
    assert "offerflow.ranking.publishing -> prefect" in result.stdout


def test_flows_and_cli_use_only_public_names_of_the_library():
    offenders = []
    for path in [*(SRC / "flows").glob("*.py"), *(SRC / "cli").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("offerflow."):
                own = node.module.startswith(f"offerflow.{path.parent.name}")
                offenders += [f"{path.name}: {node.module}.{a.name}" for a in node.names
                              if a.name.startswith("_") and not own]
    assert offenders == []


def test_importing_offerflow_does_not_import_heavy_components():
    code = ("import sys, offerflow, offerflow.core.config, offerflow.cli;"
            "print(sorted(m for m in ('prefect', 'mlflow', 'great_expectations', 'lightgbm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_architecture_doc_names_modules_that_exist():
    """Every `package.module.name` docs/architecture.md points a newcomer to resolves."""
    import importlib
    import re

    text = (ROOT / "docs" / "architecture.md").read_text()
    packages = "core|rules|ingest|customer_ai|ranking|models|decisioning|evaluation|synthetic|ops|flows|cli"
    refs = set(re.findall(rf"`((?:{packages})\.[\w.]+)`", text))
    missing = []
    for ref in sorted(refs):
        parts = f"offerflow.{ref}".split(".")
        for i in range(len(parts), 1, -1):
            try:
                obj = importlib.import_module(".".join(parts[:i]))
                break
            except ImportError:
                continue
        try:
            for name in parts[i:]:
                obj = getattr(obj, name)
        except AttributeError:
            missing.append(ref)
    assert len(refs) >= 10 and missing == []
