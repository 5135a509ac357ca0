"""``skyctl check``: connect to and bootstrap each host (every member of a group, concurrently, on the
group runner ``many.on_every_host``), one report line per host in the order named."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional, Sequence

import typer

from ..errors import ExitStatus, SkyctlError
from ..trust import escape_controls


def check_hosts(host: Sequence[str] | None, config: Optional[Path], no_reuse: bool) -> int:
    """Check every host named (the default host when none); the first failure's exit status, else 0."""
    from ..api import Host
    from ..config import load_config
    from ..hosttypes import host_type
    from ..many import on_every_host

    cfg = load_config(config)
    names: list[str] = []
    for name in (list(host) if host else [None]):
        for profile in cfg.resolve(name).profiles:  # every name valid before connecting anywhere
            if profile.name not in names:
                names.append(profile.name)
    lines: dict[str, list[str]] = {}
    statuses: dict[str, int] = {}

    def one(index: int, name: str) -> None:
        started = time.monotonic()
        target = Host(name, config, reuse=False if no_reuse else None)
        try:
            info = target.check()
        except SkyctlError as err:
            lines[name] = [f"{name}: FAILED ({err.exit_status.value}) {escape_controls(err.message)}"]
            if err.hint:
                lines[name].append(f"  hint: {escape_controls(err.hint)}")
            statuses[name] = err.exit_status
            return
        finally:
            target.close()
        ms = (time.monotonic() - started) * 1000
        bundle = ", bundle sent" if info["sent_bundle"] else ""
        lines[name] = [f"{name}: ok  python {info['python']}  ready in {ms:.0f} ms  round trip {info['rtt_ms']:.1f} ms{bundle}"]
        lines[name] += [escape_controls(line) for line in host_type(target.profile).check_lines(info["about"])]

    # a check has nothing to cancel: Ctrl-C leaves at once, as the checks' threads are daemons
    on_every_host(names, one, label=str, interrupt_wait=0)
    for name in names:  # in the order named
        for line in lines.get(name, [f"{name}: FAILED (1) the check did not finish"]):
            typer.echo(line)
    failed = [statuses[n] for n in names if statuses.get(n)]
    return failed[0] if failed else ExitStatus.OK
