"""``SshPipes.write`` against the real sshd: a big write finishes, a write after EOF fails instead of spinning.

(paramiko's ``Channel.sendall`` re-slices the rest of the buffer after every
packet, and loops forever once the channel has sent EOF: ``send`` returns 0.
The reuse holder writes every client's stdin through ``SshPipes.write``.)
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import pytest

from test_ssh_transport import PY, profile_for, transport_for

if TYPE_CHECKING:
    from sshd import SshServer

pytestmark = pytest.mark.timeout(120)

#: a count of the bytes read on stdin, printed at EOF; then it stays a while (the channel stays open)
COUNT = ("import sys, time\nn = 0\nwhile True:\n    b = sys.stdin.buffer.read1(1 << 20)\n    if not b: break\n    n += len(b)\n"
         "print(n, flush=True)\ntime.sleep(float(sys.argv[1]))")


def _in_thread(fn: object, deadline: float) -> list[BaseException | None]:
    """Run ``fn`` in a thread; fail if it is still running after ``deadline`` seconds. Returns [its exception or None]."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            fn()  # type: ignore[operator]
        except BaseException as exc:  # handed to the test
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(deadline)
    assert not thread.is_alive(), f"still writing after {deadline}s"
    return outcome


def test_one_big_write_arrives_whole(sshd: SshServer) -> None:
    data = bytes(range(256)) * (128 * 4096)  # 128 MiB in one write (copying the rest per packet: hundreds of GB)
    with transport_for(profile_for(sshd)) as transport:
        pipes = transport.start([PY, "-c", COUNT, "0"])
        assert _in_thread(lambda: pipes.write(data), deadline=60) == [None]
        pipes.close_stdin()
        assert pipes.read(100).strip() == str(len(data)).encode()
        assert pipes.exit_status(timeout=20) == 0
        pipes.close()


def test_a_write_after_close_stdin_raises(sshd: SshServer) -> None:
    with transport_for(profile_for(sshd)) as transport:
        pipes = transport.start([PY, "-c", COUNT, "60"])
        pipes.write(b"abc")
        pipes.close_stdin()
        assert pipes.read(2) == b"3\n"  # it has seen EOF and is still running
        [error] = _in_thread(lambda: pipes.write(b"more"), deadline=20)
        assert isinstance(error, OSError), error
        pipes.close()
