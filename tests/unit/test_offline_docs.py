"""Data Docs pages rewritten to load local copies of their CDN assets (ingest/offline_docs.py), on
a site Great Expectations really builds; the browser check is tests/flows/test_data_docs_offline.py."""

from __future__ import annotations

import os
import re
from pathlib import Path

from offerflow.core.config import load_config
from offerflow.ingest.offline_docs import OFFLINE_DIR, external_assets, make_site_offline, rewrite_page
from offerflow.ingest.snapshot import load_catalog

PAGE = """<link rel="stylesheet" href="https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css"/>
<script src="https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js" integrity="sha384-x" crossorigin="anonymous"></script>
<script src="https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js" integrity="sha384-y" crossorigin="anonymous"></script>
<script src="https://cdn.example.org/new-library@2/lib.js"></script>
<style>.brand { background: url('https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/full_logo_dark.png') }</style>
<a href="https://greatexpectations.io">Great Expectations</a>"""


def test_known_assets_become_local_and_unknown_ones_stay_visible():
    html = rewrite_page(PAGE, lambda target: "../" + target)
    assert '<link rel="stylesheet" href="../static/offline/bootstrap.min.css"/>' in html
    assert '<script src="../static/offline/bootstrap.bundle.min.js"></script>' in html  # no SRI, no crossorigin
    assert "popper" not in html  # in Bootstrap's bundle
    assert "url('../static/images/logo-long.png')" in html
    assert '<a href="https://greatexpectations.io">' in html  # a link to follow, not an asset to load
    assert external_assets(html) == ["https://cdn.example.org/new-library@2/lib.js"]
    assert rewrite_page(html, lambda target: "../" + target) == html


def test_a_built_site_loads_nothing_from_the_network(project_dir: Path):
    config = load_config(project_dir / "offerflow.yaml")
    load_catalog(config, run_id="first")
    site = config.path(config.validation.great_expectations_dir) / "uncommitted" / "data_docs" / "local_site"
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= 7  # index, 3 suites, 3 validation results
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert external_assets(text) == [], page
        for local in re.findall(r'(?:src|href)="([^"#:]+\.(?:js|css|png))"', text):
            assert (page.parent / local).is_file(), (page, local)
    assert (site / OFFLINE_DIR / "fontawesome" / "webfonts" / "fa-solid-900.woff2").is_file()

    # a later build: only the pages written since are read again
    old = pages[-1]
    os.utime(old, (1, 1))
    load_catalog(config, run_id="second")
    assert len(list(site.rglob("*.html"))) > len(pages)
    assert all(external_assets(p.read_text(encoding="utf-8")) == [] for p in site.rglob("*.html"))
    assert old.stat().st_mtime == 1 and make_site_offline(site) == 0
