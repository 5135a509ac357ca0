"""A distributed pipe fixes glibc's mmap threshold, so that its chunk buffers do not grow the heap for good.

The effect on the client's peak RSS is measured by the benchmark (row 9e); this checks the setting is made
where it can be, once, and nowhere else.
"""

from __future__ import annotations

import platform
import sys

from skyctl.many import Distributor, chunks, keep_chunk_buffers_off_the_heap


def test_the_threshold_is_fixed_with_glibc_and_left_alone_elsewhere() -> None:
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert keep_chunk_buffers_off_the_heap() is glibc
    assert keep_chunk_buffers_off_the_heap() is glibc  # again: a no-op that says the same


def test_a_distributor_makes_the_setting() -> None:
    chunks._heap_kept_flat = None  # not tried yet
    Distributor([], lambda slot, feed, skip: None, [], lambda chunk, host, batch: None)
    assert chunks._heap_kept_flat is (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc")
