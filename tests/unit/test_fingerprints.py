"""Fingerprints decide when a cached step is reused: by content, never by name or timestamp."""

from __future__ import annotations

import os
import shutil

import pandas as pd

from offerflow.core.fingerprints import FileFingerprints, digest, frame_fingerprint, source_fingerprint


def test_files_are_fingerprinted_by_content_and_hashed_once(tmp_path):
    a = tmp_path / "events.csv"
    a.write_text("event_id,timestamp\ne1,2026-10-01T00:00:00Z\n")
    memo = tmp_path / "cache" / "fingerprints.json"
    first = FileFingerprints(memo).of(a)
    copy = tmp_path / "copy.csv"
    shutil.copy(a, copy)
    assert FileFingerprints(memo).of(copy) == first  # same bytes, same fingerprint
    os.utime(a, ns=(1, 1))
    assert FileFingerprints(memo).of(a) == first  # touched, not changed
    a.write_text("event_id,timestamp\ne1,2026-10-01T00:00:01Z\n")
    assert FileFingerprints(memo).of(a) != first
    assert FileFingerprints(memo).of(tmp_path / "nope.csv") == "missing"

    # an unchanged file (same size, mtime, inode) is not read again: the memo answers
    fingerprints = FileFingerprints(memo)
    known = fingerprints.of(a)
    stat = a.stat()
    fingerprints._memo[str(a.resolve())] = [stat.st_size, stat.st_mtime_ns, stat.st_ino, "remembered"]
    assert fingerprints.of(a) == "remembered" != known


def test_a_parquet_directory_is_its_files(tmp_path):
    dataset = tmp_path / "events"
    (dataset / "day=1").mkdir(parents=True)
    (dataset / "day=1" / "part-0.parquet").write_bytes(b"one")
    (dataset / "_SUCCESS").write_bytes(b"")
    memo = tmp_path / "memo.json"
    before = FileFingerprints(memo).of(dataset)
    (dataset / ".part-1.parquet.crc").write_bytes(b"ignored")
    assert FileFingerprints(memo).of(dataset) == before
    (dataset / "day=1" / "part-1.parquet").write_bytes(b"two")
    assert FileFingerprints(memo).of(dataset) != before


def test_frames_by_content_lists_included():
    offers = pd.DataFrame({"offer_id": ["o-1", "o-2"], "placements": [["web-banner"], ["email-hero", "web-banner"]],
                           "priority": [3, 1]})
    same = offers.copy()
    assert frame_fingerprint(offers) == frame_fingerprint(same)
    changed = offers.assign(priority=[3, 2])
    assert frame_fingerprint(changed) != frame_fingerprint(offers)
    assert frame_fingerprint(offers.astype({"priority": "float64"})) != frame_fingerprint(offers)  # dtypes count
    assert frame_fingerprint(None) == "none"
    offers["extra"] = 1  # in place: the remembered digest is not reused
    assert frame_fingerprint(offers) != frame_fingerprint(same)


def test_digest_is_stable_and_code_version_covers_every_module(tmp_path):
    assert digest({"b": 1, "a": [1, 2]}) == digest({"a": [1, 2], "b": 1})
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "mod.py").write_text("x = 1\n")
    before = source_fingerprint((package,))
    source_fingerprint.cache_clear()
    (package / "mod.py").write_text("x = 2\n")
    assert source_fingerprint((package,)) != before
