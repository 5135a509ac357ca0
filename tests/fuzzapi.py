"""The fuzz's API scenario: two calls on one host (one worker), then the results on stdout.

Usage: python tests/fuzzapi.py CONFIG. A skyctl failure is its one line on stderr and its
exit status, as the CLI would; anything else escapes as a traceback (which the fuzz counts).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "targets"))

import skyctl  # noqa: E402
from skyctl.errors import SkyctlError  # noqa: E402

import fuzz_targets  # noqa: E402


def main() -> int:
    try:
        with skyctl.host("fuzz", sys.argv[1]) as host:  # kept: both calls on one worker
            values = list(skyctl.function(fuzz_targets.count)(400) >> host)
            result = skyctl.function(fuzz_targets.total)(100) >> host
    except SkyctlError as err:
        print(f"\nerror: {err.message}", file=sys.stderr)  # on a line of its own, after a log's unfinished one
        return int(err.exit_status)
    print(len(values), sum(values), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
