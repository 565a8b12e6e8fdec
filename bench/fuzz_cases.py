"""Hostile and careless inputs for the fuzz suite (issue 19), each drawn from a seeded `random.Random`
so that a case is replayed from its seed alone. Used by bench/fuzz_bench.py (100,000 of each) and by
tests/unit/test_fuzz.py (hypothesis draws the seeds: a few hundred by default, many more `slow`).

- expressions: well-typed expressions from the grammar, then sometimes mutated (hostile characters,
  cut, duplicated, deeply nested, very long), with rows of hostile data; `judge_expression` says
  whether the parser refused it with a located error, or both evaluators agree, or neither;
- HTTP requests: (method, path, headers, body) for the decision service, valid and hostile;
- event files: bytes of a CSV, NDJSON or Parquet events file, valid then damaged.
"""

from __future__ import annotations

import io
import json
import math
import random
from typing import Any

import numpy as np

# ---------------------------------------------------------------- expressions

SCHEMA = {"profile.age": "number", "offer.priority": "number", "profile.country": "string",
          "offer.category": "string", "profile.vip": "bool", "offer.new": "bool"}
NAMES = {t: [n for n, k in SCHEMA.items() if k == t] for t in ("number", "string", "bool")}
NUMBERS = ["0", "1", "2.5", ".5", "1e308", "1E3", "0.1", "7", "-3", "1e-320", "123456789012345678901234567890"]
STRINGS = ["''", "'DE'", "'de'", "'ß'", "'İ'", "'a\\'b'", "'\\n'", "'\\t'", "'😀'", "'١'", "'%'", "'_'", "'\\\\'"]
HOSTILE_TOKENS = ["\0", "\\0", "\ud800", "'\\ud800'", "'\\udfff'", "١", "\uff11", "1e400", "9" * 400, "(", ")",
                  "[", "]", ",", "'", '"', "\\", "and", "or", "not", "!", "==", "in", "null", "NaN", "inf",
                  "profile.", ".age", "offer.priority.", "if(", "coalesce(", "\x1b", "\u2028", "\t", "\n",
                  "'" + "a" * 1001 + "'", "profile.age > 1 and " * 5, "(" * 40, ")" * 40, "ǅ", "𝟏"]
VALUES = {
    "number": [None, math.nan, math.inf, -math.inf, 0.0, -0.0, 1.0, 2.5, -3.0, 1e308, 5e-324, 7, 2**63, True],
    "string": [None, "", "DE", "de", "DE\0", "\0", "ß", "SS", "İ", "i̇", "\ud800", "a'b", "😀", "١", "%", " "],
    "bool": [None, True, False, np.bool_(True), 0, 1, math.nan],
}


def expression(rng: random.Random, type_: str, depth: int) -> str:
    """A well-typed expression of `type_` ('number', 'string', 'bool'); chains unparenthesized."""
    if depth == 0 or rng.random() < 0.25:
        if rng.random() < 0.5:
            return rng.choice(NAMES[type_])
        return rng.choice({"number": NUMBERS, "string": STRINGS, "bool": ["true", "false", "True", "null"]}[type_])
    sub = lambda t: expression(rng, t, depth - 1)  # noqa: E731
    pick = rng.randrange(6)
    if pick == 0:
        return f"if({sub('bool')}, {sub(type_)}, {sub(type_)})"
    if pick == 1:
        return f"coalesce({sub(type_)}, null, {sub(type_)})"
    if type_ == "number":
        ops = ["+", "-", "*", "/", "%"]
        funcs = [f"abs({sub('number')})", f"log({sub('number')})", f"exp({sub('number')})",
                 f"round({sub('number')})", f"-{sub('number')}", f"min({sub('number')}, {sub('number')})"]
        return rng.choice(funcs) if pick == 2 else "(" + f" {rng.choice(ops)} ".join(
            sub("number") for _ in range(rng.randint(2, 5))) + ")"
    if type_ == "string":
        return f"{rng.choice(['lower', 'upper'])}({sub('string')})"
    options = [
        lambda: "(" + f" {rng.choice(['and', 'or', '&&', '||'])} ".join(sub("bool") for _ in range(rng.randint(2, 5))) + ")",
        lambda: f"({rng.choice(['not ', '!'])}{sub('bool')})",
        lambda: f"({sub('number')} {rng.choice(['==', '!=', '<', '<=', '>', '>='])} {sub('number')})",
        lambda: f"({sub('string')} {rng.choice(['==', '!=', '<', '>='])} {sub('string')})",
        lambda: f"({sub('number')} {rng.choice(['in', 'not in'])} [{rng.choice(NUMBERS)}, {sub('number')}])",
        lambda: f"({sub('string')} {rng.choice(['in', 'not in'])} [{rng.choice(STRINGS)}, {sub('string')}])",
        lambda: f"{rng.choice(['contains', 'starts_with'])}({sub('string')}, {sub('string')})",
        lambda: f"is_null({sub(rng.choice(['number', 'string', 'bool']))})",
    ]
    return rng.choice(options)()


def mutate(rng: random.Random, text: str) -> str:
    """`text` damaged the way a careless or hostile author would."""
    kind = rng.randrange(7)
    at = rng.randint(0, len(text))
    if kind == 0:
        return text[:at] + rng.choice(HOSTILE_TOKENS) + text[at:]
    if kind == 1:
        return text[:at] + text[rng.randint(at, len(text)):]
    if kind == 2:
        return text[:at] + text[at:] * rng.randint(2, 4)
    if kind == 3:
        return "(" * rng.choice([31, 32, 33, 200, 5000]) + text + ")" * rng.randint(0, 40)
    if kind == 4:
        return f" {rng.choice(['and', 'or', '+'])} ".join([text] * rng.choice([2, 150, 1000]))
    if kind == 5:
        return text.replace(rng.choice(["(", ")", ",", "'", " "]), rng.choice(["", "((", "\0", "١", "  ", "\\"]))
    return "".join(rng.choice([c, c, c, rng.choice(HOSTILE_TOKENS)]) for c in text[:300])


def expression_case(rng: random.Random) -> tuple[str, str, dict[str, np.ndarray], int]:
    """(kind, text, columns, rows): an expression (mutated one time in three) and hostile rows."""
    kind = rng.choice(["rule", "formula"])
    text = expression(rng, "bool" if kind == "rule" else "number", rng.randint(1, 4))
    if rng.random() < 1 / 3:
        text = mutate(rng, text)
    n = rng.randint(1, 6)
    columns = {name: np.array([rng.choice(VALUES[type_]) for _ in range(n)], dtype=object)
               for name, type_ in SCHEMA.items() if rng.random() < 0.85}
    return kind, text, columns, n


def judge_expression(kind: str, text: str, columns: dict[str, np.ndarray], n: int) -> str:
    """'refused' (a one-line ExpressionError), 'agree' (both evaluators, every row) or 'disagree';
    any other exception propagates (the caller counts it as a crash)."""
    from offerflow.rules.expressions import ExpressionError, parse_expression

    try:
        expr = parse_expression(text, SCHEMA, kind=kind)  # type: ignore[arg-type]
    except ExpressionError as exc:
        if "\n" in str(exc):
            raise AssertionError(f"a multi-line error: {str(exc)[:200]!r}") from None
        return "refused"
    batch = expr.evaluate_batch(columns, n_rows=n)
    for i in range(n):
        one = float(expr.evaluate_one({name: col[i] for name, col in columns.items()}))
        b = float(batch[i])
        if not ((math.isnan(b) and math.isnan(one)) or b == one):
            return "disagree"
    return "agree"


# ---------------------------------------------------------------- HTTP requests

HOSTILE_JSON = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" + "0" * 5000, '"\\ud800"', '"\\udfff"',
                '"\\u0000"', '""', "null", "true", "[]", "{}", '"' + "x" * 300 + '"', '"' + "é" * 129 + '"',
                '"' + "x" * 70_000 + '"', "[" * 5000 + "]" * 5000, '{"a":' * 3000 + "1" + "}" * 3000,
                "2.0", "2.5", '"2"', "-1", "0", "31", "30", "1e2", '["web-banner"]', '[null]', '"web-banner"']
GARBAGE = [b"", b"{", b"}", b"[", b"null", b"\xff\xfe", b"\xef\xbb\xbf{}", b"\x00" * 10, b"\xc3\x28",
           b'{"profile_id": "p", "placements": ["web-banner"]', b"NaN", b'{"profile_id":"\xed\xa0\x80"}']
PATHS = ["/health", "/docs", "/openapi.json", "/nope", "/decisions/", "/%00", "/..%2f..%2fetc%2fpasswd",
         "/" + "a" * 5000, "/admin/caps", "/admin/caps?profile_id=%ff%fe", "/admin/caps?profile_id=" + "x" * 3000,
         "/decisions?x=%00", "/admin/reload"]


def decision_body(rng: random.Random, profiles: list[str], placements: list[str]) -> dict[str, Any]:
    body: dict[str, Any] = {"profile_id": rng.choice(profiles), "placements": rng.sample(placements, rng.randint(1, 3))}
    if rng.random() < 0.3:
        body["items"] = rng.randint(1, 5)
    if rng.random() < 0.2:
        body["allow_duplicates"] = rng.random() < 0.5
    return body


def _json_with(body: dict[str, Any], rng: random.Random) -> bytes:
    """`body` as JSON with one field (or an extra key) replaced by raw hostile JSON text."""
    marker = "__HOSTILE__"
    key = rng.choice(["profile_id", "placements", "items", "allow_duplicates", "extra", "\\ud800"])
    if key == "placements" and rng.random() < 0.5:
        body[key] = [marker, "web-banner"]
    else:
        body[key] = marker
    return json.dumps(body).replace(f'"{marker}"', rng.choice(HOSTILE_JSON)).encode("utf-8", "surrogatepass")


def http_request(rng: random.Random, profiles: list[str], placements: list[str],
                 offers: list[str]) -> tuple[str, str, dict[str, str], bytes]:
    """(method, path, headers, body) of one request: valid decisions, hostile JSON, garbage bytes,
    odd content types and methods, admin routes with and without the token, odd paths."""
    json_ct = {"content-type": "application/json"}
    kind = rng.randrange(10)
    body = decision_body(rng, profiles + ["", "unknown", "x" * 256], placements + ["unknown"])
    if kind <= 2:
        return "POST", "/decisions", json_ct, json.dumps(body).encode()
    if kind <= 5:
        return "POST", "/decisions", json_ct, _json_with(body, rng)
    if kind == 6:
        data = rng.choice(GARBAGE) if rng.random() < 0.6 else bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64)))
        headers = rng.choice([json_ct, {"content-type": "text/plain"}, {"content-type": "multipart/form-data; boundary=x"},
                              {"content-type": "application/x-www-form-urlencoded"}, {}])
        return "POST", "/decisions", headers, data
    if kind == 7:
        token = rng.choice([None, "wrong", "adm1n", "adm1n", "\u00e9"])
        headers = {**json_ct, **({"authorization": f"Bearer {token}".encode().decode('latin-1')} if token else {})}
        route = rng.choice(["/admin/caps/reset", "/admin/caps/reset", "/admin/caps"] + ["/admin/reload"] * (rng.random() < 0.02))
        reset = rng.choice([{}, {"offer_id": rng.choice(offers + ["unknown", "x" * 300])}, None])
        data = json.dumps(reset).encode() if reset is not None else _json_with({"offer_id": "o"}, rng)
        return ("GET" if route == "/admin/caps" else "POST"), route, headers, data
    if kind == 8:
        return rng.choice(["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]), "/decisions", json_ct, json.dumps(body).encode()
    return rng.choice(["GET", "POST"]), rng.choice(PATHS), json_ct, b"{}"


# ---------------------------------------------------------------- event files

HEADER = ["event_id", "timestamp", "profile_id", "event_type", "offer_id", "placement_id", "channel", "value"]


def event_rows(rng: random.Random, n: int) -> list[list[Any]]:
    rows = []
    for i in range(n):
        rows.append([f"e-{i}", f"2026-10-{rng.randint(1, 28):02d}T08:{rng.randint(0, 59):02d}:00Z", f"p-{rng.randint(1, 9)}",
                     rng.choice(["display", "click", "purchase"]), f"o-{rng.randint(1, 4)}", "web-banner", "web",
                     rng.choice(["", "1.5", "0"])])
    return rows


def _damage(rng: random.Random, data: bytes) -> bytes:
    """`data` truncated, with flipped or inserted bytes, a NUL, invalid UTF-8, a huge line or a BOM."""
    kind = rng.randrange(8)
    at = rng.randint(0, len(data))
    if kind == 0:
        return data[:at]
    if kind == 1:
        flipped = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            if flipped:
                flipped[rng.randrange(len(flipped))] = rng.getrandbits(8)
        return bytes(flipped)
    if kind == 2:
        return data[:at] + rng.choice([b"\x00", b"\xff\xfe", b"\xed\xa0\x80", b"\r", b'"', b"\n\n", b",,,,"]) + data[at:]
    if kind == 3:
        return data[:at] + b"x" * rng.choice([10_000, 2_000_000]) + data[at:]
    if kind == 4:
        return b"\xef\xbb\xbf" + data
    if kind == 5:
        return data.replace(b"\n", b"\r\n")
    if kind == 6:
        return data * rng.randint(2, 3)
    return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 200)))


def _ndjson_line(rng: random.Random, row: list[Any]) -> str:
    if rng.random() < 0.5:
        return json.dumps(dict(zip(HEADER, row)))
    return json.dumps({"_id": row[0], "timestamp": row[1], "eventType": f"decisioning.proposition{rng.choice(['Display', 'Interact'])}",
                       "identityMap": {"ECID": [{"id": row[2]}]},
                       "_experience": {"decisioning": {"propositions": [{"id": "d", "scope": row[5], "items": [{"id": row[4]}]}]}}})


def event_file(rng: random.Random) -> tuple[str, bytes]:
    """(suffix, bytes) of an events file: a small valid file of a random format, usually damaged."""
    rows = event_rows(rng, rng.randint(0, 30))
    suffix = rng.choice([".csv", ".ndjson", ".parquet"])
    if suffix == ".csv":
        header = rng.choice([HEADER, HEADER[:3], HEADER + ["event_id"], HEADER + ["_source_line"], [""] + HEADER[1:]])
        data = ("\n".join(",".join(map(str, r[:len(header)])) for r in [header, *rows]) + "\n").encode()
    elif suffix == ".ndjson":
        lines = [_ndjson_line(rng, r) for r in rows]
        lines += rng.sample(["NaN", "[]", "{", '{"event_id": NaN}', "null", '{"a":' * 2000 + "1" + "}" * 2000, ""], 2)
        rng.shuffle(lines)
        data = "\n".join(lines).encode()
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = list(zip(*rows)) if rows else [()] * len(HEADER)
        table = pa.table({name: pa.array(list(col), type=pa.string()) for name, col in zip(HEADER, columns)})
        if rng.random() < 0.3:
            table = table.drop_columns([rng.choice(HEADER)])
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        data = buffer.getvalue()
    return suffix, _damage(rng, data) if rng.random() < 0.8 else data
