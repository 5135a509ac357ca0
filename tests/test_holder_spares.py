"""The kept connection's spares, in-process: when the holder starts them (``Holder._pump_out``, ``refill``).

A fake transport stands in for the SSH connection (it records each start); the real sshd path is
``test_reuse``'s. What is pinned here: a call's spares are started once the call has ended, not
while it runs, when a spare is still kept; and a call that finds none kept starts one at once.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from helpers import wait_for

from skyctl.transports.reuse.holder import READY_MARK, SPARES, Holder

ARGV = ["/usr/bin/python3", "-c", "STUB", "0"]  # a bound of 0: no heartbeat thread


class FakePipes:
    """A command's channel: ``read1`` gives the stub's ready line, then waits for ``release``, then EOF."""

    def __init__(self, release: threading.Event | None = None) -> None:
        self.release = release
        self.chunks = [READY_MARK, b"value\n"] if release is not None else []
        self.is_running = True
        self.closed = False

    def read1(self, n: int) -> bytes:
        if self.chunks:
            return self.chunks.pop(0)
        if self.release is not None:
            self.release.wait(30)
        return b""

    def lost(self) -> None:
        return None

    def exit_status(self, timeout: float) -> int:
        return 0

    def wait_stderr(self, timeout: float) -> None:
        pass

    def close(self) -> None:
        self.closed = True
        self.is_running = False


class FakeTransport:
    """Records whether the call was still running (``release`` not set) at each start."""

    def __init__(self, release: threading.Event) -> None:
        self.release = release
        self.starts: list[bool] = []

    def start(self, argv: list[str]) -> FakePipes:
        self.starts.append(self.release.is_set())
        return FakePipes()


def _holder(tmp_path: Path, transport: FakeTransport) -> Holder:
    return Holder(transport, str(tmp_path / "h.sock"), str(tmp_path / "h.pid"), 60.0, True)  # type: ignore[arg-type]


def _run_call(holder: Holder, release: threading.Event) -> list[bytes]:
    sent: list[bytes] = []
    a, b = socket.socketpair()
    try:
        pump = threading.Thread(target=holder._pump_out, args=(FakePipes(release), lambda k, d: sent.append(d), a, ARGV))
        pump.start()
        wait_for(lambda: b"value\n" in sent, timeout=30, what="the call's output relayed")
        release.set()  # the call ends
        pump.join(30)
        return sent
    finally:
        a.close()
        b.close()


def test_with_a_spare_kept_the_next_ones_start_only_once_the_call_has_ended(tmp_path: Path) -> None:
    release = threading.Event()
    transport = FakeTransport(release)
    holder = _holder(tmp_path, transport)
    holder.kept.append((ARGV, FakePipes()))  # one left by the call before
    _run_call(holder, release)
    wait_for(lambda: len(holder.kept) == SPARES and not holder.refilling, timeout=30, what="the spares kept")
    assert transport.starts == [True] * (SPARES - 1), "a spare was started while the call ran"


def test_with_none_kept_a_spare_starts_while_the_call_runs_and_the_rest_after(tmp_path: Path) -> None:
    release = threading.Event()
    transport = FakeTransport(release)
    holder = _holder(tmp_path, transport)
    sent: list[bytes] = []
    a, b = socket.socketpair()
    try:
        pump = threading.Thread(target=holder._pump_out, args=(FakePipes(release), lambda k, d: sent.append(d), a, ARGV))
        pump.start()
        wait_for(lambda: len(holder.kept) == 1, timeout=30, what="a spare started at the call's ready")
        assert transport.starts == [False]
        release.set()
        pump.join(30)
    finally:
        a.close()
        b.close()
    wait_for(lambda: len(holder.kept) == SPARES and not holder.refilling, timeout=30, what="the spares kept")
    assert transport.starts == [False] + [True] * (SPARES - 1)


def test_a_call_takes_the_oldest_spare_and_one_of_another_argv_is_closed(tmp_path: Path) -> None:
    holder = _holder(tmp_path, FakeTransport(threading.Event()))
    other, first, second = FakePipes(), FakePipes(), FakePipes()
    holder.kept = [(["/other/python", "-c", "STUB", "0"], other), (ARGV, first), (ARGV, second)]
    assert holder.take_spare(ARGV) is first
    assert holder.kept == [(ARGV, second)]
    wait_for(lambda: other.closed, timeout=30, what="the spare of another argv closed")
