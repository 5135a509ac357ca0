#!/usr/bin/env python3
"""Randomized soak of ``pipe --joblog J --results R --resume``: kill the client at random moments, resume, compare.

    python benchmarks/resume_soak.py                      # 20 kills over 1,000,000 records, 3 ssh hosts + local
    python benchmarks/resume_soak.py --kills 5 --records 100000 --seed 7
    python benchmarks/resume_soak.py --no-keep-order      # then R must hold the same lines, each exactly once

Starts its own OpenSSH sshd on 127.0.0.1 (``tests/sshd.py``) and a group of
three ssh profiles on it plus ``local``. First one uninterrupted run writes
the reference (to stdout, no job log). Then the same distributed pipe with
``--joblog J --results R`` is started over and over, each time with
``--resume`` after the first, and killed with SIGKILL after a random delay
(uniform between 0 and ``--reach`` times the uninterrupted run's duration:
some kills come before the first chunk is logged, most mid-run), until it
runs to its end; R is then compared with the reference byte for byte
(``--keep-order``), or as a multiset of lines, and a new job starts from
scratch, until ``--kills`` kills in all; the last job runs to its end.

Prints one markdown line for docs/benchmarks.md; exit status 0 when R is
right, 1 when not.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
if str(REPO / "tests") not in sys.path:  # tests/ modules import their siblings by name (pytest's pythonpath)
    sys.path.insert(0, str(REPO / "tests"))

from benchmarks.run import REMOTE_PY, skyctl_argv  # noqa: E402


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def write_config(root: Path, server) -> Path:
    from tests.helpers import ssh_host_yaml

    text = "default: local\nhosts:\n  local:\n    type: local\n"
    for name in ("s1", "s2", "s3"):
        text += ssh_host_yaml(server, name=name, python=REMOTE_PY, extra=f"workdir: {root / 'remote-workdir'}")
    text += "groups:\n  soak: [s1, s2, s3, local]\n"
    path = root / "skyward.yaml"
    path.write_text(text)
    return path


def chunk_lines(joblog: Path) -> list[dict]:
    out = []
    for line in joblog.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a torn last line
        if "chunk" in entry and "status" in entry:
            out.append(entry)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--no-keep-order", action="store_true")
    parser.add_argument("--reach", type=float, default=0.8,
                        help="kill after a random delay up to this fraction of an uninterrupted run (default 0.8)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)

    from tests.helpers import clean_env
    from tests.sshd import start_sshd

    root = Path(tempfile.mkdtemp(prefix="skyctl-soak-"))
    root.chmod(0o755)
    server = start_sshd(root)
    env = clean_env()
    try:
        config = write_config(root, server)
        data = root / "input.txt"
        with data.open("wb") as f:
            for start in range(1, args.records + 1, 100_000):
                f.write("".join(f"{i}\n" for i in range(start, min(start + 100_000, args.records + 1))).encode())
        order = [] if args.no_keep_order else ["--keep-order"]
        base = [*skyctl_argv(), "pipe", "benchmarks/targets.py:identity", "-H", "soak", "--chunk", str(args.chunk),
                *order, "-q", "-c", str(config)]
        joblog, results, reference = root / "job.log", root / "results.out", root / "reference.out"

        t = time.perf_counter()
        with data.open("rb") as stdin, reference.open("wb") as out:
            subprocess.run(base, stdin=stdin, stdout=out, check=True, cwd=REPO, env=env, timeout=1800)
        duration = time.perf_counter() - t
        log(f"uninterrupted run: {duration:.1f} s, {reference.stat().st_size:,} bytes (seed {seed})")

        logged = [*base, "--joblog", str(joblog), "--results", str(results)]
        want = reference.read_bytes()
        kills = runs = jobs = compared = 0
        killed_before_any = killed_with_torn_tail = 0
        fresh = True
        while True:
            argv_now = logged if fresh else [*logged, "--resume"]
            if fresh:
                jobs += 1
                for path in (joblog, results):
                    path.unlink(missing_ok=True)
            fresh = False
            runs += 1
            with data.open("rb") as stdin:
                proc = subprocess.Popen(argv_now, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        cwd=REPO, env=env)
            if kills < args.kills:
                delay = rng.uniform(0, duration * args.reach)
                try:
                    _, err = proc.communicate(timeout=delay)
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGKILL)
                    _, err = proc.communicate()
                    kills += 1
                    ok = [e for e in chunk_lines(joblog) if e["status"] == "ok"] if joblog.exists() else []
                    end = max((e["offset"] + e["length"] for e in ok), default=0)
                    size = results.stat().st_size if results.exists() else 0
                    killed_before_any += not ok
                    killed_with_torn_tail += size > end
                    log(f"job {jobs} kill {kills:2d} after {delay:5.2f} s: {len({e['chunk'] for e in ok})} chunks "
                        f"logged ok, R {size:,} bytes ({size - end:,} past the last logged block)")
                    continue
            else:
                _, err = proc.communicate(timeout=1800)
            if proc.returncode != 0:
                log(f"run {runs} exited {proc.returncode}:\n{err.decode(errors='replace')[-2000:]}")
                return 1
            got = results.read_bytes()
            same = got == want if order else (len(got) == len(want) and sorted(got.splitlines()) == sorted(want.splitlines()))
            compared += len(got)
            log(f"job {jobs} complete after {runs} runs so far: R {len(got):,} bytes, "
                f"{'identical' if same else 'DIFFERENT'} to the uninterrupted run's")
            if not same:
                shutil.copy(results, Path(tempfile.gettempdir()) / "soak-results.bad")
                print(f"| resume soak: R DIFFERENT after {kills} kills (seed {seed}) | | |")
                return 1
            if kills >= args.kills:
                break
            fresh = True  # another job, from the start
        line = (f"| resume soak ({'`--keep-order`' if order else 'completion order'}): {args.records:,} records, "
                f"`--chunk {args.chunk}`, 3 ssh hosts + local | {kills} SIGKILLs at random times over {jobs} jobs "
                f"({killed_before_any} before any chunk was logged, {killed_with_torn_tail} with bytes past the last "
                f"logged block), {runs} runs | {compared:,} bytes of R compared with an uninterrupted run "
                f"({jobs} × {len(want):,}): identical; seed {seed} |")
        print(line)
        return 0
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
