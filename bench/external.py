"""The external benchmark: offerflow's models on data nobody here wrote, next to a textbook baseline.

Each section is a module `bench/external_<name>.py` whose `rows(quick)` returns one dict per
(dataset, measure): our figure, the baseline's, the ceiling where one is known (the true
probabilities of a generated world) and the target the product promises. Public data comes from
packages installed from the registry (`make bench-external` installs `obp` and `lifetimes` with
--no-deps, only for their bundled data files); generated worlds are seeded. Nothing is downloaded at
run time and nothing is committed.

    python bench/external.py                 # every section, one table
    python bench/external.py --only customer_ai --json
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from pathlib import Path

SECTIONS = ("customer_ai", "ranking", "evaluation")
COLUMNS = ("dataset", "measure", "ours", "baseline", "baseline_name", "ceiling", "target", "note")


def _fmt(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def run_sections(sections: list[str], quick: bool) -> tuple[list[dict], list[str]]:
    """Rows of every section, and one line per section that could not run (with the reason)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    rows: list[dict] = []
    failures: list[str] = []
    for name in sections:
        started = time.perf_counter()
        try:
            module = importlib.import_module(f"external_{name}")
            section_rows = module.rows(quick=quick)
        except Exception as exc:  # one broken section must not hide the others' figures
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
            traceback.print_exc(file=sys.stderr)
            continue
        seconds = time.perf_counter() - started
        rows += [{"section": name, **{c: r.get(c) for c in COLUMNS}} for r in section_rows]
        print(f"[{name}] {len(section_rows)} rows in {seconds:.0f} s", file=sys.stderr)
    return rows, failures


def print_table(rows: list[dict]) -> None:
    headers = ("section",) + COLUMNS
    cells = [[_fmt(r.get(h)) for h in headers] for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    print(line)
    print("-" * len(line))
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=SECTIONS, help="run only this section (repeatable)")
    parser.add_argument("--quick", action="store_true", help="smaller samples (a smoke run, not the reported figures)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    rows, failures = run_sections(args.only or list(SECTIONS), args.quick)
    if args.json:
        print(json.dumps({"rows": rows, "failures": failures}, indent=2, default=str))
    else:
        print_table(rows)
        for failure in failures:
            print(f"not run: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
