from hypothesis import given
from hypothesis import strategies as st

from offerflow.core.promotion import should_promote


def test_first_model_becomes_champion():
    decision = should_promote({"auc": 0.7}, None)
    assert decision.promote and "no champion" in decision.reason


def test_worse_model_stays_challenger_with_reason():
    decision = should_promote({"auc": 0.70}, {"auc": 0.72}, min_improvement=0.0)
    assert not decision.promote
    assert decision.reason == "candidate auc=0.7000 does not beat champion auc=0.7200 by more than 0"


def test_margin_is_respected():
    assert not should_promote({"auc": 0.705}, {"auc": 0.70}, min_improvement=0.01).promote
    assert should_promote({"auc": 0.715}, {"auc": 0.70}, min_improvement=0.01).promote


def test_missing_or_nan_metric_never_promotes():
    assert not should_promote({}, {"auc": 0.6}).promote
    assert not should_promote({"auc": float("nan")}, None).promote


@given(st.floats(0, 1), st.floats(0, 1), st.floats(0, 0.2))
def test_never_replaces_champion_with_worse_model(candidate, champion, margin):
    decision = should_promote({"auc": candidate}, {"auc": champion}, min_improvement=margin)
    if decision.promote:
        assert candidate > champion + margin - 1e-12
