from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from offerflow.ranking.click_model import ips_weights
from offerflow.ranking.tables import formula_scorer, rank_profiles, top_k
from offerflow.rules.expressions import schema_from_frames


def test_top_k_orders_and_skips_ineligible():
    scores = np.array([[0.1, 0.5, 0.3], [0.9, 0.2, 0.4]])
    eligible = np.array([[True, False, True], [False, False, False]])
    rows, idx, best = top_k(scores, eligible, 2)
    assert rows.tolist() == [0, 0]
    assert idx.tolist() == [2, 0]
    assert best.tolist() == [0.3, 0.1]


def test_no_candidate_offers_rank_nothing_instead_of_failing():
    """A placement whose only offer is its fallback has no candidates to rank (the pipeline failed
    with `cannot reshape array of size 0`)."""
    rows, idx, best = top_k(np.empty((2, 0)), np.empty((2, 0), dtype=bool), 3)
    assert rows.size == idx.size == best.size == 0
    profiles, offers = make_frames()
    score = formula_scorer("offer.priority", schema_from_frames(profiles=profiles, offers=offers))
    assert pd.concat(rank_profiles(profiles, offers.head(0), score, k=1)).empty


def make_frames():
    profiles = pd.DataFrame({"profile_id": ["p1", "p2", "p3"], "age": [17, 30, 45],
                             "favorite_category": ["home", "sports", "home"]})
    offers = pd.DataFrame({"offer_id": ["a", "b", "c"], "name": ["A", "B", "C"], "priority": [5, 3, 1],
                           "placements": [("x",)] * 3, "eligibility": [None, "profile.age >= 18", None],
                           "fallback": [False] * 3, "category": ["sports", "home", "home"]})
    return profiles, offers


def test_rank_profiles_with_formula_respects_eligibility_and_k():
    profiles, offers = make_frames()
    formula = "if(offer.category == profile.favorite_category, offer.priority * 2, offer.priority)"
    score = formula_scorer(formula, schema_from_frames(profiles=profiles, offers=offers))
    table = pd.concat(rank_profiles(profiles, offers, score, k=2, chunk_profiles=2))
    by_profile = table.groupby("profile_id")["offer_id"].apply(list).to_dict()
    assert by_profile == {"p1": ["a", "c"], "p2": ["a", "b"], "p3": ["b", "a"]}
    assert table.groupby("profile_id")["rank"].apply(list).to_dict()["p3"] == [1, 2]
    assert "b" not in by_profile["p1"]  # p1 is 17: never ranked an ineligible offer


def test_ips_weights_undo_logging_bias():
    propensity = pd.Series([0.5, 0.5, 0.1, np.nan])
    w = ips_weights(propensity)
    assert w.mean() == 1.0 or abs(w.mean() - 1.0) < 1e-12
    assert w[2] == 5 * w[0]


def _click_world(n_profiles=1500, n_offers=12, n_displays=30_000, seed=3):
    from offerflow.synthetic.world import make_offers, make_profiles, true_click_probability

    rng = np.random.default_rng(seed)
    profiles = make_profiles(n_profiles, rng)
    offers = make_offers(n_offers, rng)
    p_idx = rng.integers(0, n_profiles, n_displays)
    o_idx = rng.integers(0, len(offers), n_displays)
    truth = true_click_probability(profiles, offers, "web")[p_idx, o_idx]
    log = pd.DataFrame({"profile_id": profiles["profile_id"].to_numpy()[p_idx],
                        "offer_id": offers["offer_id"].to_numpy()[o_idx],
                        "placement_id": "web-banner",
                        "timestamp": pd.Timestamp("2026-10-01", tz="UTC") + pd.to_timedelta(np.arange(n_displays), "s"),
                        "propensity": 1.0 / len(offers),
                        "success": (rng.random(n_displays) < truth).astype(np.int8)})
    public_profiles = profiles.drop(columns=["activity"])
    public_offers = offers.drop(columns=["quality"])
    return public_profiles, public_offers, log, profiles, offers


def _fitted(n_displays: int, **params):
    """(public profiles, public offers, click model) on `_click_world(n_displays=...)`."""
    from offerflow.core.config import LightGBMParams
    from offerflow.ranking.click_model import fit_click_model, training_frame

    profiles, offers, log, _, _ = _click_world(n_displays=n_displays)
    model = fit_click_model(training_frame(log, profiles, offers), LightGBMParams(**params),
                            offers["offer_id"].tolist(), seed=1)
    return profiles, offers, model


# Fitted once per module (the interaction base's grid and the trees take seconds each time); every
# test takes a `replace` copy, with its own predictor, `compile` and `offer_weights`.
@pytest.fixture(scope="module")
def pair_model():
    return _fitted(30_000, n_estimators=60, num_leaves=15, min_child_samples=20)


@pytest.fixture(scope="module")
def small_model():
    return _fitted(20_000, n_estimators=30)


@pytest.mark.parametrize("compile", ["never", "always"])
def test_pair_scoring_equals_lightgbm_on_the_cross_joined_frame(compile, tmp_path, monkeypatch, pair_model):
    """The NumPy pair matrix gives what predicting on the cross-joined, encoded frame gives,
    including categories never seen in training and missing values (NaN, as LightGBM reads them),
    both through LightGBM's predict and through the compiled (lleaves) model."""
    monkeypatch.setenv("OFFERFLOW_CACHE_DIR", str(tmp_path))
    from offerflow.ranking.click_model import offer_features, profile_features

    profiles, offers, fitted = pair_model
    model = replace(fitted, compile=compile)
    scoring = profiles.head(300).copy()
    scoring.loc[0, "country"] = "atlantis"  # unseen category
    scoring.loc[1, "loyalty_tier"] = None  # missing
    scoring["age"] = scoring["age"].astype(float)
    scoring.loc[2, "age"] = np.nan
    fast = model.score_matrix(scoring, offers, max_rows_per_predict=1000)  # several blocks
    pf, of = profile_features(scoring), offer_features(offers)
    pairs = pd.concat([pf.loc[np.repeat(np.arange(len(pf)), len(of))].reset_index(drop=True),
                       of.loc[np.tile(np.arange(len(of)), len(pf))].reset_index(drop=True)], axis=1)
    reference = model.predict_frame(pairs).reshape(len(scoring), len(offers))
    np.testing.assert_allclose(fast, reference, rtol=0, atol=1e-12)
    assert model.predictor().compiled == (compile == "always")
    if compile == "always":  # the compiled library is cached by model text, and reused
        assert len(list((tmp_path / "compiled").glob("lgbm-*.so"))) == 1


def test_click_model_learns_the_true_click_probability_and_stops_on_auc_alone():
    from scipy.stats import spearmanr

    from offerflow.core.config import LightGBMParams
    from offerflow.ranking.click_model import STOPPING_METRIC, fit_click_model, training_frame

    profiles, offers, log, truth_profiles, truth_offers = _click_world(n_displays=60_000)
    # Trees alone: with the interaction base (`ranking.interactions`) the trees only fit its residuals.
    model = fit_click_model(training_frame(log, profiles, offers), LightGBMParams(n_estimators=200),
                            offers["offer_id"].tolist(), seed=1, interactions=False)
    # Early stopping watches AUC alone (LightGBM would also watch its default binary_logloss next
    # to eval_metric="auc" and stop on whichever stalls first), and a world with real signal
    # keeps adding trees well past the first rounds (measured: 85).
    assert list(model.booster.evals_result_["valid_0"]) == [STOPPING_METRIC] == ["auc"]
    assert model.booster.best_iteration_ >= 40, model.booster.best_iteration_
    learned = model.score_matrix(profiles, offers)
    true = true_click_probability_of(truth_profiles, truth_offers)
    assert spearmanr(learned.ravel(), true.ravel()).statistic > 0.8
    # Choosing the best offer per profile by the model gets most of the oracle's true CTR.
    rows = np.arange(len(profiles))
    model_ctr = true[rows, learned.argmax(axis=1)].mean()
    assert model_ctr > true.mean() + 0.8 * (true.max(axis=1).mean() - true.mean())


def true_click_probability_of(profiles, offers):
    from offerflow.synthetic.world import true_click_probability

    return true_click_probability(profiles, offers, "web")


def _write_events(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from offerflow.core.schema import EVENT_SCHEMA

    frame = pd.DataFrame(rows, columns=["event_id", "timestamp", "profile_id", "event_type", "offer_id",
                                        "placement_id", "channel", "value", "propensity", "decision_id"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    pq.write_table(pa.Table.from_pandas(frame, schema=EVENT_SCHEMA, preserve_index=False), path)


def test_interaction_log_joins_success_events_and_their_value_by_decision(tmp_path):
    from datetime import datetime, timezone

    from offerflow.core.features import open_events
    from offerflow.ranking.click_model import interaction_log, offer_counts

    t = "2026-10-01T10:00:00"
    _write_events(tmp_path / "e.parquet", [
        ("1", t, "p1", "display", "a", "web", "web", None, 0.5, "d1"),
        ("2", t, "p1", "purchase", "a", "web", "web", 30.0, None, "d1"),
        ("3", t, "p1", "purchase", "a", "web", "web", 20.0, None, "d1"),  # two orders, one display
        ("4", t, "p2", "display", "a", "web", "web", None, 0.5, "d2"),
        ("5", t, "p2", "click", "a", "web", "web", None, None, "d2"),  # a click is not a purchase
        ("6", t, "p3", "display", "b", "web", "web", None, 0.5, "d3"),
        ("7", t, "p3", "purchase", "a", "web", "web", 99.0, None, "d3"),  # another offer's purchase
    ])
    con = open_events(tmp_path / "e.parquet")
    start, end = datetime(2026, 10, 1, tzinfo=timezone.utc), datetime(2026, 10, 2, tzinfo=timezone.utc)
    log = interaction_log(con, ["web"], start, end, success_event="purchase")
    by_profile = log.set_index("profile_id")
    assert by_profile.loc["p1", ["success", "value"]].tolist() == [1, 50.0]
    assert by_profile.loc["p2", ["success", "value"]].tolist() == [0, 0.0]
    assert by_profile.loc["p3", ["success", "value"]].tolist() == [0, 0.0]
    counts = offer_counts(log).set_index("offer_id")
    assert counts.loc["a"].tolist() == [2, 1, 50.0]
    clicks = interaction_log(con, ["web"], start, end)
    assert clicks.set_index("profile_id").loc["p2", "success"] == 1


def test_value_weighted_click_model_ranks_by_expected_value(small_model):
    profiles, offers, fitted = small_model
    model = replace(fitted)
    plain = model.score_matrix(profiles.head(50), offers)
    weights = {oid: float(i + 1) for i, oid in enumerate(offers["offer_id"])}
    model.offer_weights = weights
    weighted = model.score_matrix(profiles.head(50), offers)
    np.testing.assert_allclose(weighted, plain * np.arange(1, len(offers) + 1)[None, :])


def test_formula_reads_the_personalized_model_score_as_ai_score(small_model):
    from offerflow.ranking.tables import formula_scorer
    from offerflow.rules.expressions import ExpressionError

    profiles, offers, fitted = small_model
    model = replace(fitted)
    schema = schema_from_frames(profiles=profiles, offers=offers)
    chunk = profiles.head(40)
    score = formula_scorer("ai_score * (1 + offer.discount_pct / 100)", schema, ai_scores=model.score_matrix)
    expected = model.score_matrix(chunk, offers) * (1 + offers["discount_pct"].to_numpy(float) / 100)[None, :]
    np.testing.assert_allclose(score(chunk, offers), expected)
    with pytest.raises(ExpressionError, match="unknown name 'ai_score'"):
        formula_scorer("ai_score * 2", schema)  # no model named for the placement: a clear error


def test_formula_with_ai_score_published_in_process_and_from_a_shipped_plan(small_model):
    """A formula placement that names a personalized model gets the same table in process and
    from the picklable plan a worker receives (the model travels as text)."""
    import pickle

    from offerflow.core.config import PlacementConfig, RankingMethod
    from offerflow.ranking.publishing import build_ranking_table, plan_scoring, rank_partition
    from offerflow.ranking.ai_models import RankingModelResult

    profiles, offers, fitted = small_model
    click = replace(fitted, compile="never")
    model = RankingModelResult("m", "run", "1", {}, True, "", click_model=click)
    placement = PlacementConfig(id="web-banner", channel="web", items=2, ranking=RankingMethod(
        method="formula", formula="ai_score * offer.discount_pct", ai_model="m"))
    table = build_ranking_table(placement, profiles, offers, model).to_pandas()
    first = table[table["rank"] == 1].set_index("profile_id")["score"]
    candidates = offers[offers["placements"].map(lambda spots: "web-banner" in spots)].reset_index(drop=True)
    raw = click.score_matrix(profiles, candidates) * candidates["discount_pct"].to_numpy(float)[None, :]
    from offerflow.ranking.tables import eligibility_matrix
    best = np.where(eligibility_matrix(profiles, candidates), raw, -np.inf).max(axis=1)
    np.testing.assert_allclose(first.loc[profiles["profile_id"]].to_numpy(), best)
    shipped = pickle.loads(pickle.dumps(plan_scoring(placement, profiles, offers, model)))
    again = rank_partition(shipped, profiles).to_pandas().sort_values(["profile_id", "rank"]).reset_index(drop=True)
    expected = table.sort_values(["profile_id", "rank"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(again, expected, check_dtype=False)


def test_a_display_sample_keeps_every_display_of_the_profiles_drawn(world_dir):
    """Beyond max_training_displays a personalized model trains on a stable hash sample of
    profiles, picked from per-profile counts and read with a semi-join: exactly the full log's
    rows of the profiles drawn, and about the configured number of displays."""
    from offerflow.core.config import AIModelConfig
    from offerflow.core.features import event_time_range, open_events
    from offerflow.core.partitions import in_sample
    from offerflow.ranking.click_model import interaction_log
    from offerflow.models.ranking_training import _training_displays
    con = open_events(world_dir / "events.parquet")
    _, last = event_time_range(con)
    end = pd.Timestamp(last).ceil("D").to_pydatetime()
    start = end - pd.Timedelta(days=30)
    full = interaction_log(con, ["web-banner"], start, end)
    cfg = AIModelConfig(name="m", type="personalized", placements=["web-banner"], max_training_displays=len(full) // 4)
    sampled, displays = _training_displays(con, cfg, start, end)
    assert displays == len(full)
    expected = full[in_sample(full["profile_id"], cfg.max_training_displays / len(full))].reset_index(drop=True)
    pd.testing.assert_frame_equal(sampled, expected)
    assert abs(len(sampled) / cfg.max_training_displays - 1) < 0.15
    everything, _ = _training_displays(con, cfg.model_copy(update={"max_training_displays": None}), start, end)
    pd.testing.assert_frame_equal(everything, full)


def test_a_window_too_thin_to_train_a_click_model_says_why():
    from offerflow.ranking.click_model import untrainable

    def frame(successes):
        return pd.DataFrame({"timestamp": pd.date_range("2026-01-01", periods=len(successes), freq="h", tz="UTC"),
                             "success": successes})

    assert untrainable(frame([0, 1] * 50)) is None  # each time part has clicks and non-clicks
    assert "0 displays and 0 successes" in untrainable(frame([]))
    assert "100 displays and 0 successes in the window: too few to train" in untrainable(frame([0] * 100))
    assert untrainable(frame([1] * 5 + [0] * 95)) is not None  # clicks only in the training part
    late = frame([0] * 90 + [1] * 10)  # clicks only in the holdout part...
    assert untrainable(late) is not None
    assert untrainable(late.iloc[::-1]) is not None  # ...in time order, whatever the row order
