"""Starting a worker on any host in one exec: the stub, the bundle, the handshake.

The transport runs ``<python> -c STUB`` and writes the call's arguments
(JSON: workdir, bundle id and sha256, env, pip) to its stdin. The stub checks
that the interpreter's major.minor is the client's (by-value functions carry
bytecode) and that the workdir is a private directory of the login user's;
it then verifies ``<workdir>/bundle-<id>.zip`` (``bundle_id``) against the
client's sha256 (``bundle_sha256``) and answers ``need`` or ``ready``; on
``need`` the client sends the bundle (our worker modules and the client's
own cloudpickle, as a zip, each module with its bytecode) and the stub
checks it and writes it privately (``O_EXCL|O_NOFOLLOW``, a random name,
then a rename). Then the stub imports the worker from the zip and hands it
the pipes. A warm start is one exec and one round trip, and writes nothing.

The remote host is not trusted with the cache: the bundle id is public (a
hash of sources), so a file of that name proves nothing until its content
matches. Every answer must come within the profile's ``connect_timeout``
(pip's time excepted): a silent interpreter is an error, not a hang.
"""

from __future__ import annotations

import json
import os
import queue
import shlex
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from . import bundle as bundles
from .remote import wire
from .errors import ConnectError, ConnectionLost, RemoteEnvironmentError, SkyctlError
from .transports.base import Transport, WorkerPipes, describe

# Kept small and compatible with old Pythons, so that a wrong interpreter can
# still say which version it is. Reads fd 0 unbuffered: the worker reads the
# same fd afterwards and must not lose bytes to a buffer. Its command line
# names nothing but the interpreter (and the liveness bound, ``stub_argv``):
# the arguments come on stdin, so a kept connection can start it before it
# knows the next call's workdir (see ``holder``), and it imports what the
# worker will need while it waits. Blank lines before the arguments are a
# keeper's heartbeat: with a bound, no byte for that long ends the stub.
# Past the version check it trusts nothing it finds in the workdir (see the
# module docstring and docs/protocol.md): ``mine`` checks a directory, ``new``
# makes a file no one could have planted, ``good`` verifies the bundle.
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
    import threading,pickle,traceback,queue,select,signal,struct,typing,dataclasses,dis,logging,platform,uuid,weakref,zlib,hashlib,stat,mmap,ctypes
except Exception:
    pass
import signal
t=float(sys.argv[1]) if len(sys.argv)>1 else 0
def arm(s):
    if t:
        signal.setitimer(signal.ITIMER_REAL,s)
arm(t)
n=rdline()
while n==b"\n":
    arm(t)
    n=rdline()
arm(0)
a=json.loads(read(int(n)))
v="%d.%d"%tuple(sys.version_info[:2])
if v!=a["python"]:
    say("python %s %s"%(v,sys.executable))
    sys.exit(0)
import hashlib,stat,select
def bad(*w):
    say("bad "+json.dumps(w))
    sys.exit(5)
def mine(p):
    try:
        s=os.lstat(p)
    except OSError:
        try:
            os.makedirs(p,0o700)
            s=os.lstat(p)
        except OSError as e:
            bad("mkdir",p,e.strerror or str(e))
    u=os.geteuid()
    if stat.S_ISLNK(s.st_mode):
        bad("link",p,os.readlink(p))
    if not stat.S_ISDIR(s.st_mode):
        bad("notdir",p,"")
    if s.st_uid!=u:
        try:
            import pwd
            n=pwd.getpwuid(s.st_uid).pw_name
        except Exception:
            n="?"
        bad("owner",p,"uid %d (%s), not to the login user (uid %d)"%(s.st_uid,n,u))
    if s.st_mode&0o22:
        bad("mode",p,"%04o"%stat.S_IMODE(s.st_mode))
def new(p):
    t="%s.%s.tmp"%(p,os.urandom(8).hex())
    return t,os.open(t,os.O_WRONLY|os.O_CREAT|os.O_EXCL|os.O_NOFOLLOW,0o600)
def put(f,b):
    m=memoryview(b)
    while m:
        m=m[os.write(f,m):]
    os.close(f)
d=os.path.expanduser(a["workdir"])
mine(d)
py=None
if a.get("pip"):
    import subprocess,fcntl
    k=hashlib.sha256(json.dumps([os.path.realpath(sys.executable),sys.version,sorted(a["pip"])]).encode()).hexdigest()[:16]
    mine(os.path.join(d,"venvs"))
    e=os.path.join(d,"venvs",k)
    py=os.path.join(e,"bin","python")
    r=os.path.join(e,".ready")
    if not os.path.exists(r):
        try:
            lk=os.open(e+".lock",os.O_RDWR|os.O_CREAT|os.O_EXCL|os.O_NOFOLLOW,0o600)
        except FileExistsError:
            lk=os.open(e+".lock",os.O_RDWR|os.O_NOFOLLOW)
        fcntl.flock(lk,fcntl.LOCK_EX)
        if not os.path.exists(r):
            q,f=new(os.path.join(d,"requirements"))
            try:
                put(f,("\n".join(a["pip"])+"\n").encode())
                tail=[]
                for cmd in ([sys.executable,"-m","venv","--clear",e],[py,"-m","pip","install","--disable-pip-version-check","--no-input","-r",q]):
                    say("progress "+" ".join(cmd[1:4]))
                    p=subprocess.Popen(cmd,stdin=subprocess.DEVNULL,stdout=subprocess.PIPE,stderr=subprocess.STDOUT)
                    o=p.stdout.fileno()
                    b=b""
                    while 1:
                        if not select.select([o],[],[],2)[0]:
                            say("progress")
                            continue
                        c=os.read(o,65536)
                        ls=(b+c).split(b"\n")
                        b=ls.pop() if c else b""
                        for l in ls:
                            l=l.decode("utf-8","replace").rstrip()
                            tail=(tail+[l])[-20:]
                            if l.strip():
                                say("progress "+l[:200])
                        if not c:
                            break
                    w=p.wait()
                    if "-r" in cmd:
                        os.unlink(q)
                        q=""
                    if w!=0:
                        say("pipfail "+json.dumps(tail))
                        sys.exit(5)
            finally:
                if q:
                    os.unlink(q)
            t,f=new(r)
            os.close(f)
            os.replace(t,r)
        os.close(lk)
z=os.path.join(d,"bundle-%s.zip"%a["hash"])
def good():
    h=hashlib.sha256()
    try:
        f=os.open(z,os.O_RDONLY|os.O_NOFOLLOW)
        try:
            c=os.read(f,1<<20)
            while c:
                h.update(c)
                c=os.read(f,1<<20)
        finally:
            os.close(f)
    except OSError:
        return 0
    return h.hexdigest()==a["sha"]
if not good():
    say("need")
    n,h=rdline().split()
    data=read(int(n))
    if hashlib.sha256(data).hexdigest()!=h.decode():
        say("error bundle damaged in transit")
        sys.exit(4)
    t,f=new(z)
    put(f,data)
    os.replace(t,z)
os.environ.update(a["env"])
say("ready")
if py:
    os.execv(py,[py,"-c","import sys;sys.path.insert(0,sys.argv[1]);from skyctl.remote.worker import main;main()",z])
sys.path.insert(0,z)
from skyctl.remote.worker import main
main()
"""


def client_python() -> str:
    return "%d.%d" % sys.version_info[:2]


def stub_argv(python: str, bound: float | None = None) -> list[str]:
    """The command that starts a worker: the same for every call with this interpreter
    (and liveness bound). With ``bound``, a stub that waits for its arguments (a kept
    connection's spare) exits when no byte came for ``bound`` seconds: whoever keeps
    it sends a blank line now and then (``holder``), so one cut off by a partition
    does not linger."""
    return [python, "-c", STUB] + ([f"{bound:g}"] if bound else [])


#: pip options that take a value: in a requirements file they share one line with it
_PIP_VALUE_OPTIONS = frozenset({
    "-i", "--index-url", "--extra-index-url", "-f", "--find-links", "-c", "--constraint", "-r", "--requirement",
    "-e", "--editable", "--trusted-host", "--no-binary", "--only-binary", "--use-feature", "--hash",
    "--config-settings", "--global-option",
})  # fmt: skip


def requirement_lines(pip: Sequence[str]) -> list[str]:
    """The profile's ``pip:`` items as lines of a requirements file.

    Each item is one line, except that an option given apart from its value
    (``["--index-url", URL, "pkg"]``, as on a command line) is joined with it.
    """
    lines: list[str] = []
    option: str | None = None
    for item in pip:
        if option is not None:
            lines.append(f"{option} {item}")
            option = None
        elif item in _PIP_VALUE_OPTIONS:
            option = item
        else:
            lines.append(item)
    if option is not None:
        lines.append(option)
    return lines


def stub_args(workdir: str, env: Mapping[str, str], pip: Sequence[str] = ()) -> bytes:
    """What the stub reads first on stdin: ``<length>\\n<JSON>``."""
    args = {"python": client_python(), "workdir": workdir, "hash": bundles.bundle_id(), "sha": bundles.bundle_sha256(),
            "env": dict(env), "pip": requirement_lines(pip)}
    return _framed(args)


def with_env(args: bytes, extra: Mapping[str, str]) -> bytes:
    """``stub_args``'s bytes with more environment variables (a spare worker's ``SKYCTL_SPARE``)."""
    data = json.loads(args.split(b"\n", 1)[1])
    data["env"] = {**data["env"], **extra}
    return _framed(data)


def _framed(args: Mapping[str, Any]) -> bytes:
    data = json.dumps(args, separators=(",", ":")).encode()
    return b"%d\n%s" % (len(data), data)


@dataclass
class StartedWorker:
    """A worker that has said hello: its pipes and what it told us."""

    pipes: WorkerPipes
    hello: dict[str, Any]
    sent_bundle: bool


#: seconds the client waits after a ``progress`` line at least, whatever
#: ``connect_timeout`` is: the stub says ``progress`` every 2 s while pip is quiet
PIP_QUIET = 10.0
#: seconds pip may go on saying nothing but bare ``progress`` lines (the stub's
#: heartbeat) before the start-up is given up: a stub that only ever says
#: ``progress`` must not hang the client (``SKYCTL_PIP_SILENCE`` sets it, for tests)
PIP_SILENCE = 900.0
#: seconds a failed or timed-out start-up waits for the stub's pipes to close: enough for
#: the transports' own close (EOF, 2 s to exit, then TERM and KILL), never longer
CLOSE_WAIT = 4.0


def start_worker(
    transport: Transport,
    python: str,
    workdir: str,
    env: Mapping[str, str],
    on_status: Callable[[str], None] = lambda s: None,
    pip: Sequence[str] = (),
    timeout: float = 10.0,
    bound: float | None = None,
) -> StartedWorker:
    """Run the stub through ``transport``, send the bundle if missing, wait for HELLO.

    Every answer of the stub (and the worker's HELLO) must come within
    ``timeout`` seconds (the profile's ``connect_timeout``): an interpreter
    that never answers is an error, not a hang. While a ``pip:`` venv is
    built, each ``progress`` line restarts the wait. The handshake runs on
    a thread of its own so that this wait holds whatever the transport's
    reads block on.

    A transport that runs a program of the user's (``command``) may explain a
    failure before the stub said a word, when that program, not the stub,
    is what failed: ``transport.failed_before_stub(pipes, python, answer)``.
    """
    args = stub_args(workdir, env, pip)
    argv = stub_argv(python, bound)
    # a transport that keeps spare workers hands over one started for the same command and arguments
    start_for = getattr(transport, "start_for", None)
    pipes = start_for(argv, args) if start_for is not None else transport.start(argv)
    events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
    handshake = _Handshake(pipes, transport, python, events.put)
    thread = threading.Thread(target=handshake.run, args=(args,), name="skyctl-bootstrap", daemon=True)
    try:
        thread.start()
        wait = timeout
        silence = _pip_silence()
        heard = time.monotonic()  # when pip last printed something
        while True:
            try:
                kind, value = events.get(timeout=wait)
            except queue.Empty:
                raise (_lost_while_starting(pipes, handshake.waiting_for)
                       or _no_answer(transport, python, timeout, handshake.waiting_for)) from None
            if kind == "progress" and not value and time.monotonic() - heard > silence:
                raise RemoteEnvironmentError(
                    f"pip on {transport.label} printed nothing for {silence:g}s (the stub only said it is still running)",
                    hint="run the profile's pip install by hand there to see where it hangs")
            if kind != "progress" or value:
                heard = time.monotonic()
            if kind == "done":
                return value  # type: ignore[no-any-return]
            if kind == "error":
                if not isinstance(value, (SkyctlError, KeyboardInterrupt)):  # never a traceback of ours
                    value = RemoteEnvironmentError(
                        f"the worker on {transport.label} did not start: {type(value).__name__}: {value}")
                raise value
            wait = max(timeout, PIP_QUIET) if kind == "progress" else timeout
            if value:
                on_status(value)
    except BaseException:
        _close_within(pipes, CLOSE_WAIT)
        raise


class _Handshake:
    """The start-up dialogue with the stub, run on its own thread; reports through ``post(kind, value)``:
    ``status``/``progress`` (text or '' for the status line), ``done`` (a ``StartedWorker``), ``error``."""

    def __init__(self, pipes: WorkerPipes, transport: Transport, python: str,
                 post: Callable[[tuple[str, Any]], None]) -> None:
        self.pipes = pipes
        self.transport = transport
        self.python = python
        self.post = post
        #: what the client is waiting for (named in the error when it does not come)
        self.waiting_for = "the bootstrap stub's first answer"

    def run(self, args: bytes) -> None:
        try:
            self.post(("done", self._talk(args)))
        except BaseException as exc:  # handed to the caller's thread
            self.post(("error", _lost_while_starting(self.pipes, self.waiting_for) or exc))

    def _talk(self, args: bytes) -> StartedWorker:
        pipes, transport = self.pipes, self.transport
        before_stub = getattr(transport, "failed_before_stub", None)
        try:
            _write(pipes, transport, args)
        except ConnectionLost:
            if before_stub is None:
                raise
            raise before_stub(pipes, self.python, "") from None
        sent = False
        answer = _read_line(pipes)
        if before_stub is not None and (not answer or answer.startswith("?")):
            raise before_stub(pipes, self.python, answer)
        while answer == "progress" or answer.startswith("progress "):
            self.waiting_for = "pip (building the profile's venv)"
            text = answer[9:].strip()
            self.post(("progress", "installing pip requirements: " + text if text else ""))
            answer = _read_line(pipes)
        if answer.startswith("pipfail "):
            lines = _json_answer(answer[8:])
            if type(lines) is not list or not all(type(line) is str for line in lines):
                raise _garbled(transport, "pipfail", answer)
            # indented: a line of pip's such as "error: ..." is not mistaken for skyctl's own
            tail = "\n".join(("  " + line).rstrip() for line in lines)
            err = RemoteEnvironmentError(
                f"pip install of the profile's requirements failed on {describe(transport)}",
                hint="check the 'pip:' list in the host's profile; pip's output ends above",
            )
            err.details = tail
            raise err
        if answer.startswith("bad "):
            what = _json_answer(answer[4:])
            if type(what) is not list or not what or not all(type(word) is str for word in what):
                raise _garbled(transport, "bad", answer)
            raise _bad_workdir(transport, what)
        if answer == "need":
            self.post(("status", "sending worker bundle"))
            b = bundles.bundle()
            if b.sha256 != bundles.bundle_sha256():
                bundles.remember_bundle()  # the memo was stale: the next call's check must not fail again
            self.waiting_for = "the worker bundle to be sent"
            _write(pipes, transport, b"%d %s\n" % (len(b.data), b.sha256.encode()) + b.data)
            sent = True
            self.waiting_for = "the bootstrap stub to store the worker bundle"
            self.post(("status", ""))
            answer = _read_line(pipes)
        if answer.startswith("python "):
            _, version, exe = (answer.split(" ", 2) + ["", ""])[:3]
            raise RemoteEnvironmentError(
                f"python on {describe(transport)} is {version} ({exe}), but skyctl runs on {client_python()}",
                hint=f"functions travel as bytecode: set 'python:' in the host's profile to a Python {client_python()}",
            )
        if answer != "ready":
            self.post(("status", ""))  # explaining may wait for the stub's exit status
            raise _lost_while_starting(pipes, self.waiting_for) or _start_failure(pipes, transport, self.python, answer)
        self.waiting_for = "the worker's hello"
        self.post(("status", "starting worker"))
        try:
            kind, payload = wire.read_frame(pipes.read)
        except wire.Eof:
            self.post(("status", ""))
            raise _start_failure(pipes, transport, self.python, "") from None
        except wire.ProtocolError as exc:  # garbage where the hello should be: said at once, not after its exit
            raise _bad_hello(transport, str(exc)) from None
        if kind is not wire.Kind.HELLO:
            raise _bad_hello(transport, f"a {kind.name} frame first")
        return StartedWorker(pipes, check_hello(payload, describe(transport)), sent)


#: the most bytes a HELLO may take
HELLO_MAX = 64 << 10


def check_hello(payload: bytes, label: str) -> dict[str, Any]:
    """The worker's HELLO as a dict, checked whole: a JSON object of this protocol's version."""
    if len(payload) > HELLO_MAX:
        raise _bad_hello_label(label, f"a HELLO of {len(payload):,} bytes")
    try:
        hello = json.loads(bytes(payload).decode("utf-8"))
    except UnicodeDecodeError:
        raise _bad_hello_label(label, "a HELLO that is not UTF-8") from None
    except (ValueError, RecursionError):
        raise _bad_hello_label(label, "a HELLO that is not JSON") from None
    if type(hello) is not dict:
        raise _bad_hello_label(label, f"a HELLO that is a JSON {type(hello).__name__}, not an object")
    if hello.get("protocol") != wire.PROTOCOL_VERSION:
        raise RemoteEnvironmentError(f"the worker on {label} speaks protocol {str(hello.get('protocol'))[:40]}, "
                                     f"not {wire.PROTOCOL_VERSION}",
                                     hint="skyctl's cache on the host may be damaged: remove its workdir there")
    return hello


def _bad_hello(transport: Transport, what: str) -> RemoteEnvironmentError:
    return _bad_hello_label(describe(transport), what)


def _bad_hello_label(label: str, what: str) -> RemoteEnvironmentError:
    return RemoteEnvironmentError(f"the worker on {label} did not start cleanly: {what} where its HELLO belongs",
                                  hint="is skyctl's cache on the host damaged, or something else writing to the "
                                       "worker's stdout? remove the host's workdir to rebuild it")


def _json_answer(text: str) -> Any:
    """The JSON of a stub's answer, or ``_GARBLED``."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return _GARBLED


_GARBLED = object()


def _garbled(transport: Transport, what: str, answer: str) -> RemoteEnvironmentError:
    """A stub answer that is not what the stub says: one line, never a traceback."""
    shown = answer[:80] + ("…" if len(answer) > 80 else "")
    return RemoteEnvironmentError(f"the bootstrap stub on {describe(transport)} answered {what!r} garbled: {shown!r}",
                                  hint="is skyctl's cache on the host damaged, or something else writing to "
                                       "the worker's stdout?")


def _pip_silence() -> float:
    try:
        return float(os.environ.get("SKYCTL_PIP_SILENCE") or PIP_SILENCE)
    except ValueError:
        return PIP_SILENCE


def _close_within(pipes: WorkerPipes, seconds: float) -> None:
    """Close ``pipes``, waiting at most ``seconds``: the handshake thread may
    still be blocked reading them (a child of the command can hold them open)."""
    closer = threading.Thread(target=pipes.close, name="skyctl-bootstrap-close", daemon=True)
    closer.start()
    closer.join(seconds)


def _lost_while_starting(pipes: WorkerPipes, waiting_for: str) -> ConnectError | None:
    """The connection under ``pipes`` was given up (keepalives unanswered, e.g. a partition mid-upload): exit 4.

    Said as such, not as the EOF it looks like to the handshake ("did not start:
    exit status -1"). Nothing of the call ran; a bundle cut off in transit was
    never stored (the stub writes it only once complete and checked), so the
    next call starts afresh.
    """
    lost = getattr(pipes, "lost", None)
    error = lost() if callable(lost) else None
    if error is None:
        return None
    return ConnectError(
        f"{error.message} while starting the worker (waiting for {waiting_for})",
        hint="the host or the network stopped responding before the call began: nothing ran there, and the next "
        "call starts afresh. On a slow link, raise 'keepalive' or 'keepalive_count' for this host",
    )


def _no_answer(transport: Transport, python: str, timeout: float, waiting_for: str) -> RemoteEnvironmentError:
    """The bootstrap deadline passed: the interpreter is there but does not speak."""
    hint = f"check that '{python}' is a Python interpreter there (`{python} -c 'print(1)'` must print 1)"
    if transport.label != "local":
        hint += "; if the host is only slow, raise 'connect_timeout' in its profile"
    return RemoteEnvironmentError(
        f"python '{python}' on {describe(transport)} did not answer within {timeout:g}s (waiting for {waiting_for})",
        hint=hint,
    )


def _bad_workdir(transport: Transport, what: list[str]) -> RemoteEnvironmentError:
    """The stub refused the workdir (or its ``venvs``): why, and the fix."""
    kind, path, detail = (list(what) + ["", "", ""])[:3]
    where = f"{path} on {describe(transport)}"
    q = shlex.quote(path)
    own = "or set 'workdir:' in the host's profile to a directory of your own"
    if kind == "mkdir":
        return RemoteEnvironmentError(f"cannot create the workdir {where}: {detail}",
                                      hint=f"create it (mkdir -p -m 700 {q}), {own}")
    if kind == "link":
        why, fix = f"it is a symlink (to {detail})", f"remove the link (rm {q}) so skyctl creates a real directory, {own}"
    elif kind == "notdir":
        why, fix = "it is not a directory", f"remove it (rm {q}), {own}"
    elif kind == "owner":
        why, fix = f"it belongs to {detail}", f"its owner could plant code there: remove it (rm -rf {q}, as its owner or root), {own}"
    elif kind == "mode":
        why = f"it is writable by group or others (mode {detail})"
        fix = f"others may have written into it: remove it (rm -rf {q}), or at least chmod 700 {q}"
    else:
        why, fix = f"{kind} {detail}".strip(), own
    return RemoteEnvironmentError(f"refusing the workdir {where}: {why}", hint=fix)


def _write(pipes: WorkerPipes, transport: Transport, data: bytes) -> None:
    try:
        pipes.write(data)
    except OSError:
        raise ConnectionLost(f"the connection to {describe(transport)} closed while starting the worker") from None


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
            f"python '{python}' was not found on {describe(transport)}",
            hint="install Python there, or set 'python:' in the host's profile to its path",
        )
    if answer.startswith("error "):
        return RemoteEnvironmentError(f"bootstrap on {describe(transport)} failed: {answer[6:]}")
    detail = last or (answer.lstrip("?") if answer else f"exit status {status}")
    return RemoteEnvironmentError(
        f"the worker on {describe(transport)} did not start: {detail}",
        hint=f"check that '{python}' runs there; its output ended with: {tail[-300:]!r}" if tail else None,
    )
