"""The fault lab: N hosts, each a network namespace with its own address, link and ``sshd``.

Importable on its own (stdlib only, no pytest), for tests and benchmarks::

    from tests.lab import start_lab
    with start_lab(4, Path("/tmp/lab")) as lab:
        config.write_text(lab.config_yaml())
        lab.partition(2)          # the host's link goes down: nothing in, nothing out
        lab.heal(2)
        lab.rate(1, "1mbit")      # tbf on both ends of its link
        port = lab.delay(0, 0.010)  # a delay proxy in front of it: +10 ms each way

The layout, for lab slot ``S`` (0-31, one per running lab, see below):

- a bridge ``skylS-br`` in this (the root) namespace, address ``10.213.S.1/24``;
- per host ``i``: a network namespace ``skylS-hI`` holding the far end of a veth
  pair (``eth0``, ``10.213.S.(10+i)/24``, default route via the bridge) whose
  near end ``skylS-hI`` is a bridge port here; an ``sshd`` started with
  ``ip netns exec`` listening on ``10.213.S.(10+i):2222`` with the key,
  ``known_hosts`` and config generation of ``tests/sshd.py``.

Faults, per host and at any moment: ``partition`` (the near end of its link
goes down: packets both ways are dropped, with no RST and no ICMP, as in a real
partition; TCP on either side notices only by its own timers), ``heal``,
``rate`` (``tc tbf`` on both ends of its link), ``delay`` (a user-space
delay proxy, ``benchmarks/proxy.py``, in front of its sshd: there is no
``netem`` in every kernel), ``stop_sshd``/``cont_sshd`` and
``signal_workers`` (SIGSTOP/SIGCONT/SIGKILL to what the calls run there).
``processes(i)`` lists every process in a host's namespace: what a call left
behind on a cut-off host is exactly what is in there besides the listening sshd.

Only addresses inside 10.213.0.0/16 on the lab's own bridge are used; the
bridge has no uplink and nothing is routed or NATed: nothing leaves the machine.

Several labs may run at once (a test run and a soak): each takes the first
slot whose lock file (``/run/skyl/slotS.lock``, ``flock``) it can hold. Every
slot it could lock on the way, i.e. whose owner is gone, is cleared first:
the stale namespaces, links and processes of a crashed run go at the next
start. ``close()`` (also at exit) tears everything down.

Needs root (network namespaces), ``ip`` and ``tc`` (``apt-get install -y
iproute2``); ``LabUnavailable`` says what is missing.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from sshd import SshdUnavailable, SshServer, start_sshd, stop_process

__all__ = ["Lab", "LabHost", "LabUnavailable", "lab_available", "start_lab", "PREFIX"]

#: every namespace and link of every lab starts with this
PREFIX = "skyl"
LOCK_DIR = Path("/run/skyl")
SLOTS = 32
SSH_PORT = 2222
PROXY = Path(__file__).resolve().parent.parent / "benchmarks" / "proxy.py"


class LabUnavailable(RuntimeError):
    """The lab cannot run here (not root, no ``ip``/``tc``, no network namespaces); the message says why."""


def lab_available() -> str | None:
    """None when a lab can start here, else the reason it cannot (a cheap check, before ``start_lab``)."""
    if os.geteuid() != 0:
        return "the fault lab needs root (network namespaces, veth pairs, tc)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"'{tool}' not found (install it: apt-get install -y iproute2)"
    return None


def _run(*argv: str, check: bool = True, timeout: float = 30) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabUnavailable(f"{' '.join(argv)} failed: {exc}") from None
    if check and done.returncode != 0:
        raise LabUnavailable(f"{' '.join(argv)} failed (exit {done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _netns_pids(ns: str) -> list[int]:
    out = _run("ip", "netns", "pids", ns, check=False)
    return [int(p) for p in out.split() if p.isdigit()]


def _cmdline(pid: int) -> str:
    """The first 120 characters of ``pid``'s command line, on one line (a worker's stub is long)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
    return " ".join(raw.split())[:120]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _clear_slot(slot: int) -> None:
    """Remove whatever a dead lab left in ``slot``: its processes, namespaces and links."""
    tag = f"{PREFIX}{slot}-"
    for ns in _run("ip", "netns", "list", check=False).split("\n"):
        name = ns.split(" ")[0].strip()
        if not name.startswith(tag):
            continue
        for pid in _netns_pids(name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _run("ip", "netns", "del", name, check=False)
    for line in _run("ip", "-o", "link", "show", check=False).splitlines():
        match = re.match(r"\d+:\s+([^:@\s]+)", line)
        if match and match.group(1).startswith(tag):
            _run("ip", "link", "del", match.group(1), check=False)


@dataclass
class LabHost:
    """One lab host: its namespace, address, link and sshd."""

    index: int
    name: str
    #: the network namespace (also the name of the near end of its link)
    netns: str
    address: str
    server: SshServer
    #: a known_hosts file naming this host's key under every address it is reached at
    known_hosts: Path
    #: the delay proxy's port on 127.0.0.1 when one runs (``Lab.delay``)
    proxy_port: int = 0
    proxy: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    partitioned: bool = False
    sshd_stopped: bool = False
    rated: bool = False


class Lab:
    """A running lab; see the module docstring. ``close()`` removes everything it made."""

    def __init__(self, slot: int, lock: IO[str], root: Path) -> None:
        self.slot = slot
        self.root = root
        self.hosts: list[LabHost] = []
        self.bridge = f"{PREFIX}{slot}-br"
        self.subnet = f"10.213.{slot}"
        self._lock = lock
        self._closed = False

    # -- names and config ----------------------------------------------------------

    def host_yaml(self, i: int, *, name: str | None = None, via_proxy: bool = False, extra: str = "") -> str:
        """A ``hosts:`` entry for host ``i`` (direct, or through its delay proxy)."""
        h = self.hosts[i]
        host, port = ("127.0.0.1", h.proxy_port) if via_proxy else (h.address, SSH_PORT)
        if via_proxy and not h.proxy_port:
            raise ValueError(f"{h.name} has no delay proxy (call lab.delay({i}, seconds) first)")
        return (
            f"  {name or h.name}:\n"
            f"    host: {host}\n"
            f"    port: {port}\n"
            f"    user: {h.server.user}\n"
            f"    identity_file: {h.server.identity_file}\n"
            f"    known_hosts: {h.known_hosts}\n"
            f"    python: /usr/bin/python3\n"
            + "".join(f"    {line}\n" for line in extra.splitlines() if line.strip())
        )

    def config_yaml(self, *, group: str = "lab", extra: str = "", via_proxy: bool = False,
                    default: str = "local") -> str:
        """A whole skyward.yaml: ``local``, every lab host (``extra`` added to each) and a group of them all."""
        text = f"default: {default}\nhosts:\n  local:\n    type: local\n"
        for h in self.hosts:
            text += self.host_yaml(h.index, via_proxy=via_proxy,
                                   extra=f"env: {{SKYCTL_TEST_HOST: {h.name}}}\n{extra}")
        text += f"groups:\n  {group}: [{', '.join(h.name for h in self.hosts)}]\n"
        return text

    # -- faults ------------------------------------------------------------------------

    def partition(self, i: int) -> None:
        """Cut host ``i``'s link: from now on nothing reaches it and nothing it sends arrives (no RST, no ICMP)."""
        h = self.hosts[i]
        _run("ip", "link", "set", h.netns, "down")
        h.partitioned = True

    def heal(self, i: int) -> None:
        """Bring host ``i``'s link back up (connections that outlived the cut carry on)."""
        h = self.hosts[i]
        _run("ip", "link", "set", h.netns, "up")
        h.partitioned = False

    def rate(self, i: int, rate: str = "1mbit") -> None:
        """Limit host ``i``'s link to ``rate`` each way (``tc tbf``; e.g. ``"1mbit"``, ``"200kbit"``)."""
        h = self.hosts[i]
        tbf = ["tbf", "rate", rate, "burst", "16kb", "latency", "200ms"]
        _run("tc", "qdisc", "replace", "dev", h.netns, "root", *tbf)
        _run("ip", "netns", "exec", h.netns, "tc", "qdisc", "replace", "dev", "eth0", "root", *tbf)
        h.rated = True

    def unrate(self, i: int) -> None:
        """Remove host ``i``'s rate limit."""
        h = self.hosts[i]
        _run("tc", "qdisc", "del", "dev", h.netns, "root", check=False)
        _run("ip", "netns", "exec", h.netns, "tc", "qdisc", "del", "dev", "eth0", "root", check=False)
        h.rated = False

    def delay(self, i: int, one_way: float) -> int:
        """Start a delay proxy (+``one_way`` seconds each way) in front of host ``i``; its port on 127.0.0.1.

        Reach it with ``host_yaml(i, via_proxy=True)``. A second call replaces the proxy.
        """
        h = self.hosts[i]
        self.undelay(i)
        proc = subprocess.Popen(
            [sys.executable, str(PROXY), "--target", f"{h.address}:{SSH_PORT}", "--delay-ms", str(one_way * 1000.0)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.strip().isdigit():
            stop_process(proc)
            raise LabUnavailable(f"the delay proxy for {h.name} did not start (exit {proc.poll()})")
        h.proxy, h.proxy_port = proc, int(line)
        with open(h.known_hosts, "a") as known:
            known.write(f"[127.0.0.1]:{h.proxy_port} {h.server.host_public_key}\n")
        return h.proxy_port

    def undelay(self, i: int) -> None:
        h = self.hosts[i]
        if h.proxy is not None:
            stop_process(h.proxy)
            h.proxy = None

    def stop_sshd(self, i: int) -> None:
        """SIGSTOP host ``i``'s listening sshd (new connections hang; sessions already open go on)."""
        os.kill(self.hosts[i].server.pid, signal.SIGSTOP)
        self.hosts[i].sshd_stopped = True

    def cont_sshd(self, i: int) -> None:
        os.kill(self.hosts[i].server.pid, signal.SIGCONT)
        self.hosts[i].sshd_stopped = False

    def processes(self, i: int) -> dict[int, str]:
        """pid → command line of every live process in host ``i``'s namespace but its listening sshd."""
        h = self.hosts[i]
        found = {pid: _cmdline(pid) for pid in _netns_pids(h.netns) if pid != h.server.pid}
        return {pid: cmd for pid, cmd in found.items() if _alive(pid)}

    def workers(self, i: int) -> list[int]:
        """The pids of the Python processes calls run on host ``i`` (workers, spares, what they started)."""
        return [pid for pid, cmd in self.processes(i).items() if "python" in cmd and "sshd" not in cmd]

    def signal_workers(self, i: int, sig: int) -> list[int]:
        """Send ``sig`` (SIGSTOP, SIGCONT, SIGKILL…) to every worker on host ``i``; the pids it reached."""
        hit = []
        for pid in self.workers(i):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
                hit.append(pid)
        return hit

    def reset(self) -> None:
        """Undo every fault: links up, no rate limits, sshd and workers continued (between tests)."""
        for h in self.hosts:
            if h.partitioned:
                self.heal(h.index)
            if h.rated:
                self.unrate(h.index)
            if h.sshd_stopped:
                self.cont_sshd(h.index)
            self.signal_workers(h.index, signal.SIGCONT)

    # -- lifetime ----------------------------------------------------------------------

    def close(self) -> None:
        """Stop every process of the lab and remove its namespaces, links and lock. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for h in self.hosts:
            self.undelay(h.index)
            with contextlib.suppress(ProcessLookupError):
                os.kill(h.server.pid, signal.SIGCONT)
            h.server.stop()
        _clear_slot(self.slot)
        shutil.rmtree(self.root, ignore_errors=True)
        with contextlib.suppress(OSError):
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()

    def __enter__(self) -> "Lab":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _take_slot() -> tuple[int, IO[str]]:
    """Lock the first free slot, clearing every stale one met on the way (its owner died)."""
    LOCK_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    for slot in range(SLOTS):
        lock = open(LOCK_DIR / f"slot{slot}.lock", "a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        _clear_slot(slot)
        return slot, lock
    raise LabUnavailable(f"all {SLOTS} lab slots are in use ({LOCK_DIR})")


def start_lab(n: int, root: Path | None = None, *, names: list[str] | None = None) -> Lab:
    """Start a lab of ``n`` hosts (named ``names`` or ``lab0``…) with its files under ``root``.

    Raises:
        LabUnavailable: not root, ``ip``/``tc`` missing, or a step failed (the message says which).
    """
    reason = lab_available()
    if reason:
        raise LabUnavailable(reason)
    import tempfile

    slot, lock = _take_slot()
    lab = Lab(slot, lock, Path(tempfile.mkdtemp(prefix=f"{PREFIX}{slot}-", dir=root)))
    atexit.register(lab.close)
    try:
        _run("ip", "link", "add", lab.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{lab.subnet}.1/24", "dev", lab.bridge)
        _run("ip", "link", "set", lab.bridge, "up")
        for i in range(n):
            lab.hosts.append(_start_host(lab, i, (names or [])[i] if names else f"lab{i}"))
    except BaseException:
        lab.close()
        raise
    return lab


def _start_host(lab: Lab, i: int, name: str) -> LabHost:
    ns = f"{PREFIX}{lab.slot}-h{i}"
    peer = f"{PREFIX}{lab.slot}-p{i}"
    address = f"{lab.subnet}.{10 + i}"
    _run("ip", "netns", "add", ns)
    _run("ip", "link", "add", ns, "type", "veth", "peer", "name", peer)
    _run("ip", "link", "set", peer, "netns", ns)
    _run("ip", "link", "set", ns, "master", lab.bridge)
    _run("ip", "link", "set", ns, "up")
    inside = ("ip", "netns", "exec", ns)
    _run(*inside, "ip", "link", "set", "lo", "up")
    _run(*inside, "ip", "link", "set", peer, "name", "eth0")
    _run(*inside, "ip", "addr", "add", f"{address}/24", "dev", "eth0")
    _run(*inside, "ip", "link", "set", "eth0", "up")
    _run(*inside, "ip", "route", "add", "default", "via", f"{lab.subnet}.1")
    try:
        server = start_sshd(lab.root, listen=address, port=SSH_PORT, wrap=list(inside))
    except SshdUnavailable as exc:
        raise LabUnavailable(f"sshd for {name} in {ns}: {exc}") from None
    known = lab.root / f"known_hosts-{name}"
    known.write_text(server.known_hosts.read_text())
    return LabHost(index=i, name=name, netns=ns, address=address, server=server, known_hosts=known)
