"""Where a project's MLflow database says its artifacts are, and re-pointing them when the
project was copied or moved (`relocate_artifacts`). Plain SQLite on MLflow's schema: no MLflow
import, so `offerflow up` can fix a copy's database before it starts the MLflow server."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import unquote

#: Where MLflow's SQLite schema keeps locations: artifact roots and URIs, and dataset sources (JSON).
_LOCATION_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                     ("logged_models", "artifact_location"), ("model_versions", "storage_location"),
                     ("model_versions", "source"), ("datasets", "dataset_source"), ("trace_tags", "value"))


def relocate_artifacts(db: Path, artifact_root: Path, project_root: Path | None = None) -> dict[str, str]:
    """Re-point the locations a copied or moved project's MLflow database holds at its own folder.

    Our experiments live at `<artifact root>/<name>`; one that does not, but ends the same way,
    names the artifact root (and, with `project_root`, the project folder) the database was
    written in. Every stored location under that old folder is moved under the new one, in one
    transaction (the `mlruns/` files came along with the copy). Returns old -> new folder ({}
    when nothing had moved: the usual case, one query)."""
    if not db.exists():
        return {}
    with sqlite3.connect(db, timeout=60) as con:
        tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "experiments" not in tables:
            return {}
        moved = _moved_folders(con.execute("SELECT name, artifact_location FROM experiments").fetchall(),
                               artifact_root, project_root)
        for old, new in moved.items():
            for table, column in _LOCATION_COLUMNS:
                if table in tables:
                    for before, after in {(old, new), (Path(old).as_uri()[7:], Path(new).as_uri()[7:])}:
                        con.execute(f'UPDATE "{table}" SET "{column}" = REPLACE("{column}", ?, ?)'
                                    f' WHERE instr("{column}", ?) > 0', (before + "/", after + "/", before + "/"))
    return moved


def _moved_folders(experiments: list[tuple[str, str]], artifact_root: Path,
                   project_root: Path | None) -> dict[str, str]:
    """Old folder -> new folder, from where our experiments are stored and where they belong."""
    root_uri = artifact_root.as_uri()
    inside = project_root is not None and artifact_root.is_relative_to(project_root.resolve())
    moved: dict[str, str] = {}
    for name, location in experiments:
        suffix = (artifact_root / name).as_uri()[len(root_uri):]
        if not location or location == root_uri + suffix or not location.endswith(suffix):
            continue
        old_root = Path(unquote(location[:-len(suffix)].removeprefix("file://")))
        if inside:
            depth = len(artifact_root.relative_to(project_root.resolve()).parts)
            if old_root.parts[-depth:] == artifact_root.parts[-depth:]:
                moved[str(old_root.parents[depth - 1])] = str(project_root.resolve())
                continue
        moved[str(old_root)] = str(artifact_root)
    return {old: new for old, new in moved.items() if old != new and old != "/"}
