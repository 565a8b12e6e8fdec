"""The personalized click model's pairwise-interaction base (`ranking.interactions`)."""

import numpy as np
import pandas as pd
import pytest

from offerflow.core.config import LightGBMParams
from offerflow.ranking.click_model import ClickModel, fit_click_model, training_frame
from offerflow.ranking.interactions import InteractionBase

KINDS = list("abcdefgh")
COLORS = ["red", "green", "blue", "cyan", "pink", "gold", "grey", "teal"]


def _pairwise_world(n_profiles=2_000, n_offers=16, n_displays=40_000, seed=5):
    """Clicks driven by nothing but a profile colour x offer kind affinity (no main effects), with
    weak signal (about 3% clicks), offers shown uniformly at random. Returns (profiles, offers, log,
    true click probability per profile x offer)."""
    rng = np.random.default_rng(seed)
    profiles = pd.DataFrame({"profile_id": [f"u{i:05d}" for i in range(n_profiles)],
                             "color": rng.choice(COLORS, n_profiles), "age": rng.integers(18, 80, n_profiles)})
    offers = pd.DataFrame({"offer_id": [f"o{j:02d}" for j in range(n_offers)],
                           "kind": [KINDS[j % len(KINDS)] for j in range(n_offers)],
                           "price": np.round(rng.uniform(5, 50, n_offers), 2)})
    log, true = _colour_kind_log(profiles, offers, rng.normal(0.0, 0.7, (len(COLORS), len(KINDS))), n_displays, rng)
    return profiles, offers, log, true


def _colour_kind_log(profiles, offers, affinity, n_displays, rng):
    """Displays of uniformly random offers to uniformly random profiles, clicked with a probability
    set by the profile colour x offer kind `affinity` alone (about 3% clicks): (log, true click
    probability per profile x offer)."""
    logit = -3.6 + affinity[pd.Index(COLORS).get_indexer(profiles["color"])][:, pd.Index(KINDS).get_indexer(offers["kind"])]
    true = 1.0 / (1.0 + np.exp(-logit))
    n_profiles, n_offers = len(profiles), len(offers)
    p_idx, o_idx = rng.integers(0, n_profiles, n_displays), rng.integers(0, n_offers, n_displays)
    log = pd.DataFrame({"profile_id": profiles["profile_id"].to_numpy()[p_idx],
                        "offer_id": offers["offer_id"].to_numpy()[o_idx], "placement_id": "hero",
                        "timestamp": pd.Timestamp("2026-10-01", tz="UTC") + pd.to_timedelta(np.arange(n_displays), "s"),
                        "propensity": 1.0 / n_offers,
                        "success": (rng.random(n_displays) < true[p_idx, o_idx]).astype(np.int8)})
    return log, true


def _share_of_oracle(model: ClickModel, profiles: pd.DataFrame, offers: pd.DataFrame, true: np.ndarray) -> float:
    pick = model.score_matrix(profiles, offers).argmax(axis=1)
    return float(true[np.arange(len(profiles)), pick].mean() / true.max(axis=1).mean())


@pytest.fixture(scope="module")
def pairwise_models():
    profiles, offers, log, true = _pairwise_world()
    frame = training_frame(log, profiles, offers)
    params = LightGBMParams(num_leaves=7, min_child_samples=200, n_estimators=200, num_threads=1)
    qualified = offers["offer_id"].tolist()
    trees = fit_click_model(frame, params, qualified, seed=1, interactions=False)
    based = fit_click_model(frame, params, qualified, seed=1, interactions=True)
    return profiles, offers, true, trees, based


def test_the_base_finds_a_pairwise_interaction_the_trees_alone_miss(pairwise_models):
    profiles, offers, true, trees, based = pairwise_models
    with_base, trees_alone = (_share_of_oracle(m, profiles, offers, true) for m in (based, trees))
    # Measured: 0.97 with the base; 0.61 for the trees alone, which stop after one round.
    assert with_base >= 0.93, (with_base, trees_alone)
    assert with_base >= trees_alone + 0.05, (with_base, trees_alone)
    assert based.holdout_metrics["auc"] > trees.holdout_metrics["auc"]


def test_every_prediction_path_adds_the_base(pairwise_models):
    profiles, offers, _, _, based = pairwise_models
    assert based.base is not None
    matrix = based.score_matrix(profiles.iloc[:50], offers)
    pairs = training_frame(pd.DataFrame({"profile_id": np.repeat(profiles["profile_id"].iloc[:50], len(offers)),
                                         "offer_id": np.tile(offers["offer_id"], 50)}), profiles, offers)
    assert np.allclose(based.predict_pairs(pairs)["p_click"].to_numpy().reshape(50, -1), matrix)
    assert np.allclose(based.predict_frame(pairs).reshape(50, -1), matrix)
    # The base travels in the feature spec (feature_spec.json, the scoring plan) and comes back whole.
    import json

    spec = json.loads(json.dumps(based.spec()))
    again = ClickModel.from_spec(based.booster, spec, based.qualified_offers)
    assert isinstance(again.base, InteractionBase)
    assert np.allclose(again.score_matrix(profiles.iloc[:50], offers), matrix)
    assert ClickModel.from_spec(based.booster, {**spec, "interaction_base": None}, []).base is None


def _noisy_pairwise_world(seed=5, n_profiles=3_000, n_offers=24, n_displays=60_000):
    """Clicks driven by a profile colour x offer kind affinity only, next to columns that drive
    nothing (profile shape, size, age; offer style, price): most of the base's cross blocks are
    noise. Returns (training frame, profiles, offers, true click probability per profile x offer)."""
    rng = np.random.default_rng(seed)
    profiles = pd.DataFrame({"profile_id": [f"u{i:05d}" for i in range(n_profiles)],
                             **{c: rng.choice(COLORS, n_profiles) for c in ("color", "shape", "size")},
                             "age": rng.integers(18, 80, n_profiles)})
    offers = pd.DataFrame({"offer_id": [f"o{j:02d}" for j in range(n_offers)],
                           "kind": [KINDS[j % len(KINDS)] for j in range(n_offers)],
                           "style": rng.choice(list("uvwxyz"), n_offers), "price": np.round(rng.uniform(5, 50, n_offers), 2)})
    log, true = _colour_kind_log(profiles, offers, rng.normal(0.0, 0.5, (len(COLORS), len(KINDS))), n_displays, rng)
    return training_frame(log, profiles, offers), profiles, offers, true


def test_relevance_rounds_shrink_the_blocks_that_carry_no_signal():
    from offerflow.core.features import categorical_columns, categories_of, feature_matrix
    from offerflow.ranking.interactions import block_scale, fit_interaction_base

    frame, profiles, offers, true = _noisy_pairwise_world()
    columns = [c for c in frame.columns if c.startswith(("p_", "o_")) or c == "offer_id"]
    categories = categories_of(frame, categorical_columns(frame[columns]))
    matrix, y, n = feature_matrix(frame, columns, categories), frame["success"].to_numpy(), len(frame)

    def fitted(rounds: int) -> tuple[InteractionBase, float]:
        base = fit_interaction_base(matrix, columns, categories, y, np.ones(n), int(n * 0.7), int(n * 0.8),
                                    relevance_rounds=rounds)
        model = ClickModel(None, columns, categories, [], base=base)
        p_cols, p_block, o_cols, o_block = model._side_blocks(profiles, offers)
        pick = base.logit_matrix(p_block, p_cols, o_block, o_cols).argmax(axis=1)
        return base, float(true[np.arange(len(profiles)), pick].mean() / true.max(axis=1).mean())

    (one_l2, flat), (relevance, share) = fitted(0), fitted(3)
    # Measured (seed 5): 0.963 with the relevance rounds, 0.927 with one L2 strength for every weight
    # (both refitted on the training + validation rows; 0.954 and 0.913 without the refit).
    assert share >= 0.93, (share, flat)
    assert share >= flat + 0.02, (share, flat)
    # The block the clicks come from keeps the largest prior scale of all cross blocks.
    blocks = relevance.design_blocks()
    weights = np.concatenate([relevance.main, relevance.cross.ravel()])
    scale = block_scale(weights, blocks, weights != 0)
    wp = relevance.width(True)
    owners = pd.Series([f"{a} x {b}" for a in relevance._owners(True) for b in relevance._owners(False)])
    cross_scale = pd.Series(scale[len(relevance.main):]).groupby(owners.to_numpy()).max()
    assert cross_scale.idxmax() == "p_color x o_kind", cross_scale.sort_values().tail(3)
    assert one_l2.cross.shape == relevance.cross.shape == (wp, relevance.width(False))
