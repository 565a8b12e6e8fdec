"""The engine of each project file, built once per process: what `offerflow.decide` calls."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from offerflow.decisioning.decision_log import log_decisions
from offerflow.decisioning.decision_types import Decision
from offerflow.decisioning.engine import DecisionEngine, build_engine

_ENGINES: dict[Path, DecisionEngine] = {}
_ENGINES_LOCK = threading.Lock()


def decide(profile_id: str, placements: str | Sequence[str], items: int | None = None,
           config: str | Path = "offerflow.yaml", allow_duplicates: bool = False, log: bool = True,
           explain: bool = False) -> Decision:
    """Decide for one profile from Python (`offerflow.decide`). The engine of each project file is
    built once per process and cached; the decision is appended to the decision log unless `log`
    is False; `explain` adds each placement's explanation."""
    from offerflow.decisioning.switches import load_serving_config

    path = Path(config).resolve()
    with _ENGINES_LOCK:
        engine = _ENGINES.get(path)
        if engine is None:
            engine = _ENGINES[path] = build_engine(load_serving_config(path))
    decision = engine.decide(profile_id, [placements] if isinstance(placements, str) else list(placements),
                             items=items, allow_duplicates=allow_duplicates, explain=explain)
    if log:
        log_decisions([decision], engine.config.paths.decision_log)
    return decision

