"""Batch prediction for LightGBM models, compiled to machine code when the batch is large.

Scoring every profile against every offer means predicting tens of millions of rows with the same
model. LightGBM's own `Booster.predict` walks the trees in an interpreter loop; lleaves compiles
the same trees with LLVM into a function that returns the same numbers (to float rounding) about
eight times faster here (`bench/ranking_bench.py`, docs/performance.md). Compiling costs seconds to
tens of seconds per model, so `BoosterPredictor` compiles only when the rows to score make it pay
off, keeps the compiled library in a cache keyed by the model's text, and falls back to LightGBM's
predict (with a warning) if compilation fails.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import tempfile
import threading
from pathlib import Path
from typing import Any, Literal

import numpy as np

_log = logging.getLogger(__name__)

#: Below this many rows, LightGBM's predict is done before a compile would be.
COMPILE_MIN_ROWS = 2_000_000
CompileMode = Literal["auto", "always", "never"]


def default_cache_dir() -> Path:
    return Path(os.environ.get("OFFERFLOW_CACHE_DIR", Path(tempfile.gettempdir()) / "offerflow-cache")) / "compiled"


class BoosterPredictor:
    """`predict(X)` for a LightGBM booster (binary: the probability), compiled on demand.

    ``compile="auto"`` compiles once `expect_rows` has announced a batch of at least
    `COMPILE_MIN_ROWS` rows; "always" compiles at the first prediction; "never" never does.
    """

    def __init__(self, booster: Any, compile: CompileMode = "auto", cache_dir: Path | None = None,
                 threads: int | None = None) -> None:
        self.booster = getattr(booster, "booster_", booster)  # an LGBMClassifier or a Booster
        self.mode = compile
        self.cache_dir = cache_dir or default_cache_dir()
        self.threads = threads or os.cpu_count() or 1
        self._compiled: Any = None
        self._failed = False
        self._lock = threading.Lock()

    @property
    def compiled(self) -> bool:
        return self._compiled is not None

    def expect_rows(self, rows: int) -> None:
        """Announce the size of the coming work; compiles now if it pays off."""
        if self.mode == "auto" and rows >= COMPILE_MIN_ROWS:
            self._compile()

    def predict(self, features: np.ndarray) -> np.ndarray:
        if self.mode == "always":
            self._compile()
        if self._compiled is not None:
            return self._compiled.predict(np.ascontiguousarray(features, dtype=np.float64), n_jobs=self.threads)
        return self.booster.predict(features)

    def _compile(self) -> None:
        with self._lock:
            if self._compiled is not None or self._failed:
                return
            try:
                self._compiled = _compile_lleaves(self.booster.model_to_string(), self.cache_dir)
            except ImportError:  # the `fast` extra (lleaves, llvmlite) is not installed
                self._failed = True
                _log.info("lleaves is not installed (pip install 'offerflow[fast]'); using LightGBM's own predict")
            except Exception as exc:  # a broken toolchain must not stop scoring: predict as before
                self._failed = True
                _log.warning("compiling the LightGBM model failed (%s); using LightGBM's own predict",
                             str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def _compile_lleaves(model_text: str, cache_dir: Path) -> Any:
    import lleaves
    import llvmlite

    key = hashlib.sha256("\n".join([model_text, lleaves.__version__ if hasattr(lleaves, "__version__") else "",
                                    llvmlite.__version__, platform.machine()]).encode()).hexdigest()[:24]
    cache_dir.mkdir(parents=True, exist_ok=True)
    library = cache_dir / f"lgbm-{key}.so"
    with tempfile.TemporaryDirectory() as tmp:
        model_file = Path(tmp) / "model.txt"
        model_file.write_text(model_text)
        model = lleaves.Model(model_file=str(model_file))
        if library.exists():
            model.compile(cache=str(library))  # loads the cached library
        else:
            # Compile to a private file and move it into place: a concurrent compiler never loads half a file.
            private = cache_dir / f".{library.stem}-{os.getpid()}-{threading.get_ident()}.so"
            model.compile(cache=str(private))
            os.replace(private, library)
    return model
