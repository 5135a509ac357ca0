"""A loopback TCP delay line: every byte arrives ``delay`` seconds late, in order, at full speed.

Not a throttle: each chunk read from one side is stamped with ``now + delay``
and written to the other side when that moment comes, while later chunks keep
being read (up to ``MAX_PENDING`` ahead), so throughput is unchanged and only latency grows (two proxies'
worth of ``delay`` = one added round trip: 25 ms each way is 50 ms RTT).
EOF travels the same way (half-close), after the data before it.

Run it as a program (it prints its port on stdout once it listens)::

    python benchmarks/proxy.py --target 127.0.0.1:2222 --delay-ms 25

or from Python: ``with start_proxy(target_port, delay=0.025) as port: ...``
starts that program as a child process and stops it by its pid.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import selectors
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

CHUNK = 256 * 1024
#: bytes read ahead of what the destination has taken, per direction: reading pauses beyond it
#: (a slow destination slows its source, as TCP would, rather than the proxy holding it all)
MAX_PENDING = 4 * 1024 * 1024
#: while bytes are in flight the line looks at its sockets this often: a byte is read up to one
#: tick after it came and sent up to one tick after it is due (``delay`` to ``delay`` + 2 ticks)
TICK = 0.001


class _Direction:
    """One way of one connection: chunks read from ``src``, each due ``delay`` s later at ``dst``."""

    def __init__(self, src: socket.socket, dst: socket.socket) -> None:
        self.src, self.dst = src, dst
        self.pending: deque[tuple[float, bytes | None]] = deque()  # (due, data); None: EOF
        self.pending_bytes = 0
        self.out = bytearray()  # due, not yet taken by ``dst``
        self.reading = True
        self.eof_due = False  # the EOF is due: shut ``dst``'s write side once ``out`` is empty
        self.done = False


class DelayLine:
    """Every connection to ``port`` relayed to ``target``, each byte ``delay`` s late, in order.

    One thread, one ``selectors`` loop, asleep while nothing is in flight; while something
    is, it wakes every ``TICK``, reads what came and writes all that is due in one write. So
    its cost is per tick, not per packet (the lab's proxies share the machine's cores with
    what they measure: an SSH packet per value through four of them was 0.4 of a core);
    no backlog beyond ``MAX_PENDING``.
    """

    def __init__(self, target: tuple[str, int], delay: float, port: int = 0) -> None:
        self.target, self.delay = target, delay
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(64)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.listener, selectors.EVENT_READ, None)
        #: per socket: (the direction it is the source of, the direction it is the destination of)
        self.ends: dict[socket.socket, tuple[_Direction, _Direction]] = {}
        self.connecting: set[socket.socket] = set()
        #: every recv fills this one buffer (``recv(CHUNK)`` would map, shrink and unmap 256 KiB per packet)
        self.buf = memoryview(bytearray(CHUNK))

    def serve_forever(self) -> None:
        """Block while nothing is in flight; while something is, wake every ``TICK`` and take what
        came and send what is due in one go: one wake-up per tick however many packets cross."""
        while True:
            if any(d.pending for d, _ in self.ends.values()):
                time.sleep(TICK)
                ready = self.sel.select(0)
            else:
                ready = self.sel.select(None)
            for key, events in ready:
                if key.fileobj is self.listener:
                    self._accept()
                else:
                    self._ready(key.fileobj, events)  # type: ignore[arg-type]
            self._deliver(time.monotonic())

    def _accept(self) -> None:
        with contextlib.suppress(BlockingIOError):
            client, _ = self.listener.accept()
            server = socket.socket()
            for sock in (client, server):
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            err = server.connect_ex(self.target)
            if err not in (0, errno.EINPROGRESS):
                client.close()
                server.close()
                return
            up, down = _Direction(client, server), _Direction(server, client)
            self.ends[client], self.ends[server] = (up, down), (down, up)
            self.connecting.add(server)
            self.sel.register(client, selectors.EVENT_READ, None)
            self.sel.register(server, selectors.EVENT_READ | selectors.EVENT_WRITE, None)

    def _ready(self, sock: socket.socket, events: int) -> None:
        if sock not in self.ends:
            return
        source_of, dest_of = self.ends[sock]
        if sock in self.connecting and events & selectors.EVENT_WRITE:
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self._close(sock)
                return
            self.connecting.discard(sock)
        if events & selectors.EVENT_READ and source_of.reading:
            try:
                got = sock.recv_into(self.buf)
                data: bytes | None = bytes(self.buf[:got]) if got else None
            except BlockingIOError:
                return
            except OSError:
                data = None
            source_of.pending.append((time.monotonic() + self.delay, data))
            if data is None:
                source_of.reading = False
            else:
                source_of.pending_bytes += len(data)
            self._interest(sock)
        if events & selectors.EVENT_WRITE:
            self._flush(dest_of)

    def _deliver(self, now: float) -> None:
        for src, (d, _) in list(self.ends.items()):
            if src not in self.ends:
                continue
            while d.pending and d.pending[0][0] <= now:
                _, data = d.pending.popleft()
                if data is None:
                    d.eof_due = True
                else:
                    d.out += data
                    d.pending_bytes -= len(data)
            if d.out or d.eof_due:
                self._flush(d)

    def _flush(self, d: _Direction) -> None:
        if d.dst not in self.ends or d.dst in self.connecting:
            self._interest(d.dst)
            return
        if d.out:
            try:
                sent = d.dst.send(d.out)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._close(d.dst)
                return
            del d.out[:sent]
        if not d.out and d.eof_due and not d.done:
            d.done = True
            with contextlib.suppress(OSError):
                d.dst.shutdown(socket.SHUT_WR)
            if self.ends[d.dst][0].done:  # both ways have ended
                self._close(d.dst)
                return
        self._interest(d.src)
        self._interest(d.dst)

    def _interest(self, sock: socket.socket) -> None:
        """Read while its direction has room, write while it has bytes due (or is connecting)."""
        if sock not in self.ends:
            return
        source_of, dest_of = self.ends[sock]
        events = 0
        if source_of.reading and source_of.pending_bytes + len(source_of.out) < MAX_PENDING:
            events |= selectors.EVENT_READ
        if dest_of.out or sock in self.connecting:
            events |= selectors.EVENT_WRITE
        try:
            registered = self.sel.get_key(sock).events
        except KeyError:
            registered = 0
        if events == registered:
            return
        if not events:
            self.sel.unregister(sock)
        elif not registered:
            self.sel.register(sock, events, None)
        else:
            self.sel.modify(sock, events, None)

    def _close(self, sock: socket.socket) -> None:
        source_of, dest_of = self.ends.get(sock, (None, None))
        for s in {sock, getattr(source_of, "dst", sock)}:
            if s in self.ends:
                del self.ends[s]
                self.connecting.discard(s)
                with contextlib.suppress(KeyError, ValueError):
                    self.sel.unregister(s)
                s.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="HOST:PORT to forward to (loopback)")
    parser.add_argument("--delay-ms", type=float, default=25.0, help="added one-way delay, each direction")
    parser.add_argument("--port", type=int, default=0, help="port to listen on, 127.0.0.1 (default: any free one)")
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    line = DelayLine((host or "127.0.0.1", int(port)), args.delay_ms / 1000.0, args.port)
    print(line.port, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        line.serve_forever()


@contextlib.contextmanager
def start_proxy(target_port: int, delay: float = 0.025, timeout: float = 10.0) -> Iterator[int]:
    """Run the proxy as a child process in front of 127.0.0.1:``target_port``; yields its port."""
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--target", f"127.0.0.1:{target_port}",
         "--delay-ms", str(delay * 1000.0)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        timer = None
        import threading

        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        line = proc.stdout.readline()
        timer.cancel()
        if not line.strip().isdigit():
            raise RuntimeError(f"delay proxy did not start (exit {proc.poll()})")
        yield int(line)
    finally:
        from tests.sshd import stop_process

        stop_process(proc)


if __name__ == "__main__":
    main()
