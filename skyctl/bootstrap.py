"""Starting a worker on any host in one exec: the stub, the bundle, the handshake.

The transport runs ``<python> -c STUB`` and writes the call's arguments
(JSON: workdir, bundle id, env, pip) to its stdin. The stub checks that
the interpreter's major.minor is the client's (by-value functions carry
bytecode), looks for ``<workdir>/bundle-<id>.zip`` (``bundle_id``) and answers ``need``
or ``ready``; on ``need`` the client sends the bundle (our worker modules and
the client's own cloudpickle, as a zip, each module with its bytecode) and the
stub checks its sha256 and writes it atomically with private permissions.
Then the stub imports the worker from the zip and hands it the pipes. A warm
start is one exec and one round trip, and writes nothing.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import sys
import zipfile
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from . import wire
from .errors import ConnectionLost, RemoteEnvironmentError
from .transports.base import Transport, WorkerPipes

#: the modules of this package that run on the remote
WORKER_MODULES = ("wire.py", "flow.py", "values.py", "worker.py", "raydriver.py", "raytask.py")

# Kept small and compatible with old Pythons, so that a wrong interpreter can
# still say which version it is. Reads fd 0 unbuffered: the worker reads the
# same fd afterwards and must not lose bytes to a buffer. Its command line
# names nothing but the interpreter: the arguments come on stdin, so a kept
# connection can start it before it knows the next call's workdir (see
# ``holder``), and it imports what the worker will need while it waits.
STUB = r"""
import os,sys,json
def say(s):
    os.write(1,("SKYCTL "+s.replace("\n"," ")+"\n").encode())
def read(n):
    b=b""
    while len(b)<n:
        c=os.read(0,min(n-len(b),1<<20))
        if not c:
            sys.exit(3)
        b+=c
    return b
def rdline():
    b=b""
    while not b.endswith(b"\n"):
        b+=read(1)
    return b
try:
    import threading,pickle,traceback,queue,select,signal,struct,typing,dataclasses,dis,logging,platform,uuid,weakref,zlib
except Exception:
    pass
a=json.loads(read(int(rdline())))
v="%d.%d"%tuple(sys.version_info[:2])
if v!=a["python"]:
    say("python %s %s"%(v,sys.executable))
    sys.exit(0)
d=os.path.expanduser(a["workdir"])
py=None
if a.get("pip"):
    import hashlib,subprocess,fcntl
    k=hashlib.sha256(json.dumps([os.path.realpath(sys.executable),sys.version,sorted(a["pip"])]).encode()).hexdigest()[:16]
    e=os.path.join(d,"venvs",k)
    py=os.path.join(e,"bin","python")
    if not os.path.exists(os.path.join(e,".ready")):
        os.makedirs(os.path.join(d,"venvs"),0o700,exist_ok=True)
        lk=os.open(e+".lock",os.O_WRONLY|os.O_CREAT,0o600)
        fcntl.flock(lk,fcntl.LOCK_EX)
        if not os.path.exists(os.path.join(e,".ready")):
            tail=[]
            for cmd in ([sys.executable,"-m","venv","--clear",e],[py,"-m","pip","install","--disable-pip-version-check","--no-input"]+a["pip"]):
                say("progress "+" ".join(cmd[1:4]))
                p=subprocess.Popen(cmd,stdin=subprocess.DEVNULL,stdout=subprocess.PIPE,stderr=subprocess.STDOUT)
                for line in p.stdout:
                    line=line.decode(errors="replace").rstrip()
                    tail=(tail+[line])[-15:]
                    say("progress "+line[:200])
                if p.wait()!=0:
                    say("pipfail "+json.dumps(tail))
                    sys.exit(5)
            open(os.path.join(e,".ready"),"w").close()
        os.close(lk)
z=os.path.join(d,"bundle-%s.zip"%a["hash"])
if not os.path.exists(z):
    say("need")
    n,h=rdline().split()
    data=read(int(n))
    import hashlib
    if hashlib.sha256(data).hexdigest()!=h.decode():
        say("error bundle damaged in transit")
        sys.exit(4)
    os.makedirs(d,0o700,exist_ok=True)
    t="%s.%d.tmp"%(z,os.getpid())
    f=os.open(t,os.O_WRONLY|os.O_CREAT|os.O_TRUNC,0o600)
    m=memoryview(data)
    while m:
        m=m[os.write(f,m):]
    os.close(f)
    os.replace(t,z)
os.environ.update(a["env"])
say("ready")
if py:
    os.execv(py,[py,"-c","import sys;sys.path.insert(0,sys.argv[1]);from skyctl.worker import main;main()",z])
sys.path.insert(0,z)
from skyctl.worker import main
main()
"""


@dataclass(frozen=True)
class Bundle:
    """The worker's code as one zip: ``data`` and its ``sha256`` (checked by the stub on arrival)."""

    data: bytes
    sha256: str


@functools.lru_cache(maxsize=1)
def _sources() -> tuple[tuple[str, bytes], ...]:
    """The files of the bundle, by their path inside it: our worker modules and the client's cloudpickle."""
    import cloudpickle

    here = os.path.dirname(os.path.abspath(__file__))
    files: list[tuple[str, bytes]] = [("skyctl/__init__.py", b'"""skyctl worker bundle."""\n')]
    for name in WORKER_MODULES:
        with open(os.path.join(here, name), "rb") as f:
            files.append((f"skyctl/{name}", f.read()))
    cp_dir = os.path.dirname(os.path.abspath(cloudpickle.__file__))
    for name in sorted(os.listdir(cp_dir)):
        if name.endswith(".py"):
            with open(os.path.join(cp_dir, name), "rb") as f:
                files.append((f"cloudpickle/{name}", f.read()))
    return tuple(files)


@functools.lru_cache(maxsize=1)
def bundle_id() -> str:
    """The bundle's name on the host: a hash of its sources and of the bytecode
    format they are compiled for. Cheap (no zip is built): every call needs it,
    only a call that finds the bundle missing needs ``bundle()``."""
    import importlib.util

    digest = hashlib.sha256(b"skyctl bundle 2\0" + importlib.util.MAGIC_NUMBER)
    for name, data in _sources():
        digest.update(b"%s\0%d\0" % (name.encode(), len(data)))
        digest.update(data)
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def bundle() -> Bundle:
    """Build the bundle once per process: each source beside its bytecode."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in _sources():
            for member, content in ((name, data), (name + "c", _bytecode(name, data))):
                info = zipfile.ZipInfo(member, date_time=(2000, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                zf.writestr(info, content, zipfile.ZIP_DEFLATED)
    data = buf.getvalue()
    return Bundle(data, hashlib.sha256(data).hexdigest())


#: the file name compiled into the bundle's bytecode (the worker strips frames under it from tracebacks)
BUNDLE_FILENAME_PREFIX = "<skyctl bundle>/"


def _bytecode(name: str, source: bytes) -> bytes:
    """``name``'s compiled module as a checked-hash .pyc (PEP 552), for zipimport.

    A zip never caches bytecode, so without it every worker start compiles
    cloudpickle and the worker (~30 ms). The remote runs the client's
    major.minor (the stub checks), so the magic number matches; were it not
    to, or were the source not to match the hash, zipimport compiles the
    source beside it instead.
    """
    import importlib.util
    import marshal

    code = compile(source, BUNDLE_FILENAME_PREFIX + name, "exec", dont_inherit=True)
    flags = 0b11  # hash-based, checked against the source
    return importlib.util.MAGIC_NUMBER + flags.to_bytes(4, "little") + importlib.util.source_hash(source) + marshal.dumps(code)


def client_python() -> str:
    return "%d.%d" % sys.version_info[:2]


def stub_argv(python: str) -> list[str]:
    """The command that starts a worker: the same for every call with this interpreter."""
    return [python, "-c", STUB]


def stub_args(workdir: str, env: Mapping[str, str], pip: Sequence[str] = ()) -> bytes:
    """What the stub reads first on stdin: ``<length>\\n<JSON>``."""
    args = {"python": client_python(), "workdir": workdir, "hash": bundle_id(), "env": dict(env), "pip": list(pip)}
    data = json.dumps(args, separators=(",", ":")).encode()
    return b"%d\n%s" % (len(data), data)


@dataclass
class StartedWorker:
    """A worker that has said hello: its pipes and what it told us."""

    pipes: WorkerPipes
    hello: dict[str, Any]
    sent_bundle: bool


def start_worker(
    transport: Transport,
    python: str,
    workdir: str,
    env: Mapping[str, str],
    on_status: Callable[[str], None] = lambda s: None,
    pip: Sequence[str] = (),
) -> StartedWorker:
    """Run the stub through ``transport``, send the bundle if missing, wait for HELLO."""
    pipes = transport.start(stub_argv(python))
    try:
        _write(pipes, transport, stub_args(workdir, env, pip))
        sent = False
        answer = _read_line(pipes)
        while answer.startswith("progress "):
            on_status("installing pip requirements: " + answer[9:])
            answer = _read_line(pipes)
        if answer.startswith("pipfail "):
            tail = "\n".join(json.loads(answer[8:]))
            err = RemoteEnvironmentError(
                f"pip install of the profile's requirements failed on {transport.label}",
                hint="check the 'pip:' list in the host's profile; pip's output ends above",
            )
            err.details = tail
            raise err
        if answer == "need":
            on_status("sending worker bundle")
            b = bundle()
            _write(pipes, transport, b"%d %s\n" % (len(b.data), b.sha256.encode()) + b.data)
            sent = True
            answer = _read_line(pipes)
        if answer.startswith("python "):
            _, version, exe = (answer.split(" ", 2) + ["", ""])[:3]
            raise RemoteEnvironmentError(
                f"python on {transport.label} is {version} ({exe}), but skyctl runs on {client_python()}",
                hint=f"functions travel as bytecode: set 'python:' in the host's profile to a Python {client_python()}",
            )
        if answer != "ready":
            raise _start_failure(pipes, transport, python, answer)
        on_status("starting worker")
        try:
            kind, payload = wire.read_frame(pipes.read)
        except (wire.Eof, wire.ProtocolError):
            raise _start_failure(pipes, transport, python, "") from None
        if kind is not wire.Kind.HELLO:
            raise RemoteEnvironmentError(f"the worker on {transport.label} did not say hello (got {kind.name})")
        hello = wire.unpack_json(payload)
        if hello.get("protocol") != wire.PROTOCOL_VERSION:
            raise RemoteEnvironmentError(f"the worker on {transport.label} speaks protocol {hello.get('protocol')}")
        return StartedWorker(pipes, hello, sent)
    except BaseException:
        pipes.close()
        raise


def _write(pipes: WorkerPipes, transport: Transport, data: bytes) -> None:
    try:
        pipes.write(data)
    except OSError:
        raise ConnectionLost(f"the connection to {transport.label} closed while starting the worker") from None


def _read_line(pipes: WorkerPipes) -> str:
    """One ``SKYCTL ...`` line from the stub, or '' when it ended without one."""
    line = b""
    while not line.endswith(b"\n"):
        c = pipes.read(1)
        if not c:
            return ""
        line += c
        if len(line) > 4096:
            break
    text = line.decode(errors="replace").strip()
    return text[len("SKYCTL ") :] if text.startswith("SKYCTL ") else "?" + text


def _start_failure(pipes: WorkerPipes, transport: Transport, python: str, answer: str) -> RemoteEnvironmentError:
    """Explain why the stub or worker did not come up."""
    status = pipes.exit_status(timeout=5.0)
    tail = pipes.stderr_text().strip()
    last = tail.splitlines()[-1] if tail else ""
    if status == 127 or "not found" in last or "No such file" in last:
        return RemoteEnvironmentError(
            f"python '{python}' was not found on {transport.label}",
            hint="install Python there, or set 'python:' in the host's profile to its path",
        )
    if answer.startswith("error "):
        return RemoteEnvironmentError(f"bootstrap on {transport.label} failed: {answer[6:]}")
    detail = last or (answer.lstrip("?") if answer else f"exit status {status}")
    return RemoteEnvironmentError(
        f"the worker on {transport.label} did not start: {detail}",
        hint=f"check that '{python}' runs there; its output ended with: {tail[-300:]!r}" if tail else None,
    )
