"""Spare workers, in-process: the checks a spare and a client make of each other (``remote/spare.py``,
``transports/spare.py``). The real path, a spare Ray driver taken by the next run, is ``test_ray_host``'s."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
from typing import Any
from pathlib import Path

import pytest

from helpers import REPO

from skyctl.bootstrap import stub_args, with_env
from skyctl.remote import spare
from skyctl.transports.local import LocalTransport
from skyctl.transports.spare import SpareTransport, key_of, spares_dir

ARGS = stub_args("~/.cache/skyctl", {"A": "b"})


def _answer(sent: bytes, want: str) -> tuple[bool, bytes]:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(sent)
        ok = spare._check_args(ours, want)
        ours.shutdown(socket.SHUT_WR)
        return ok, theirs.recv(200)


def test_a_spare_answers_ready_only_to_the_arguments_it_was_started_for() -> None:
    want = hashlib.sha256(ARGS).hexdigest()
    assert _answer(ARGS, want) == (True, b"SKYCTL ready\n")
    other = stub_args("~/.cache/skyctl", {"A": "c"})
    ok, said = _answer(other, want)
    assert not ok and said.startswith(b"SKYCTL error ") and said.endswith(b"\n")
    assert _answer(b"99999999999\n", want) == (False, b"")  # more than it reads: no answer, the client sees EOF


def test_with_env_adds_to_the_arguments_and_keeps_the_rest() -> None:
    more = with_env(ARGS, {"SKYCTL_SPARE": "x"})
    size, body = more.split(b"\n", 1)
    assert int(size) == len(body)
    assert json.loads(body) == {**json.loads(ARGS.split(b"\n", 1)[1]), "env": {"A": "b", "SKYCTL_SPARE": "x"}}
    assert key_of(["py"], ARGS) != key_of(["py"], more) != key_of(["py2"], more)


def test_a_client_refuses_a_socket_whose_process_is_not_the_one_its_name_says(run_dir: Path) -> None:
    environ = {"XDG_RUNTIME_DIR": str(run_dir)}  # (short: a socket's path must fit)
    argv = [sys.executable, "-c", "STUB"]
    directory = spares_dir(environ)
    key = key_of(argv, ARGS)
    # a socket named for pid 1 but served by this process: claimed, connected, refused, and gone
    impostor = socket.socket(socket.AF_UNIX)
    impostor.bind(os.path.join(directory, spare.socket_name(key, 1)))
    impostor.listen(1)
    with impostor:
        transport = SpareTransport(LocalTransport(), idle=1, most=1, environ=environ)
        pipes = transport._claim(key)
        assert pipes is None and os.listdir(directory) == []


def test_a_client_takes_a_spare_that_is_what_its_name_says(run_dir: Path) -> None:
    environ = {"XDG_RUNTIME_DIR": str(run_dir)}
    directory = spares_dir(environ)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(os.path.join(directory, spare.socket_name("k" * 20, os.getpid())))
    listener.listen(1)
    with listener:
        accepted: list[socket.socket] = []
        thread = threading.Thread(target=lambda: accepted.append(listener.accept()[0]))
        thread.start()
        pipes = SpareTransport(LocalTransport(), idle=1, most=1, environ=environ)._claim("k" * 20)
        thread.join(10)
        assert pipes is not None and pipes.pid == os.getpid()
        assert os.listdir(directory) == []  # claimed: no other client can find it
        pipes.write(b"hello")
        assert accepted[0].recv(5) == b"hello"
        accepted[0].close()


@pytest.mark.timeout(60)
def test_a_spare_leaves_when_enough_of_its_key_listen(run_dir: Path) -> None:
    directory = run_dir / "spares"
    directory.mkdir(mode=0o700)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (directory / spare.socket_name("k", sleeper.pid)).touch()  # a live one of the key
        (directory / spare.socket_name("k", 999_999_999)).touch()  # a dead one: removed
        code = ("import sys; sys.path.insert(0, sys.argv[1]); from skyctl.remote import spare; "
                "spare._listen({'dir': sys.argv[2], 'key': 'k', 'most': int(sys.argv[3])}); print('listening')")
        full = subprocess.run([sys.executable, "-c", code, str(REPO), str(directory), "1"], capture_output=True,
                              text=True, timeout=30)
        assert (full.returncode, full.stdout) == (0, "")  # left: one listens already
        assert sorted(os.listdir(directory)) == [spare.socket_name("k", sleeper.pid)]
        room = subprocess.run([sys.executable, "-c", code, str(REPO), str(directory), "2"], capture_output=True,
                              text=True, timeout=30)
        assert room.stdout == "listening\n", room.stderr
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_spares_directory_that_others_can_use_is_refused(tmp_path: Path) -> None:
    from skyctl.runtime import UnsafeDirectory

    tmp_path.chmod(0o700)
    environ = {"XDG_RUNTIME_DIR": str(tmp_path)}
    directory = Path(spares_dir(environ))
    directory.chmod(0o777)
    with pytest.raises(UnsafeDirectory):
        spares_dir(environ)
    # and the client then starts its worker as always, claiming nothing
    assert SpareTransport(LocalTransport(), idle=1, most=1, environ=environ)._claim("k" * 20) is None


def test_a_ray_calls_last_frame_answers_it_as_any_workers_does() -> None:
    """The link's port seals the last frame through the call (``CallState._seal``): the call is answered
    then, so a client that sends its next CALL on reading that frame finds room on the driver."""
    from skyctl.remote.raylink import Link
    from skyctl.remote.wire import Kind

    sent: list[tuple[int, bytes]] = []
    sealed: list[tuple[bytes, int]] = []

    class Call:
        class outbox:  # noqa: N801 - stands in for the call's own Outbox
            @staticmethod
            def finish() -> None:
                pass

        inbox = None
        id = 7

        def _seal(self, payload: bytes, count: int) -> bytes:
            sealed.append((payload, count))
            return payload + b"!"

    link = Link(lambda kind, payload, call=None: sent.append((kind, payload)), lambda *credit: None, None,
                "127.0.0.1")
    try:
        port = link.attach(Call(), b"call", (10, 1000))
        port.finish((Kind.RETURN, b"value"))
        assert sealed == [(b"value", 0)] and sent == [(Kind.RETURN, b"value!")]
    finally:
        link.close()


# -- a Ray slot's next call, attached to its task while one runs (``raydriver.attach_ahead``) -----------


class _FakeCall:
    """Stands in for the worker's ``CallState`` on a link: the client's id, a seal that records its count."""

    class outbox:  # noqa: N801 - the call's own Outbox, which the port replaces
        @staticmethod
        def finish() -> None:
            pass

    inbox = None

    def __init__(self, call_id: int) -> None:
        self.id = call_id
        self.sealed: list[int] = []

    def _seal(self, payload: bytes, count: int) -> bytes:
        self.sealed.append(count)
        return payload


class _FakeTask:
    """The task's end of a link, spoken by hand: it connects with the token and sends the frames it is told."""

    def __init__(self, link: Any) -> None:
        import socket

        self.sock = socket.create_connection(link.address, timeout=30)
        self.sock.sendall(link.token)

    def send(self, kind: int, call: int, payload: bytes = b"") -> None:
        from skyctl.remote import wire

        self.sock.sendall(wire.encode(kind, payload, call))

    def close(self) -> None:
        self.sock.close()


def _text_batch(*lines: str) -> bytes:
    from skyctl.remote import flow

    return flow.pack_rendered("".join(f"{line}\n" for line in lines).encode(), len(lines))


def test_a_call_attached_behind_another_sends_its_values_only_once_that_one_is_answered() -> None:
    """Two calls on one task: the second's values, which the task sends as soon as the first has ended
    there, reach the client only after the first call's last frame (held until the worker answers it)."""
    import threading

    from skyctl.remote.raylink import Link
    from skyctl.remote.wire import Kind

    sent: list[tuple[int, int]] = []  # (kind, the client's call id)
    lock = threading.Lock()

    def send(kind: int, payload: bytes, call: Any = None) -> None:
        with lock:
            sent.append((kind, call))

    link = Link(send, lambda *credit: None, None, "127.0.0.1")
    first, second = _FakeCall(7), _FakeCall(8)
    task = None
    try:
        port1 = link.attach(first, b"call", (10, 1000))
        port2 = link.attach(second, b"call", (10, 1000))
        assert link.has_next(port1) and not link.has_next(port2)
        task = _FakeTask(link)
        task.send(Kind.ITEMS_OUT, port1.id, _text_batch("a"))
        task.send(Kind.RETURN, port1.id, _text_batch())
        task.send(Kind.ITEMS_OUT, port2.id, _text_batch("b", "c"))
        task.send(Kind.RETURN, port2.id, _text_batch())
        assert port2.ended.wait(30), "the second call's last frame never came"
        assert sent == [(Kind.ITEMS_OUT, 7)]  # the second call's values wait for the first call's answer
        port1.finish(port1.terminal)
        assert sent == [(Kind.ITEMS_OUT, 7), (Kind.RETURN, 7), (Kind.ITEMS_OUT, 8)]
        port2.finish(port2.terminal)
        assert sent[-1] == (Kind.RETURN, 8) and first.sealed == [1] and second.sealed == [2]
    finally:
        if task is not None:
            task.close()
        link.close()


def test_a_task_that_runs_a_call_before_the_one_ahead_of_it_has_ended_breaks_its_link() -> None:
    """The task runs its calls in order: a frame of the second call before the first call's last frame is
    not the task's to send; the link ends and both calls end without a last frame (the driver then asks Ray
    what became of the task)."""
    from skyctl.remote.raylink import Link
    from skyctl.remote.wire import Kind

    sent: list[int] = []
    link = Link(lambda kind, payload, call=None: sent.append(kind), lambda *credit: None, None, "127.0.0.1")
    task = None
    try:
        port1 = link.attach(_FakeCall(7), b"call", (10, 1000))
        port2 = link.attach(_FakeCall(8), b"call", (10, 1000))
        task = _FakeTask(link)
        task.send(Kind.ITEMS_OUT, port2.id, _text_batch("too soon"))
        assert link.done.wait(30), "the link did not end"
        assert port1.ended.is_set() and port1.terminal is None
        assert port2.ended.is_set() and port2.terminal is None
        assert sent == []
    finally:
        if task is not None:
            task.close()
        link.close()


def test_a_queued_call_cancelled_on_the_link_is_answered_at_once_and_the_one_after_waits_for_the_first() -> None:
    """A call cancelled while it waits behind the running one is answered CANCELLED at once (as on any
    worker); a call attached after it still waits for the running call's answer before its values go."""
    import threading

    from skyctl.remote.raylink import Link
    from skyctl.remote.wire import Kind

    sent: list[tuple[int, int]] = []
    lock = threading.Lock()

    def send(kind: int, payload: bytes, call: Any = None) -> None:
        with lock:
            sent.append((kind, call))

    link = Link(send, lambda *credit: None, None, "127.0.0.1")
    task = None
    try:
        port1 = link.attach(_FakeCall(7), b"call", (10, 1000))
        port2 = link.attach(_FakeCall(8), b"call", (10, 1000))
        port2.cancel()
        port2.finish((Kind.CANCELLED, b""))  # what the worker does for a queued call it cancels
        assert sent == [(Kind.CANCELLED, 8)] and not link.has_next(port1)
        port3 = link.attach(_FakeCall(9), b"call", (10, 1000))
        task = _FakeTask(link)
        task.send(Kind.RETURN, port1.id, _text_batch())
        task.send(Kind.CANCELLED, port2.id)
        task.send(Kind.ITEMS_OUT, port3.id, _text_batch("x"))
        task.send(Kind.RETURN, port3.id, _text_batch())
        assert port3.ended.wait(30)
        assert sent == [(Kind.CANCELLED, 8)]  # the third call's value waits for the first call's answer
        port1.finish(port1.terminal)
        assert sent == [(Kind.CANCELLED, 8), (Kind.RETURN, 7), (Kind.ITEMS_OUT, 9)]
    finally:
        if task is not None:
            task.close()
        link.close()


def _read_frames(sock: socket.socket, count: int) -> list[tuple[int, int, bytes]]:
    """``count`` frames from the driver, as the task reads them (each read bounded by the socket's timeout)."""
    from skyctl.remote import wire
    from skyctl.transports.base import read_exact

    sock.settimeout(30)
    return [wire.read_call_frame(lambda n: read_exact(sock.recv, n)) for _ in range(count)]


def test_frames_the_task_does_not_read_wait_in_the_driver_in_order_and_nothing_blocks() -> None:
    """The driver writes a frame to its task at once when the socket takes it, and leaves the rest to the
    link's input thread: a task that reads nothing for a while neither blocks the thread that puts frames
    (the worker's reader, which must go on hearing the client) nor reorders what it reads later."""
    from skyctl.remote.raylink import Link
    from skyctl.remote.wire import Kind

    link = Link(lambda *frame: None, lambda *credit: None, None, "127.0.0.1")
    task = None
    batches = 400  # 64 KiB each: far more than the socket buffers hold
    try:
        port = link.attach(_FakeCall(7), b"call", (10, 1000))
        task = _FakeTask(link)
        assert link.connected.wait(30)
        putting = threading.Thread(target=lambda: [port.push(b"%06d" % i + b"x" * (64 << 10)) for i in range(batches)])
        putting.start()
        putting.join(60)
        assert not putting.is_alive(), "putting frames blocked on a task that does not read"
        port.end(None)
        frames = _read_frames(task.sock, 2 + batches + 1)
        assert [kind for kind, _, _ in frames[:2]] == [Kind.CALL, Kind.CREDIT]
        assert [bytes(payload[:6]) for _, _, payload in frames[2:-1]] == [b"%06d" % i for i in range(batches)]
        assert frames[-1][0] == Kind.END_IN and {call for _, call, _ in frames} == {port.id}
    finally:
        if task is not None:
            task.close()
        link.close()


def test_a_task_on_the_drivers_node_reaches_the_link_over_its_unix_socket_with_the_token() -> None:
    """A link told its Ray node also listens on an abstract Unix socket; a task there connects to it with the
    token (and is served as over TCP), while a connection without the token is closed unanswered."""
    from skyctl.remote import wire
    from skyctl.remote.raylink import Link
    from skyctl.remote.wire import Kind

    link = Link(lambda *frame: None, lambda *credit: None, None, "127.0.0.1", node="node-1")
    stranger = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    task = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        assert link.local is not None and link.local[1] == "node-1" and link.local[0].startswith("\0skyctl-ray-")
        stranger.settimeout(30)
        stranger.connect(link.local[0])
        stranger.sendall(b"\0" * 16)
        assert stranger.recv(1) == b"", "a wrong token was answered"
        assert not link.connected.is_set()
        task.settimeout(30)
        task.connect(link.local[0])
        task.sendall(link.token)
        assert link.connected.wait(30)
        port = link.attach(_FakeCall(7), b"call", (10, 1000))
        assert [kind for kind, _, _ in _read_frames(task, 2)] == [Kind.CALL, Kind.CREDIT]
        task.sendall(wire.encode(Kind.RETURN, _text_batch(), port.id))
        assert port.ended.wait(30) and port.terminal is not None and port.terminal[0] == Kind.RETURN
    finally:
        stranger.close()
        task.close()
        link.close()


def test_a_task_takes_the_unix_socket_only_on_the_drivers_node(monkeypatch: Any) -> None:
    """``raycall`` connects to the link's Unix socket only when its Ray node is the driver's (elsewhere the
    same abstract name would be another machine's, or nobody's): else, and when that fails, it uses TCP."""
    import types

    from skyctl.remote import raycall

    node = {"id": "node-1"}
    fake_ray = types.ModuleType("ray")
    fake_ray.get_runtime_context = lambda: types.SimpleNamespace(get_node_id=lambda: node["id"])  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ray", fake_ray)
    name = "\0skyctl-test-" + os.urandom(6).hex()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(name)
    listener.listen(1)
    try:
        sock = raycall._connect_local((name, "node-1"))
        assert sock is not None and sock.family == socket.AF_UNIX
        sock.close()
        node["id"] = "node-2"
        assert raycall._connect_local((name, "node-1")) is None
        assert raycall._connect_local(None) is None
        node["id"] = "node-1"
        assert raycall._connect_local(("\0skyctl-test-nobody-" + os.urandom(6).hex(), "node-1")) is None
    finally:
        listener.close()



def test_a_spare_driver_does_rays_first_log_import_before_its_client_comes(monkeypatch: Any) -> None:
    """Ray's log thread imports its autoscaler helpers (about 45 ms of CPU) when the cluster's autoscaler
    first logs, which in a spare fell inside its client's run: ``prepare`` does it while the spare waits,
    and a Ray without those helpers still warms up."""
    import types

    from skyctl.remote import raydriver, raysubmit

    called: list[str] = []
    fake_ray = types.ModuleType("ray")
    modules = {"ray": fake_ray}
    for name in ("ray.autoscaler", "ray.autoscaler.v2", "ray.autoscaler.v2.utils"):
        modules[name] = types.ModuleType(name)
    modules["ray.autoscaler.v2.utils"].is_autoscaler_v2 = lambda: called.append("asked") or False  # type: ignore[attr-defined]
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)

    class Tasks:
        @staticmethod
        def warm_up(options: Any, timeout: float, hold: float) -> None:
            called.append("warmed")

    monkeypatch.setattr(raydriver, "connect", lambda opts, cancelled: fake_ray)
    monkeypatch.setattr(raydriver, "_node_address", lambda ray: "127.0.0.1")
    monkeypatch.setattr(raysubmit.Tasks, "of", classmethod(lambda cls, *args: Tasks()))
    raydriver.prepare(json.dumps({"address": "127.0.0.1:1"}), 5.0)
    assert called == ["warmed", "asked"]
    monkeypatch.setitem(sys.modules, "ray.autoscaler.v2.utils", None)  # an import that fails
    raydriver.prepare(json.dumps({"address": "127.0.0.1:1"}), 5.0)
    assert called == ["warmed", "asked", "warmed"]
