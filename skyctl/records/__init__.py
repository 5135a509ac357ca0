"""stdin bytes → typed records for ``pipe``.

- ``reader``: ``RecordReader``, the one read path (``batches()``; iterating is
  the batches, flattened), ``--format lines|jsonl``;
- ``table``: CSV/TSV rows (``--format csv|tsv``, ``--column``, ``--no-header``);
- ``badlines``: the ``--on-bad-line`` policy and how a bad record is told;
- ``lines``: per-line parsing (terminators, UTF-8, JSON values, the int fast path).
"""

from __future__ import annotations

from skyctl.records.badlines import BAD_LINE_POLICIES, SHOWN_BAD_RECORDS, print_to_stderr
from skyctl.records.reader import FORMATS, RecordReader

__all__ = ["BAD_LINE_POLICIES", "FORMATS", "SHOWN_BAD_RECORDS", "RecordReader", "print_to_stderr"]
