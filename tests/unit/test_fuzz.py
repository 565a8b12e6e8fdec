"""The fuzz suite (issue 19): fuzzed expressions, event files and HTTP requests from
bench/fuzz_cases.py, each case from a seed hypothesis draws. A few hundred cases in the default
run; the `slow` variants run thousands (bench/fuzz_bench.py runs 100,000)."""

from __future__ import annotations

import random
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import fuzz_cases as cases  # noqa: E402

from offerflow.ingest.events import EventFileError, read_events  # noqa: E402
from offerflow.rules.expressions import parse_expression  # noqa: E402

SEEDS = st.integers(0, 2**32 - 1)
FAST = settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
SLOW = settings(max_examples=5_000, deadline=None, database=None, suppress_health_check=list(HealthCheck))


def judge_expression_seed(seed: int) -> None:
    outcome = cases.judge_expression(*cases.expression_case(random.Random(seed)))
    assert outcome in ("refused", "agree"), (seed, outcome)


@FAST
@given(SEEDS)
def test_fuzzed_expressions_are_refused_in_one_line_or_evaluated_alike(seed: int) -> None:
    judge_expression_seed(seed)


@pytest.mark.slow
@SLOW
@given(SEEDS)
def test_many_fuzzed_expressions(seed: int) -> None:
    judge_expression_seed(seed)


@pytest.mark.parametrize(("data", "text", "want"), [
    (["a", "", "\0", "DE\0", "DE"], "'DE'", [False, False, False, True, True]),
    (["😀", "x\0y", None, "\0", "\ud800"], "'x'", [False, True, False, False, False]),
])
def test_nul_and_lone_surrogates_in_data_match_the_row_evaluator(data: list, text: str, want: list) -> None:
    """NumPy's string functions read a NUL as the end of the text and cannot hold a lone surrogate:
    such rows take Python's answer, in both evaluators (found by the fuzz bench)."""
    schema = {"profile.country": "string"}
    column = np.array(data, dtype=object)
    for rule in (f"contains(profile.country, {text})", f"starts_with(lower(profile.country), lower({text}))",
                 "contains(profile.country, profile.country)", "contains('😀', upper(profile.country))"):
        expr = parse_expression(rule, schema, kind="rule")
        batch = expr.evaluate_batch({"profile.country": column}).tolist()
        assert batch == [expr.evaluate_one({"profile.country": v}) for v in data], rule
    contains = parse_expression(f"contains(profile.country, {text})", schema, kind="rule")
    assert contains.evaluate_batch({"profile.country": column}).tolist() == want


def read_event_seed(seed: int, folder: Path) -> None:
    suffix, data = cases.event_file(random.Random(seed))
    path = folder / f"events-{seed}{suffix}"
    path.write_bytes(data)
    try:
        read_events(path)
    except EventFileError as exc:
        assert "\n" not in str(exc)
    finally:
        path.unlink()


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(SEEDS)
def test_damaged_event_files_are_read_or_refused_in_one_line(tmp_path_factory, seed: int) -> None:
    read_event_seed(seed, events_folder(tmp_path_factory))


@pytest.mark.slow
@SLOW
@given(SEEDS)
def test_many_damaged_event_files(tmp_path_factory, seed: int) -> None:
    read_event_seed(seed, events_folder(tmp_path_factory))


@pytest.mark.parametrize("damage", [
    b'{"event_id": "e"' + b', "a": {' * 3000 + b"}" * 3000 + b"}\n",  # deeper than orjson and Python allow
    b"event_id," + b"x" * 200_000 + b"\ne,1\n",  # a header field over the csv module's limit
])
def test_fuzz_findings_in_the_readers_are_one_line_errors(tmp_path, damage: bytes) -> None:
    path = tmp_path / ("events.ndjson" if damage.startswith(b"{") else "events.csv")
    path.write_bytes(damage)
    try:
        frame = read_events(path)
    except EventFileError as exc:
        assert "\n" not in str(exc) and "header" in str(exc)
    else:
        assert frame["_parse_error"].str.startswith("invalid JSON").all()


def events_folder(factory: pytest.TempPathFactory) -> Path:
    folder = factory.getbasetemp() / "fuzz-events"
    folder.mkdir(exist_ok=True)
    return folder


# ---------------------------------------------------------------- HTTP


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    import fuzz_bench

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette.testclient` is deprecated")
        from fastapi.testclient import TestClient
    from offerflow.core.config import load_config
    from offerflow.decisioning.http_service import create_app

    project = fuzz_bench.make_project(tmp_path_factory.mktemp("fuzz-http"), seed=19)
    config = load_config(project / "offerflow.yaml")
    app = create_app(config, admin_token=fuzz_bench.ADMIN, log_dir=project / "data/outputs/decision_log")
    with TestClient(app, raise_server_exceptions=False) as client:
        engine = app.state.engine
        yield client, list(engine.profiles["profile_id"][:50]), [p.id for p in config.placements], list(engine.offers.index)


def send_seed(service, seed: int) -> None:
    client, profiles, placements, offers = service
    method, path, headers, body = cases.http_request(random.Random(seed), profiles, placements, offers)
    try:
        resp = client.request(method, path, headers=headers, content=body)
    except (UnicodeEncodeError, ValueError):  # the client refused to send it (a header it cannot encode)
        return
    assert resp.status_code < 500 and "Traceback" not in resp.text, (seed, resp.status_code, resp.text[:300])


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(SEEDS)
def test_fuzzed_requests_never_get_a_5xx(service, seed: int) -> None:
    send_seed(service, seed)


@pytest.mark.slow
@SLOW
@given(SEEDS)
def test_many_fuzzed_requests(service, seed: int) -> None:
    send_seed(service, seed)


def test_decide_with_a_bad_eligibility_rule_is_one_error_line(project_dir):
    """The issue's hand case: `offerflow decide` printed 57 lines of traceback where `run` printed one."""
    import yaml
    from typer.testing import CliRunner

    from offerflow.cli import app

    offers = project_dir / "data/offers.yaml"
    catalog = yaml.safe_load(offers.read_text())
    catalog["offers"][1]["eligibility"] = "profile.age > (((1"
    offers.write_text(yaml.safe_dump(catalog, sort_keys=False))
    result = CliRunner().invoke(app, ["decide", "-c", str(project_dir / "offerflow.yaml"), "-p", "p0000001",
                                      "-x", "web-banner"])
    assert result.exit_code == 2, result.output  # the project check runs first: a located mistake, exit 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: offers.yaml: offers[1].eligibility (offer 'o-002'): column 19: expected ')'")
