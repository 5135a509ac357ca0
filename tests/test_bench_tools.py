"""The benchmark runner's own tools: the delay proxy, the timing helpers, the CLI options.

Timing is only checked as a lower bound (a delay line can never be early),
so these pass on a loaded machine.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.proxy import start_proxy  # noqa: E402
from benchmarks.timing import BenchError, drain, first_line  # noqa: E402


def _echo_server() -> tuple[socket.socket, int]:
    """A loopback server that echoes each connection until EOF, then half-closes."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)
                conn.shutdown(socket.SHUT_WR)

    threading.Thread(target=serve, daemon=True).start()
    return srv, srv.getsockname()[1]


def test_proxy_relays_everything_in_order_and_late() -> None:
    srv, port = _echo_server()
    payload = b"".join(b"%08d\n" % i for i in range(200_000))  # ~1.8 MB
    try:
        with start_proxy(port, delay=0.05) as pport:
            with socket.create_connection(("127.0.0.1", pport), timeout=30) as sock:
                started = time.monotonic()
                sock.sendall(b"x")
                assert sock.recv(1) == b"x"
                # one round trip crosses the delay line once each way: 2 x 50 ms at the least
                assert time.monotonic() - started >= 0.1
                sender = threading.Thread(target=lambda: (sock.sendall(payload), sock.shutdown(socket.SHUT_WR)))
                sender.start()
                got = bytearray()
                while chunk := sock.recv(1 << 20):
                    got += chunk
                sender.join(30)
        assert bytes(got) == payload
    finally:
        srv.close()


def test_drain_counts_lines_and_first_line_times_them() -> None:
    d = drain([sys.executable, "-c", "for i in range(12345): print(i)"], expect_lines=12345, timeout=60)
    assert d.lines == 12345 and 0 < d.first <= d.last <= d.total
    assert first_line([sys.executable, "-c", "print(1)"], timeout=60) > 0


def test_a_failing_command_is_reported_with_its_stderr() -> None:
    with pytest.raises(BenchError, match="boom"):
        first_line([sys.executable, "-c", "import sys; sys.exit('boom')"], timeout=60)
    with pytest.raises(BenchError, match="timed out"):
        first_line([sys.executable, "-c", "import time; time.sleep(60)"], timeout=1)


def test_runner_rejects_an_unknown_measurement() -> None:
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run.py"), "--only", "warm,nope"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "unknown measurement nope" in done.stderr
