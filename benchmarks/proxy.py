"""A loopback TCP delay line: every byte arrives ``delay`` seconds late, in order, at full speed.

Not a throttle: each chunk read from one side is stamped with ``now + delay``
and written to the other side when that moment comes, while later chunks keep
being read, so throughput is unchanged and only latency grows (two proxies'
worth of ``delay`` = one added round trip: 25 ms each way is 50 ms RTT).
EOF travels the same way (half-close), after the data before it.

Run it as a program (it prints its port on stdout once it listens)::

    python benchmarks/proxy.py --target 127.0.0.1:2222 --delay-ms 25

or from Python: ``with start_proxy(target_port, delay=0.025) as port: ...``
starts that program as a child process and stops it by its pid.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

CHUNK = 256 * 1024


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def receive() -> None:
        while True:
            try:
                data = await reader.read(CHUNK)
            except (ConnectionError, OSError):
                data = b""
            queue.put_nowait((loop.time() + delay, data))
            if not data:
                return

    async def send() -> None:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                with contextlib.suppress(Exception):
                    if writer.can_write_eof():
                        writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    rx = asyncio.create_task(receive())
    try:
        await send()
    except (ConnectionError, OSError):
        pass
    finally:
        rx.cancel()


async def _handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, target: tuple[str, int],
                  delay: float) -> None:
    try:
        server_r, server_w = await asyncio.open_connection(*target)
    except OSError:
        client_w.close()
        return
    for w in (client_w, server_w):
        sock = w.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        await asyncio.gather(_pipe(client_r, server_w, delay), _pipe(server_r, client_w, delay))
    finally:
        for w in (client_w, server_w):
            with contextlib.suppress(Exception):
                w.close()


async def serve(target: tuple[str, int], delay: float, port: int = 0, ready: "os.PathLike[str] | None" = None) -> None:
    server = await asyncio.start_server(lambda r, w: _handle(r, w, target, delay), "127.0.0.1", port)
    bound = server.sockets[0].getsockname()[1]
    print(bound, flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="HOST:PORT to forward to (loopback)")
    parser.add_argument("--delay-ms", type=float, default=25.0, help="added one-way delay, each direction")
    parser.add_argument("--port", type=int, default=0, help="port to listen on, 127.0.0.1 (default: any free one)")
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve((host or "127.0.0.1", int(port)), args.delay_ms / 1000.0, args.port))


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
