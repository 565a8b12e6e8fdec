"""Partitioned scoring: a stable profile hash, sort-merged publishing of parts, and a partitioned
ranking table equal to the single-process one for priority, formula and personalized placements."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from offerflow.core.partitions import (PartitionError, in_sample, partition_of, sample_share, split_profiles,
                                  write_profile_partitions)
from offerflow.core.schema import RANKING_SCHEMA
from offerflow.core.store import RankingStore, StoreError

P = "web-banner"
#: Pinned: a change of hash function would silently move every profile to another partition.
PINNED = {"p0000001": 6, "p0000002": 6, "p0000003": 3, "p1234567": 3, "ä-ü": 0, "": 6}


def test_partition_of_is_pinned_and_stable_across_processes():
    ids = list(PINNED)
    assert partition_of(ids, 8).tolist() == list(PINNED.values())
    code = ("from offerflow.core.partitions import partition_of; "
            f"print(partition_of({ids!r}, 8).tolist())")
    for seed in ("1", "random"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        assert out.strip() == str(list(PINNED.values()))
    # The same ids as a pandas Series, an Arrow array or a NumPy array land in the same partitions.
    assert partition_of(pd.Series(ids, dtype="string"), 8).tolist() == list(PINNED.values())
    assert partition_of(pa.array(ids), 8).tolist() == list(PINNED.values())


def test_partitions_are_balanced_and_in_range():
    ids = np.array([f"p{i:07d}" for i in range(80_000)], dtype=object)
    parts = partition_of(ids, 8)
    assert parts.dtype == np.int32 and parts.min() == 0 and parts.max() == 7
    counts = np.bincount(parts, minlength=8)
    assert np.all(np.abs(counts - 10_000) < 400), counts  # ~4 standard deviations
    assert (partition_of(ids, 1) == 0).all()


@pytest.mark.parametrize("ids, n, message", [
    (["a"], 0, "must be an integer >= 1, got 0"),
    (["a"], 2.5, "must be an integer >= 1, got 2.5"),
    (["a", None], 4, "1 profile ids are missing"),
])
def test_bad_partition_input_is_one_clear_error(ids, n, message):
    with pytest.raises(PartitionError, match=message):
        partition_of(ids, n)


def test_split_profiles_covers_every_profile_once_in_its_partition(tmp_path):
    profiles = pd.DataFrame({"profile_id": [f"p{i}" for i in range(500)], "age": np.arange(500)})
    seen = []
    for p, part in split_profiles(profiles, 6):
        assert (partition_of(part["profile_id"], 6) == p).all()
        assert part["age"].is_monotonic_increasing  # original order kept
        seen.extend(part["profile_id"])
    assert sorted(seen) == sorted(profiles["profile_id"])
    paths = write_profile_partitions(profiles.head(3), 6, tmp_path)  # some partitions are empty
    assert [p.name for p in paths] == [f"part-{i:05d}.parquet" for i in range(6)]
    assert sum(len(pd.read_parquet(p)) for p in paths) == 3
    assert all(list(pd.read_parquet(p).columns) == ["profile_id", "age"] for p in paths)


def _ranking(n_profiles, k=3, seed=0):
    rng = np.random.default_rng(seed)
    ids = np.array([f"p{i:06d}" for i in rng.permutation(n_profiles)], dtype=object)
    return pd.DataFrame({"profile_id": np.repeat(ids, k), "rank": np.tile(np.arange(1, k + 1), n_profiles),
                         "offer_id": rng.choice(["o1", "o2", "o3", "o4"], n_profiles * k),
                         "score": rng.random(n_profiles * k)})


def _write_parts(frame, n, directory):
    directory.mkdir(parents=True, exist_ok=True)
    parts = partition_of(frame["profile_id"], n)
    paths = []
    for p in range(n):
        table = pa.Table.from_pandas(frame[parts == p], schema=RANKING_SCHEMA, preserve_index=False)
        paths.append(directory / f"part-{p}.parquet")
        pq.write_table(table.sort_by([("profile_id", "ascending"), ("rank", "ascending")]), paths[-1])
    return paths


@pytest.mark.parametrize("batch_rows", [5, 64, 1_000_000])
def test_publish_parts_equals_publishing_the_whole_table(tmp_path, batch_rows):
    frame = _ranking(400)
    whole, parted = RankingStore(tmp_path / "a"), RankingStore(tmp_path / "b")
    whole.publish(P, frame, {"kind": "ranking"})
    version = parted.publish_parts(P, _write_parts(frame, 5, tmp_path / "parts"), {"kind": "ranking"},
                                   batch_rows=batch_rows)
    assert version == 1
    assert parted.read_table(P).equals(whole.read_table(P))
    assert parted.read_metadata(P)["row_count"] == len(frame)
    snapshot = parted.snapshot(P)
    expected = frame[frame["profile_id"] == "p000042"].sort_values("rank")
    offers, scores = snapshot.lookup("p000042")
    assert offers.tolist() == expected["offer_id"].tolist() and scores.tolist() == expected["score"].tolist()


def test_publish_parts_refuses_overlapping_or_unsorted_parts_and_publishes_nothing(tmp_path):
    store = RankingStore(tmp_path / "rankings")
    frame = _ranking(50)
    paths = _write_parts(frame, 3, tmp_path / "parts")
    pq.write_table(pq.read_table(paths[0]), tmp_path / "copy.parquet")  # the same profiles twice
    with pytest.raises(StoreError, match=r"duplicated or out of order"):
        store.publish_parts(P, [*paths, tmp_path / "copy.parquet"], {"kind": "ranking"}, batch_rows=4)
    unsorted = pq.read_table(paths[1]).sort_by([("profile_id", "descending")])
    pq.write_table(unsorted, tmp_path / "unsorted.parquet")
    with pytest.raises(StoreError, match=r"duplicated or out of order"):
        store.publish_parts(P, [paths[0], tmp_path / "unsorted.parquet"], {"kind": "ranking"}, batch_rows=2)
    with pytest.raises(StoreError, match=r"ranking part .*missing.parquet does not exist"):
        store.publish_parts(P, [tmp_path / "missing.parquet"], {"kind": "ranking"})
    with pytest.raises(StoreError, match=r"metadata\['kind'\] must be 'ranking'"):
        store.publish_parts(P, paths, {"kind": "posterior"})
    bad = frame.head(6).assign(score=np.nan)
    pq.write_table(pa.Table.from_pandas(bad, preserve_index=False), tmp_path / "nan.parquet")
    with pytest.raises(StoreError, match=r"column .score. has 6 null values"):
        store.publish_parts(P, [tmp_path / "nan.parquet"], {"kind": "ranking"})
    assert store.current_version(P) is None and store.versions(P) == []
    assert [p.name for p in (tmp_path / "rankings" / P).iterdir()] == [".lock"]  # no leftovers


@pytest.fixture(scope="module")
def world_catalog(world_dir):
    from offerflow.ingest.catalog import read_offers, read_profiles

    profiles = read_profiles(world_dir / "profiles.parquet")
    rng = np.random.default_rng(0)  # a Customer AI-like enrichment: dotted names, floats, strings
    profiles = profiles.assign(**{"propensity.purchase_14d.probability": rng.random(len(profiles)),
                                  "propensity.purchase_14d.bucket": rng.choice(["low", "medium", "high"],
                                                                                len(profiles))})
    return profiles, read_offers(world_dir / "offers.yaml")


def click_model_result(world_dir, profiles, offers):
    """A personalized model result trained on clicks drawn from the world's true click probability."""
    from offerflow.core.config import LightGBMParams
    from offerflow.ranking.click_model import fit_click_model, training_frame
    from offerflow.ranking.ai_models import RankingModelResult
    from offerflow.synthetic.world import load_truth, true_click_probability

    truth_profiles, truth_offers = load_truth(world_dir)
    rng = np.random.default_rng(5)
    n = 20_000
    p_idx, o_idx = rng.integers(0, len(truth_profiles), n), rng.integers(0, len(truth_offers), n)
    truth = true_click_probability(truth_profiles, truth_offers, "web")[p_idx, o_idx]
    log = pd.DataFrame({"profile_id": truth_profiles["profile_id"].to_numpy()[p_idx],
                        "offer_id": truth_offers["offer_id"].to_numpy()[o_idx], "placement_id": P,
                        "timestamp": pd.Timestamp("2026-10-01", tz="UTC") + pd.to_timedelta(np.arange(n), "s"),
                        "propensity": 1.0 / len(offers), "success": (rng.random(n) < truth).astype(np.int8)})
    model = fit_click_model(training_frame(log, profiles, offers), LightGBMParams(n_estimators=40, num_leaves=15),
                            offers["offer_id"].tolist()[:-2], seed=1)  # two offers not personalized
    return RankingModelResult("web-personalized", "run", "1", {}, True, "", kind="personalized", click_model=model)


@pytest.mark.parametrize("method", ["priority", "formula", "ai_model"])
def test_partitioned_publish_equals_single_process(tmp_path, world_dir, world_catalog, method):
    from offerflow.core.config import PlacementConfig
    from offerflow.ranking.publishing import publish_placement, publish_placement_partitioned

    profiles, offers = world_catalog
    ranking = {"priority": {"method": "priority"}, "ai_model": {"method": "ai_model", "ai_model": "web-personalized"},
               "formula": {"method": "formula", "formula": "if(offer.category == profile.favorite_category and "
                           "profile.propensity.purchase_14d.bucket == 'high', offer.priority * 2, offer.priority)"}}
    placement = PlacementConfig(id=P, channel="web", items=3, ranking=ranking[method])
    model = click_model_result(world_dir, profiles, offers) if method == "ai_model" else None
    single, parted = RankingStore(tmp_path / "single"), RankingStore(tmp_path / "parted")
    publish_placement(single, placement, profiles, offers, model)
    workdir = tmp_path / "work"
    publish_placement_partitioned(parted, placement, profiles, offers, model, 7, workdir)
    expected, got = single.read_table(P), parted.read_table(P)
    assert got.num_rows == expected.num_rows > len(profiles)
    assert got.equals(expected)
    assert parted.read_metadata(P)["partitions"] == 7
    assert not workdir.exists()


# --- how many partitions by default ---------------------------------------------------------------

def _compute(extra: str = ""):
    import yaml

    from offerflow.core.config import parse_config
    from offerflow.synthetic.world import demo_config_yaml

    raw = yaml.safe_load(demo_config_yaml("data") + extra)
    return parse_config(raw).compute


def test_partitions_default_to_auto_one_per_250k_profiles_and_small_projects_keep_one_table():
    compute = _compute()
    assert compute.partitions == "auto" and compute.max_partition_profiles == 250_000
    assert [compute.partitions_for(n) for n in (0, 3_000, 250_000, 250_001, 1_000_000, 10_000_000)] == \
        [1, 1, 1, 2, 4, 40]
    assert _compute("compute:\n  partitions: 8\n").partitions_for(3_000) == 8
    assert _compute("compute:\n  partitions: 1\n").partitions_for(10_000_000) == 1
    assert _compute("compute:\n  max_partition_profiles: 100000\n").partitions_for(1_000_000) == 10


@pytest.mark.parametrize("value, message", [
    ("0", "compute.partitions: .*from 1 to 4096, got 0"),
    ("5000", "compute.partitions: .*from 1 to 4096, got 5000"),
    ("many", "compute.partitions"),
])
def test_bad_partitions_setting_is_a_located_config_error(value, message):
    from offerflow.core.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        _compute(f"compute:\n  partitions: {value}\n")


def test_a_hash_sample_is_stable_and_holds_its_share():
    ids = pd.Series([f"p{i:07d}" for i in range(200_000)])
    share = sample_share(50_000, len(ids))
    assert share == 0.25 and sample_share(None, len(ids)) == 1.0 and sample_share(10**6, len(ids)) == 1.0
    picked = in_sample(ids, share)
    assert abs(picked.mean() - 0.25) < 0.005  # 50,000 expected; binomial sd ~194
    assert (in_sample(ids.to_numpy(dtype=object), share) == picked).all()  # array or Series, same answer
    assert (in_sample(ids[::-1].reset_index(drop=True), share) == picked[::-1]).all()  # by id, not position
    assert in_sample(ids, 1.0).all()
    # a larger share keeps every profile a smaller one drew (nested samples)
    assert (in_sample(ids, 0.5) | ~picked).all()
