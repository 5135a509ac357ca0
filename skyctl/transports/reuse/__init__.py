"""Kept SSH connections (``reuse: true``): a holder process per connection, and its clients.

- ``protocol``: the frame kinds (``Kind``), frames and payloads both sides use.
- ``key``: which holder a call may use (``connection_key``).
- ``client``: ``ReuseTransport``, the transport a call uses (finds or starts the holder).
- ``pipes``: ``ReusePipes``, one command's pipes through the holder.
- ``holder``: the holder process (``main``), on top of ``SshTransport``.

Everything but ``holder`` is standard library only: it is the warm path of
every call on a kept connection (paramiko loads only in the holder, or for a
direct fallback).
"""

from .client import HOLDER_NAME, ReuseTransport
from .key import CONNECTION_FIELDS, connection_key, gateway_chain, profile_fields
from .pipes import ReusePipes
from .protocol import PROTOCOL, Kind, recv_frame, send_frame

__all__ = ["CONNECTION_FIELDS", "HOLDER_NAME", "PROTOCOL", "Kind", "ReusePipes", "ReuseTransport", "connection_key",
           "gateway_chain", "profile_fields", "recv_frame", "send_frame"]
