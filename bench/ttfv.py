"""Warm time-to-first-value of ``skyctl run`` on an SSH host vs the OpenSSH client.

Usage: ``python bench/ttfv.py [-n 10]``. Starts its own sshd on 127.0.0.1
(``tests/sshd.py``), then times, each N times after a warm-up:

- ``ssh host python3 -c 'print(1)'`` (OpenSSH client, fresh connection);
- ``skyctl run one.py:one`` with ``--no-reuse`` (fresh SSH connection);
- ``skyctl run one.py:one`` with the kept connection (reuse, warm holder).

Time to first value = from spawning the process until its first stdout line
is read; "total" = until it exits. Runs the console script directly (not a
pyenv shim, which adds a bash + pyenv exec of its own).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from helpers import clean_env, write_config  # noqa: E402
from sshd import start_sshd  # noqa: E402


def skyctl_exe() -> list[str]:
    script = Path(sysconfig.get_path("scripts")) / "skyctl"
    if script.is_file():
        return [str(script)]
    return [shutil.which("skyctl") or "skyctl"]


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, bytes]:
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    ttfv = time.perf_counter() - started
    out, err = proc.communicate(timeout=60)
    total = time.perf_counter() - started
    if proc.returncode != 0 or first.strip() != b"1":
        raise SystemExit(f"{argv} failed ({proc.returncode}): {first!r} {out!r} {err.decode(errors='replace')}")
    return ttfv, total, err


def series(name: str, argv: list[str], env: dict[str, str], cwd: Path, n: int) -> None:
    timed(argv, env, cwd)  # warm-up (and, with reuse, starts the holder)
    firsts, totals = [], []
    for _ in range(n):
        ttfv, total, _ = timed(argv, env, cwd)
        firsts.append(ttfv * 1000)
        totals.append(total * 1000)
    print(f"{name:<28} first value: median {statistics.median(firsts):6.0f} ms  min {min(firsts):6.0f}  max {max(firsts):6.0f}"
          f"   | exit: median {statistics.median(totals):6.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=10)
    parser.add_argument("--only", choices=["ssh", "noreuse", "reuse"], action="append")
    opts = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="skyctl-bench-"))
    server = start_sshd(root)
    try:
        (root / "one.py").write_text("def one():\n    return 1\n")
        cfg = write_config(root / "skyward.yaml", server, default="box", extra="reuse_idle: 120")
        env = clean_env({"SKYCTL_CONFIG": str(cfg), "XDG_RUNTIME_DIR": str(root / "run")})
        (root / "run").mkdir(mode=0o700)
        only = opts.only or ["ssh", "noreuse", "reuse"]
        if "ssh" in only:
            series("ssh python3 -c print(1)", server.ssh_argv("python3", "-c", "print(1)"), env, root, opts.n)
        if "noreuse" in only:
            series("skyctl run --no-reuse", [*skyctl_exe(), "run", "one.py:one", "--no-reuse"], env, root, opts.n)
        if "reuse" in only:
            series("skyctl run (reuse)", [*skyctl_exe(), "run", "one.py:one"], env, root, opts.n)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
