"""Task caching keyed on input data fingerprints, with Prefect 3's own cache machinery.

Re-running a flow on unchanged data skips its expensive tasks (validation, training, scoring and
publishing) and produces the same outputs: such a task ends in the `Cached` state with the result
of the earlier run. Each cached task declares what its result depends on with an
`InputFingerprints` cache policy: the files it reads by content, the frames it is given by
content, the config sections it reads. The key adds the task name and the code version (every
`.py` file of the library and of `flows/`), so editing code, changing data or changing a setting
reruns exactly the tasks it concerns. Nothing in it depends on where the project is: a copied or
moved project finds its cache (a cache kept outside the project, an absolute `cache.path`, adds
the project's directory, so two projects never share results).

Results are persisted (pickled) inside the project, in `cache.path` (default
`<data.outputs_dir>/task_cache`), never in `~/.prefect`. `cache.enabled: false` in the project
file, `offerflow run --no-cache` or the flows' `use_cache=False` parameter turn it off.

A cached result is trusted only while what the task wrote is still there: `call` recomputes
(`refresh_cache`) when `intact(result)` says otherwise, e.g. a later run validated other events,
or a ranking table was rolled back since it was published. A cached result holds the absolute
paths of the run that computed it: the folders the cache was used in are listed in `roots.json`
beside it, and a result read in a copy has their paths re-rooted in the copy (`rebased`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Callable, Optional

from prefect import Task, get_run_logger
from prefect.cache_policies import NO_CACHE, CachePolicy
from prefect.context import TaskRunContext
from prefect.states import State
from pydantic import BaseModel

import offerflow
from offerflow.core.config import ProjectConfig
from offerflow.core.fingerprints import FileFingerprints, digest, source_fingerprint

CACHED = "Cached"
_CODE_DIRS = (Path(offerflow.__file__).resolve().parent,)  # the library and its flows

#: What a task's result depends on: (task inputs, file fingerprints) -> named fingerprints.
DependsOn = Callable[[dict[str, Any], FileFingerprints], dict[str, Any]]


def cache_dir(config: ProjectConfig) -> Path:
    return config.paths.task_cache


def project_identity(config: ProjectConfig) -> str:
    """The project's part of every key: nothing (`.`) while the cache is inside the project, which a
    copy takes along, else the project's directory."""
    inside = cache_dir(config).resolve().is_relative_to(config.root.resolve())
    return "." if inside else str(config.root.resolve())


def code_version() -> str:
    return f"{offerflow.__version__}:{source_fingerprint(_CODE_DIRS)}"


@dataclass(kw_only=True)
class InputFingerprints(CachePolicy):
    """Cache key: a digest of the task name, the project, the code version and `depends_on(inputs)`.
    The task must take the project's `config` as a parameter."""

    depends_on: Optional[DependsOn] = None

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> Optional[str]:
        if task_ctx.task.result_storage is None:
            # called bare (not through `in_project`): no key, so nothing is looked up or written in
            # Prefect's default storage, where projects with the same data (the key leaves out where
            # a project is) would find each other's results, MLflow runs of another project included
            return None
        config: ProjectConfig = inputs["config"]
        files = FileFingerprints(cache_dir(config) / "fingerprints.json")
        parts = self.depends_on(inputs, files) if self.depends_on else {}
        return digest({"task": task_ctx.task.name, "project": project_identity(config), "code": code_version(),
                       **parts})


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
    earlier = earlier_roots(config) if use_cache and config.cache.enabled else []
    state = configured(config, *args, return_state=True, **kwargs)
    if state.name == CACHED and isinstance(state.result(raise_on_failure=False), BaseException):
        # Prefect records what a task returns under its cache key, a returned failed state's exception
        # too (bad input, `flows.bad_input`): the same bad input again would come back as a `Cached`
        # "result". A failure is never reused: the task runs again (and fails again, in one line).
        state = configured.with_options(refresh_cache=True)(config, *args, return_state=True, **kwargs)
    if state.is_failed():
        forget(state, config)
    if state.name == CACHED and earlier:
        state = state.model_copy(update={"data": rebased(state.result(), earlier, config.root.resolve())})
    if state.name == CACHED and intact is not None and not intact(state.result()):
        get_run_logger().info("%s: the cached result's outputs changed since; recomputing", task.name)
        state = configured.with_options(refresh_cache=True)(config, *args, return_state=True, **kwargs)
    return state


def forget(state: State, config: ProjectConfig) -> None:
    """Remove the cache record of a failed task run (Prefect writes a returned failure under the
    cache key like a result), so the next run with the same input runs the task rather than first
    logging it `Cached` and then running it again."""
    key = getattr(getattr(state.data, "metadata", None), "storage_key", None)
    if key and Path(key).resolve().parent == cache_dir(config).resolve():
        Path(key).unlink(missing_ok=True)


def result(task: Task, config: ProjectConfig, *args: Any, use_cache: bool = True,
           intact: Callable[[Any], bool] | None = None, **kwargs: Any) -> Any:
    """`call`, returning the result (raising what the task raised, as a plain task call does)."""
    return call(task, config, *args, use_cache=use_cache, intact=intact, **kwargs).result()


def earlier_roots(config: ProjectConfig) -> list[Path]:
    """The other folders the project's cache was used in (a copy's original), longest first; the
    current one is added to `<cache>/roots.json` on first use."""
    record = cache_dir(config) / "roots.json"
    try:
        roots = [str(r) for r in json.loads(record.read_text())]
    except (FileNotFoundError, ValueError, TypeError):
        roots = []
    here = str(config.root.resolve())
    if here not in roots:
        record.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.with_name(f".{record.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps([*roots, here]))
        tmp.replace(record)
    return sorted((Path(r) for r in roots if r != here), key=lambda p: len(p.parts), reverse=True)


def rebased(value: Any, old_roots: list[Path], root: Path) -> Any:
    """`value` with every path under one of `old_roots` (a `Path`, or a string holding an absolute
    path) moved under `root`, through tuples, lists, dicts, dataclasses and pydantic models; the
    same object when nothing in it moved. Frames and other values are left as they are."""
    if isinstance(value, PurePath):
        for old in old_roots:
            if value.is_absolute() and value.is_relative_to(old):
                return type(value)(root / value.relative_to(old))
        return value
    if isinstance(value, str):
        for old in old_roots:
            for prefix, new in ((f"{old}{os.sep}", f"{root}{os.sep}"), (old.as_uri() + "/", root.as_uri() + "/")):
                if value.startswith(prefix):
                    return new + value[len(prefix):]
        return value
    if isinstance(value, (tuple, list)):
        items = [rebased(v, old_roots, root) for v in value]
        if all(a is b for a, b in zip(items, value)):
            return value
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    if isinstance(value, dict):
        items = {k: rebased(v, old_roots, root) for k, v in value.items()}
        return value if all(items[k] is value[k] for k in value) else type(value)(items)
    return _rebased_fields(value, old_roots, root)


def _rebased_fields(value: Any, old_roots: list[Path], root: Path) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = [f.name for f in dataclasses.fields(value)]
    elif isinstance(value, BaseModel):
        names = list(type(value).model_fields)
    else:
        return value
    moved = {n: rebased(getattr(value, n), old_roots, root) for n in names}
    moved = {n: v for n, v in moved.items() if v is not getattr(value, n)}
    if not moved:
        return value
    if isinstance(value, BaseModel):
        return value.model_copy(update=moved)
    result = copy.copy(value)
    for name, new in moved.items():
        object.__setattr__(result, name, new)
    return result
