#!/usr/bin/env python3
"""Benchmark rows on the fault lab (``tests/lab.py``): hosts with networks of their own, at a set RTT.

    python benchmarks/lab_rows.py               # 5 runs each; prints the rows (markdown) on stdout
    python benchmarks/lab_rows.py --quick       # 2,000 records, 3 runs

Row 13a: an I/O-bound distributed pipe (1 ms of ``time.sleep`` per record,
``benchmarks/targets.py:sleepy``) over 4 lab hosts against the same pipe on
1 lab host, every host reached through a delay proxy (``benchmarks/proxy.py``,
+10 ms each way: 20 ms RTT). Each lab host is a network namespace with its
own sshd, address and link (not one sshd under four names, as row 9a), so the
four connections are four real TCP paths. Throughput is first→last line;
the two are interleaved run by run. Needs root (see ``tests/lab.py``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
if str(REPO / "tests") not in sys.path:  # tests/ modules import their siblings by name (pytest's pythonpath)
    sys.path.insert(0, str(REPO / "tests"))

from benchmarks.chaos import stop_holders  # noqa: E402
from benchmarks.run import TARGETS, Row, fmt, interleave, log, skyctl_argv  # noqa: E402
from benchmarks.timing import drain  # noqa: E402
from tests.lab import start_lab  # noqa: E402

#: +10 ms each way through each host's delay proxy: 20 ms RTT
ONE_WAY = 0.010
TARGET_RATIO = 3.8


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 records, 3 runs")
    parser.add_argument("--repeat", type=int, default=0, help="runs of each (default 5, --quick 3)")
    parser.add_argument("--records", type=int, default=0, help="records per run (default 8,000, --quick 2,000)")
    parser.add_argument("--chunk", default="200", help="records per chunk, or auto (default 200)")
    parser.add_argument("--rtt-ms", type=float, default=2000 * ONE_WAY, help="round trip added by the proxies (0: none)")
    args = parser.parse_args(argv)
    repeat = args.repeat or (3 if args.quick else 5)
    n = args.records or (2000 if args.quick else 8000)
    root = Path(tempfile.mkdtemp(prefix="skyctl-lab-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYCTL_")}
    env["XDG_RUNTIME_DIR"] = str(root / "run")
    (root / "run").mkdir(mode=0o700)
    lab = start_lab(4, root)
    try:
        proxied = args.rtt_ms > 0
        for host in lab.hosts:
            if proxied:
                lab.delay(host.index, args.rtt_ms / 2000.0)
        text = "default: local\nhosts:\n  local:\n    type: local\n"
        for host in lab.hosts:
            text += lab.host_yaml(host.index, via_proxy=proxied, extra=f"workdir: {root / 'remote-workdir'}")
        text += f"groups:\n  quad: [{', '.join(h.name for h in lab.hosts)}]\n  solo: [{lab.hosts[0].name}]\n"
        config = root / "skyward.yaml"
        config.write_text(text)
        seq = ["seq", "1", str(n)]
        run_kw = {"cwd": REPO, "env": env, "timeout": 600}

        def sky(group: str) -> list[str]:
            return [*skyctl_argv(), "pipe", f"{TARGETS}:sleepy", "-H", group, "--chunk", str(args.chunk),
                    "-c", str(config)]

        quad, solo = sky("quad"), sky("solo")
        for each in (quad, solo):  # warm: bundles sent, connections kept
            drain(each, stdin=seq, expect_lines=n, **run_kw)
        log(f"13a: {repeat} runs each of {n:,} records, chunk {args.chunk}, 4 lab hosts vs 1 at {args.rtt_ms:g} ms RTT")
        got = interleave(repeat, {
            "quad": lambda: drain(quad, stdin=seq, expect_lines=n, **run_kw),
            "solo": lambda: drain(solo, stdin=seq, expect_lines=n, **run_kw),
        })
        row = Row("lab", f"13a. I/O-bound pipe (1 ms per record, {n:,} records, `--chunk {args.chunk}`), "
                         f"4 lab hosts vs 1 lab host, {args.rtt_ms:g} ms RTT (delay proxy): throughput", "lines/s",
                  [d.stream_rate for d in got["quad"]], [d.stream_rate for d in got["solo"]],
                  "skyctl pipe, 1 lab host", "higher", TARGET_RATIO)
        log(f"  quad runs: {', '.join(fmt(v, row.unit) for v in row.skyctl)}")
        log(f"  solo runs: {', '.join(fmt(v, row.unit) for v in row.baseline)}")
        print("| measurement | skyctl | baseline | ratio | worst run | target | verdict |")
        print("|---|---|---|---|---|---|---|")
        print(f"| {row.metric} | {fmt(row.sky_median, row.unit)} ({fmt(min(row.skyctl), row.unit)} – "
              f"{fmt(max(row.skyctl), row.unit)}) | {fmt(row.base_median, row.unit)} "
              f"({fmt(min(row.baseline), row.unit)} – {fmt(max(row.baseline), row.unit)}) | {row.ratio:.2f} | "
              f"{row.worst_ratio:.2f} | {row.target_text} | {row.verdict} |")
        return 0
    finally:
        stop_holders(root / "run")
        lab.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
