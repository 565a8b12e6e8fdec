"""The candidate strategies of a placement for off-policy evaluation, trained before the window.

Per placement: random, priority, every ranking formula of the project (and `evaluation.formulas`),
every active AI model that lists the placement (auto-optimization as Thompson first-choice
probabilities, personalized as the argmax of its click model), and the logged policy itself. AI
models and the DR reward model learn only from events before the evaluation window, with the same
library code the pipeline trains with, but nothing is registered or promoted in MLflow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import duckdb
import numpy as np
import pandas as pd

from offerflow.ranking.bandits import fit_posteriors
from offerflow.ingest.catalog import offers_for_placement
from offerflow.core.config import AIModelConfig, EvaluationConfig, LightGBMParams, ProjectConfig, RankingMethod
from offerflow.core.features import EVENTS_VIEW
from offerflow.evaluation.logged_displays import load_logged_displays
from offerflow.evaluation.offpolicy import Evaluation, WarningLimits, evaluate
from offerflow.evaluation.policies import Strategy, score_policy, thompson_policy, uniform_policy
from offerflow.ranking.click_model import (ClickModel, fit_click_model, interaction_log, offer_counts, training_frame,
                                           untrainable)
from offerflow.ranking.tables import formula_scorer, priority_scores
from offerflow.rules.expressions import schema_from_frames
from offerflow.evaluation.slates import (SlateEvaluation, SlateStrategy, evaluate_slates, load_logged_slates, random_slate_policy,
                              score_slate_policy)


def slug(text: str) -> str:
    """A name MLflow accepts in a metric key."""
    return re.sub(r"[^0-9A-Za-z_.-]+", "-", text).strip("-") or "strategy"


def evaluation_window(con: duckdb.DuckDBPyConnection, placement_ids: list[str], days: int) -> tuple[datetime, datetime]:
    """The last `days` whole days up to the day after the last display of these placements."""
    marks = ", ".join("?" for _ in placement_ids)
    last = con.sql(f"SELECT max(timestamp) FROM {EVENTS_VIEW} WHERE event_type = 'display' "
                   f"AND placement_id IN ({marks})", params=list(placement_ids)).fetchall()[0][0]
    if last is None:
        raise ValueError(f"no displays logged for {', '.join(placement_ids)}")
    end = (pd.Timestamp(last).tz_convert("UTC").floor("D") + pd.Timedelta(days=1)).to_pydatetime()
    return end - timedelta(days=days), end


def placement_offer_set(offers: pd.DataFrame, placement_id: str) -> pd.DataFrame:
    """The placement's regular offers followed by its fallback offer(s)."""
    regular = offers_for_placement(offers, placement_id)
    mask = offers["placements"].map(lambda spots: placement_id in spots) & offers["fallback"].astype(bool)
    return pd.concat([regular, offers[mask]], ignore_index=True)


def pre_window_log(con: duckdb.DuckDBPyConnection, placements: list[str], start: datetime, days: int,
                   success_event: str = "click") -> pd.DataFrame:
    return interaction_log(con, placements, start - timedelta(days=days), start, success_event)


def pre_window_posteriors(log: pd.DataFrame, model: AIModelConfig, offers: pd.DataFrame) -> pd.DataFrame:
    counts = offers[["offer_id"]].merge(offer_counts(log), on="offer_id", how="left").fillna(0)
    return fit_posteriors(counts, model.min_displays, model.min_successes, model.value_weighted,
                          empirical_prior=model.samples_every_offer, sharpening=model.posterior_sharpening)


def fit_reward_model(log: pd.DataFrame, profiles: pd.DataFrame, offers: pd.DataFrame, params: LightGBMParams,
                     seed: int) -> ClickModel:
    """A click model over every offer of the placement, from the logged displays before the window."""
    frame = training_frame(log, profiles, offers)
    if frame["success"].nunique() < 2 or len(frame) < 200:
        raise ValueError(f"too little data before the evaluation window for a reward model ({len(frame)} displays)")
    return fit_click_model(frame, params, offers["offer_id"].tolist(), seed)


@dataclass
class PlacementCandidates:
    strategies: list[Strategy]
    current: str            # the strategy the placement serves now (config + serving switches)
    reward_model: ClickModel | None
    notes: list[str]
    #: strategy name -> the ranking that serves it; random and logged cannot be served
    rankings: dict[str, RankingMethod] = field(default_factory=dict)
    #: strategy name -> why it has no estimate (an AI model with too little data before the window)
    skipped: dict[str, str] = field(default_factory=dict)

    def skip(self, name: str, reason: str) -> None:
        self.skipped[slug(name)] = reason
        self.notes.append(f"{name} skipped: {reason}")


def _formulas(config: ProjectConfig) -> dict[str, str]:
    out = {f"formula-{p.id}": p.ranking.formula for p in config.placements if p.ranking.method == "formula"}
    out.update({f"formula-{slug(name)}": expr for name, expr in config.evaluation.formulas.items()})
    return out


def placement_candidates(con: duckdb.DuckDBPyConnection, config: ProjectConfig, placement_id: str,
                         profiles: pd.DataFrame, offers: pd.DataFrame, window_start: datetime) -> PlacementCandidates:
    """Every strategy to compare on a placement, trained on events before `window_start`."""
    placement = config.placement(placement_id)
    placement_offers = placement_offer_set(offers, placement_id)
    schema = schema_from_frames(profiles=profiles, offers=placement_offers)
    ranking = placement.ranking
    current = {"priority": "priority", "formula": f"formula-{placement.id}",
               "ai_model": slug(ranking.ai_model or "")}[ranking.method]
    out = PlacementCandidates([Strategy("logged", "logged (what was served)", "logged", None),
                               Strategy("random", "random", "random",
                                        lambda p, o, e: uniform_policy(e), slate=random_slate_policy),
                               Strategy("priority", "priority", "priority", score_policy(priority_scores),
                                        slate=score_slate_policy(priority_scores))],
                              current, None, [], {"priority": RankingMethod(method="priority")})
    for name, formula in _formulas(config).items():
        try:
            scorer = formula_scorer(formula, schema)
            out.strategies.append(Strategy(name, name.replace("formula-", "formula ", 1), "formula",
                                           score_policy(scorer), slate=score_slate_policy(scorer)))
            out.rankings[name] = RankingMethod(method="formula", formula=formula)
        except ValueError as exc:  # a formula over columns this placement's data lacks
            out.skip(name, str(exc))
    for model in config.ai_models:
        if model.status == "active" and placement_id in model.placements:
            _add_ai_model(out, con, config, model, profiles, offers, window_start)
    try:
        log = pre_window_log(con, [placement_id], window_start, config.evaluation.reward_model_days)
        out.reward_model = fit_reward_model(log, profiles, offers_for_placement(offers, placement_id),
                                            config.evaluation.reward_model, config.seed)
    except ValueError as exc:
        out.notes.append(f"no DR reward model: {exc}")
    return out


def _add_ai_model(out: PlacementCandidates, con: duckdb.DuckDBPyConnection, config: ProjectConfig,
                  model: AIModelConfig, profiles: pd.DataFrame, offers: pd.DataFrame, window_start: datetime) -> None:
    """An AI model as a candidate, fitted on its training window before `window_start`, or skipped
    with the reason (`out.skip`)."""
    log = pre_window_log(con, model.placements, window_start, model.training_window_days, model.success_event)
    model_offers = pd.concat([offers_for_placement(offers, p) for p in model.placements]).drop_duplicates("offer_id")
    if log.empty:
        return out.skip(model.name, f"no displays in the {model.training_window_days} days before the window")
    posteriors = pre_window_posteriors(log, model, model_offers)
    qualified = posteriors.loc[posteriors["qualified"], "offer_id"].tolist()
    if model.type == "auto_optimization":
        policy = thompson_policy(posteriors, model.exploration_share, config.seed, new_offers=model.new_offers,
                                 sampling=model.sampling)
        out.strategies.append(Strategy(slug(model.name), model.name, model.type, policy))
    else:
        frame = training_frame(log, profiles, model_offers)
        if (reason := untrainable(frame)) is not None:
            return out.skip(model.name, reason)
        try:  # the served model's settings: the strategy evaluated is the one training would fit
            click_model = fit_click_model(frame, model.lightgbm, qualified, config.seed, ips=model.ips_weighting,
                                          interactions=model.interaction_base)
        except ValueError as exc:
            return out.skip(model.name, str(exc))
        out.strategies.append(Strategy(slug(model.name), model.name, model.type, score_policy(click_model.score_matrix),
                                       offers_personalized=len(qualified),
                                       slate=score_slate_policy(click_model.score_matrix)))
    out.rankings[slug(model.name)] = RankingMethod(method="ai_model", ai_model=model.name)


def reward_matrix(model: ClickModel | None, logged) -> np.ndarray | None:
    """Reward model predictions for the window's profiles x the placement's offers (fallback: 0)."""
    if model is None:
        return None
    regular = ~logged.offers["fallback"].astype(bool).to_numpy()
    q = np.zeros((len(logged.profiles), len(logged.offers)))
    if len(logged.profiles):
        q[:, regular] = model.score_matrix(logged.profiles, logged.offers[regular].reset_index(drop=True))
    return q


def warning_limits(ev: EvaluationConfig) -> WarningLimits:
    return WarningLimits(min_ess=ev.min_ess, min_propensity=ev.min_propensity, min_clicks=ev.min_clicks)


def history_note(con: duckdb.DuckDBPyConnection, placement_id: str, start: datetime, end: datetime) -> str | None:
    """A note when the window starts at or before the placement's first display: nothing before it
    to train the AI models and the DR reward model on (only random, priority, formulas and the
    logged policy can be estimated)."""
    first = con.sql(f"SELECT min(timestamp) FROM {EVENTS_VIEW} WHERE event_type = 'display' AND placement_id = ?",
                    params=[placement_id]).fetchall()[0][0]
    if first is None or pd.Timestamp(first) >= pd.Timestamp(start):
        span = -(-(pd.Timestamp(end) - pd.Timestamp(first)) // pd.Timedelta(days=1)) if first is not None else 0
        return (f"the evaluation window ({(pd.Timestamp(end) - pd.Timestamp(start)).days} days from "
                f"{pd.Timestamp(start):%Y-%m-%d}) holds the placement's whole log (about {span} days): no events "
                "before it to train the AI models and the DR reward model on; set evaluation.window_days below the "
                "log's span to compare them")
    return None


def evaluate_placement(con: duckdb.DuckDBPyConnection, config: ProjectConfig, placement_id: str,
                       profiles: pd.DataFrame, offers: pd.DataFrame,
                       window: tuple[datetime, datetime] | None = None) -> tuple[Evaluation, PlacementCandidates]:
    """Off-policy estimates of every candidate strategy on one placement."""
    ev = config.evaluation
    start, end = window or evaluation_window(con, [placement_id], ev.window_days)
    candidates = placement_candidates(con, config, placement_id, profiles, offers, start)
    logged = load_logged_displays(con, placement_id, start, end, profiles, placement_offer_set(offers, placement_id))
    result = evaluate(logged, candidates.strategies, reward_matrix(candidates.reward_model, logged),
                      n_bootstrap=ev.bootstrap_samples, confidence=ev.confidence, seed=config.seed,
                      limits=warning_limits(ev))
    note = history_note(con, placement_id, start, end)
    result.warnings.extend(([note] if note else []) + candidates.notes)
    if config.placement(placement_id).items > 1:
        try:
            result.slates = evaluate_placement_slates(con, config, placement_id, profiles, offers, candidates,
                                                      (start, end))
        except ValueError as exc:
            result.slate_note = str(exc)
    return result, candidates


def evaluate_placement_slates(con: duckdb.DuckDBPyConnection, config: ProjectConfig, placement_id: str,
                              profiles: pd.DataFrame, offers: pd.DataFrame, candidates: PlacementCandidates,
                              window: tuple[datetime, datetime]) -> SlateEvaluation:
    """Position-aware estimates of whole slates (expected clicks per decision over the placement's
    slots) for the candidates that can rank a slate; a ValueError says why there are none."""
    ev, placement = config.evaluation, config.placement(placement_id)
    logged = load_logged_slates(con, placement_id, placement.items, *window, profiles,
                                placement_offer_set(offers, placement_id))
    if logged.n == 0:
        dropped = "; ".join(f"{count:,} {reason}" for reason, count in logged.dropped.items())
        raise ValueError("no decisions with a propensity in every slot in the window (first item only)"
                         + (f": {dropped}" if dropped else ""))
    short = logged.short_share()
    if short > 0.5:
        raise ValueError(f"{short:.0%} of the window's {logged.n:,} decisions show fewer offers than the placement's "
                         f"{placement.items} slots allow (a logger of single offers?): no slates to evaluate "
                         "(first item only)")
    strategies = [SlateStrategy(s.name, s.label, s.kind, s.slate) for s in candidates.strategies
                  if s.policy is None or s.slate is not None]
    return evaluate_slates(logged, strategies, reward_matrix(candidates.reward_model, logged),
                           n_bootstrap=ev.bootstrap_samples, confidence=ev.confidence,
                           seed=config.seed, limits=warning_limits(ev))
