"""A spare worker: started ahead of its call, it waits, warm, for the next client.

Why: on a ``type: ray`` host most of a run's time to its first value is the
Ray driver's own start, which no call needs to wait for: ``import ray``,
``ray.init`` (a new Ray job) and the job's first task, for which Ray starts
a worker process (0.3-0.6 s on an idle machine, seconds on a busy one).
A client that ends a run on a ray host whose driver runs on a ``local`` via
host starts a spare in its place (``transports/spare.py``): the stub and
the worker start as for a call, with ``SKYCTL_SPARE`` in the environment
(``ENV``: where to listen, for how long, and the sha256 of the stub's
arguments), and ``worker.main`` calls ``wait_for_client`` first:

1. it detaches: fds 0-2 become /dev/null (whoever started it is gone);
2. it warms up: a Ray driver imports ray, connects and starts a task that
   asks for no resources (``raydriver.prepare``): Ray starts the job's
   worker process, which builds skyctl's modules, and the task keeps it
   while the spare waits (an idle one Ray may end to make room for other
   jobs' workers); it holds none of the cluster's CPUs, GPUs or memory.
   When its client comes, that task ends and the call's own, with its
   resources, leases the process in a few ms. It also imports what Ray's
   log thread would import at the cluster autoscaler's first log line
   (``raydriver._preload_log_filter``), which would otherwise land in its
   client's run. One that cannot warm up (no
   ray, no cluster) leaves: the next run starts its driver as always, and
   that one says what is wrong;
3. it listens on ``<dir>/<key>.<pid>.sock`` (the private runtime directory's
   ``spares``, 0700; the socket 0600) for at most ``idle`` seconds, unless
   ``most`` live spares of its key are there already (two runs that ended
   together): then it leaves at once. At its deadline it removes its socket
   first: a client that renamed it just before is still served;
4. a client claims it by renaming the socket (atomic: one client per
   spare) and connects; the spare checks that the peer is its own user and
   that the stub's arguments the client sends are the ones it was started
   with (their sha256), answers ``SKYCTL ready`` as the stub would, and
   becomes that client's worker: ``worker.main`` goes on over the socket.

A spare serves one client and exits with it, as any worker: every call
still gets a fresh interpreter. Stdlib only (shipped in the worker bundle).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import time
from typing import Any, NoReturn

#: the environment variable that makes a worker a spare (JSON: dir, key, args, idle, most)
ENV = "SKYCTL_SPARE"
#: seconds a client that connected has to send the stub's arguments
ARGS_SECONDS = 10.0
#: the longest stub arguments a spare reads
ARGS_MAX = 1 << 20
#: seconds a spare whose socket a client claimed at its idle deadline waits for that client to connect
CLAIMED_SECONDS = 5.0


def socket_name(key: str, pid: int) -> str:
    """The socket file of a spare: its key (what it was started for) and its pid."""
    return f"{key}.{pid}.sock"


def parse_name(name: str, key: str) -> int | None:
    """The pid in a spare's socket name of this key; None for any other file."""
    return name_pid(name) if name.startswith(key + ".") else None


def name_pid(name: str) -> int | None:
    """The pid in a spare's socket name (``<key>.<pid>.sock``), whatever its key; None for any other file."""
    if not name.endswith(".sock"):
        return None
    pid = name[: -len(".sock")].rpartition(".")[2]
    return int(pid) if pid.isdigit() else None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def peer(sock: socket.socket) -> tuple[int, int]:
    """The pid and uid of the process at the other end of a Unix socket (``SO_PEERCRED``)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    return pid, uid


def wait_for_client(text: str) -> int:
    """Be a spare (see the module's docstring): warm up, wait for a client, and return the socket's fd
    once it is this spare's client; exit the process when none came within ``idle`` seconds."""
    spec: dict[str, Any] = json.loads(text)
    _detach()
    ray_spec = os.environ.get("SKYCTL_RAY")
    if ray_spec:
        from . import raydriver

        try:
            raydriver.prepare(ray_spec, float(spec["idle"]) + CLAIMED_SECONDS + ARGS_SECONDS)
        except BaseException:  # noqa: BLE001 - not worth keeping: the next run starts its driver and says why
            _leave()
    listener, path = _listen(spec)
    deadline = time.monotonic() + float(spec["idle"])
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                try:
                    os.unlink(path)  # no client can claim it from here on
                    break
                except FileNotFoundError:  # one has (renamed it) just now: it connects within a moment
                    deadline, path = time.monotonic() + CLAIMED_SECONDS, ""
                    continue
            listener.settimeout(remaining)
            try:
                sock, _ = listener.accept()
            except socket.timeout:
                continue
            if _peer_uid(sock) != os.geteuid():  # the directory is ours alone: this cannot be, but costs nothing
                sock.close()
                continue
            if _check_args(sock, spec["args"]):
                sock.settimeout(None)
                return sock.detach()
            break
    finally:
        listener.close()
        if path:
            try:
                os.unlink(path)
            except OSError:
                pass
    _leave()


def _peer_uid(sock: socket.socket) -> int | None:
    try:
        return peer(sock)[1]
    except (OSError, AttributeError):  # no SO_PEERCRED: nothing to go by
        return None


def _detach() -> None:
    """fds 0-2 to /dev/null: the starter has gone, and a client's streams come with its socket."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def _listen(spec: dict[str, Any]) -> tuple[socket.socket, str]:
    """The spare's socket (0600), unless ``most`` live spares of its key listen already."""
    directory, key = str(spec["dir"]), str(spec["key"])
    live = 0
    for name in os.listdir(directory):
        pid = parse_name(name, key)
        if pid is not None and pid != os.getpid():
            if alive(pid):
                live += 1
            else:  # a spare that was killed: its socket is nobody's
                try:
                    os.unlink(os.path.join(directory, name))
                except OSError:
                    pass
    if live >= int(spec["most"]):
        _leave()
    path = os.path.join(directory, socket_name(key, os.getpid()))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        listener.bind(path)
    finally:
        os.umask(old)
    listener.listen(1)
    return listener, path


def _check_args(sock: socket.socket, want: str) -> bool:
    """Read the stub's arguments (``<length>\\n<JSON>``) and answer as the stub would: ``ready`` when they
    are the ones this spare was started with, else an error line (the client's run then fails with exit 5: the
    socket's name says the same arguments, so only a process of this user could have sent others)."""
    sock.settimeout(ARGS_SECONDS)
    try:
        head = b""
        while not head.endswith(b"\n") and len(head) < 16:
            piece = sock.recv(1)
            if not piece:
                return False
            head += piece
        size = int(head)
        if not 0 < size <= ARGS_MAX:
            return False
        body = b""
        while len(body) < size:
            piece = sock.recv(size - len(body))
            if not piece:
                return False
            body += piece
        if hashlib.sha256(head + body).hexdigest() != want:
            sock.sendall(b"SKYCTL error the spare worker was started for other arguments\n")
            return False
        sock.sendall(b"SKYCTL ready\n")
        return True
    except (OSError, ValueError):
        return False


def _leave() -> NoReturn:
    """No client came (or the one that came was not this spare's): end, a Ray driver's job with it."""
    os._exit(0)
