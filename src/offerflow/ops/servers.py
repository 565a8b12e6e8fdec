"""The servers a team runs, on one machine: `offerflow up` / `offerflow down`.

`up` starts, on 127.0.0.1, a Prefect server (its SQLite database under `<project>/.prefect`), the
`offerflow-process` work pool and a worker, an MLflow server on the project's tracking database
with `mlruns/` as artifact root, and a Redis server when `caps.store` is a Redis URL on this
machine (the cap counters `offerflow serve --workers N` shares); then it registers every deployment of `prefect.yaml`. Each process
is started in its own session (process group) and recorded in `<project>/.prefect/servers.json`
with its start time, so `down` stops exactly those process groups and nothing else, even if a pid
was recycled since. Logs go to `<project>/.prefect/logs/<name>.log`.

Prefect and MLflow are driven through their own command lines (this module never imports them).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from offerflow.core.config import ProjectConfig
from offerflow.core.mlflow_locations import relocate_artifacts
from offerflow.core.tracking import resolve_tracking_uri

HOST = "127.0.0.1"
WORK_POOL = "offerflow-process"
STATE_FILE = "servers.json"
#: Processes started by this Python process, kept so they are waited for (no zombie, no warning).
_CHILDREN: dict[int, subprocess.Popen] = {}


class OpsError(RuntimeError):
    """A server that cannot be started or stopped; the one-line message says why."""


@dataclass
class ManagedProcess:
    name: str
    pid: int
    start_ticks: int  # /proc/<pid>/stat field 22: tells a recycled pid from ours
    log: str


@dataclass
class ServerState:
    project: str
    prefect_url: str
    mlflow_url: str
    processes: list[ManagedProcess] = field(default_factory=list)
    deployments: list[str] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return f"{self.prefect_url}/api"

    def env(self) -> dict[str, str]:
        """What a shell needs to talk to these servers (`prefect deployment run ...`)."""
        return {"PREFECT_API_URL": self.api_url, "MLFLOW_TRACKING_URI": self.mlflow_url}


def prefect_home(project: Path) -> Path:
    return project.resolve() / ".prefect"


def state_path(project: Path) -> Path:
    return prefect_home(project) / STATE_FILE


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def is_alive(proc: ManagedProcess) -> bool:
    """The recorded process still runs (same pid, same start time, not a zombie)."""
    ticks = _start_ticks(proc.pid)
    if ticks != proc.start_ticks:
        return False
    state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def port_in_use(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def read_state(project: Path) -> ServerState | None:
    path = state_path(project)
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    raw["processes"] = [ManagedProcess(**p) for p in raw["processes"]]
    return ServerState(**raw)


def _write_state(project: Path, state: ServerState) -> None:
    path = state_path(project)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2))
    tmp.replace(path)


def _tool(name: str) -> str:
    """The `prefect` / `mlflow` executable of this environment."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def base_env(project: Path, code_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PREFECT_HOME=str(prefect_home(project)), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               MLFLOW_DISABLE_TELEMETRY="true", GX_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
               OFFERFLOW_PROJECT_DIR=str(project.resolve()), OFFERFLOW_CODE_DIR=str(code_dir.resolve()))
    return env


def _spawn(name: str, argv: list[str], env: Mapping[str, str], project: Path, cwd: Path) -> ManagedProcess:
    log = prefect_home(project) / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, env=dict(env), cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    _CHILDREN[proc.pid] = proc
    return ManagedProcess(name, proc.pid, _start_ticks(proc.pid) or 0, str(log))


def _tail(path: str, lines: int = 1) -> str:
    try:
        text = [line for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]
    except FileNotFoundError:
        return ""
    return " | ".join(text[-lines:])


def answers(url: str, timeout_s: float, alive: Callable[[], bool] = lambda: True) -> float | None:
    """Poll `url` every 0.5 s until it answers 200: the seconds it took; None when `timeout_s`
    passed or `alive()` turned false first (the process behind it died)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s and alive():
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - start
        except OSError:  # refused, reset, timed out, or an HTTP error status while starting
            pass
        time.sleep(0.5)
    return None


def wait_healthy(url: str, proc: ManagedProcess, timeout_s: float) -> float:
    """Poll `url` until it answers 200; seconds it took. OpsError if the process dies or time runs out."""
    took = answers(url, timeout_s, lambda: is_alive(proc))
    if took is not None:
        return took
    if not is_alive(proc):
        raise OpsError(f"{proc.name} exited during start-up: {_tail(proc.log)} (log: {proc.log})")
    raise OpsError(f"{proc.name} did not answer {url} within {timeout_s:.0f} s (log: {proc.log})")


def _run(argv: list[str], env: Mapping[str, str], cwd: Path, what: str, timeout_s: float = 600) -> str:
    result = subprocess.run(argv, env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=timeout_s)
    if result.returncode != 0:
        lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        raise OpsError(f"{what} failed: {lines[-1] if lines else f'exit code {result.returncode}'}")
    return result.stdout


def mlflow_server_argv(config: ProjectConfig, port: int) -> list[str]:
    """The MLflow server on the project's tracking store (SQLite file or e.g. postgresql://...)."""
    return [_tool("mlflow"), "server", "--host", HOST, "--port", str(port), "--workers", "1",
            "--backend-store-uri", resolve_tracking_uri(config.tracking.uri, config.root.resolve()),
            "--no-serve-artifacts", "--default-artifact-root", str(config.path(config.tracking.artifact_root).resolve())]


def redis_argv(port: int, directory: Path) -> list[str]:
    """A Redis server for the cap counters on 127.0.0.1:`port`, without persistence: when it
    restarts, the decision service seeds the counters from the decision log again."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise OpsError("caps.store asks for Redis but redis-server is not installed "
                       "(Debian/Ubuntu: apt-get install redis-server)")
    return [executable, "--bind", HOST, "--port", str(port), "--save", "", "--appendonly", "no",
            "--dir", str(directory)]


def local_redis_port(config: ProjectConfig) -> int | None:
    """The port of the project's cap store when it is a Redis on this machine (`up` starts it)."""
    url = config.caps.redis_url
    if url is None:
        return None
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme != "redis" or parsed.hostname not in ("127.0.0.1", "localhost"):
        return None
    return parsed.port or 6379


def start_redis(config: ProjectConfig, project: Path, env: Mapping[str, str], state: ServerState,
                say: Callable[[str], None], timeout_s: float = 30) -> None:
    """Start the local Redis of `caps.store` (unless something already listens on its port)."""
    port = local_redis_port(config)
    if port is None or port_in_use(port):
        return
    proc = _spawn("redis-server", redis_argv(port, prefect_home(project)), env, project, project)
    state.processes.append(proc)
    _write_state(project, state)
    deadline = time.monotonic() + timeout_s
    while not port_in_use(port):
        if not is_alive(proc) or time.monotonic() > deadline:
            raise OpsError(f"redis-server did not start on port {port}: {_tail(proc.log)} (log: {proc.log})")
        time.sleep(0.1)
    say(f"Redis (cap counters) ready on port {port}")


#: The deployments, shipped inside the package (so a wheel has them), relative to the code directory.
DEPLOYMENTS_FILE = "offerflow/prefect.yaml"


def prepare_artifacts(config: ProjectConfig) -> None:
    """Create the project's artifact root; in a copied project, re-point its SQLite tracking
    database at it (`relocate_artifacts`), so the MLflow UI shows the copy's artifacts."""
    project = config.root.resolve()
    artifacts = config.path(config.tracking.artifact_root).resolve()
    artifacts.mkdir(parents=True, exist_ok=True)
    tracking_uri = resolve_tracking_uri(config.tracking.uri, project)
    if tracking_uri.startswith("sqlite:///"):
        relocate_artifacts(Path(tracking_uri[len("sqlite:///"):]), artifacts, project)


def up(config: ProjectConfig, code_dir: Path, prefect_port: int = 4200, mlflow_port: int = 5000,
       deploy: bool = True, schedules: bool = True, startup_timeout_s: float = 180,
       say: Callable[[str], None] = lambda _: None, pool_limit: int = 2) -> ServerState:
    """Start the Prefect server, a worker and the MLflow server for the project; deploy everything.
    The work pool runs at most `pool_limit` flow runs at once (more wait in the pool's queue).

    `schedules=False` runs the Prefect server without its scheduler service: deployments can be
    run by hand but nothing starts on its own (tests, demos).
    """
    project = config.root.resolve()
    existing = read_state(project)
    if existing is not None and any(is_alive(p) for p in existing.processes):
        running = ", ".join(f"{p.name} (pid {p.pid})" for p in existing.processes if is_alive(p))
        raise OpsError(f"already running for {project}: {running}; run `offerflow down` first")
    for port, option in ((prefect_port, "--prefect-port"), (mlflow_port, "--mlflow-port")):
        if port_in_use(port):
            raise OpsError(f"port {port} on {HOST} is taken; stop what uses it or choose another with {option}")
    if prefect_port == mlflow_port:
        raise OpsError(f"--prefect-port and --mlflow-port are both {prefect_port}")
    prefect_home(project).mkdir(parents=True, exist_ok=True)
    env = base_env(project, code_dir)
    server_env = {**env, "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "true" if schedules else "false"}
    server_env.pop("PREFECT_API_URL", None)
    state = ServerState(str(project), f"http://{HOST}:{prefect_port}", f"http://{HOST}:{mlflow_port}")
    client_env = {**env, "PREFECT_API_URL": state.api_url}
    # MLflow 3's server starts a pool of job consumers (GenAI jobs) by default: not used here, and
    # they cost a core's worth of start-up on a small machine.
    mlflow_env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **env}
    prepare_artifacts(config)
    try:
        state.processes.append(_spawn("prefect-server", [_tool("prefect"), "server", "start", "--host", HOST,
                                                         "--port", str(prefect_port)], server_env, project, project))
        _write_state(project, state)
        state.processes.append(_spawn("mlflow-server", mlflow_server_argv(config, mlflow_port), mlflow_env,
                                      project, project))
        _write_state(project, state)
        start_redis(config, project, env, state, say)
        seconds = wait_healthy(f"{state.api_url}/health", state.processes[0], startup_timeout_s)
        say(f"Prefect server ready in {seconds:.0f} s")
        seconds = wait_healthy(f"{state.mlflow_url}/health", state.processes[1], startup_timeout_s)
        say(f"MLflow server ready in {seconds:.0f} s")
        _run([_tool("prefect"), "--no-prompt", "work-pool", "create", WORK_POOL, "--type", "process",
              "--overwrite"], client_env, project, f"creating work pool {WORK_POOL}")
        _run([_tool("prefect"), "--no-prompt", "work-pool", "set-concurrency-limit", WORK_POOL, str(pool_limit)],
             client_env, project, f"limiting work pool {WORK_POOL} to {pool_limit} runs")
        state.processes.append(_spawn("prefect-worker", [_tool("prefect"), "worker", "start", "--pool", WORK_POOL,
                                                         "--type", "process"], client_env, project, code_dir))
        _write_state(project, state)
        if deploy:
            say("registering the deployments of prefect.yaml")
            _run([_tool("prefect"), "--no-prompt", "deploy", "--all", "--prefect-file", DEPLOYMENTS_FILE],
                 client_env, code_dir.resolve(), "prefect deploy --all")
            state.deployments = list_deployments(state, env)
            _write_state(project, state)
    except BaseException:
        down(project)
        raise
    return state


def list_deployments(state: ServerState, env: Mapping[str, str]) -> list[str]:
    """`flow/deployment` names registered with the server."""
    import httpx

    response = httpx.post(f"{state.api_url}/deployments/filter", json={"limit": 200}, timeout=30)
    response.raise_for_status()
    flows = httpx.post(f"{state.api_url}/flows/filter", json={"limit": 200}, timeout=30).json()
    names = {f["id"]: f["name"] for f in flows}
    return sorted(f"{names.get(d['flow_id'], d['flow_id'])}/{d['name']}" for d in response.json())


def down(project: Path, timeout_s: float = 20) -> list[ManagedProcess]:
    """Stop the process groups `up` recorded (worker first), and only those; returns what was stopped."""
    state = read_state(project)
    if state is None:
        return []
    stopped = []
    for proc in sorted(state.processes, key=lambda p: p.name != "prefect-worker"):
        if not is_alive(proc):
            continue
        _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while is_alive(proc) and time.monotonic() < deadline:
            _reap(proc.pid)
            time.sleep(0.2)
        if is_alive(proc):
            _signal_group(proc, signal.SIGKILL)
            time.sleep(0.5)
        _reap(proc.pid)
        stopped.append(proc)
    state_path(project).unlink(missing_ok=True)
    return stopped


def _signal_group(proc: ManagedProcess, sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)  # started with start_new_session: its pgid is its pid
    except ProcessLookupError:
        pass


def _reap(pid: int) -> None:
    """Collect the exit status when `up` ran in this very process (tests), so no zombie stays."""
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        del _CHILDREN[pid]
