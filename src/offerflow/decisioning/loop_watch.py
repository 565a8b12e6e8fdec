"""Opt-in diagnostics of a serving worker's event loop: when it was blocked >= 2 ms, and by what.

Off unless ``OFFERFLOW_LOOP_WATCH`` names a directory when a service starts (`create_app` reads it
then; the load bench's ``--loop-watch`` sets it). Off, nothing runs and the request path pays one
attribute test. On, for the worker's lifetime:

- a heartbeat on the event loop (`PERIOD_S`): each beat notes how late it fired; a beat later than
  `MIN_BLOCK_S` is a *blocked interval*, with the CPU the loop's thread and the whole process used
  meanwhile (what the loop thread did not use is time it waited: for the GIL held by another
  thread, or for a core the OS gave another process) and the answers made in it;
- garbage collections (`gc.callbacks`: generation, duration), decision-log flushes (the writer
  thread's start and end, `DecisionLogBuffer.watch`), and answers slower than `SLOW_ANSWER_S`
  (`FastDecider.watch`), each kept with its time so a blocked interval can be matched with what
  overlapped it.

On a graceful stop it writes ``loop-watch-<pid>.json`` there: counts of blocked intervals >= 2, 5,
10, 20 ms (and per 10,000 answers), each interval's likely cause, GC totals per generation, and the
longest intervals in detail. The heartbeat costs ~1,000 short callbacks a second (diagnostics only).
"""

from __future__ import annotations

import bisect
import gc
import json
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

WATCH_ENV = "OFFERFLOW_LOOP_WATCH"
PERIOD_S = 0.001
MIN_BLOCK_S = 0.002
SLOW_ANSWER_S = 0.001
THRESHOLDS_MS = (2, 5, 10, 20)
_CPU_BINS_MS = (0.5, 1, 2, 5)  # answers counted by CPU time at or over each
_KEEP_GC_S = 0.0002  # collections shorter than this are only counted


class LoopWatch:
    """Blocked intervals of one event loop and what overlapped them (see the module docstring).
    Times are `time.perf_counter` seconds. `start` on the loop's thread, `stop` writes the report."""

    def __init__(self, directory: Path | None = None, period_s: float = PERIOD_S,
                 min_block_s: float = MIN_BLOCK_S) -> None:
        self.directory, self.period_s, self.min_block_s = directory, period_s, min_block_s
        self.blocks: list[tuple[float, float, float, float, int]] = []  # due, fired, loop CPU, process CPU, answers
        self.collections: list[tuple[float, float, int]] = []  # start, end, generation (>= _KEEP_GC_S)
        self.gc_totals = {g: [0, 0.0, 0.0, 0.0] for g in range(3)}  # generation -> count, s, longest s, CPU s
        self.flushes: list[tuple[float, float, int, float]] = []  # start, end, decisions written, CPU s
        self.slow_answers: list[tuple[float, float]] = []
        self.answer_cpu: Counter[int] = Counter()  # answers by CPU time, in `_CPU_BINS_MS` bins
        self.answer_cpu_max = 0.0
        self.answers = 0
        self._gc_started = self._gc_started_cpu = 0.0
        self._loop: Any = None
        self._handle: Any = None
        self._loop_thread = 0
        self._beat_state = (0.0, 0.0, 0.0, 0)  # due, loop CPU, process CPU, answers at the last beat
        self.started = self.stopped = 0.0

    def start(self, loop: Any) -> LoopWatch:
        self._loop, self._loop_thread = loop, threading.get_ident()
        self.started = time.perf_counter()
        gc.callbacks.append(self._on_gc)
        self._schedule(self.started)
        return self

    def _schedule(self, now: float) -> None:
        self._beat_state = (now + self.period_s, time.thread_time(), time.process_time(), self.answers)
        self._handle = self._loop.call_later(self.period_s, self._beat)

    def _beat(self) -> None:
        now = time.perf_counter()
        due, loop_cpu, process_cpu, answers = self._beat_state
        if now - due >= self.min_block_s:
            self.blocks.append((due, now, time.thread_time() - loop_cpu, time.process_time() - process_cpu,
                                self.answers - answers))
        self._schedule(now)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if threading.get_ident() != self._loop_thread:
            return  # a collection on another thread does not run on the loop (it holds the GIL: see blocks)
        if phase == "start":
            self._gc_started, self._gc_started_cpu = time.perf_counter(), time.thread_time()
            return
        end = time.perf_counter()
        seconds, totals = end - self._gc_started, self.gc_totals[info["generation"]]
        totals[0] += 1
        totals[1] += seconds
        totals[2] = max(totals[2], seconds)
        totals[3] += time.thread_time() - self._gc_started_cpu
        if seconds >= _KEEP_GC_S:
            self.collections.append((self._gc_started, end, info["generation"]))

    def answered(self, started: float, ended: float, cpu_s: float) -> None:
        """One answer made on the loop between `started` and `ended`, using `cpu_s` of its thread's
        CPU (a long answer by CPU is work of its own; by wall time only, it waited)."""
        self.answers += 1
        if ended - started >= SLOW_ANSWER_S:
            self.slow_answers.append((started, ended))
        self.answer_cpu[bisect.bisect_right(_CPU_BINS_MS, cpu_s * 1e3)] += 1
        self.answer_cpu_max = max(self.answer_cpu_max, cpu_s)

    def flushed(self, started: float, ended: float, decisions: int, cpu_s: float) -> None:
        """The decision-log writer thread wrote `decisions` between `started` and `ended`, using
        `cpu_s` of CPU (at most that long it held the GIL)."""
        self.flushes.append((started, ended, decisions, cpu_s))

    def stop(self) -> dict[str, Any]:
        """Stop watching; the report (also written to `directory` when one was given)."""
        self.stopped = time.perf_counter()
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._handle is not None:
            self._handle.cancel()
        for events in (self.collections, self.flushes, self.slow_answers):
            events.sort()
        report = self.report()
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            (self.directory / f"loop-watch-{os.getpid()}.json").write_text(json.dumps(report, indent=1))
        return report

    def report(self) -> dict[str, Any]:
        """Blocked intervals counted by length (absolute and per 10,000 answers) and by cause."""
        details = [self.describe(block) for block in self.blocks]
        per_10k = 1e4 / max(self.answers, 1)
        counts = {f">={ms}ms": sum(d["blocked_ms"] >= ms for d in details) for ms in THRESHOLDS_MS}
        causes = {f">={ms}ms": dict(Counter(d["cause"] for d in details if d["blocked_ms"] >= ms))
                  for ms in THRESHOLDS_MS[1:]}
        flush_s = [end - start for start, end, _, _ in self.flushes]
        flush_cpu = [cpu for _, _, _, cpu in self.flushes]
        return {"pid": os.getpid(), "seconds": round(self.stopped - self.started, 2), "answers": self.answers,
                "blocked": counts, "blocked_per_10k_answers": {k: round(v * per_10k, 2) for k, v in counts.items()},
                "blocked_ms_total": round(sum(d["blocked_ms"] for d in details), 1), "causes": causes,
                "gc": {f"gen{g}": {"count": n, "ms_total": round(s * 1e3, 1), "ms_max": round(m * 1e3, 2),
                                   "cpu_ms_total": round(c * 1e3, 1)}
                       for g, (n, s, m, c) in self.gc_totals.items()},
                "flushes": {"count": len(flush_s), "ms_total": round(sum(flush_s) * 1e3, 1),
                            "ms_max": round(max(flush_s, default=0) * 1e3, 1),
                            "cpu_ms_total": round(sum(flush_cpu) * 1e3, 1),
                            "cpu_ms_max": round(max(flush_cpu, default=0) * 1e3, 1)},
                "slow_answers": len(self.slow_answers),
                "answers_by_cpu_ms": {f">={lo}": sum(n for b, n in self.answer_cpu.items() if b > k)
                                      for k, lo in enumerate(_CPU_BINS_MS)},
                "answer_cpu_ms_max": round(self.answer_cpu_max * 1e3, 2),
                "longest": sorted(details, key=lambda d: -d["blocked_ms"])[:25]}

    def describe(self, block: tuple[float, float, float, float, int]) -> dict[str, Any]:
        """One blocked interval: its length, the CPU its thread and the other threads used in it,
        the collections, flushes and slow answers that overlapped it, and the likeliest cause."""
        due, fired, loop_cpu, process_cpu, answers = block
        span = (due - self.period_s, fired)  # the beat before `due` ran at due - period
        blocked, window = fired - due, fired - span[0]
        gc_s, gen = _overlap(self.collections, span)
        flush_s, _ = _overlap(self.flushes, span)
        slow_s, _ = _overlap(self.slow_answers, span)
        other_cpu = max(process_cpu - loop_cpu, 0.0)
        waited = max(window - loop_cpu, 0.0)
        if gc_s >= 0.5 * blocked:
            cause = f"gc gen{gen}"
        elif slow_s >= 0.5 * blocked:
            cause = "slow answer"
        elif waited >= 0.5 * blocked:
            cause = ("GIL: another thread ran" + (" (decision-log flush)" if flush_s else "")
                     if other_cpu >= 0.3 * waited else "off CPU: preempted by other processes")
        else:
            cause = "loop busy: many answers" if answers * 2e-4 >= 0.5 * blocked else "loop busy: other work"
        return {"at_s": round(due - self.started, 3), "blocked_ms": round(blocked * 1e3, 2),
                "loop_cpu_ms": round(loop_cpu * 1e3, 2), "other_threads_cpu_ms": round(other_cpu * 1e3, 2),
                "gc_ms": round(gc_s * 1e3, 2), "flush_overlap_ms": round(flush_s * 1e3, 2),
                "slow_answer_ms": round(slow_s * 1e3, 2), "answers": answers, "cause": cause}


def _overlap(events: list[tuple], span: tuple[float, float], longest_s: float = 5.0) -> tuple[float, int]:
    """Seconds of `events` ((start, end, ...) tuples in start order, none longer than `longest_s`)
    inside `span`, and the largest third field among them (a collection's generation)."""
    total, largest = 0.0, 0
    lo, hi = span
    for k in range(bisect.bisect_left(events, (hi,)) - 1, -1, -1):
        start, end = events[k][0], events[k][1]
        if start < lo - longest_s:
            break
        if end > lo:
            total += min(end, hi) - max(start, lo)
            largest = max(largest, int(events[k][2]) if len(events[k]) > 2 else 0)
    return total, largest


def watch_from_env() -> LoopWatch | None:
    """A `LoopWatch` writing to ``$OFFERFLOW_LOOP_WATCH`` when set (not yet started), else None."""
    directory = os.environ.get(WATCH_ENV)
    return LoopWatch(Path(directory)) if directory else None
