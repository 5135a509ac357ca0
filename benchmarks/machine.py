"""What the benchmarks ran on: CPU, cores, RAM, kernel, Python, OpenSSH, load, date, skyctl revision."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.lower().startswith(("model name", "hardware", "cpu model")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def ram_gib() -> float:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return float("nan")


def loadavg() -> str:
    parts = _read("/proc/loadavg").split()
    return " ".join(parts[:3]) if parts else "n/a"


def openssh_version() -> str:
    try:
        done = subprocess.run(["ssh", "-V"], capture_output=True, text=True, timeout=10)
        return (done.stderr or done.stdout).strip()
    except (OSError, subprocess.TimeoutExpired):
        return "n/a"


def python_at(python: str) -> str:
    try:
        done = subprocess.run([python, "-c", "import sys, platform; print(platform.python_version(), sys.executable)"],
                              capture_output=True, text=True, timeout=10)
        return done.stdout.strip() or "n/a"
    except (OSError, subprocess.TimeoutExpired):
        return "n/a"


def skyctl_revision(repo: Path) -> str:
    try:
        rev = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "n/a"
    if not rev:
        return "n/a"
    return f"{rev} (with uncommitted changes)" if dirty else rev


def describe(repo: Path, remote_python: str) -> dict[str, str]:
    import skyctl

    return {
        "CPU": cpu_model(),
        "cores": str(os.cpu_count()),
        "RAM": f"{ram_gib():.1f} GiB",
        "kernel": f"{platform.system()} {platform.release()}",
        "Python (client)": f"{platform.python_version()} {sys.executable}",
        "Python (remote worker)": python_at(remote_python),
        "OpenSSH": openssh_version(),
        "skyctl": f"{getattr(skyctl, '__version__', '?')} at {skyctl_revision(repo)}",
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "load average at start": loadavg(),
    }
