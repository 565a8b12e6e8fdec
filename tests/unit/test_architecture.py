"""The library never imports Prefect: flows/ orchestrates, src/offerflow computes."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "offerflow"


def test_library_never_imports_prefect():
    offenders = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "prefect"]
    assert offenders == []


def test_importing_offerflow_does_not_import_heavy_components():
    import subprocess
    import sys

    code = ("import sys, offerflow, offerflow.core.config, offerflow.cli;"
            "print(sorted(m for m in ('prefect', 'mlflow', 'great_expectations', 'lightgbm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
