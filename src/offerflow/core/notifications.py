"""Where a failed scheduled run is announced: the `notifications:` section of offerflow.yaml.

    notifications:
      failure_file: logs/failures.jsonl         # one JSON line per failed flow run (relative: to the project)
      failure_webhook_url: https://chat.example/hooks/offerflow   # POSTed the same JSON

Both are optional; the environment variables `OFFERFLOW_FAILURE_FILE` and
`OFFERFLOW_FAILURE_WEBHOOK_URL` take their place when set (they still work when the project file
itself is what broke). The flows' `on_failure` hook (`offerflow.flows.guard_rails`) sends them.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

FAILURE_FILE_ENV = "OFFERFLOW_FAILURE_FILE"
FAILURE_WEBHOOK_ENV = "OFFERFLOW_FAILURE_WEBHOOK_URL"


class NotificationsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    failure_file: Path | None = Field(None, description="Append one JSON line per failed flow run here.")
    failure_webhook_url: str | None = Field(None, description="POST each failure as JSON to this http(s) URL.")
    webhook_timeout_seconds: float = Field(10.0, gt=0, le=120)

    @field_validator("failure_webhook_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value
