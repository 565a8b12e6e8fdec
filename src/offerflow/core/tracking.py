"""Experiment tracking and the model registry: the only module that talks to MLflow.

Tracking lives in a SQLite database (`sqlite:///mlflow.db` by default, resolved against the project
directory) and artifacts under `mlruns/`. MLflow >= 3.13 refuses a plain `./mlruns` file store, so
the two are kept apart on purpose. MLflow is imported lazily: importing offerflow stays cheap.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

CHAMPION = "champion"
CHALLENGER = "challenger"
#: Where a registered pyfunc model keeps the LightGBM model it wraps (MLflow's lightgbm format):
#: `<model uri>/artifacts/lightgbm`, what `Tracker.load_lightgbm` reads.
BOOSTER_ARTIFACT = "lightgbm"


def resolve_tracking_uri(uri: str, root: Path) -> str:
    """Make a relative `sqlite:///file.db` URI absolute against the project root."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str((root / uri[len(prefix):]).resolve())
    return uri


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    experiment_id: str
    model_uri: str | None = None
    model_version: str | None = None


class Tracker:
    """MLflow tracking for one project: experiments, runs, logged models and registry aliases."""

    def __init__(self, uri: str, artifact_root: Path) -> None:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
        import mlflow

        self._mlflow = mlflow
        self.uri = uri
        self.artifact_root = Path(artifact_root).resolve()
        self.artifact_root.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        self.client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)

    def experiment_id(self, name: str) -> str:
        """Get or create an experiment whose artifacts live under `artifact_root/name`."""
        existing = self.client.get_experiment_by_name(name)
        if existing is not None:
            return existing.experiment_id
        location = (self.artifact_root / name).as_uri()
        return self.client.create_experiment(name, artifact_location=location)

    @contextmanager
    def run(self, experiment: str, run_name: str, tags: Mapping[str, str] | None = None) -> Iterator[str]:
        """Start a run in `experiment`; yields its run id and ends it (FAILED on exception)."""
        mlflow = self._mlflow
        experiment_id = self.experiment_id(experiment)
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name,
                              tags=dict(tags or {})) as active:
            yield active.info.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._mlflow.log_params({k: _short(v) for k, v in params.items()})

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        self._mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._mlflow.set_tags({k: _short(v) for k, v in tags.items()})

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        self._mlflow.log_dict(dict(data), artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._mlflow.log_text(text, artifact_file)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        self._mlflow.log_figure(figure, artifact_file)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Copy a local file (e.g. an HTML report) into the active run's artifacts."""
        self._mlflow.log_artifact(str(path), artifact_path)

    def log_pyfunc(self, booster: Any, predictor: Any, registered_name: str | None, input_example: Any,
                   pip_requirements: list[str], code_package: Path) -> RunRecord:
        """Log `predictor` (a picklable callable: feature frame -> frame of predictions) as an MLflow
        pyfunc model in the active run and register it under `registered_name`.

        The LightGBM model it wraps is saved beside it (`BOOSTER_ARTIFACT`, for `load_lightgbm`);
        the signature is inferred from `input_example` (a few rows of the training frame) and its
        prediction. `code_package` (the offerflow package directory) is copied into the model
        (`code_paths`) so that `mlflow.pyfunc.load_model` needs only MLflow and `pip_requirements`.
        """
        mlflow = self._mlflow
        import mlflow.lightgbm
        import mlflow.pyfunc

        import pandas as pd

        # Plain object column labels: MLflow compares them with a `range`, which pandas 3 deprecates
        # for its Arrow-backed string labels (a Pandas4Warning per logged model).
        input_example = input_example.set_axis(pd.Index(list(input_example.columns), dtype=object), axis=1)
        signature = _numbers_of_any_width(input_example, predictor(input_example))
        with tempfile.TemporaryDirectory(prefix="offerflow-model-") as tmp:
            booster_dir = str(Path(tmp) / BOOSTER_ARTIFACT)
            mlflow.lightgbm.save_model(booster, booster_dir)
            info = mlflow.pyfunc.log_model(name="model", python_model=_pyfunc_model(predictor),
                                           artifacts={BOOSTER_ARTIFACT: booster_dir}, signature=signature,
                                           input_example=input_example, pip_requirements=pip_requirements,
                                           code_paths=[str(code_package)], registered_model_name=registered_name)
        run = mlflow.active_run()
        version = getattr(info, "registered_model_version", None)
        return RunRecord(run.info.run_id, run.info.experiment_id, info.model_uri,
                         str(version) if version is not None else None)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(name, alias, version)

    def alias_version(self, name: str, alias: str) -> str | None:
        """The version behind `models:/name@alias`, or None if the alias is not set."""
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            return None

    def latest_run(self, experiment: str) -> dict[str, Any] | None:
        """The most recent finished run of an experiment: id, start time (UTC ISO), metrics, params
        and tags; None if the experiment has no finished run."""
        existing = self.client.get_experiment_by_name(experiment)
        if existing is None:
            return None
        runs = self.client.search_runs([existing.experiment_id], filter_string="attributes.status = 'FINISHED'",
                                       order_by=["attributes.start_time DESC"], max_results=1)
        if not runs:
            return None
        run = runs[0]
        started = datetime.fromtimestamp(run.info.start_time / 1000, tz=timezone.utc).isoformat(timespec="seconds")
        return {"run_id": run.info.run_id, "started": started, "metrics": dict(run.data.metrics),
                "params": dict(run.data.params), "tags": dict(run.data.tags)}

    def run_metrics(self, run_id: str) -> dict[str, float]:
        return dict(self.client.get_run(run_id).data.metrics)

    def run_params(self, run_id: str) -> dict[str, str]:
        return dict(self.client.get_run(run_id).data.params)

    def version_run_id(self, name: str, version: str) -> str:
        return str(self.client.get_model_version(name, version).run_id)

    def set_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self.client.set_model_version_tag(name, version, key, _short(value))

    def load_run_dict(self, run_id: str, artifact_file: str) -> dict[str, Any]:
        import mlflow.artifacts

        return mlflow.artifacts.load_dict(f"runs:/{run_id}/{artifact_file}")

    def load_lightgbm(self, model_uri: str) -> Any:
        """The LightGBM model of a registered version: the one a pyfunc version wraps
        (`log_pyfunc`), or the version itself when it was logged as a plain LightGBM model."""
        import mlflow.lightgbm
        from mlflow.exceptions import MlflowException

        try:
            return mlflow.lightgbm.load_model(f"{model_uri}/artifacts/{BOOSTER_ARTIFACT}")
        except MlflowException:
            return mlflow.lightgbm.load_model(model_uri)

    def model_versions(self, name: str) -> list[str]:
        """Every version of a registered model, oldest first ([] if the model does not exist)."""
        versions = self.client.search_model_versions(f"name = '{name}'")
        return sorted((str(v.version) for v in versions), key=int)

    def set_run_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        """Tag a finished run (e.g. the training run of a version promoted by hand)."""
        for key, value in tags.items():
            self.client.set_tag(run_id, key, _short(value))


def pinned_requirements(packages: list[str]) -> list[str]:
    """`name==installed version` for each distribution (the requirements a logged model states)."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in packages]


def _numbers_of_any_width(example: Any, output: Any) -> Any:
    """The signature of `example` -> `output`, its numeric input columns typed `Any`.

    A feature column's dtype follows the data, not the model: a count is int64 in one frame and
    float64 in another (a profile without history, then filled with 0), and MLflow's schema
    enforcement converts neither way (int64 -> double is "unsafe"). The model converts every
    feature itself (`core.features.feature_matrix`), so the signature names the columns and keeps
    the types of strings and booleans only; MLflow's integer hint is moot then.
    """
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import DataType
    from mlflow.types.schema import AnyType, ColSpec, Schema

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer", category=UserWarning)
        signature = infer_signature(example, output)
    numbers = (DataType.integer, DataType.long, DataType.float, DataType.double)
    columns = [ColSpec(AnyType(), c.name, c.required) if c.type in numbers else c for c in signature.inputs.inputs]
    return ModelSignature(inputs=Schema(columns), outputs=signature.outputs)


def _pyfunc_model(predictor: Any) -> Any:
    """An `mlflow.pyfunc.PythonModel` whose `predict(df)` is `predictor(df)`. Defined here, not at
    import, so importing offerflow does not import MLflow (cloudpickle stores the class by value)."""
    import mlflow.pyfunc

    class FramePredictor(mlflow.pyfunc.PythonModel):
        def __init__(self, predictor: Any) -> None:
            self.predictor = predictor

        def predict(self, context, model_input, params=None):  # noqa: ANN001 (MLflow's signature)
            return self.predictor(model_input)

    return FramePredictor(predictor)


def _short(value: Any, limit: int = 5000) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
