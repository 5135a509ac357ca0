"""Liveness of an SSH connection: keepalives that must be answered.

Every ``keepalive`` seconds a ``keepalive@openssh.com`` global request that
wants a reply is sent; ``keepalive_count`` intervals in a row without any
reply give the connection up, like OpenSSH's ``ServerAliveInterval`` ×
``ServerAliveCountMax``: the connection is closed, blocked reads see EOF,
and ``SshPipes.lost()`` says why (the session turns that into
``ConnectionLost``, exit 6). ``round_trip()`` sends one on demand (the reuse
holder checks a kept connection so before a call may use it). paramiko's
own keepalive wants no reply, so it is not used: a stalled peer would go
unnoticed.

Threads: ``skyctl-ssh-keepalive`` (ticks) and ``skyctl-ssh-keepalive-send``
(sends: a send may block), one pair per connection.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from typing import Callable

import paramiko

from ...errors import ConnectionLost

__all__ = ["KEEPALIVE_REQUEST", "Liveness", "set_user_timeout"]

log = logging.getLogger("skyctl.ssh")

#: the global request sent as a keepalive, wanting a reply (what OpenSSH's
#: ServerAliveInterval sends; sshd answers it with REQUEST_FAILURE, as any
#: request it does not know: any answer proves the peer is alive)
KEEPALIVE_REQUEST = "keepalive@openssh.com"


class Liveness:
    """OpenSSH's ``ServerAliveInterval`` × ``ServerAliveCountMax`` for one paramiko transport.

    paramiko's own keepalive wants no reply, so it detects nothing: a peer
    that stalled (a suspended sshd, a link that drops packets silently)
    leaves every blocked read waiting for ever. Here every ``interval``
    seconds a global request that wants a reply is sent; any reply resets
    the count, and ``count`` intervals in a row without one give the
    connection up: the reason is recorded first (``error()``), then the
    transport is closed, which ends every blocked read and write on its
    channels (they then see EOF, and ask ``error()`` why).

    Requests are sent by a thread of their own: a send can block (a full
    socket buffer towards a stalled peer, a key exchange in progress) and
    the ticking must go on regardless. ``round_trip()`` sends the same
    request on demand and waits for its reply with a deadline (a kept
    connection is checked so before a call may use it).
    """

    def __init__(self, interval: float, count: int, where: str) -> None:
        self.interval = float(interval)
        self.count = int(count)
        #: how the connection is named in the error: ``'box' (user@host:port)``
        self.where = where
        self._cond = threading.Condition()
        self._queued = 0  # requests asked for; the n-th is answered by the n-th reply (RFC 4254 4: in order)
        self._sent = 0  # requests handed to the transport
        self._answered = 0  # replies received
        self._misses = 0  # ticks since the last reply
        self._stopped = False
        self._lost: ConnectionLost | None = None
        self._transport: paramiko.Transport | None = None

    def watch(self, transport: paramiko.Transport) -> None:
        """Count ``transport``'s replies to global requests (success and failure alike).

        paramiko keeps a handler table per transport; the reply handlers are
        wrapped, not replaced (``global_request`` still works).
        """
        table = transport._handler_table
        for ptype in (paramiko.common.MSG_REQUEST_SUCCESS, paramiko.common.MSG_REQUEST_FAILURE):
            table[ptype] = self._counting(table[ptype])
        self._transport = transport

    def _counting(self, handler: Callable[[paramiko.Message], None]) -> Callable[[paramiko.Message], None]:
        def counted(message: paramiko.Message) -> None:
            handler(message)
            self._reply()

        return counted

    def start(self) -> None:
        """Start ticking (once connected and authenticated)."""
        for run, what in ((self._tick, "keepalive"), (self._send_loop, "keepalive-send")):
            threading.Thread(target=run, name=f"skyctl-ssh-{what} {self.where}", daemon=True).start()

    def stop(self) -> None:
        """End the threads (the connection is being closed on purpose). Safe to call twice."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def error(self) -> ConnectionLost | None:
        """Why the connection was given up, or None (it was not, or it ended otherwise)."""
        return self._lost

    def round_trip(self, timeout: float) -> bool:
        """Send a keepalive and wait up to ``timeout`` seconds for its reply: False when none came."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._queued += 1
            mine = self._queued
            self._cond.notify_all()
            while self._answered < mine:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopped or not self._active():
                    return False
                self._cond.wait(min(remaining, 0.25))
        return True

    def give_up(self, reason: str, hint: str) -> None:
        """Record why the connection is lost, then close it: every blocked read and write ends."""
        with self._cond:
            if self._lost is None:
                self._lost = ConnectionLost(f"lost the connection to {self.where}: {reason}", hint)
            self._stopped = True
            self._cond.notify_all()
        transport = self._transport
        if transport is not None:
            log.info("giving up the connection to %s: %s", self.where, reason)
            with contextlib.suppress(Exception):
                transport.close()

    # -- threads ---------------------------------------------------------------

    def _active(self) -> bool:
        transport = self._transport
        return transport is not None and transport.is_active()

    def _reply(self) -> None:
        """On paramiko's thread: a reply to a global request came."""
        with self._cond:
            if self._answered < self._sent:
                self._answered += 1
            self._misses = 0
            self._cond.notify_all()

    def _tick(self) -> None:
        """OpenSSH's ``server_alive_check``: give up after ``count`` ticks without a reply, else send one more."""
        with self._cond:
            while True:
                if self._cond.wait_for(lambda: self._stopped, timeout=self.interval) or not self._active():
                    return
                if self._misses >= self.count:
                    misses = self._misses
                    break
                self._misses += 1
                self._queued += 1
                self._cond.notify_all()
        self.give_up(
            f"{misses} keepalives in a row went unanswered (one every {self.interval:g}s)",
            hint="the host or the network stopped responding (a suspended or overloaded host, a dropped link); "
            "values printed so far are complete. On a slow link, raise 'keepalive' or 'keepalive_count' for this host",
        )

    def _send_loop(self) -> None:
        """Hand each queued request to paramiko, in order; a blocked send holds up only this thread."""
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopped or self._sent < self._queued, timeout=max(self.interval, 1.0))
                if self._stopped or not self._active():
                    return
                if self._sent >= self._queued:
                    continue
                self._sent += 1
            message = paramiko.Message()
            message.add_byte(paramiko.common.cMSG_GLOBAL_REQUEST)
            message.add_string(KEEPALIVE_REQUEST)
            message.add_boolean(True)  # want reply
            try:
                self._transport._send_user_message(message)  # type: ignore[union-attr]
            except Exception as exc:  # a key exchange that never finished: this one goes unanswered
                log.debug("keepalive to %s not sent: %s", self.where, exc)


def set_user_timeout(sock: socket.socket, seconds: float) -> None:
    """Let the kernel drop the connection when sent data (keepalives included) stays unacknowledged this long."""
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    if option is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, option, int(seconds * 1000))
