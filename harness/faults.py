"""Deterministic crash points for the fault-matrix tests (tests/test_faults*.py, bench/fault_matrix.py).

A real overnight search dies wherever the machine decides; the tests need it to die at the worst
moments on purpose. ``PGOLF_FAULT_KILL_AT=<point>[:<n>]`` makes the process SIGKILL itself the
n-th time (default: the first) it reaches ``kill_point(<point>)``. Nothing else reads the variable,
and unset (always, outside those tests) a kill point is one dictionary lookup.

Points:
  dispatch            the driver has handed a run to Ray, before it records that the run is running
  store.finish_run    inside the transaction that records a finished run, before COMMIT
  promote.record      the record folder is written, before the promotion state says so
"""

from __future__ import annotations

import os
import signal

ENV = "PGOLF_FAULT_KILL_AT"
_seen: dict[str, int] = {}


def kill_point(name: str) -> None:
    """SIGKILL this process here when PGOLF_FAULT_KILL_AT names this point (and this is its n-th visit)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] == (int(nth) if nth.isdigit() else 1):
        os.kill(os.getpid(), signal.SIGKILL)
