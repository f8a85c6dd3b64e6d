"""Run ``tidings`` with garbage-collector timing, without touching the server's code.

    PYTHONPATH=... taskset -c 0 .venv/bin/python bench/gcprobe.py serve --allow-guests ...

Registers a ``gc.callbacks`` hook that adds up the wall time of every collection (per
generation) and prints the totals to stderr when the server exits (SIGTERM).
"""

from __future__ import annotations

import atexit
import gc
import sys
import time

totals = {"wall": 0.0, "gen2": 0.0}
counts = [0, 0, 0]
started = [0.0]


def _timed(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        started[0] = time.perf_counter()
        return
    spent = time.perf_counter() - started[0]
    totals["wall"] += spent
    counts[info["generation"]] += 1
    if info["generation"] == 2:
        totals["gen2"] += spent


def _report() -> None:
    print(
        f"gcprobe: GC {totals['wall'] * 1e3:.0f} ms wall in total, gen2 {totals['gen2'] * 1e3:.0f}"
        f" ms; collections per generation {counts}; tracked objects {len(gc.get_objects())}",
        file=sys.stderr,
        flush=True,
    )


if __name__ == "__main__":
    gc.callbacks.append(_timed)
    atexit.register(_report)
    sys.argv = ["tidings", *sys.argv[1:]]
    from tidings.cli.main import main

    main()
