"""Task caching keyed on input data fingerprints, with Prefect 3's own cache machinery.

Re-running a flow on unchanged data skips its expensive tasks (validation, training, scoring and
publishing) and produces the same outputs: such a task ends in the `Cached` state with the result
of the earlier run. Each cached task declares what its result depends on with an
`InputFingerprints` cache policy: the files it reads by content, the frames it is given by
content, the config sections it reads. The key adds the task name, the project directory and the
code version (every `.py` file of the library and of `flows/`), so editing code, changing data or
changing a setting reruns exactly the tasks it concerns.

Results are persisted (pickled) inside the project, in `cache.path` (default
`<data.outputs_dir>/task_cache`), never in `~/.prefect`. `cache.enabled: false` in the project
file, `offerflow run --no-cache` or the flows' `use_cache=False` parameter turn it off.

A cached result is trusted only while what the task wrote is still there: `call` recomputes
(`refresh_cache`) when `intact(result)` says otherwise, e.g. a later run validated other events,
or a ranking table was rolled back since it was published.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from prefect import Task, get_run_logger
from prefect.cache_policies import NO_CACHE, CachePolicy
from prefect.context import TaskRunContext
from prefect.states import State

import offerflow
from offerflow.core.config import ProjectConfig
from offerflow.core.fingerprints import FileFingerprints, digest, source_fingerprint

CACHED = "Cached"
_CODE_DIRS = (Path(offerflow.__file__).resolve().parent,)  # the library and its flows

#: What a task's result depends on: (task inputs, file fingerprints) -> named fingerprints.
DependsOn = Callable[[dict[str, Any], FileFingerprints], dict[str, Any]]


def cache_dir(config: ProjectConfig) -> Path:
    return config.paths.task_cache


def code_version() -> str:
    return f"{offerflow.__version__}:{source_fingerprint(_CODE_DIRS)}"


@dataclass(kw_only=True)
class InputFingerprints(CachePolicy):
    """Cache key: a digest of the task name, the project, the code version and `depends_on(inputs)`.
    The task must take the project's `config` as a parameter."""

    depends_on: Optional[DependsOn] = None

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> Optional[str]:
        config: ProjectConfig = inputs["config"]
        files = FileFingerprints(cache_dir(config) / "fingerprints.json")
        parts = self.depends_on(inputs, files) if self.depends_on else {}
        return digest({"task": task_ctx.task.name, "project": str(config.root), "code": code_version(), **parts})


def in_project(task: Task, config: ProjectConfig, use_cache: bool = True) -> Task:
    """`task` with its results persisted in the project's cache directory, or with caching off.

    Tasks declare their `InputFingerprints` policy but no storage (the project is known only at
    run time): called bare they compute a key, find nothing and persist nothing."""
    if use_cache and config.cache.enabled:
        return task.with_options(persist_result=True, result_storage=cache_dir(config))
    return task.with_options(cache_policy=NO_CACHE, persist_result=False)


def call(task: Task, config: ProjectConfig, *args: Any, use_cache: bool = True,
         intact: Callable[[Any], bool] | None = None, **kwargs: Any) -> State:
    """Run `task(config, *args, **kwargs)` with the project's cache; its final state.

    A `Cached` result whose outputs are no longer as the task left them (`intact` is false) is
    recomputed, and the new result replaces it in the cache."""
    configured = in_project(task, config, use_cache)
    state = configured(config, *args, return_state=True, **kwargs)
    if state.name == CACHED and intact is not None and not intact(state.result()):
        get_run_logger().info("%s: the cached result's outputs changed since; recomputing", task.name)
        state = configured.with_options(refresh_cache=True)(config, *args, return_state=True, **kwargs)
    return state


def result(task: Task, config: ProjectConfig, *args: Any, use_cache: bool = True,
           intact: Callable[[Any], bool] | None = None, **kwargs: Any) -> Any:
    """`call`, returning the result (raising what the task raised, as a plain task call does)."""
    return call(task, config, *args, use_cache=use_cache, intact=intact, **kwargs).result()
