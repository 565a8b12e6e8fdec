"""`offerflow run`'s summary says what the run skipped: a Customer AI goal too long for the history
and a ranking model that could not be trained are printed with their reasons (the flow's warnings
about them are left to this summary on a quiet terminal)."""

from __future__ import annotations

from offerflow.cli.runs import _print_summary


def test_summary_prints_skipped_goals_and_untrained_models(capsys):
    summary = {
        "validation": {"accepted": 10, "quarantined": 2, "rows": 12, "data_docs": "",
                       "warnings": ["expect_column_values_to_be_between(duplicate_event_id_rows): 4 of 12 rows [x]"]},
        "propensity": {},
        "propensity_skipped": {"purchase_30d": "purchase_30d: 43 days of events; an outcome window of 30 days"
                                               " needs at least 67; skipped"},
        "ranking_models": {
            "web-personalized": {"kind": "personalized", "metrics": {"offers_qualified": 0.0},
                                 "reason": "not trained: 0 displays in the window; its placements are served in a"
                                           " random order until it can be trained"},
            "email-auto": {"kind": "auto_optimization", "metrics": {"offers_qualified": 6.0}, "reason": "trained"},
        },
        "published": {"web-banner": 2},
    }
    _print_summary(summary)
    text = " ".join(capsys.readouterr().out.split())
    assert "validation warning: expect_column_values_to_be_between(duplicate_event_id_rows): 4 of 12 rows [x]" in text
    assert ("propensity purchase_30d: skipped: purchase_30d: 43 days of events; an outcome window of 30 days needs"
            " at least 67; skipped") in text
    assert ("ranking model web-personalized (personalized): 0 offers qualified; not trained: 0 displays in the"
            " window; its placements are served in a random order until it can be trained") in text
    assert "ranking model email-auto (auto_optimization): 6 offers qualified published web-banner: version 2" in text


def test_train_prints_why_a_model_was_not_trained_and_what_auto_optimization_fitted(capsys):
    from offerflow.cli.models import _print_training

    reason = "not trained: ranking model 'web-personalized': 0 displays [x]; its placements are served at random"
    _print_training({"ranking_models": {"models": {
        "web-personalized": {"kind": "personalized", "metrics": {}, "model_version": None, "promoted": False,
                             "reason": reason},
        "email-auto": {"kind": "auto_optimization", "metrics": {}, "model_version": None, "promoted": False,
                       "reason": ""}}}})
    text = " ".join(capsys.readouterr().out.split())
    assert f"web-personalized (personalized): {reason}" in text
    assert "email-auto (auto_optimization): posteriors fitted (no registered version)" in text
    assert "version None" not in text


def test_summary_says_how_many_rows_came_from_the_decision_log(capsys):
    """The validation line counts the logged displays validation read with the events, and those
    the events file carried too (read once); nothing when the log held none."""
    empty = {"propensity": {}, "ranking_models": {}, "published": {}}
    for logged, in_events, said in ((0, 0, ""), (3, 0, " (3 of them displays from the decision log)"),
                                     (0, 2, " (0 of them displays from the decision log; 2 more already in the "
                                            "events file, read once; 4 after the events' end, left for a later run)")):
        _print_summary({**empty, "validation": {"accepted": 13_794, "quarantined": 0, "rows": 13_794,
                                                "logged_displays": logged, "logged_displays_in_events": in_events,
                                                "logged_displays_after_events": 4 if in_events else 0}})
        text = " ".join(capsys.readouterr().out.split())
        assert text == "validation: 13,794 accepted, 0 quarantined of 13,794 rows" + said
