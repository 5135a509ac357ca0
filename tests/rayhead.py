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
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
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

    @property
    def ray_cli(self) -> str:
        return str(Path(self.python).parent / "ray")

    def env(self) -> dict[str, str]:
        return {**os.environ, **RAY_ENV}

    def stop(self) -> None:
        """``ray stop``, then the head's temp dir goes."""
        try:
            subprocess.run([self.ray_cli, "stop"], env=self.env(), capture_output=True, timeout=120)
        finally:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


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
    try:
        started = subprocess.run(argv, env=head.env(), capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        head.stop()
        raise RayUnavailable("ray start --head did not finish within 300 s") from None
    if started.returncode != 0:
        head.stop()
        raise RayUnavailable(f"ray start --head failed: {(started.stdout + started.stderr).strip()[-800:]}")
    return head
