"""The ranking store: versioned publish, read, rollback, pruning, snapshots, and crash safety."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from offerflow.core.schema import POSTERIOR_SCHEMA, RANKING_SCHEMA
from offerflow.core.store import RankingSnapshot, RankingStore, StoreError
from offerflow.core.store_snapshot import profile_keys

P = "web-banner"
RANKING = {"kind": "ranking"}


def ranking_table(n_profiles: int, k: int = 3, score: float | None = None, seed: int = 0) -> pa.Table:
    """n_profiles x k rows sorted by (profile_id, rank); scores random or all equal to `score`."""
    rng = np.random.default_rng(seed)
    ids = pc.utf8_lpad(pc.cast(pa.array(np.arange(n_profiles)), pa.string()), width=8, padding="0")
    n = n_profiles * k
    return pa.table({
        "profile_id": ids.take(pa.array(np.repeat(np.arange(n_profiles), k))),
        "rank": pa.array(np.tile(np.arange(1, k + 1, dtype=np.int16), n_profiles)),
        "offer_id": pa.array(np.array([f"o{i}" for i in range(20)], dtype=object)[rng.integers(0, 20, n)]),
        "score": np.full(n, score) if score is not None else rng.random(n),
    }, schema=RANKING_SCHEMA)


def posterior_frame() -> pd.DataFrame:
    return pd.DataFrame({"offer_id": ["b", "a"], "alpha": [3.0, 11.0], "beta": [9.0, 41.0],
                         "displays": [10, 50], "successes": [2.0, 10.0], "qualified": [False, True],
                         "value_weight": [1.0, 1.0]})


@pytest.fixture
def store(tmp_path: Path) -> RankingStore:
    return RankingStore(tmp_path / "rankings", keep_versions=3)


def test_publish_read_round_trip_sorts_casts_and_records_metadata(store):
    frame = pd.DataFrame({"profile_id": ["p2", "p1", "p2", "p1", "p3"], "rank": [2, 2, 1, 1, 1],  # int64, unsorted
                          "offer_id": ["b", "c", "a", "a", "c"], "score": [0.5, 0.1, 0.9, 0.7, 0.3]})
    assert store.current_version(P) is None and store.versions(P) == [] and store.placements() == []
    version = store.publish(P, frame, {**RANKING, "model_version": "3"})
    assert version == 1 and store.current_version(P) == 1 and store.versions(P) == [1]
    assert store.placements() == [P]
    table = store.read_table(P)
    assert table.schema == RANKING_SCHEMA
    assert table.to_pydict() == {"profile_id": ["p1", "p1", "p2", "p2", "p3"], "rank": [1, 2, 1, 2, 1],
                                 "offer_id": ["a", "c", "a", "b", "c"], "score": [0.7, 0.1, 0.9, 0.5, 0.3]}
    meta = store.read_metadata(P)
    assert {k: meta[k] for k in ("kind", "model_version", "version", "row_count")} == {
        "kind": "ranking", "model_version": "3", "version": 1, "row_count": 5}
    assert datetime.fromisoformat(meta["published_at"]).utcoffset().total_seconds() == 0
    parquet = store.root / P / "v000001" / "table.parquet"
    assert meta["sha256"] == hashlib.sha256(parquet.read_bytes()).hexdigest()
    assert json.loads((store.root / P / "v000001" / "metadata.json").read_text()) == meta
    manifest = json.loads((store.root / "MANIFEST.json").read_text())
    assert manifest["placements"][P]["version"] == 1 and manifest["published"] == {P: [1]}
    assert not (store.root / P / "CURRENT").exists()  # the manifest is the only pointer


def test_compatible_types_are_cast(store):
    table = pa.table({"profile_id": pa.array(["p1", "p2"], pa.large_string()),
                      "rank": pa.array([1, 1], pa.int64()),
                      "offer_id": pa.array(["a", "b"]).dictionary_encode(),
                      "score": pa.array([1, 2], pa.int32())})
    store.publish(P, table, RANKING)
    assert store.read_table(P).schema == RANKING_SCHEMA
    assert store.read_table(P)["score"].to_pylist() == [1.0, 2.0]


def test_posterior_round_trip_and_snapshot(store):
    store.publish("email-hero", posterior_frame(), {"kind": "posterior"})
    assert store.read_table("email-hero").schema == POSTERIOR_SCHEMA
    snap = store.snapshot("email-hero")
    assert snap.kind == "posterior" and snap.version == 1
    assert snap.posteriors["offer_id"].tolist() == ["b", "a"]
    assert snap.posteriors["alpha"].tolist() == [3.0, 11.0]
    with pytest.raises(StoreError, match="posterior table: use .posteriors"):
        snap.lookup("p1")


def test_versions_increase_and_old_ones_are_pruned(store):
    assert [store.publish(P, ranking_table(5, score=v), RANKING) for v in range(1, 6)] == [1, 2, 3, 4, 5]
    assert store.versions(P) == [3, 4, 5] and store.current_version(P) == 5
    assert sorted(p.name for p in (store.root / P).iterdir()) == [".last_version", ".lock", "v000003", "v000004",
                                                                 "v000005"]
    assert store.read_table(P, 3)["score"].to_pylist() == [3.0] * 15
    with pytest.raises(StoreError, match="has no version 2"):
        store.read_table(P, 2)


def test_rollback_to_previous_then_explicit_and_publish_continues_numbering(store):
    for v in range(1, 4):
        store.publish(P, ranking_table(5, score=v), RANKING)
    assert store.rollback(P) == 2
    assert store.current_version(P) == 2 and store.read_table(P)["score"].to_pylist()[0] == 2.0
    assert store.rollback(P) == 1
    assert store.rollback(P, 3) == 3 and store.read_metadata(P)["version"] == 3
    store.rollback(P, 1)
    assert store.publish(P, ranking_table(5, score=4), RANKING) == 4  # numbering never goes back
    assert store.versions(P) == [2, 3, 4]


def test_rollback_errors(store):
    with pytest.raises(StoreError, match=f"no published ranking for placement '{P}' in .*rankings"):
        store.rollback(P)
    store.publish(P, ranking_table(2), RANKING)
    with pytest.raises(StoreError, match="cannot roll back placement 'web-banner': no version before 1"):
        store.rollback(P)
    with pytest.raises(StoreError, match=r"to version 7: .*\(available: 1\)$"):
        store.rollback(P, 7)
    assert store.current_version(P) == 1
    store.publish(P, ranking_table(2), RANKING)
    with pytest.raises(StoreError, match=r"to version 7: .*\(available: 1, 2\)$"):
        store.rollback(P, 7)
    with pytest.raises(StoreError, match=r"has no version 9 in .*\(available: 1, 2\)$"):
        store.read_table(P, 9)
    assert store.current_version(P) == 2


def test_reading_an_unpublished_placement_is_a_one_line_error(store):
    for read in (store.read_table, store.read_metadata, store.snapshot):
        with pytest.raises(StoreError, match=r"^no published ranking for placement 'web-banner' in \S+rankings$"):
            read(P)


def _frame(**changes):
    base = {"profile_id": ["p1", "p1"], "rank": [1, 2], "offer_id": ["a", "b"], "score": [0.9, 0.8]}
    return pd.DataFrame({**base, **changes})


@pytest.mark.parametrize(("table", "metadata", "message"), [
    (_frame().drop(columns="score"), RANKING, r"missing \['score'\]"),
    (_frame(extra=[1, 2]), RANKING, r"unexpected \['extra'\]"),
    (_frame(rank=["1", "2"]), RANKING, "column 'rank' has type .*string, expected int16"),
    (_frame(rank=[1, 40_000]), RANKING, "column 'rank' cannot be cast to int16"),
    (_frame(rank=[1.0, 1.5]), RANKING, "column 'rank' cannot be cast to int16"),
    (_frame(profile_id=["p1", None]), RANKING, "column 'profile_id' has 1 null values"),
    (pa.table({"profile_id": ["p1"], "rank": [1], "offer_id": ["a"], "score": [float("nan")]}), RANKING,
     "column 'score' has 1 NaN values"),
    (_frame(rank=[1, 1]), RANKING, r"1 duplicate \(profile_id, rank\) pairs, e.g. profile 'p1' rank 1"),
    (_frame(rank=[0, 1]), RANKING, "column 'rank' must be >= 1"),
    (_frame(), {"kind": "scores"}, r"metadata\['kind'\] must be one of \['posterior', 'ranking'\], got 'scores'"),
    (_frame(), {}, r"metadata\['kind'\] must be one of"),
    (_frame(), {**RANKING, "when": datetime.now()}, "metadata is not JSON-serializable"),
    (posterior_frame().assign(offer_id=["a", "a"]), {"kind": "posterior"}, "column 'offer_id' has duplicate values"),
    (posterior_frame().assign(qualified=[0, 1]), {"kind": "posterior"}, "column 'qualified' has type int64"),
    ([("p1", 1, "a", 0.5)], RANKING, "expected a pyarrow Table or pandas DataFrame, got list"),
])
def test_schema_violations_raise_store_error_and_publish_nothing(store, table, metadata, message):
    with pytest.raises(StoreError, match=message) as info:
        store.publish(P, table, metadata)
    assert "\n" not in str(info.value)
    assert store.current_version(P) is None and store.versions(P) == []


def test_invalid_placement_ids_are_rejected(store):
    for bad in ("../escape", ".hidden", "", "a/b"):
        with pytest.raises(StoreError, match="invalid placement id"):
            store.publish(bad, _frame(), RANKING)
    with pytest.raises(StoreError, match="keep_versions must be an integer >= 1"):
        RankingStore(store.root, keep_versions=0)


def test_snapshot_lookup_known_and_unknown_profiles(store):
    frame = pd.DataFrame({"profile_id": ["p2", "p1", "p2", "p1", "p2", "p3"], "rank": [3, 2, 1, 1, 2, 1],
                          "offer_id": ["z", "b", "x", "a", "y", "c"], "score": [0.1, 0.2, 0.9, 0.8, 0.5, 0.3]})
    store.publish(P, frame, {**RANKING, "ai_model": "clicks"})
    snap = store.snapshot(P)
    assert isinstance(snap, RankingSnapshot) and (snap.placement_id, snap.version, snap.kind) == (P, 1, "ranking")
    assert snap.metadata["ai_model"] == "clicks"
    offers, scores = snap.lookup("p2")
    assert offers.tolist() == ["x", "y", "z"] and scores.tolist() == [0.9, 0.5, 0.1]
    assert snap.lookup("p1")[0].tolist() == ["a", "b"] and snap.lookup("p3")[0].tolist() == ["c"]
    for unknown in ("p0", "p15", "p4", "", "zzz"):
        offers, scores = snap.lookup(unknown)
        assert offers.shape == (0,) and scores.shape == (0,) and scores.dtype == np.float64
    with pytest.raises(ValueError):
        snap.lookup("p2")[1][0] = 1.0  # read-only views: serving cannot corrupt the snapshot
    with pytest.raises(StoreError, match="ranking table: use .lookup"):
        _ = snap.posteriors


@pytest.mark.parametrize("longest, extra, fixed", [(12, "c", True), (65, "c", False), (12, "c\0", False)])
def test_snapshot_lookup_finds_exactly_the_table_s_ids_whatever_their_bytes(longest, extra, fixed):
    """Ids as fixed-width bytes (up to 64 bytes, none ending with NUL) or str objects (a longer id,
    or one ending with NUL): the same answers for ids that differ by a NUL, a prefix, a multi-byte
    character or a trailing NUL."""
    ids = sorted({"a", "a\0b", "ab", "b", "b\x01", "é", "éa", "z" * 3, "\U0001f600x", "日本", "x" * longest, extra},
                 key=lambda s: s.encode())
    rows = [(pid, r) for pid in ids for r in (1, 2)]
    table = pa.table({"profile_id": [pid for pid, _ in rows], "rank": pa.array([r for _, r in rows], pa.int16()),
                      "offer_id": [f"{pid}/{r}" for pid, r in rows], "score": [float(r) for _, r in rows]},
                     schema=RANKING_SCHEMA)
    snap = RankingSnapshot.from_table(P, 1, {**RANKING, "row_count": len(rows)}, table)
    assert (snap._profile_ids.dtype.kind == "S") == fixed
    for pid in ids:
        offers, scores = snap.lookup(pid)
        assert offers.tolist() == [f"{pid}/1", f"{pid}/2"] and scores.tolist() == [1.0, 2.0]
    for unknown in ("", "\0", "a\0", "a\0\0", "ab\0", "a\0a", "b\0", "e", "é\0", "日", "\ud800", "x" * (longest + 1),
                    "x" * (longest - 1), "zzz\0", "~", extra + "\0", extra[:-1]):
        offers, scores = snap.lookup(unknown)
        assert offers.shape == (0,) and scores.shape == (0,), repr(unknown)
    # a server's index of its profiles into the table: the same rows as a lookup, or None (str ids)
    queries = ["~", *ids[::-1], "a\0", "ab\0", "x" * (longest + 1), "", "日", extra + "\0", "b"]
    rows = snap.rows_of(*profile_keys(queries))
    assert rows is None if not fixed else rows.dtype == np.int32 and len(rows) == len(queries)
    if fixed:
        assert [snap.rows_at(int(r))[0].tolist() for r in rows] == [snap.lookup(q)[0].tolist() for q in queries]
        assert (rows >= 0).sum() == len(ids) + 1  # every id of the table ("b" twice), nothing else


def test_snapshot_of_a_large_table_matches_the_rows(store):
    table = ranking_table(20_000, k=3, seed=1)
    store.publish(P, table.take(pa.array(np.random.default_rng(2).permutation(table.num_rows))), RANKING)
    snap = store.snapshot(P)
    for i in (0, 1, 9_999, 19_999):
        pid = f"{i:08d}"
        rows = table.slice(3 * i, 3).to_pydict()
        offers, scores = snap.lookup(pid)
        assert offers.tolist() == rows["offer_id"] and scores.tolist() == rows["score"]


def test_a_store_for_some_profiles_reads_only_their_rows(store):
    """`offerflow decide`: a Parquet filter; the same lookups for those profiles, nothing for others,
    the row count still checked against the whole file, posterior tables read whole."""
    table = ranking_table(5_000, k=3, seed=3)
    store.publish(P, table, RANKING)
    store.publish("email-hero", posterior_frame(), {"kind": "posterior"})
    wanted = ["00000007", "00004999", "not-there"]
    few = RankingStore(store.root, profile_ids=wanted)
    snap, full = few.snapshot(P), store.snapshot(P)
    assert len(snap._profile_ids) == 2 and len(snap._offer_ids) == 6
    for pid in wanted:
        assert snap.lookup(pid)[0].tolist() == full.lookup(pid)[0].tolist()
        assert snap.lookup(pid)[1].tolist() == full.lookup(pid)[1].tolist()
    assert snap.lookup("00000008")[0].shape == (0,) and len(full.lookup("00000008")[0]) == 3
    assert few.snapshot("email-hero").posteriors.equals(store.snapshot("email-hero").posteriors)
    meta = json.loads((store.root / P / "v000001" / "metadata.json").read_text())
    (store.root / P / "v000001" / "metadata.json").write_text(json.dumps({**meta, "row_count": 7}))
    with pytest.raises(StoreError, match="table has 15000 rows, metadata says 7"):
        RankingStore(store.root, profile_ids=wanted).snapshot(P)


def test_ranking_tables_are_row_groups_a_few_profiles_read_skips(store):
    """Sorted by profile in row groups of ROW_GROUP_ROWS, so a few profiles' read decodes the
    groups whose min/max statistics hold them, not the whole table (whole writes and merges alike)."""
    from offerflow.core.store_tables import ROW_GROUP_ROWS

    table = ranking_table(30_000, k=3, seed=4)
    store.publish(P, table, RANKING)
    path = store.root / P / "v000001" / "table.parquet"
    meta = pq.read_metadata(path)
    assert meta.num_row_groups == -(-table.num_rows // ROW_GROUP_ROWS) > 1
    wanted = pc.field("profile_id").isin(pa.array(["00000007"]))
    fragment = next(iter(ds.dataset(path).get_fragments()))
    assert [g.row_groups[0].id for g in fragment.split_by_row_group(wanted)] == [0]
    assert RankingStore(store.root, profile_ids=["00029999"]).snapshot(P).lookup("00029999")[0].size == 3
    # the one-shot reader picks the same groups and gives the rows a filtered full read gives
    from offerflow.core.parquet_rows import _groups_that_may_hold, read_rows_of

    file = pq.ParquetFile(path)
    assert _groups_that_may_hold(file, file.schema_arrow.get_field_index("profile_id"), "00000007", "00000007") == [0]
    ids = pa.array(["00029999", "00000007", "nobody", "00016000"])
    rows, count = read_rows_of(path, "profile_id", ids)
    assert count == table.num_rows and rows.num_rows == 9
    assert rows.equals(pq.read_table(path).filter(pc.is_in(pc.field("profile_id"), value_set=ids)))
    assert read_rows_of(path, "profile_id", pa.array([], pa.string()))[0].num_rows == 0


def test_snapshot_of_an_empty_ranking(store):
    store.publish(P, pd.DataFrame({n: [] for n in RANKING_SCHEMA.names}).astype({"profile_id": object,
                                                                               "offer_id": object}), RANKING)
    assert store.read_metadata(P)["row_count"] == 0
    offers, scores = store.snapshot(P).lookup("p1")
    assert len(offers) == len(scores) == 0


def test_readers_see_a_consistent_version_while_publishers_run(tmp_path):
    store = RankingStore(tmp_path, keep_versions=2)  # aggressive pruning: readers race deletions too
    store.publish(P, ranking_table(2_000, score=1.0), {**RANKING, "tag": 1})
    stop, errors, published = threading.Event(), [], []

    def publisher():
        try:
            while not stop.is_set():
                v = (store.current_version(P) or 0) + 1
                published.append(store.publish(P, ranking_table(2_000, score=float(v)), {**RANKING, "tag": v}))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=publisher) for _ in range(2)]  # two publishers: serialized by the lock
    for t in threads:
        t.start()
    seen = set()
    deadline = time.monotonic() + 1.5
    try:
        while time.monotonic() < deadline:
            snap = store.snapshot(P)
            _, scores = snap.lookup("00000042")
            assert snap.metadata["version"] == snap.version
            # every published table's scores equal the tag in its metadata: no mixing of versions
            assert scores.tolist() == [float(snap.metadata["tag"])] * 3
            seen.add(snap.version)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert sorted(published) == list(range(2, len(published) + 2))  # unique, consecutive versions
    assert len(seen) > 1 and store.versions(P) == sorted(published)[-2:]


KILLED_PUBLISH = """
import sys
from pathlib import Path
import numpy as np, pyarrow as pa, pyarrow.compute as pc
from offerflow.core.store import RankingStore
n = 1_000_000
ids = pc.utf8_lpad(pc.cast(pa.array(np.arange(n)), pa.string()), width=8, padding="0")
table = pa.table({"profile_id": ids.take(pa.array(np.repeat(np.arange(n), 3))),
                  "rank": np.tile(np.arange(1, 4, dtype=np.int16), n),
                  "offer_id": pc.cast(pa.array(np.random.default_rng(0).integers(0, 10**9, 3 * n)), pa.string()),
                  "score": np.random.default_rng(1).random(3 * n)})
RankingStore(Path(sys.argv[1])).publish("web-banner", table, {"kind": "ranking"})
print("published")
"""


def test_a_publish_killed_midway_leaves_the_old_version_current(tmp_path):
    store = RankingStore(tmp_path)
    old = ranking_table(1_000, seed=3)
    store.publish(P, old, {**RANKING, "tag": "old"})
    placement_dir = tmp_path / P
    proc = subprocess.Popen([sys.executable, "-c", KILLED_PUBLISH, str(tmp_path)], stdout=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        leftovers: list[Path] = []
        while not leftovers and proc.poll() is None and time.monotonic() < deadline:  # kill it mid-write
            leftovers = [p for p in placement_dir.glob(".tmp-*/table.parquet")]
            time.sleep(0.001)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        out, _ = proc.communicate()
    assert leftovers, f"the publisher ended before it was killed (rc={proc.returncode}, stdout={out!r})"
    assert proc.returncode == -signal.SIGKILL
    assert store.current_version(P) == 1 and store.versions(P) == [1]
    assert store.read_table(P).equals(old) and store.read_metadata(P)["tag"] == "old"
    assert store.snapshot(P).lookup("00000007")[0].tolist() == old.slice(21, 3)["offer_id"].to_pylist()
    assert any(p.name.startswith(".tmp-") for p in placement_dir.iterdir())  # the dead publisher's leftover

    assert store.publish(P, ranking_table(10, score=2.0), RANKING) == 2
    assert not [p.name for p in placement_dir.iterdir() if p.name.startswith((".tmp-", "CURRENT.tmp-"))]
    assert store.read_table(P)["score"].to_pylist() == [2.0] * 30 and store.versions(P) == [1, 2]
