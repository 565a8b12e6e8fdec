"""The fuzz suite's long run (issue 19): hostile input never crashes anything.

    nice python bench/fuzz_bench.py [--requests 100000] [--expressions 100000] [--event-files 3000]
                                    [--seed 19] [--workdir /tmp/offerflow-fuzz] [--quick]

1. replays the issue's hand cases (HTTP bodies and a broken-catalog reload, expressions);
2. sends fuzzed HTTP requests in process (FastAPI TestClient) to the real decision service on a
   small seeded project (300 profiles, priority and formula tables published);
3. parses fuzzed expressions and, for each one the parser accepts, compares the row and batch
   evaluators on hostile rows;
4. reads damaged CSV, NDJSON and Parquet event files with `offerflow.ingest.events.read_events`.

Cases come from bench/fuzz_cases.py, each from its own seed (`Random(f"{seed}-{kind}-{i}")`), so
a reported case is replayed alone. Prints per part the cases, the outcomes, 5xx
answers, tracebacks (an exception that is not the component's own one-line error), evaluator
disagreements, readers' unexpected exceptions, the first few failing seeds, seconds and rate
(one JSON document per part, printed as each part ends).
`--quick` runs 1,000 of each.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fuzz_cases as cases  # noqa: E402
from bench_common import bench_parser  # noqa: E402

ADMIN = "adm1n"
#: The issue's hand-made expressions (issue 19, "Why" 2 to 4), replayed as they were reported.
HAND_EXPRESSIONS = [
    ("rule", " and ".join(["profile.age > 1"] * 1000)),
    ("rule", " and ".join(["profile.age > 1"] * 2000)),
    ("rule", " or ".join(f"profile.country == 'c{i}'" for i in range(150))),
    ("rule", "starts_with(profile.country, 'DE\\0')"),
    ("rule", "starts_with(profile.country, 'DE\0')"),
    ("rule", "profile.country == '\\ud800'"),
    ("rule", "profile.country == '\ud800'"),
    ("formula", "offer.priority / 0"),
    ("rule", "profile.age > \u0661\u0668"),
    ("rule", "profile.age in [" + ", ".join(str(i) for i in range(100_000)) + "]"),
    ("formula", "(" * 1000 + "1" + ")" * 1000),
    ("rule", "not " * 5000 + "true"),
]
#: The issue's hand-made HTTP bodies ("Why" 1 and 4).
HAND_BODIES = [
    b'{"profile_id": "p", "placements": ["web-banner"], "items": NaN}',
    b'{"profile_id": "p", "placements": ["web-banner"], "items": Infinity}',
    b'{"profile_id": "p", "placements": ["web-banner"], "items": 1e400}',
    b'{"profile_id": "\\ud800", "placements": ["web-banner"]}',
    b'{"profile_id": "p", "placements": ["\\udfff"]}',
    b'{"profile_id": "' + b"x" * 10_000_000 + b'", "placements": ["web-banner"]}',
]


class Tally:
    """Outcomes of one part: counts, and the first failing seeds with what went wrong."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.failures: list[str] = []
        self.started = time.perf_counter()

    def add(self, outcome: str, bad: bool = False, note: str = "") -> None:
        self.counts[outcome] += 1
        if bad and len(self.failures) < 10:
            self.failures.append(note[:300])

    def result(self, **extra: int) -> dict:
        seconds = time.perf_counter() - self.started
        cases_ = sum(self.counts.values())
        return {"cases": cases_, **extra, "outcomes": dict(self.counts), "first_failures": self.failures,
                "seconds": round(seconds, 1), "per_second": round(cases_ / seconds) if seconds else None}


def make_project(work: Path, seed: int) -> Path:
    """A small seeded project with the demo config, its priority and formula tables published."""
    from offerflow.core.config import load_config
    from offerflow.core.paths import ranking_store
    from offerflow.ingest.catalog import load_profiles, read_offers
    from offerflow.ranking.publishing import publish_placement
    from offerflow.synthetic.world import WorldSpec, demo_config_yaml, generate_world

    project = work / "project"
    shutil.rmtree(project, ignore_errors=True)
    generate_world(WorldSpec(profiles=300, offers=6, days=30, seed=seed), project / "data")
    (project / "offerflow.yaml").write_text(demo_config_yaml("data"))
    config = load_config(project / "offerflow.yaml")
    profiles, offers = load_profiles(config.paths.profiles), read_offers(config.paths.offers)
    for placement in config.placements:
        if placement.ranking.ai_model is None:
            publish_placement(ranking_store(config), placement, profiles, offers, None)
    return project


def fuzz_http(project: Path, n: int, seed: int) -> dict:
    """Hand bodies, a broken-catalog reload, then `n` fuzzed requests: status classes, 5xx, tracebacks."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    from offerflow.core.config import load_config
    from offerflow.decisioning.http_service import create_app

    config = load_config(project / "offerflow.yaml")
    app = create_app(config, admin_token=ADMIN, log_dir=project / "data/outputs/decision_log")
    tally, logged, body_tracebacks = Tally(), _TracebackCounter(), Counter()
    logging.getLogger().addHandler(logged)
    with TestClient(app, raise_server_exceptions=False) as client:
        engine = app.state.engine
        profiles = list(engine.profiles["profile_id"][:50])
        placements, offers = [p.id for p in config.placements], list(engine.offers.index)

        def send(label: str, method: str, path: str, headers: dict, body: bytes) -> None:
            try:
                resp = client.request(method, path, headers=headers, content=body)
            except Exception as exc:  # noqa: BLE001 - the client refused to send it (not the service)
                tally.add("client_refused", note=f"{label}: {type(exc).__name__}")
                return
            body_tracebacks["n"] += "Traceback" in resp.text
            bad = resp.status_code >= 500 or "Traceback" in resp.text
            tally.add(f"{resp.status_code // 100}xx", bad, f"{label}: {resp.status_code} {resp.text[:200]}")

        for i, body in enumerate(HAND_BODIES):
            send(f"hand-{i}", "POST", "/decisions", {"content-type": "application/json"}, body)
        _broken_reload(config, send)
        for i in range(n):
            rng = random.Random(f"{seed}-http-{i}")
            send(f"seed {seed}-http-{i}", *cases.http_request(rng, profiles, placements, offers))
    logging.getLogger().removeHandler(logged)
    return tally.result(**{"5xx": tally.counts["5xx"], "tracebacks": logged.count + body_tracebacks["n"]})


def _broken_reload(config, send) -> None:
    """POST /admin/reload with a broken and a missing catalog (409), then the good one again."""
    offers = config.path(config.data.offers)
    good = offers.read_bytes()
    auth = {"authorization": f"Bearer {ADMIN}"}
    try:
        offers.write_bytes(b"offers: [\n  - {id: o-1\n")
        send("hand-reload-broken", "POST", "/admin/reload", auth, b"")
        offers.unlink()
        send("hand-reload-missing", "POST", "/admin/reload", auth, b"")
    finally:
        offers.write_bytes(good)
    send("hand-reload-good", "POST", "/admin/reload", auth, b"")


class _TracebackCounter(logging.Handler):
    """Counts log records that carry a traceback (an exception the service did not expect)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.count += 1


def fuzz_expressions(n: int, seed: int) -> dict:
    """Hand expressions, then `n` fuzzed ones: refused / agree / disagree / crash."""
    tally = Tally()

    def judge(label: str, kind: str, text: str, columns: dict, rows: int) -> None:
        try:
            outcome = cases.judge_expression(kind, text, columns, rows)
        except Exception as exc:  # noqa: BLE001 - counted: anything but a one-line ExpressionError is a crash
            tally.add("crash", True, f"{label}: {type(exc).__name__}: {exc}"[:300])
            return
        tally.add(outcome, outcome == "disagree", f"{label}: {text[:200]!r}")

    for i, (kind, text) in enumerate(HAND_EXPRESSIONS):
        judge(f"hand-{i}", kind, text, {}, 1)
    for i in range(n):
        rng = random.Random(f"{seed}-expr-{i}")
        judge(f"seed {seed}-expr-{i}", *cases.expression_case(rng))
    return tally.result(disagreements=tally.counts["disagree"], tracebacks=tally.counts["crash"])


def fuzz_event_files(work: Path, n: int, seed: int) -> dict:
    """`n` damaged event files through `read_events`: read / EventFileError (one line) / unexpected."""
    from offerflow.ingest.events import EventFileError, read_events

    tally = Tally()
    folder = work / "events"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rng = random.Random(f"{seed}-events-{i}")
        suffix, data = cases.event_file(rng)
        path = folder / f"events{suffix}"
        path.write_bytes(data)
        try:
            read_events(path)
            tally.add("read")
        except EventFileError as exc:
            multi = "\n" in str(exc)
            tally.add("multi_line_error" if multi else "refused", multi, f"seed {seed}-events-{i}: {exc}")
        except Exception as exc:  # noqa: BLE001 - what the readers must never raise
            where = traceback.extract_tb(exc.__traceback__)[-1]
            tally.add("unexpected", True, f"seed {seed}-events-{i} ({suffix}): {type(exc).__name__}: {exc}"
                      f" at {Path(where.filename).name}:{where.lineno}")
    return tally.result(unexpected_exceptions=tally.counts["unexpected"] + tally.counts["multi_line_error"])


def main() -> None:
    parser = bench_parser(__doc__, requests=100_000, expressions=100_000, event_files=3_000, seed=19, workdir=Path,
                          quick=False, skip={"default": "", "help": "parts to skip, comma-separated: expressions,event_files,http"})
    args = parser.parse_args()
    if args.quick:
        args.requests = args.expressions = args.event_files = 1_000
    work = args.workdir or Path(tempfile.mkdtemp(prefix="offerflow-fuzz-"))
    skip = set(filter(None, args.skip.split(",")))
    parts = {"expressions": lambda: fuzz_expressions(args.expressions, args.seed),
             "event_files": lambda: fuzz_event_files(work, args.event_files, args.seed),
             "http": lambda: fuzz_http(make_project(work, args.seed), args.requests, args.seed)}
    for name, part in parts.items():
        if name not in skip:
            print(json.dumps({"seed": args.seed, name: part()}, indent=2), flush=True)  # each part when done


if __name__ == "__main__":
    main()
