"""A local Ray head for the ``type: ray`` tests, run from a Python of its own that has ``ray``.

The client's environment never gets ray: the cluster (and the Ray driver that
skyctl starts on a ``via`` host) use a separate venv, found through
``$SKYCTL_TEST_RAY_PYTHON`` (``.ci/run`` installs it and exports that) or the
default path below. The head binds to 127.0.0.1 only: Ray turns
``--node-ip-address 127.0.0.1`` into the machine's outward address unless
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (its single-machine mode), which this
sets for the head and for every driver the tests start.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

#: the Ray version skyctl is checked with; .ci/run installs exactly this
RAY_VERSION = "2.40.0"
ENV_PYTHON = "SKYCTL_TEST_RAY_PYTHON"
#: where .ci/run puts the venv (one per Ray version and Python major.minor)
DEFAULT_PYTHON = f"/opt/skyctl-ci/ray-{RAY_VERSION}-py{sys.version_info[0]}.{sys.version_info[1]}/bin/python"
#: for the head and every driver: Ray's own single-machine mode, so that everything stays on 127.0.0.1
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


class RayUnavailable(Exception):
    pass


def ray_python() -> str:
    """The Python with ray: ``$SKYCTL_TEST_RAY_PYTHON`` or the default; checked to import ray and to be
    the client's major.minor (``RayUnavailable`` says why not)."""
    python = os.environ.get(ENV_PYTHON) or DEFAULT_PYTHON
    if not os.access(python, os.X_OK):
        raise RayUnavailable(f"no Python with ray at {python} (set ${ENV_PYTHON}, or run .ci/run to install it)")
    probe = subprocess.run([python, "-c", "import sys, ray; print('%d.%d' % sys.version_info[:2], ray.__version__)"],
                           capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        raise RayUnavailable(f"{python} cannot import ray: {probe.stderr.strip()[-300:]}")
    version, ray_version = probe.stdout.split()
    if version != "%d.%d" % sys.version_info[:2]:
        raise RayUnavailable(f"{python} is Python {version}, the client is {sys.version_info[0]}.{sys.version_info[1]}")
    return python


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RayHead:
    python: str
    #: ``127.0.0.1:PORT``, what the tests' ray hosts give as ``address:``
    address: str
    temp_dir: Path
    version: str
    #: the session ``ray start`` ran in (its own, ``start_new_session``): the head's daemons and the raylet's
    #: workers all stay in it, so ``stop`` ends exactly these and no other Ray cluster on the machine
    session: int = 0
    #: every pid seen as this head's while it ran (``pids()``), so that ``stop`` finds a straggler that left the session
    seen: set[int] = field(default_factory=set)

    @property
    def ray_cli(self) -> str:
        return str(Path(self.python).parent / "ray")

    def env(self) -> dict[str, str]:
        return {**os.environ, **RAY_ENV}

    def pids(self) -> set[int]:
        """The live processes of this head: those in its session, those whose command line names its temp dir,
        and those whose ``RAY_RAYLET_PID`` is one of them (a worker the raylet started). Never ``ray stop``:
        that ends every Ray cluster on the machine, other sessions' too."""
        found: set[int] = set()
        envs: dict[int, str] = {}
        marker = str(self.temp_dir).encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            pid = int(entry)
            try:
                if self.session and os.getsid(pid) == self.session:
                    found.add(pid)
                    continue
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if marker in f.read():
                        found.add(pid)
                        continue
                with open(f"/proc/{pid}/environ", "rb") as f:
                    for item in f.read().split(b"\0"):
                        if item.startswith(b"RAY_RAYLET_PID="):
                            envs[pid] = item.split(b"=", 1)[1].decode(errors="replace")
            except (OSError, ProcessLookupError):
                continue
        found |= {pid for pid, raylet in envs.items() if raylet.isdigit() and int(raylet) in found | self.seen}
        self.seen |= found
        return found

    def stop(self, deadline: float = 60.0) -> None:
        """End this head's processes only (SIGTERM, then SIGKILL for what is left at ``deadline``), and wait until
        none is left; then its temp dir goes. Raises ``RuntimeError`` if some process would not go."""
        try:
            pids = self.pids()
            for sig in (signal.SIGTERM, signal.SIGKILL):
                for pid in pids:
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
                end = time.monotonic() + (deadline if sig == signal.SIGTERM else 30.0)
                while pids and time.monotonic() < end:
                    pids = {pid for pid in self.pids() if _alive(pid)}
                    if pids:
                        time.sleep(0.05)  # polling the process table against a deadline, not a synchronisation
                if not pids:
                    return
            raise RuntimeError(f"the Ray head in {self.temp_dir} left processes running: {sorted(pids)}")
        finally:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for its parent (a daemon whose parent is init is reaped by it)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def start_ray_head(python: str) -> RayHead:
    """``ray start --head`` with 2 CPUs, no dashboard, no usage stats, on 127.0.0.1, in a temp dir of its own."""
    temp_dir = Path(tempfile.mkdtemp(prefix="skyray-", dir="/tmp"))  # short: Ray's socket paths live under it
    port = free_port()
    version = subprocess.run([python, "-c", "import ray; print(ray.__version__)"], capture_output=True, text=True,
                             timeout=120).stdout.strip()
    head = RayHead(python, f"127.0.0.1:{port}", temp_dir, version)
    argv = [head.ray_cli, "start", "--head", "--num-cpus", "2", "--include-dashboard=false", "--disable-usage-stats",
            "--node-ip-address", "127.0.0.1", "--port", str(port),
            "--dashboard-agent-listen-port", str(free_port()), "--object-store-memory", str(200 * 1024 * 1024),
            "--temp-dir", str(temp_dir)]
    # a session of its own: the daemons ``ray start`` leaves behind, and the workers their raylet starts, stay in it
    proc = subprocess.Popen(argv, env=head.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    head.session = proc.pid
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        head.stop()
        raise RayUnavailable("ray start --head did not finish within 300 s") from None
    started = subprocess.CompletedProcess(argv, proc.returncode, out, err)
    if started.returncode != 0:
        head.stop()
        raise RayUnavailable(f"ray start --head failed: {(started.stdout + started.stderr).strip()[-800:]}")
    return head
