"""Models trained on a Dask cluster with `lightgbm.dask`: the personalized click model and the
Customer AI propensity model.

Same examples, time split, weights, features and categorical encoding as
`ranking.fit_click_model` and `propensity.fit_propensity_model`, so the result is a `ClickModel` or
`PropensityModel` that scores like a locally trained one. Two differences, both inherent to
distributed LightGBM and stated here because tests and users compare the two:

* the trees are not identical: each worker builds histograms over its own rows and LightGBM
  merges them over its network, and bagging draws per worker, so predictions and holdout AUC
  differ slightly from the single-process model (the test allows a small AUC tolerance);
* `lightgbm.dask` has no early-stopping callback, so all `n_estimators` rounds are trained while
  recording the validation AUC, and the model keeps the round early stopping would have kept
  (replayed on that curve, patience included).

Dask is imported only here and only when called: the library does not need it otherwise.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd

from offerflow.core.config import LightGBMParams
from offerflow.core.features import categorical_columns, categories_of, feature_matrix
from offerflow.customer_ai.propensity import (EARLY_STOPPING_METRIC, PropensityModel, PropensityTrainingData,
                                  fit_propensity_model)
from offerflow.ranking.click_model import (INTERACTIONS_BY_DEFAULT, IPS_BY_DEFAULT, STOPPING_METRIC, ClickModel,
                                           display_weights, fit_click_model)
from offerflow.ranking.interactions import choose_interaction_base
from offerflow.core.schema import PROFILE_ID

_NOT_FEATURES = {PROFILE_ID, "placement_id", "timestamp", "propensity", "success", "value"}


#: What the MLflow run's `trainer` parameter says about where a click model was trained.
LOCAL_TRAINER, DASK_TRAINER = "lightgbm", "lightgbm.dask"


class ClusterError(RuntimeError):
    """The configured Dask cluster cannot be used; the one-line message says which and why."""


def fit_click_model_with(frame: pd.DataFrame, params: LightGBMParams, qualified_offers: list[str], seed: int,
                         dask_address: str | None = None, connect_timeout: str = "20s",
                         ips: bool = IPS_BY_DEFAULT,
                         interactions: bool = INTERACTIONS_BY_DEFAULT) -> tuple[ClickModel, str]:
    """The click model and the trainer that fitted it: `lightgbm.dask` on the cluster at
    `dask_address` (`compute.dask_address`), else LightGBM in this process. The training path of
    the flows calls this, so the config alone decides where training runs."""
    if dask_address is None:
        return fit_click_model(frame, params, qualified_offers, seed, ips, interactions), LOCAL_TRAINER
    with _client(dask_address, connect_timeout) as client:
        return fit_click_model_on_cluster(frame, params, qualified_offers, seed, client, ips,
                                          interactions), DASK_TRAINER


def fit_propensity_model_with(examples: pd.DataFrame, params: LightGBMParams, seed: int,
                              dask_address: str | None = None,
                              connect_timeout: str = "20s") -> tuple[PropensityModel, str]:
    """A Customer AI model and the trainer that fitted it, as `fit_click_model_with` decides."""
    if dask_address is None:
        return fit_propensity_model(examples, params, seed), LOCAL_TRAINER
    with _client(dask_address, connect_timeout) as client:
        return fit_propensity_model_on_cluster(examples, params, seed, client), DASK_TRAINER


@contextmanager
def _client(dask_address: str, connect_timeout: str) -> Iterator[Any]:
    try:
        from distributed import Client
    except ImportError as exc:  # pragma: no cover - distributed is a dependency
        raise ClusterError(f"compute.dask_address is set but dask.distributed is not installed: {exc}") from exc
    try:
        # The default client while training: lightgbm.dask waits on its futures through it.
        client = Client(dask_address, timeout=connect_timeout)
    except (OSError, TimeoutError) as exc:
        raise ClusterError(f"cannot reach the Dask scheduler at {dask_address}: {str(exc).splitlines()[0]}") from exc
    with client:
        yield client


def _workers(client: Any) -> list[str | None]:
    return sorted(client.scheduler_info(n_workers=-1).get("workers", {})) or [None]


def _spread(client: Any, workers: list[str | None], values: np.ndarray, start: int, stop: int) -> Any:
    """Rows start:stop as a dask array with one block pinned to each of `workers`: every worker
    then holds training AND validation rows, as lightgbm.dask needs for a reliable validation AUC."""
    import dask
    import dask.array as da

    edges = np.linspace(start, stop, len(workers) + 1).astype(int)
    pieces = []
    for worker, a, b in zip(workers, edges[:-1], edges[1:]):
        block = values[a:b]
        future = client.scatter(block, workers=[worker] if worker else None, broadcast=False)
        pieces.append(da.from_delayed(dask.delayed(future), shape=block.shape, dtype=block.dtype))
    return da.concatenate(pieces)


def _dask_classifier(client: Any, params: LightGBMParams, seed: int, **overrides: Any) -> Any:
    from lightgbm.dask import DaskLGBMClassifier

    kwargs = {**params.classifier_kwargs(seed), **overrides}
    kwargs.pop("n_jobs", None)  # each worker uses its own threads
    return DaskLGBMClassifier(client=client, **kwargs)


def _fit_quietly(model: Any, *args: Any, **kwargs: Any) -> None:
    with warnings.catch_warnings():
        # lightgbm.dask warns that it replaces n_jobs by the workers' threads even when n_jobs is unset.
        warnings.filterwarnings("ignore", message="Parameter n_jobs will be ignored", category=UserWarning)
        model.fit(*args, **kwargs)


def _refit_trees(client: Any, params: LightGBMParams, seed: int, rounds: int, spread: Any, matrix: np.ndarray,
                 y: np.ndarray, weights: np.ndarray, rows: int, categorical: list[int], init: np.ndarray) -> Any:
    """`rounds` trees fitted on the workers on rows [0, rows) from the base's logit `init`; local."""
    model = _dask_classifier(client, params, seed, metric=STOPPING_METRIC, n_estimators=max(1, rounds))
    _fit_quietly(model, spread(matrix, 0, rows), spread(y, 0, rows), sample_weight=spread(weights, 0, rows),
                 categorical_feature=categorical, init_score=spread(init, 0, rows))
    return model.to_local()


def _best_round(local: Any, patience: int) -> int:
    """The round LightGBM's early stopping would have kept, replayed on the validation AUC of
    every round: the best so far, once `patience` rounds have passed without a better one (the
    argmax over all rounds would pick a late, lucky round and overfit the validation rows)."""
    aucs = local.evals_result_["valid_0"]["auc"] if local.evals_result_ else []
    if not aucs:
        return local.booster_.current_iteration()
    best = 0
    for i, auc in enumerate(aucs):
        if auc > aucs[best]:
            best = i
        elif i - best >= patience:
            break
    return best + 1


def fit_propensity_model_on_cluster(examples: pd.DataFrame, params: LightGBMParams, seed: int,
                                    client: Any) -> PropensityModel:
    """`fit_propensity_model` with both fits run by `lightgbm.dask` on the workers of `client`:
    all rounds on the training profiles' snapshots with the held-out profiles' AUC recorded (the
    best round stands in for early stopping; the same split as there), then the refit on every
    snapshot with that many trees."""
    data = PropensityTrainingData.of(examples)
    matrix = feature_matrix(examples, data.feature_columns, data.categories)
    y = data.labels
    stop_rows = np.concatenate([np.flatnonzero(data.train), np.flatnonzero(data.valid)])  # validation last
    stop_matrix, stop_y, cut = matrix[stop_rows], y[stop_rows], int(data.train.sum())
    categorical = [j for j, c in enumerate(data.feature_columns) if c in data.categories]
    fit = {"categorical_feature": categorical, "feature_name": data.feature_columns}
    workers = _workers(client)

    def spread(values: np.ndarray, start: int, stop: int) -> Any:
        return _spread(client, workers, values, start, stop)

    # AUC alone (EARLY_STOPPING_METRIC), no class weights: as `fit_propensity_model`.
    stopper = _dask_classifier(client, params, seed, **EARLY_STOPPING_METRIC)
    _fit_quietly(stopper, spread(stop_matrix, 0, cut), spread(stop_y, 0, cut),
                 eval_X=(spread(stop_matrix, cut, len(stop_y)),), eval_y=(spread(stop_y, cut, len(stop_y)),),
                 eval_metric="auc", **fit)
    best = _best_round(stopper.to_local(), params.early_stopping_rounds)
    model = _dask_classifier(client, params, seed, n_estimators=best, **EARLY_STOPPING_METRIC)
    _fit_quietly(model, spread(matrix, 0, len(y)), spread(y, 0, len(y)), **fit)
    return PropensityModel(model.to_local(), data.feature_columns, data.categories)


def fit_click_model_on_cluster(frame: pd.DataFrame, params: LightGBMParams, qualified_offers: list[str],
                               seed: int, client: Any, ips: bool = IPS_BY_DEFAULT,
                               interactions: bool = INTERACTIONS_BY_DEFAULT) -> ClickModel:
    """`fit_click_model` with the training rounds run by `lightgbm.dask.DaskLGBMClassifier` on the
    workers of `client` (a `distributed.Client`); the rows are shipped as float matrices, one block
    of the training and one of the validation rows per worker. The interaction base (a sparse
    logistic regression) is fitted here, in the client's process, and its logit shipped as the
    trees' `init_score`."""
    import lightgbm as lgb

    from offerflow.core.metrics import classification_metrics

    frame = frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
    feature_columns = [c for c in frame.columns if c not in _NOT_FEATURES]
    categories = categories_of(frame, categorical_columns(frame[feature_columns]))
    matrix = feature_matrix(frame, feature_columns, categories)  # LightGBM's own pandas encoding
    categorical = [j for j, c in enumerate(feature_columns) if c in categories]
    n = len(frame)
    cut_train, cut_valid = int(n * 0.7), int(n * 0.8)
    weights = display_weights(frame["propensity"], ips)
    y = frame["success"].to_numpy()
    choice = (choose_interaction_base(matrix, feature_columns, categories, y, weights, cut_train, cut_valid, seed=seed)
              if interactions else None)
    init = {} if choice is None else {"init": choice.base.logit_rows(matrix, feature_columns)}

    workers = _workers(client)

    def spread(values: np.ndarray, start: int, stop: int) -> Any:
        return _spread(client, workers, values, start, stop)

    if init:
        init = {"init_score": spread(init["init"], 0, cut_train),
                "eval_init_score": [spread(init["init"], cut_train, cut_valid)]}
    model = _dask_classifier(client, params, seed, metric=STOPPING_METRIC)  # AUC only, as the local fit
    _fit_quietly(model, spread(matrix, 0, cut_train), spread(y, 0, cut_train),
                 sample_weight=spread(weights, 0, cut_train),
                 eval_X=(spread(matrix, cut_train, cut_valid),), eval_y=(spread(y, cut_train, cut_valid),),
                 eval_sample_weight=[spread(weights, cut_train, cut_valid)], eval_metric=STOPPING_METRIC,
                 categorical_feature=categorical, **init)
    local = model.to_local()
    best = _best_round(local, params.early_stopping_rounds)
    base = None if choice is None else choice.base
    if choice is not None and cut_valid > cut_train:  # as the local fit: both again on train + validation rows
        base = choice.refit(matrix, feature_columns, y, weights, cut_valid)
        local = _refit_trees(client, params, seed, best, spread, matrix, y, weights, cut_valid, categorical,
                             base.logit_rows(matrix, feature_columns))
    # Keep the best round only: the text model (what scoring ships to workers) and predict agree.
    booster = lgb.Booster(model_str=local.booster_.model_to_string(num_iteration=best))
    click_model = ClickModel(booster, feature_columns, categories, qualified_offers, base=base,
                             stopping={"metric": STOPPING_METRIC, "best_iteration": best})
    holdout = frame.iloc[cut_valid:]
    predictions = click_model.predict_pairs(holdout)["p_click"].to_numpy()
    click_model.holdout_metrics = {**classification_metrics(y[cut_valid:], predictions),
                                   "best_iteration": float(best)}
    return click_model
