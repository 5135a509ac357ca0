"""Many hosts at once: a call broadcast to a group, and a stream distributed in chunks.

- ``stats``: what a run did and how it ended (``HostStats``, ``Failure``, ``Totals``,
  ``exit_status_of``, ``describe``, ``plural``).
- ``broadcast``: the group runner (``on_every_host``, a thread per host) and ``broadcast``, the same
  call on every host, concurrently.
- ``chunks``: ``Chunk``, ``ChunkFeed``, ``Cut``, ``Result``, ``Slot``, ``slots_for``.
- ``distributor``: the ``Distributor``, with its reading half (``reading``) and its
  output and failure bookkeeping (``outcomes``) as mixins of their own.

Nothing here writes: values go to the ``emit`` callbacks the caller gives (the CLI
writes rendered lines, the API yields values), warnings to ``warn``.
"""

from ..errors import Cancelled, Interrupted
from .broadcast import broadcast, on_every_host
from .chunks import Chunk, ChunkFeed, Cut, Result, Slot, keep_chunk_buffers_off_the_heap, slots_for
from .distributor import STALL_WARNING, Distributor
from .stats import Failure, HostStats, Totals, describe, exit_status_of, plural

__all__ = ["STALL_WARNING", "Cancelled", "Chunk", "ChunkFeed", "Cut", "Distributor", "Failure", "HostStats",
           "Interrupted", "Result", "Slot", "Totals", "broadcast", "describe", "exit_status_of",
           "keep_chunk_buffers_off_the_heap", "on_every_host", "plural", "slots_for"]
