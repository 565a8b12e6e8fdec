"""What the bench scripts share: their command line and this process's memory figures (Linux).

A script imports it as a sibling:

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_common import bench_parser, status_mib  # noqa: E402
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def bench_parser(description: str, *, helps: dict[str, str] | None = None, raw: bool = True,
                 **options: Any) -> argparse.ArgumentParser:
    """An argument parser with one `--name` option per keyword (`first_seed` -> `--first-seed`), in
    keyword order. The keyword's value says what the option takes:

    - a bool (False): a flag (`store_true`);
    - a class (`Path`, `int`, `str`): a value of that type, default None;
    - a dict: `add_argument`'s keyword arguments as they are (choices, required, ...);
    - any other value: the default, whose type is the option's type (a `Path` default: `Path`).

    `helps` gives help texts by keyword. `raw` keeps the description's line breaks (the module
    docstring shows as written)."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter if raw else argparse.HelpFormatter)
    for name, value in options.items():
        if isinstance(value, dict):
            kwargs = dict(value)
        elif isinstance(value, bool):
            kwargs = {"action": "store_true"}
        elif isinstance(value, type):
            kwargs = {"type": None if value is str else value}
        else:
            kwargs = {"type": Path if isinstance(value, Path) else type(value), "default": value}
        if helps and name in helps:
            kwargs["help"] = helps[name]
        parser.add_argument("--" + name.replace("_", "-"), **kwargs)
    return parser


def status_mib(field: str = "VmHWM") -> float:
    """A memory figure of this process from /proc/self/status (VmHWM: peak, VmRSS: now), in MiB;
    NaN where there is none."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> None:
    """Reset this process's peak resident memory (VmHWM) to the current one, where Linux allows it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
