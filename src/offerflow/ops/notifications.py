"""Announce a failed flow run: one JSON line appended to a file and/or POSTed to a webhook.

Takes the `notifications:` settings (`offerflow.core.notifications`) and a record of the failure;
never raises: what could not be delivered comes back as one-line problems for the caller to log.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from offerflow.core.notifications import FAILURE_FILE_ENV, FAILURE_WEBHOOK_ENV, NotificationsConfig


def failure_targets(settings: NotificationsConfig | None, root: Path,
                    environ: Mapping[str, str] = os.environ) -> tuple[Path | None, str | None]:
    """(file, webhook URL) to announce a failure to: the environment variables when set, else the
    project's settings; a relative file resolves against the project root."""
    settings = settings or NotificationsConfig()
    file = environ.get(FAILURE_FILE_ENV) or settings.failure_file
    url = environ.get(FAILURE_WEBHOOK_ENV) or settings.failure_webhook_url
    path = None if not file else (Path(file) if Path(file).is_absolute() else root / file)
    return path, url


def announce_failure(record: Mapping[str, Any], file: Path | None, url: str | None,
                     timeout_s: float = 10.0) -> list[str]:
    """Append `record` as one JSON line to `file` and POST it to `url` (each when given); returns
    the problems, e.g. `webhook https://...: HTTP 500`."""
    problems = []
    line = json.dumps(dict(record), default=str)
    if file is not None:
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            with open(file, "a", encoding="utf-8") as out:
                out.write(line + "\n")
        except OSError as exc:
            problems.append(f"failure file {file}: {exc.strerror or exc}")
    if url is not None:
        import httpx

        try:
            response = httpx.post(url, content=line, headers={"Content-Type": "application/json"}, timeout=timeout_s)
            if response.status_code >= 400:
                problems.append(f"webhook {url}: HTTP {response.status_code}")
        except httpx.HTTPError as exc:
            problems.append(f"webhook {url}: {type(exc).__name__}: {exc}")
    return problems
