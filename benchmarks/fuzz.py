"""The protocol fuzz, longer: many seeds of every mutation, counts for docs/benchmarks.md (issue 24).

The same cases as ``tests/test_fuzz_protocol.py`` (``tests/fuzzcases.py``:
skyctl against a real worker behind ``tests/fuzzrelay.py``, a ``type:
command`` host's program that changes what the worker sends, from a seed),
over more seeds. Prints, and with ``--markdown`` as a table: runs, exit
statuses, tracebacks, hangs, corrupted values printed as valid (exit 0 with
wrong output) and of those the ones no checksum-free protocol can see
(a byte changed inside a value's text, two batches of values swapped).

    python benchmarks/fuzz.py --seeds 0:20 --threads 6
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from fuzzcases import cases, run_case  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0:20", help="START:STOP (default 0:20)")
    parser.add_argument("--threads", type=int, default=6)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a case may take before it counts as a hang")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    start, stop = (int(x) for x in args.seeds.split(":"))
    todo = cases(range(start, stop))
    base = Path(tempfile.mkdtemp(prefix="skyctl-fuzz-"))
    began = time.monotonic()
    try:
        with ThreadPoolExecutor(args.threads) as pool:
            outcomes = list(pool.map(lambda case: run_case(*case, base, base / "workdir", timeout=args.timeout), todo))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    took = time.monotonic() - began
    statuses = Counter("hang" if o.hung else str(o.status) for o in outcomes)
    tracebacks = sum(o.traceback for o in outcomes)
    wrong = [o for o in outcomes if o.status == 0 and o.wrong_output]
    undetectable = [o for o in wrong if o.undetectable]
    failed = [o for o in outcomes if o.failed]
    reached = sum(o.what != "not reached" for o in outcomes)
    rows = [
        ("runs", f"{len(outcomes)} ({len(set(o.mutation for o in outcomes))} mutations × 3 scenarios, seeds {start}–{stop - 1}; "
                 f"{reached} reached their frame) in {took / 60:.1f} min"),
        ("exit statuses", ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))),
        ("skyctl tracebacks", str(tracebacks)),
        ("hangs (no exit within %gs)" % args.timeout, str(statuses.get("hang", 0))),
        ("corrupted values printed as valid (exit 0, wrong output)", f"{len(wrong)}, of which {len(undetectable)} "
         "undetectable without checksums (a byte changed inside a value's text, batches swapped)"),
        ("failed cases", str(len(failed))),
    ]
    if args.markdown:
        print("| fuzz | count |\n|---|---|")
        for name, value in rows:
            print(f"| {name} | {value} |")
    else:
        for name, value in rows:
            print(f"{name}: {value}")
    for o in failed:
        print(f"FAILED {o.scenario} {o.mutation} seed {o.seed}: {o.failed} (exit {o.status}; relay: {o.what})",
              file=sys.stderr)
        print("   " + o.stderr[-600:].replace("\n", "\n   "), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
