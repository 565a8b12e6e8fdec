"""What keeps hostile or careless requests from crashing the HTTP decision service (issue 19):
the request body size limit (413), the id limits the request models check, and a 422 body that
always renders (non-finite numbers, lone surrogates or a 10 MB string in the input are not echoed
as such). Every answer is one line of JSON; nothing here logs request contents."""

import math
from typing import Any

import orjson
from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

#: Largest request body, in bytes (a decision request is well under 4 KiB): larger is a 413.
MAX_BODY_BYTES = 64 * 1024
#: Longest profile, placement or offer id, in bytes of UTF-8: longer is a 422.
MAX_ID_BYTES = 256
_ECHO_CHARS = 64  # at most this much of an input string is echoed in a 422
_MAX_ERRORS = 20


def check_id(value: str) -> str:
    """An id must be valid Unicode (no lone surrogates) of at most MAX_ID_BYTES bytes of UTF-8."""
    if len(value) > MAX_ID_BYTES:
        raise ValueError(f"must be at most {MAX_ID_BYTES} bytes of UTF-8")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (it contains a lone surrogate)") from None
    if size > MAX_ID_BYTES:
        raise ValueError(f"must be at most {MAX_ID_BYTES} bytes of UTF-8")
    return value


def clip(text: str, limit: int = _ECHO_CHARS) -> str:
    """`text` cut to `limit` characters, lone surrogates written as escapes, so that it encodes."""
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _echo(value: Any) -> Any:
    """A JSON-safe short form of a scalar input; objects and lists are not echoed (None)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**53 else clip(str(value))
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)  # 'nan', 'inf', '-inf'
    if isinstance(value, str):
        return clip(value)
    return None


def safe_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    """FastAPI's 422 details, made renderable: short, finite, valid Unicode."""
    details = []
    for error in exc.errors()[:_MAX_ERRORS]:
        item: dict[str, Any] = {
            "type": clip(str(error.get("type", "")), 100),
            "loc": [part if isinstance(part, int) else clip(str(part)) for part in error.get("loc", ())],
            "msg": clip(str(error.get("msg", "")), 300),
        }
        if _echo(error.get("input")) is not None:
            item["input"] = _echo(error["input"])
        if isinstance(error.get("ctx"), dict):
            item["ctx"] = {clip(str(k)): _echo(v) if _echo(v) is not None else clip(str(v))
                           for k, v in error["ctx"].items()}
        details.append(item)
    return details


async def validation_error(_: Request, exc: Exception) -> JSONResponse:
    """The 422 of a request that failed validation (registered for RequestValidationError). A
    coroutine: Starlette runs a plain function handler in its threadpool, and those thread
    hand-offs (and the worker thread taking the GIL) cost ~6% of the server's CPU when 1% of the
    requests were malformed."""
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": safe_errors(exc)}, status_code=422)


#: The 415 of a request body that is not JSON (a form or text/plain body read as JSON said "Input
#: should be a valid dictionary", which named neither the problem nor the fix).
NOT_JSON = "request body must be JSON: send Content-Type: application/json (got {})"


async def require_json(request: Request) -> None:
    """A FastAPI dependency: a body with a content type other than JSON (`application/json` or
    `application/*+json`, which FastAPI parses as JSON; none at all is read as JSON too) is a 415."""
    content_type = request.headers.get("content-type")
    if content_type:
        kind = content_type.split(";", 1)[0].strip().lower()
        if kind != "application/json" and not (kind.startswith("application/") and kind.endswith("+json")):
            raise HTTPException(415, NOT_JSON.format(clip(kind or content_type)))


def declared_length(scope: dict) -> int | None:
    """The request's Content-Length header, or None when it has none (or a bad one)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


async def read_body(receive: Any, limit: int = MAX_BODY_BYTES) -> bytes | None:
    """The whole request body, None when the client went away; raises BodyTooLarge past `limit`."""
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge()
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


class BodyTooLarge(Exception):
    """A request body over MAX_BODY_BYTES."""


async def send_error(send: Any, status: int, detail: str) -> None:
    """Answer `{"detail": detail}` with `status` from ASGI middleware."""
    body = orjson.dumps({"detail": detail})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


TOO_LARGE = f"request body is larger than {MAX_BODY_BYTES:,} bytes"
WRONG_API_KEY = "missing or wrong X-API-Key header"
