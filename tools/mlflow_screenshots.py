"""Screenshots of the MLflow UI for docs/data-scientists.md, taken in headless Chromium.

    python tools/mlflow_screenshots.py --project /path/to/project --out docs/images

Starts an MLflow server on the project's tracking store (the one `offerflow up` starts, on a free
port, stopped at the end), drives headless Chromium through its DevTools protocol and writes one
PNG per page under `--out`: the pipeline run with its steps (lineage), the click model's charts,
a registered model with its description, a scoring run's drift table. MLflow's UI is a React
app: each page is captured only once the text it must show (a run name, a model name) is on it
and the network has been idle for a moment, so a screenshot is never a blank or loading page.
With `--text-dir` each page's visible text is written next to it (`<name>.txt`), for tests.

Needs a Chromium binary (`--chromium`, else `chromium`/`chromium-browser`/`google-chrome` on
PATH). Every host name but 127.0.0.1 fails to resolve: the UI renders from the server alone.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

#: Browser window in CSS pixels: wide enough for the runs table, small enough for PNGs < 300 KB.
WINDOW = (1400, 900)
#: The UI's toggle between its GenAI and model-training views, as a query parameter.
TRAINING_VIEW = "workflowType=machine_learning"
#: Browser state set before the first page: the AI assistant's side panel closed, the UI in its
#: model-training mode (MLflow 3's `useLocalStorage` keys, `<key>_v<version>`).
UI_STATE = {"mlflow.assistant.panelOpen_v1": "false", "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true",
            "mlflow.workflowType_v1": '"machine_learning"'}


@dataclass(frozen=True)
class Shot:
    """One page: its file name (without .png), the UI route after `#/`, the text to wait for,
    optionally elements to click once it shows (CSS selector) and the text to wait for then."""

    name: str
    route: str
    wait_for: str
    click: str | None = None
    then_wait_for: str | None = None


class DevTools:
    """A minimal Chrome DevTools Protocol client on one page target (websockets, synchronous)."""

    def __init__(self, ws_url: str) -> None:
        from websockets.sync.client import connect

        self._ws = connect(ws_url, max_size=None, open_timeout=30)
        self._next = 0

    def call(self, method: str, timeout_s: float = 60, **params: object) -> dict:
        self._next += 1
        ident = self._next
        self._ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + timeout_s
        while True:
            message = json.loads(self._ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error'].get('message')}")
                return message.get("result", {})

    def evaluate(self, expression: str) -> object:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    def close(self) -> None:
        self._ws.close()


def find_chromium(explicit: str | None = None) -> str | None:
    names = [explicit] if explicit else ["chromium", "chromium-browser", "google-chrome"]
    return next((p for p in map(shutil.which, names) if p), None)


def _wait_http(url: str, timeout_s: float, what: str) -> None:
    from offerflow.ops.servers import answers

    if answers(url, timeout_s) is None:
        raise SystemExit(f"{what} did not answer {url} within {timeout_s:.0f} s")


def _stop(proc: subprocess.Popen) -> None:
    """End a process this tool started (its own session): politely, then for good."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


@contextmanager
def mlflow_server(project: Path, log: Path) -> Iterator[str]:
    """The MLflow UI on the project's tracking store, on a free port: yields its base URL as soon as
    the server is started, before it answers (it takes the longest to start: `main` plans the pages
    and starts Chromium meanwhile, then waits for `<base>/health`)."""
    from offerflow.core.config import load_config
    from offerflow.ops.servers import free_port, mlflow_server_argv

    config = load_config(project / "offerflow.yaml")
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    with log.open("w") as out:
        proc = subprocess.Popen(mlflow_server_argv(config, port), cwd=project, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)


@contextmanager
def headless_chromium(binary: str, profile: Path) -> Iterator[DevTools]:
    """Headless Chromium with remote debugging on a free port; yields a client on a new page."""
    argv = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--remote-debugging-port=0",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            f"--window-size={WINDOW[0]},{WINDOW[1]}", "about:blank"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"{binary} did not start its DevTools endpoint")
            time.sleep(0.2)
        port = int(port_file.read_text().split()[0])
        request = urllib.request.Request(f"http://127.0.0.1:{port}/json/new?about:blank", method="PUT")
        with urllib.request.urlopen(request, timeout=30) as response:
            target = json.loads(response.read())
        tools = DevTools(target["webSocketDebuggerUrl"])
        try:
            tools.call("Emulation.setDeviceMetricsOverride", width=WINDOW[0], height=WINDOW[1],
                       deviceScaleFactor=1, mobile=False)
            yield tools
        finally:
            tools.close()
    finally:
        _stop(proc)


#: Waits for a page to settle: no new network request for this long after the expected text shows.
QUIET_S = 1.5


def _settle(tools: DevTools, wait_for: str, timeout_s: float) -> bool:
    """True once `wait_for` is in the page's visible text and the page has loaded nothing new
    for `QUIET_S`; False at `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    seen, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        state = tools.evaluate("({text: document.body ? document.body.innerText.includes(%s) : false,"
                               " loaded: performance.getEntriesByType('resource').length})" % json.dumps(wait_for))
        if state["loaded"] != seen:
            seen, quiet_since = state["loaded"], time.monotonic()
        if state["text"] and time.monotonic() - quiet_since >= QUIET_S:
            return True
        time.sleep(0.25)
    return False


def capture(tools: DevTools, base: str, shot: Shot, out: Path, text_dir: Path | None, timeout_s: float) -> Path:
    """Open `shot.route`, wait for it to render, write `<out>/<name>.png` (and its visible text)."""
    separator = "&" if "?" in shot.route else "?"
    tools.call("Page.navigate", url=f"{base}/#/{shot.route}{separator}{TRAINING_VIEW}")
    if not _settle(tools, shot.wait_for, timeout_s):
        raise SystemExit(f"{shot.name}: '{shot.wait_for}' did not appear on #/{shot.route} within {timeout_s:.0f} s")
    if shot.click:
        tools.evaluate(f"document.querySelectorAll({json.dumps(shot.click)}).forEach(e => e.click())")
        if not _settle(tools, shot.then_wait_for or shot.wait_for, timeout_s):
            raise SystemExit(f"{shot.name}: '{shot.then_wait_for}' did not appear after clicking {shot.click}")
    data = tools.call("Page.captureScreenshot", format="png", captureBeyondViewport=False)["data"]
    path = out / f"{shot.name}.png"
    path.write_bytes(base64.b64decode(data))
    if text_dir is not None:
        (text_dir / f"{shot.name}.txt").write_text(str(tools.evaluate("document.body.innerText")))
    return path


def prepare_ui(tools: DevTools, base: str) -> None:
    """Open the UI once and set its browser state (`UI_STATE`) before the first screenshot."""
    tools.call("Page.enable")
    tools.call("Page.navigate", url=f"{base}/")
    deadline = time.monotonic() + 60
    while tools.evaluate("document.readyState") != "complete" and time.monotonic() < deadline:
        time.sleep(0.2)
    tools.evaluate("(() => {%s})()" % "".join(f"localStorage.setItem({json.dumps(k)}, {json.dumps(v)});"
                                              for k, v in UI_STATE.items()))


#: The runs-list button that expands a parent run's children (MLflow 3's run name cell).
EXPAND_CHILDREN = 'button[data-component-id$="runnamecellrenderer.tsx_46"]'


def _latest(client, experiment_ids: list[str], having: str = "") -> object | None:
    runs = client.search_runs(experiment_ids, filter_string=having, order_by=["attributes.start_time DESC"],
                              max_results=1)
    return runs[0] if runs else None


def plan_shots(project: Path) -> tuple[list[Shot], list[str]]:
    """The pages to capture from what the project's tracking store holds, and why any is missing."""
    from offerflow.core.config import load_config
    from offerflow.core.tracking import Tracker, resolve_tracking_uri

    config = load_config(project / "offerflow.yaml")
    client = Tracker(resolve_tracking_uri(config.tracking.uri, config.root),
                     config.path(config.tracking.artifact_root)).client
    prefix = config.tracking.experiment_prefix
    experiments = {e.name: e.experiment_id for e in client.search_experiments()}
    shots, missing = [], []
    pipeline = _latest(client, [experiments[f"{prefix}-pipeline"]]) if f"{prefix}-pipeline" in experiments else None
    if pipeline is None:
        missing.append("lineage: no pipeline run (offerflow run)")
    else:
        ids = json.dumps([i for n, i in experiments.items() if n.startswith(f"{prefix}-")], separators=(",", ":"))
        child = _latest(client, list(experiments.values()), f"tags.`mlflow.parentRunId` = '{pipeline.info.run_id}'")
        shots.append(Shot("mlflow-lineage", f"compare-experiments/s?experiments={quote(ids)}",
                          pipeline.info.run_name, EXPAND_CHILDREN, child.info.run_name if child else None))
        if child is not None:
            shots.append(Shot("mlflow-run-lineage", f"experiments/{child.info.experiment_id}/runs/{child.info.run_id}",
                              "validated-events"))
    for model in config.ai_models:
        name = f"{prefix}-ranking-{model.name}"
        run = _latest(client, [experiments[name]]) if model.type == "personalized" and name in experiments else None
        if run is not None:
            shots.append(Shot("mlflow-click-model-charts", f"experiments/{run.info.experiment_id}/runs/"
                              f"{run.info.run_id}/artifacts/diagnostics/calibration.png", "calibration.png"))
            break
    else:
        missing.append("click model charts: no personalized model's training run")
    goal = config.propensity_goals[0].name if config.propensity_goals else None
    registered = f"{prefix}-propensity-{goal}"
    if goal and registered in experiments:
        shots.append(Shot("mlflow-registered-model", f"models/{registered}", "Description"))
        scoring = _latest(client, [experiments[registered]], "tags.`offerflow.step` = 'score' and "
                                                              "tags.compared_with_run != ''")
        if scoring is not None:
            shots.append(Shot("mlflow-drift", f"experiments/{scoring.info.experiment_id}/runs/{scoring.info.run_id}/"
                              "artifacts/drift/psi.csv", "psi"))
        else:
            missing.append(f"drift: no scoring run of {goal} compared with a previous one yet")
    return shots, missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, default=Path("."), help="project folder (holds offerflow.yaml)")
    parser.add_argument("--out", type=Path, default=Path("docs/images"), help="where the PNGs go")
    parser.add_argument("--text-dir", type=Path, help="also write each page's visible text here")
    parser.add_argument("--chromium", help="Chromium binary (default: chromium on PATH)")
    parser.add_argument("--timeout", type=float, default=90, help="seconds a page may take to render")
    args = parser.parse_args(argv)
    binary = find_chromium(args.chromium)
    if binary is None:
        print("no chromium binary (apt-get install chromium, or --chromium PATH)", file=sys.stderr)
        return 2
    project = args.project.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.text_dir:
        args.text_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="offerflow-shots-") as work:
        with mlflow_server(project, Path(work) / "mlflow.log") as base:
            shots, missing = plan_shots(project)  # while the server starts, as is Chromium
            with headless_chromium(binary, Path(work) / "profile") as tools:
                _wait_http(f"{base}/health", 120, "the MLflow server")
                prepare_ui(tools, base)
                for shot in shots:
                    path = capture(tools, base, shot, args.out, args.text_dir, args.timeout)
                    print(f"{path} ({path.stat().st_size // 1024} KB)")
    for reason in missing:
        print(f"skipped {reason}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    sys.exit(main())
