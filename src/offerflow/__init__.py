"""offerflow: learn from offer displays and conversions, rank offers per profile, decide."""

__version__ = "0.1.0"


def decide(profile_id, placements, items=None, config="offerflow.yaml", allow_duplicates=False, log=True,
           explain=False):
    """Which offers to show `profile_id` in `placements` (a placement id or a list, filled in order);
    `explain=True` also says why (each placement's `explanation`, docs/decisioning.md "Why this offer?").

    Returns an `offerflow.decisioning.decision_types.Decision`. The engine of each project file is built on the
    first call and cached; nothing is imported or loaded when `offerflow` itself is imported.
    """
    from offerflow.decisioning.project_engines import decide as _decide

    return _decide(profile_id, placements, items=items, config=config, allow_duplicates=allow_duplicates, log=log,
                   explain=explain)
