"""Data Docs that render with no network. Great Expectations 1.x writes pages that load jQuery,
Bootstrap, bootstrap-table, Font Awesome and its logo from public CDNs: offline, their tables stay
empty. After each build this copies local files into the site (`static/offline/`) and points every
page at them with relative paths, so the site works from `file://`, a copy, or a static server.

Sources: jQuery and Font Awesome from the `xstatic-jquery` / `xstatic-font-awesome` packages,
Bootstrap 4, bootstrap-table and bootstrap-datepicker from `data_docs_assets/` (npm `dist/` files,
see its SOURCES.md), the logo from GX's own `static/images/`. A CDN URL this module does not know
is left as it is (tests/flows/test_data_docs_offline.py fails on it: a new GX version to map)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import xstatic.pkg.font_awesome as font_awesome
import xstatic.pkg.jquery as jquery

_ASSETS = Path(__file__).with_name("data_docs_assets")
OFFLINE_DIR = "static/offline"
_MARKER = ".rewritten"

# CDN URL (searched in the attribute's value) -> site-relative file, or None: drop the tag.
_REWRITES: tuple[tuple[re.Pattern[str], str | None], ...] = tuple(
    (re.compile(pattern), target) for pattern, target in (
        (r"//code\.jquery\.com/jquery-3\.[0-9.]+(\.min)?\.js$", f"{OFFLINE_DIR}/jquery.min.js"),
        # bootstrap.bundle.min.js includes Popper.js
        (r"/popper\.js/1\.[0-9.]+/umd/popper(\.min)?\.js$", None),
        (r"/bootstrap/4\.[0-9.]+/css/bootstrap\.min\.css$", f"{OFFLINE_DIR}/bootstrap.min.css"),
        (r"/bootstrap/4\.[0-9.]+/js/bootstrap\.min\.js$", f"{OFFLINE_DIR}/bootstrap.bundle.min.js"),
        (r"/bootstrap-table@1\.[0-9.]+/dist/bootstrap-table\.min\.css$", f"{OFFLINE_DIR}/bootstrap-table.min.css"),
        (r"/bootstrap-table@1\.[0-9.]+/dist/bootstrap-table\.min\.js$", f"{OFFLINE_DIR}/bootstrap-table.min.js"),
        (r"/bootstrap-table@1\.[0-9.]+/dist/extensions/filter-control/bootstrap-table-filter-control(\.min)?\.css$",
         f"{OFFLINE_DIR}/bootstrap-table-filter-control.min.css"),
        (r"/bootstrap-table@1\.[0-9.]+/dist/extensions/filter-control/bootstrap-table-filter-control(\.min)?\.js$",
         f"{OFFLINE_DIR}/bootstrap-table-filter-control.min.js"),
        (r"/bootstrap-datepicker/1\.[0-9.]+/css/bootstrap-datepicker\.min\.css$",
         f"{OFFLINE_DIR}/bootstrap-datepicker.min.css"),
        (r"/bootstrap-datepicker/1\.[0-9.]+/js/bootstrap-datepicker\.min\.js$", f"{OFFLINE_DIR}/bootstrap-datepicker.min.js"),
        (r"/font-awesome/6\.[0-9.]+/css/all\.min\.css$", f"{OFFLINE_DIR}/fontawesome/css/all.min.css"),
        (r"//great-expectations-web-assets\.[^/]+/(logo-long|full_logo_dark)\.png", "static/images/logo-long.png"),
        # the dark theme (a media query) and Vega (profiling charts, which offerflow never builds):
        # not on PyPI; without them the pages render in the light theme
        (r"/@forevolve/bootstrap-dark@", None),
        (r"//cdn\.jsdelivr\.net/npm/vega(-lite|-embed)?@[0-9]+$", None),
    )
)
_ELEMENT = re.compile(r"<script\b[^>]*>\s*</script>|<link\b[^>]*>|<img\b[^>]*>", re.IGNORECASE)
_URL_ATTR = re.compile(r"""\b(src|href)\s*=\s*(["'])(https?://[^"']+)\2""", re.IGNORECASE)
_CSS_URL = re.compile(r"""url\((["']?)(https?://[^"')]+)\1\)""")
# CDN scripts carry Subresource Integrity hashes; a local file:// script with `crossorigin` does not load.
_SRI = re.compile(r"""\s(integrity|crossorigin)\s*=\s*(["'])[^"']*\2""", re.IGNORECASE)


def make_site_offline(site: Path) -> int:
    """Copy the assets into `site` (a Data Docs site: the folder of index.html) and rewrite the
    pages written since the last call; returns how many pages changed. Idempotent."""
    site = Path(site)
    marker = site / OFFLINE_DIR / _MARKER
    since = marker.stat().st_mtime if marker.exists() else None
    install_assets(site / OFFLINE_DIR)
    changed = 0
    for page in site.rglob("*.html"):
        if since is not None and page.stat().st_mtime < since:
            continue
        text = page.read_text(encoding="utf-8")
        offline = rewrite_page(text, lambda target, page=page: _relative(site / target, page.parent))
        if offline != text:
            page.write_text(offline, encoding="utf-8")
            changed += 1
    marker.touch()
    return changed


def rewrite_page(html: str, locate) -> str:
    """`html` with every known CDN asset replaced by `locate(site_relative_target)` (or its tag
    dropped), integrity/crossorigin removed from those tags; other links left as they are."""

    def element(match: re.Match[str]) -> str:
        tag = match.group(0)
        attr = _URL_ATTR.search(tag)
        if attr is None:
            return tag
        found, target = _local_target(attr.group(3))
        if not found:
            return tag
        if target is None:
            return ""
        tag = tag[:attr.start(3)] + locate(target) + tag[attr.end(3):]
        return _SRI.sub("", tag)

    def css_url(match: re.Match[str]) -> str:
        found, target = _local_target(match.group(2))
        return f"url('{locate(target)}')" if found and target is not None else match.group(0)

    return _CSS_URL.sub(css_url, _ELEMENT.sub(element, html))


def external_assets(html: str) -> list[str]:
    """The http(s) URLs a page would load (scripts, styles, images, CSS url()): what needs a network."""
    urls = [m.group(3) for tag in _ELEMENT.finditer(html) if (m := _URL_ATTR.search(tag.group(0)))]
    return urls + [m.group(2) for m in _CSS_URL.finditer(html)]


def install_assets(dest: Path) -> None:
    """The offline files, under `dest` (`static/offline/` of a site): copied once per site."""
    stamp = f"jquery {jquery.VERSION}, font-awesome {font_awesome.VERSION}, {_assets_stamp()}"
    version = dest / "VERSION"
    if version.exists() and version.read_text(encoding="utf-8") == stamp:
        return
    dest.mkdir(parents=True, exist_ok=True)
    for path in _ASSETS.iterdir():
        shutil.copy2(path, dest / path.name)
    shutil.copy2(Path(jquery.BASE_DIR) / "jquery.min.js", dest / "jquery.min.js")
    fonts = Path(font_awesome.BASE_DIR)
    (dest / "fontawesome" / "css").mkdir(parents=True, exist_ok=True)
    shutil.copy2(fonts / "css" / "all.min.css", dest / "fontawesome" / "css" / "all.min.css")
    shutil.copy2(fonts / "LICENSE.txt", dest / "fontawesome" / "LICENSE.txt")
    shutil.copytree(fonts / "webfonts", dest / "fontawesome" / "webfonts", dirs_exist_ok=True)
    version.write_text(stamp, encoding="utf-8")


def _assets_stamp() -> str:
    return ",".join(f"{p.name}:{p.stat().st_size}" for p in sorted(_ASSETS.iterdir()))


def _local_target(url: str) -> tuple[bool, str | None]:
    for pattern, target in _REWRITES:
        if pattern.search(url):
            return True, target
    return False, None


def _relative(target: Path, start: Path) -> str:
    return Path(os.path.relpath(target, start)).as_posix()
