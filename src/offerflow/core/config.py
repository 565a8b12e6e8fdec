"""The project file `offerflow.yaml`, as one typed, validated object.

Load it once at the entry point (`load_config`) and pass down only the part a function needs.
Every error names the file and the location inside it, e.g.
``offerflow.yaml: ai_models[1].placements[0]: unknown placement 'push-hero'``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from offerflow.core.config_errors import error_lines
from offerflow.core.notifications import NotificationsConfig
from offerflow.core.settings import (CacheConfig, CapsConfig, SamplingConfig, StoreConfig, TrackingConfig,
                                     ValidationConfig)

if TYPE_CHECKING:
    from offerflow.core.paths import ProjectPaths

CHANNELS = ("email", "push", "web", "in_app", "sms")
#: Interaction event types the ranking models learn from; any other string is an experience event.
INTERACTION_EVENT_TYPES = ("display", "click")


class ConfigError(ValueError):
    """A project file that cannot be used; the message says where and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    """Where the input datasets live (relative paths are relative to the project file)."""

    events: Path = Path("data/events.parquet")
    profiles: Path = Path("data/profiles.parquet")
    offers: Path = Path("data/offers.yaml")
    quarantine_dir: Path = Path("data/quarantine")
    outputs_dir: Path = Path("data/outputs")
    #: Validate the displays offerflow logged (`<outputs>/decision_log`) with the events, so clicks
    #: naming a decision join their display and the models learn from what was served; a logged
    #: display whose event id is in `events` too is read once. Off when the events export carries
    #: the displays shown under other event ids (they would count twice).
    decision_log_displays: bool = True


class RankingMethod(_Strict):
    """How a placement orders its eligible offers: by priority, a formula, or an AI model."""

    method: Literal["priority", "formula", "ai_model"] = "priority"
    formula: str | None = None
    #: The AI model ranking the placement (method ai_model), or, with a formula, the personalized
    #: model whose score the formula reads as `ai_score`.
    ai_model: str | None = None

    @model_validator(mode="after")
    def _method_has_its_argument(self) -> "RankingMethod":
        if self.method == "formula" and not self.formula:
            raise ValueError("method 'formula' needs a 'formula' expression")
        if self.method == "ai_model" and not self.ai_model:
            raise ValueError("method 'ai_model' needs the name of an 'ai_model'")
        return self


class PlacementConfig(_Strict):
    id: str = Field(min_length=1)
    channel: Literal["email", "push", "web", "in_app", "sms"]
    items: int = Field(1, ge=1, le=30, description="How many offers a decision returns.")
    ranking: RankingMethod = RankingMethod()


class LightGBMParams(_Strict):
    num_leaves: int = Field(31, ge=2)
    learning_rate: float = Field(0.05, gt=0, le=1)
    n_estimators: int = Field(400, ge=1)
    min_child_samples: int = Field(50, ge=1)
    early_stopping_rounds: int = Field(30, ge=1)
    subsample: float = Field(0.8, gt=0, le=1)
    colsample_bytree: float = Field(0.8, gt=0, le=1)
    num_threads: int = Field(0, ge=0, description="0 = all cores")

    def classifier_kwargs(self, seed: int) -> dict[str, object]:
        """Arguments for `lightgbm.LGBMClassifier`: these settings, deterministic and quiet."""
        return dict(n_estimators=self.n_estimators, learning_rate=self.learning_rate, num_leaves=self.num_leaves,
                    min_child_samples=self.min_child_samples, subsample=self.subsample, subsample_freq=1,
                    colsample_bytree=self.colsample_bytree, n_jobs=self.num_threads or None, random_state=seed,
                    deterministic=True, force_row_wise=True, verbose=-1)


#: Defaults that depend on the model type (what the hosted systems users know do, shared/DOMAIN.md):
#: auto-optimization qualifies an offer after 100 displays and 5 successes; personalized
#: optimization after 250 displays and 25 successes in 30 days. docs/ranking-models.md states the
#: same numbers (a test reads both). Auto-optimization learns from 28 days (the hosted systems'
#: 14 forgot what separates close offers on a 60-offer, 2-4% click-rate catalog) with posteriors
#: sharpened 2x: closer to the best single offer on the external benchmark world's feeds, no worse
#: on offerflow.world, tuning seeds 1 and 3 (docs/ranking-models.md, "Ranking quality").
#: A personalized click model grows small trees by default (7 leaves, at least 200 displays a leaf):
#: on both benchmark worlds and every tuning seed its first choice came closer to the oracle's than
#: with the 31-leaf default (docs/ranking-models.md, "Ranking quality").
AI_MODEL_TYPE_DEFAULTS: dict[str, dict[str, Any]] = {
    "auto_optimization": {"training_window_days": 28, "min_displays": 100, "min_successes": 5,
                          "posterior_sharpening": 2.0},
    "personalized": {"training_window_days": 30, "min_displays": 250, "min_successes": 25,
                     "posterior_sharpening": 1.0,
                     "lightgbm": {"num_leaves": 7, "min_child_samples": 200}},
}


class AIModelConfig(_Strict):
    """A named offer-ranking model that one or more placements use."""

    name: str = Field(min_length=1)
    description: str = ""
    type: Literal["auto_optimization", "personalized"]
    placements: list[str] = Field(min_length=1)
    success_event: Literal["click"] | str = "click"
    value_weighted: bool = False
    #: Window and qualification thresholds; unset, they take the type's defaults (AI_MODEL_TYPE_DEFAULTS).
    training_window_days: int = Field(14, ge=1)
    min_displays: int = Field(100, ge=0)
    min_successes: int = Field(5, ge=0)
    pool_placements: bool = Field(False, description=(
        "Auto-optimization with several placements: false (default) learns one posterior table per"
        " placement from that placement's displays; true pools the displays of all its placements"
        " into one table that every placement serves."))
    exploration_share: float = Field(0.10, ge=0, le=1)
    new_offers: Literal["empirical_bayes", "exploration_share"] = Field("empirical_bayes", description=(
        "Auto-optimization: how offers with little data are served. empirical_bayes (default): Thompson"
        " sampling ranks every offer from its first display, each posterior starting from a Beta prior"
        " fitted to the placement's offers, so a new offer is tried in proportion to its chance of being"
        " the best (min_displays and min_successes only label offers as qualified, and there is no"
        " separate exploration traffic). exploration_share: the hosted systems' rule: an offer is served by the model only"
        " once it has min_displays displays and min_successes successes, before that by the"
        " exploration share of traffic; fewer than two qualified offers: random serving."))
    posterior_sharpening: float = Field(1.0, ge=1, le=10, description=(
        "Auto-optimization: each display counts this many times in an offer's Beta posterior (the fitted"
        " prior once), so Thompson sampling concentrates on the best offers sooner; 1 = the plain"
        " posterior. Too high locks onto an offer that was unlucky early (3 did on the benchmark)."))
    sampling: SamplingConfig = Field(SamplingConfig(), description=(
        "Auto-optimization: the rule that orders a decision's offers from the posteriors (thompson, top_two)."))
    max_training_displays: int | None = Field(
        2_000_000, ge=1_000, description="A personalized model trains on the displays of a stable hash sample of"
        " profiles holding about this many displays; null: every display.")
    holdout_share: float = Field(0.10, ge=0, lt=1, description=(
        "Share of the model's decisions served a uniformly random order of the eligible offers "
        "(arm 'holdout' in the decision metadata), to measure the model's lift."))
    ips_weighting: bool = Field(False, description=(
        "Personalized: weight each training display by its inverse logging propensity (clipped). Off by"
        " default: unweighted fits were as good or better on every benchmark world (docs/ranking-models.md)."))
    interaction_base: bool = Field(True, description=(
        "Personalized: grow the trees on a pairwise profile x offer interaction base (an L2 logistic"
        " regression over one-hot profile levels x offer levels, numeric columns in quantile bins)."
        " On by default: it brought the first choice closer to the oracle on both benchmark worlds"
        " (docs/ranking-models.md)."))
    status: Literal["active", "draft"] = "active"
    lightgbm: LightGBMParams = LightGBMParams()

    @property
    def samples_every_offer(self) -> bool:
        """Auto-optimization with `new_offers: empirical_bayes`: Thompson sampling over every offer,
        from posteriors with a fitted prior (no qualification gate, no exploration traffic)."""
        return self.type == "auto_optimization" and self.new_offers == "empirical_bayes"

    @model_validator(mode="before")
    @classmethod
    def _type_defaults(cls, data: Any) -> Any:
        """Fill the window and thresholds the file leaves out with the model type's defaults."""
        if isinstance(data, dict) and data.get("type") in AI_MODEL_TYPE_DEFAULTS:
            defaults = AI_MODEL_TYPE_DEFAULTS[data["type"]]
            merged = {**defaults, **data}
            if isinstance(defaults.get("lightgbm"), dict) and isinstance(data.get("lightgbm"), dict):
                merged["lightgbm"] = {**defaults["lightgbm"], **data["lightgbm"]}  # per setting, not whole
            data = merged
        return data


class GoalCondition(_Strict):
    """One condition on an event field, e.g. ``event_type == purchase`` or ``value > 20``."""

    field: str
    operator: Literal["==", "!=", ">", ">=", "<", "<=", "in", "not_in"] = "=="
    value: Any


class GoalDefinition(_Strict):
    all_of: list[GoalCondition] = Field(default_factory=list)
    any_of: list[GoalCondition] = Field(default_factory=list)
    occurrence: Literal["will_occur", "will_not_occur"] = "will_occur"

    @model_validator(mode="after")
    def _has_conditions(self) -> "GoalDefinition":
        if not self.all_of and not self.any_of:
            raise ValueError("a goal needs at least one condition in 'all_of' or 'any_of'")
        return self


class ScoreBuckets(_Strict):
    """Where a score (0-100) turns from low to medium and from medium to high."""

    medium_from: float = Field(25.0, gt=0, lt=100)
    high_from: float = Field(75.0, gt=0, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> "ScoreBuckets":
        if self.medium_from >= self.high_from:
            raise ValueError(f"medium_from ({self.medium_from:g}) must be below high_from ({self.high_from:g})")
        return self


class PropensityGoalConfig(_Strict):
    """A Customer AI instance: who will convert (or churn) within N days."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    type: Literal["conversion", "churn"] = "conversion"
    goal: GoalDefinition
    buckets: ScoreBuckets = ScoreBuckets()
    top_factors: int = Field(3, ge=1, le=20, description="Influential factors kept per profile.")
    promotion_min_auc_gain: float = Field(0.0, ge=0, le=1,
                                          description="AUC a new model must add over the champion on the same holdout.")

    @model_validator(mode="before")
    @classmethod
    def _churn_means_will_not_occur(cls, data: Any) -> Any:
        """A churn goal predicts that the goal events stop: 'will not occur' unless said otherwise."""
        if isinstance(data, dict) and data.get("type") == "churn" and isinstance(data.get("goal"), dict):
            data = {**data, "goal": {"occurrence": "will_not_occur", **data["goal"]}}
        return data
    outcome_window_days: int = Field(30, ge=1, le=365)
    eligible_active_within_days: int | None = Field(None, ge=1, description=(
        "Opt-in activity filter: only profiles with an event in these many days before the cut-off are"
        " eligible (trained on and scored); null (default): every profile with any event before it."))
    lookback_days: list[int] = Field(default_factory=lambda: [7, 30, 90, 365], min_length=1, description=(
        "Windows of the count / value / active-day / rate features, next to the whole-history ones"
        " (docs/customer-ai.md says why these)."))
    custom_event_types: list[str] = Field(default_factory=list)
    profile_attributes: list[str] | None = None
    min_positives: int = Field(500, ge=1)
    min_negatives: int = Field(500, ge=1)
    max_training_profiles: int | None = Field(
        250_000, ge=1_000, description="Training and holdout examples come from a stable hash sample of at most"
        " this many profiles (every profile is still scored); null: all profiles.")
    poor_auc: float = Field(0.65, gt=0.5, lt=1)
    bgnbd_features: bool = Field(False, description=(
        "Opt-in: add BG/NBD's P(alive), expected goal events in the window and P(at least one), fitted by"
        " maximum likelihood at each cut-off on the goal event's history (offerflow.customer_ai.bgnbd). Off by default:"
        " on the benchmarks it moved the holdout AUC by noise only (docs/customer-ai.md)."))
    lightgbm: LightGBMParams = LightGBMParams()


class ComputeConfig(_Strict):
    """Where scoring runs. Without a Dask address everything runs in this process; with one,
    score-and-publish ranks its partitions as Prefect tasks on that cluster and personalized click
    models train with lightgbm.dask (see docs/scaling.md)."""

    dask_address: str | None = Field(None, description="Dask scheduler, e.g. tcp://10.0.0.5:8786.")
    partitions: int | Literal["auto"] = Field("auto", description=(
        "Profile hash partitions scored one at a time (in-process) or in parallel (Dask); 1 = one table;"
        " auto = enough that none holds more than max_partition_profiles (1 for small projects)."))
    max_partition_profiles: int = Field(250_000, ge=1_000, description=(
        "With partitions: auto, the most profiles one partition holds (bounds scoring memory)."))

    @field_validator("partitions", mode="before")
    @classmethod
    def _partitions_in_range(cls, value: Any) -> Any:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 4096):
            return value
        raise ValueError(f"must be 'auto' or an integer from 1 to 4096, got {value!r}")

    def partitions_for(self, profiles: int) -> int:
        """The number of partitions for `profiles` profiles: the configured number, or with `auto`
        the fewest that keep every partition at most `max_partition_profiles` (at least 1)."""
        if self.partitions != "auto":
            return int(self.partitions)
        return max(1, min(4096, -(-int(profiles) // self.max_partition_profiles)))


class EvaluationConfig(_Strict):
    """Off-policy evaluation and holdout reports (`offerflow evaluate`, see docs/evaluation.md)."""

    window_days: int = Field(7, ge=1, description="Evaluate on the last N days; learn only from before.")
    reward_model_days: int = Field(30, ge=1, description="Days before the window the DR reward model learns from.")
    reward_model: LightGBMParams = LightGBMParams()
    bootstrap_samples: int = Field(500, ge=50)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    headline_estimator: Literal["ips", "snips", "dr"] = "dr"
    baseline_strategy: str = Field("priority", description="What the summary compares against.")
    formulas: dict[str, str] = Field(default_factory=dict, description="Extra ranking formulas to compare.")
    min_ess: float = Field(200.0, ge=0)
    min_propensity: float = Field(0.01, ge=0, lt=1)
    min_clicks: int = Field(30, ge=0, description=(
        "Fewer clicks in the window, or carrying a strategy's estimate: a warning, and no serving switch."))
    promotion_min_lift: float = Field(0.0, description="Lift CI lower end a candidate must exceed to be served.")
    report_dir: Path | None = Field(None, description="Where reports go; default <data.outputs_dir>/evaluation.")


class ProjectConfig(_Strict):
    project: str = "offerflow"
    seed: int = 7
    data: DataConfig = DataConfig()
    placements: list[PlacementConfig] = Field(min_length=1)
    ai_models: list[AIModelConfig] = Field(default_factory=list)
    propensity_goals: list[PropensityGoalConfig] = Field(default_factory=list)
    tracking: TrackingConfig = TrackingConfig()
    store: StoreConfig = StoreConfig()
    caps: CapsConfig = CapsConfig()
    compute: ComputeConfig = ComputeConfig()
    validation: ValidationConfig = ValidationConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    cache: CacheConfig = CacheConfig()
    strict: bool = Field(False, description="Formulas/rules that rank nothing are errors, not warnings.")
    notifications: NotificationsConfig = NotificationsConfig()
    #: Directory the relative paths are resolved against (set by `load_config`).
    root: Path = Path(".")

    @field_validator("placements")
    @classmethod
    def _unique_placements(cls, value: list[PlacementConfig]) -> list[PlacementConfig]:
        _check_unique([p.id for p in value], "placement id")
        return value

    @field_validator("ai_models")
    @classmethod
    def _unique_models(cls, value: list[AIModelConfig]) -> list[AIModelConfig]:
        _check_unique([m.name for m in value], "ai_model name")
        return value

    @field_validator("propensity_goals")
    @classmethod
    def _unique_goals(cls, value: list[PropensityGoalConfig]) -> list[PropensityGoalConfig]:
        _check_unique([g.name for g in value], "propensity goal name")
        return value

    def placement(self, placement_id: str) -> PlacementConfig:
        for placement in self.placements:
            if placement.id == placement_id:
                return placement
        known = ", ".join(p.id for p in self.placements)
        raise KeyError(f"unknown placement {placement_id!r} (known: {known})")

    def ai_model(self, name: str) -> AIModelConfig:
        for model in self.ai_models:
            if model.name == name:
                return model
        raise KeyError(f"unknown AI model {name!r}")

    def placements_ranked_by(self, model_name: str, formulas: bool = True) -> list[PlacementConfig]:
        """The placements a new version of an AI model changes: those it ranks (`method: ai_model`)
        and, with `formulas`, those whose formula reads its `ai_score`."""
        return [p for p in self.placements if p.ranking.ai_model == model_name
                and (formulas or p.ranking.method == "ai_model")]

    def goal(self, name: str) -> PropensityGoalConfig:
        for goal in self.propensity_goals:
            if goal.name == name:
                return goal
        defined = ", ".join(g.name for g in self.propensity_goals) or "none"
        raise KeyError(f"unknown propensity goal {name!r} (defined: {defined})")

    def path(self, relative: Path) -> Path:
        """A configured path, resolved against the project file's directory."""
        return relative if relative.is_absolute() else self.root / relative

    @property
    def paths(self) -> ProjectPaths:
        """Every file and folder of the project, absolute (`offerflow.core.paths`); a few path joins,
        so it is not cached (a `model_copy` of the config never carries stale paths)."""
        from offerflow.core.paths import ProjectPaths

        return ProjectPaths.of(self)


def _check_unique(values: list[str], what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"duplicate {what} {value!r}")
        seen.add(value)


def _cross_check(raw: dict[str, Any], config: ProjectConfig) -> list[str]:
    """References between sections: every name used must be defined."""
    problems = []
    placement_ids = {p.id for p in config.placements}
    model_names = {m.name for m in config.ai_models}
    for i, model in enumerate(config.ai_models):
        for j, placement in enumerate(model.placements):
            if placement not in placement_ids:
                problems.append(f"ai_models[{i}].placements[{j}]: unknown placement {placement!r}")
    for i, placement in enumerate(config.placements):
        ranking = placement.ranking
        if ranking.ai_model is not None and ranking.ai_model not in model_names:
            problems.append(
                f"placements[{i}].ranking.ai_model: unknown AI model {ranking.ai_model!r}"
                f" (defined: {', '.join(sorted(model_names)) or 'none'})"
            )
        if ranking.method == "formula" and ranking.ai_model in model_names \
                and config.ai_model(ranking.ai_model).type != "personalized":
            problems.append(f"placements[{i}].ranking.ai_model: a formula reads `ai_score` from a personalized"
                            f" model; {ranking.ai_model!r} is {config.ai_model(ranking.ai_model).type}")
        if ranking.ai_model is not None and ranking.ai_model in model_names:
            if placement.id not in config.ai_model(ranking.ai_model).placements:
                problems.append(
                    f"placements[{i}].ranking.ai_model: AI model {ranking.ai_model!r} does not"
                    f" list placement {placement.id!r} in its placements"
                )
    return problems


def parse_config(raw: Any, *, source: str = "offerflow.yaml", root: Path = Path(".")) -> ProjectConfig:
    """Validate a parsed project file; raise `ConfigError` with located messages."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        config = ProjectConfig.model_validate({**raw, "root": root})
    except ValidationError as exc:
        raise ConfigError("\n".join(error_lines(exc.errors(), source))) from None
    problems = _cross_check(raw, config)
    if problems:
        raise ConfigError("\n".join(f"{source}: {p}" for p in problems))
    return config


#: The safe YAML loader, libyaml's when PyYAML has it (several times faster on the project and catalog files).
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_config(path: str | Path) -> ProjectConfig:
    """Read and validate `offerflow.yaml`; relative paths resolve against its directory. Pure: the
    result is what the file says. What each placement serves after an evaluation switched it is
    `offerflow.decisioning.switches.load_serving_config`, which the callers that serve use."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: project file not found")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=YAML_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: {where}invalid YAML: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    return parse_config(raw, source=path.name, root=path.parent.resolve())
