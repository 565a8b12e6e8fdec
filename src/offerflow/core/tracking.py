"""Experiment tracking and the model registry: the only module that talks to MLflow.

Tracking lives in a SQLite database (`sqlite:///mlflow.db` by default, resolved against the project
directory) and artifacts under `mlruns/`. MLflow >= 3.13 refuses a plain `./mlruns` file store, so
the two are kept apart on purpose. MLflow is imported lazily: importing offerflow stays cheap.

MLflow stores artifact locations as absolute URIs (it resolves a relative one when an experiment
is created), so a copied or moved project's database still points at the original's `mlruns/`.
A `Tracker` on a project's SQLite database re-points them when it opens it (`relocate_artifacts`):
a copy logs into, and loads its models from, its own `mlruns/`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from offerflow.core.mlflow_locations import relocate_artifacts

CHAMPION = "champion"
CHALLENGER = "challenger"
#: Where a registered pyfunc model keeps the LightGBM model it wraps (MLflow's lightgbm format):
#: `<model uri>/artifacts/lightgbm`, what `Tracker.load_lightgbm` reads.
BOOSTER_ARTIFACT = "lightgbm"
#: MLflow's standard tags: a run's parent (nesting), where it came from and which commit it ran.
PARENT_RUN_TAG = "mlflow.parentRunId"
SOURCE_NAME_TAG = "mlflow.source.name"
SOURCE_TYPE_TAG = "mlflow.source.type"
GIT_COMMIT_TAG = "mlflow.source.git.commit"
#: MLflow's experiment kind: the UI opens a model-training experiment on its runs list (with
#: charts and artifacts), not on the GenAI traces overview it shows by default.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
#: The source name of runs started outside a flow (the CLI, a notebook, a test).
DEFAULT_SOURCE = "offerflow"


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


@dataclass(frozen=True)
class DatasetSummary:
    """A dataset a run read, as MLflow records it (`log_input`): where it is, a digest of its
    content, its rows and the time range of its events."""

    name: str
    uri: str
    digest: str
    rows: int
    first: str
    last: str
    version: str  # offerflow's own content version (`core.features.events_fingerprint`)


@dataclass
class ParentRun:
    """The parent MLflow run of a pipeline run; `status` is what it ends with."""

    run_id: str
    status: str = "FINISHED"
    children: list[str] = field(default_factory=list)


def run_stamp(now: datetime | None = None) -> str:
    """The UTC time that makes run names distinct: `20261206-181115`."""
    return f"{(now or datetime.now(timezone.utc)):%Y%m%d-%H%M%S}"


def lineage_tags(source_name: str, parent_run_id: str | None = None) -> dict[str, str]:
    """The tags that tie a step's run to its pipeline run (`mlflow.parentRunId`) and name the
    flow that started it (`mlflow.source.name`, type JOB), for `Tracker.run`'s `tags`."""
    tags = {SOURCE_NAME_TAG: source_name, SOURCE_TYPE_TAG: "JOB"}
    if parent_run_id:
        tags[PARENT_RUN_TAG] = parent_run_id
    return tags


def source_tags(source_name: str = DEFAULT_SOURCE, source_type: str = "LOCAL") -> dict[str, str]:
    """MLflow's `mlflow.source.*` tags: name, type and the git commit of the offerflow checkout
    (left out when the code does not run from a git checkout, e.g. an installed wheel)."""
    from offerflow.core.fingerprints import code_version

    tags = {SOURCE_NAME_TAG: source_name, SOURCE_TYPE_TAG: source_type}
    commit = code_version().removesuffix("+dirty")
    if commit != "unknown":
        tags[GIT_COMMIT_TAG] = commit
    return tags


class Tracker:
    """MLflow tracking for one project: experiments, runs, logged models and registry aliases."""

    def __init__(self, uri: str, artifact_root: Path, project_root: Path | None = None) -> None:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
        # a download bar for each logged model's few files (MLflow re-reads them to check the
        # input example): noise in a terminal, and in every worker's log
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        chosen = logging.getLogger("mlflow").level  # the application's level (the CLI's quiet mode)...
        import mlflow

        if chosen != logging.NOTSET:  # ...which MLflow's first import resets to INFO
            logging.getLogger("mlflow").setLevel(chosen)

        self._mlflow = mlflow
        self.uri = uri
        self.artifact_root = Path(artifact_root).resolve()
        self.artifact_root.mkdir(parents=True, exist_ok=True)
        if uri.startswith(_SQLITE):
            relocate_artifacts(Path(uri[len(_SQLITE):]), self.artifact_root, project_root)
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        self.client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)

    def experiment_id(self, name: str) -> str:
        """Get or create an experiment whose artifacts live under `artifact_root/name`, tagged
        as a model-training experiment for the UI."""
        existing = self.client.get_experiment_by_name(name)
        if existing is not None:
            return existing.experiment_id
        location = (self.artifact_root / name).as_uri()
        return self.client.create_experiment(name, artifact_location=location,
                                             tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})

    @contextmanager
    def run(self, experiment: str, run_name: str, tags: Mapping[str, str] | None = None) -> Iterator[str]:
        """Start a run in `experiment`; yields its run id and ends it (FAILED on exception).

        With `mlflow.parentRunId` in `tags` (`lineage_tags`) the run is a child of that run (a
        pipeline run's step); the `mlflow.source.*` tags default to `source_tags()`.
        """
        mlflow = self._mlflow
        experiment_id = self.experiment_id(experiment)
        tags = {**source_tags(), **(tags or {})}
        parent = tags.pop(PARENT_RUN_TAG, None)
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags,
                              parent_run_id=parent) as active:
            yield active.info.run_id

    @contextmanager
    def parent_run(self, experiment: str, run_name: str, source_name: str,
                   tags: Mapping[str, str] | None = None) -> Iterator[ParentRun]:
        """A pipeline run's parent run in `experiment`, created without making it the active run
        (its steps start their own runs, each a child through `lineage_tags`); it ends FINISHED,
        FAILED on exception, or with the `status` the caller set on the yielded `ParentRun`."""
        tags = {**source_tags(source_name, "JOB"), **(tags or {})}
        created = self.client.create_run(self.experiment_id(experiment), run_name=run_name,
                                         tags={k: _short(v) for k, v in tags.items()})
        parent = ParentRun(created.info.run_id)
        try:
            yield parent
        except BaseException:
            parent.status = "FAILED"
            raise
        finally:
            self.client.set_terminated(parent.run_id, parent.status)

    def log_input(self, dataset: DatasetSummary, context: str, run_id: str | None = None) -> None:
        """Record `dataset` as an input of the active run (or of `run_id`): MLflow's dataset
        entity, with the rows and time range as its profile and `context` as its input tag."""
        from mlflow.entities import DatasetInput, InputTag

        entity = _meta_dataset(dataset)._to_mlflow_entity()
        inputs = [DatasetInput(entity, [InputTag("mlflow.data.context", context)])]
        self.client.log_inputs(run_id or self._mlflow.active_run().info.run_id, datasets=inputs)

    def describe_model(self, name: str, version: str | None, model_description: str,
                       version_description: str) -> None:
        """Descriptions the registry shows: of the registered model and of one of its versions."""
        self.client.update_registered_model(name, description=model_description)
        if version is not None:
            self.client.update_model_version(name, version, description=version_description)

    def child_runs(self, parent_run_id: str) -> list[Any]:
        """Every run whose parent is `parent_run_id`, in any experiment (MLflow run objects)."""
        experiments = [e.experiment_id for e in self.client.search_experiments()]
        return self.client.search_runs(experiments, filter_string=f"tags.`{PARENT_RUN_TAG}` = '{parent_run_id}'")

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
            # explicit requirements: left out, MLflow infers them by loading the model in a
            # subprocess, 6-12 s per logged model here
            mlflow.lightgbm.save_model(booster, booster_dir, pip_requirements=pip_requirements)
            with _registration_notes_hidden():
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

    def latest_run(self, experiment: str, tags: Mapping[str, str] | None = None) -> dict[str, Any] | None:
        """The most recent finished run of an experiment (with these `tags`, if given): id, start
        time (UTC ISO), metrics, params and tags; None if the experiment has no such run."""
        existing = self.client.get_experiment_by_name(experiment)
        if existing is None:
            return None
        having = "".join(f" and tags.`{k}` = '{v}'" for k, v in (tags or {}).items())
        runs = self.client.search_runs([existing.experiment_id], filter_string="attributes.status = 'FINISHED'" + having,
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


_SQLITE = "sqlite:///"
class _NotePickle(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "serialized using CloudPickle" not in record.getMessage()


_notes = {"lock": threading.Lock(), "depth": 0, "saved": None}


@contextmanager
def _registration_notes_hidden() -> Iterator[None]:
    """Around logging and registering a model, when the "mlflow" logger is above INFO (the CLI's
    quiet mode): MLflow prints "Successfully registered model ..." and "Created version ..."
    with `print`, past its logger's level, and notes that a Python object is pickled (ours are
    our own predictors). Its other warnings still reach stderr (through a handler of its own
    while this lasts); at INFO (--verbose) everything shows. Re-entrant across threads: flows log
    models concurrently."""
    from mlflow.utils import logging_utils

    logger = logging.getLogger("mlflow")
    if logger.getEffectiveLevel() <= logging.INFO:
        yield
        return
    with _notes["lock"]:
        if _notes["depth"] == 0:
            direct = logging.StreamHandler(sys.stderr)
            direct.setFormatter(logger.handlers[0].formatter if logger.handlers else None)
            direct.addFilter(_NotePickle())
            _notes["saved"] = (logger.handlers, logging_utils.MLFLOW_LOGGING_STREAM.enabled)
            logger.handlers = [direct]
            logging_utils.disable_logging()
        _notes["depth"] += 1
    try:
        yield
    finally:
        with _notes["lock"]:
            _notes["depth"] -= 1
            if _notes["depth"] == 0:
                logger.handlers, enabled = _notes["saved"]
                if enabled:
                    logging_utils.enable_logging()


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


def _meta_dataset(dataset: DatasetSummary) -> Any:
    """An MLflow `MetaDataset` (metadata only: the snapshot stays where it is) whose profile says
    its rows, time range and offerflow content version."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    class SnapshotDataset(MetaDataset):
        @property
        def profile(self) -> Any:
            return {"num_rows": dataset.rows, "first_event": dataset.first, "last_event": dataset.last,
                    "offerflow_version": dataset.version}

        def to_dict(self) -> dict[str, str]:  # MetaDataset leaves the profile out of what is logged
            return {**super().to_dict(), "profile": json.dumps(self.profile)}

    with warnings.catch_warnings():  # MLflow registers its local-file source twice
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted", category=UserWarning)
        source = resolve_dataset_source(dataset.uri)
    return SnapshotDataset(source, name=dataset.name, digest=dataset.digest)


def _pyfunc_model(predictor: Any) -> Any:
    """An `mlflow.pyfunc.PythonModel` whose `predict(df)` is `predictor(df)`. Defined here, not at
    import, so importing offerflow does not import MLflow (cloudpickle stores the class by value)."""
    import mlflow.pyfunc
    import pandas as pd

    def predict(self, context, model_input, params=None):  # noqa: ANN001 (MLflow's signature)
        return self.predictor(model_input)

    # The input's type, as the class itself (this module's annotations are strings): MLflow checks
    # it when the class is made, infers nothing from a DataFrame (the signature is given), and
    # without one warns on every logged model that `predict` has no type hints.
    predict.__annotations__ = {"model_input": pd.DataFrame}

    def __init__(self, predictor: Any) -> None:  # noqa: N807
        self.predictor = predictor

    FramePredictor = type("FramePredictor", (mlflow.pyfunc.PythonModel,), {"__init__": __init__, "predict": predict})
    return FramePredictor(predictor)


def _short(value: Any, limit: int = 5000) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
