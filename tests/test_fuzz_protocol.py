"""The protocol fuzz in CI: a seeded relay breaks what a real worker sends (issue 24).

Every mutation kind of ``tests/fuzzrelay.py`` (truncated streams, flipped
bytes, changed lengths, dropped, doubled and swapped frames, unknown kinds,
stale call ids, emptied payloads, stalls, unasked CANCELLED, repeated ends,
bad LOG and CREDIT frames, wrong counts, garbage, broken hellos and stub
answers, a stub that only says ``progress``) over ``run``, ``pipe`` and a
two-call API script, for fixed seeds: a few hundred cases, run in parallel
threads. Each must end (no hang), without a traceback of skyctl's, with exit
0, 1, 5 or 6, and with exit 0 only when stdout is exactly right, except for
what a protocol without checksums cannot see (``fuzzcases._undetectable``:
a byte changed inside a value's text, two batches of values swapped).

The longer run is ``python benchmarks/fuzz.py`` (figures in docs/benchmarks.md).
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fuzzcases import SCENARIOS, cases, run_case

#: a hang is caught per case (its subprocess timeout); this only guards the whole on a very busy machine
pytestmark = pytest.mark.timeout(400)

#: fixed seeds: the same cases on every run (which frame each hits still depends on timing)
SEEDS = range(100, 105)
THREADS = 6


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_a_broken_worker_never_hangs_tracebacks_or_lies(tmp_path: Path, scenario: str) -> None:
    todo = [case for case in cases(SEEDS) if case[2] == scenario]
    assert len(todo) >= 80  # × 3 scenarios
    with ThreadPoolExecutor(THREADS) as pool:
        outcomes = list(pool.map(lambda case: run_case(*case, tmp_path, tmp_path / "workdir", timeout=45), todo))
    failures = [f"{o.scenario} {o.mutation} seed {o.seed}: {o.failed} (exit {o.status}; relay: {o.what})\n"
                f"{o.stderr[-600:]}" for o in outcomes if o.failed]
    assert not failures, "\n".join(failures)
    statuses = Counter(o.status for o in outcomes)
    assert statuses[6] > 0 and statuses[5] > 0 and statuses[0] > 0, statuses  # the mutations did reach the client
