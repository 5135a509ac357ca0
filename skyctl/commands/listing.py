"""``skyctl hosts``: the profiles and groups of the config, as a table or (``--names``) the names alone
for shell completion."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import ExitStatus


def list_hosts(config: Optional[Path], names: bool) -> int:
    """Print the table (or the names) on stdout and the config file's path on stderr."""
    from ..config import load_config
    from ..hosttypes import host_type

    cfg = load_config(config)
    if names:
        for name in [*cfg.hosts, *cfg.groups]:
            typer.echo(name)
        return ExitStatus.OK
    rows = [("NAME", "TYPE", "ADDRESS", "PYTHON")]
    for name, profile in cfg.hosts.items():
        mark = " (default)" if name == cfg.default else ""
        rows.append((name + mark, profile.type, profile.address, host_type(profile).listed_python(profile, cfg)))
    for name, group in cfg.groups.items():
        mark = " (default)" if name == cfg.default else ""
        workers = f" × {group.workers} workers" if group.workers > 1 else ""
        rows.append((name + mark, "group", ", ".join(group.hosts) + workers, ""))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        typer.echo(("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[3]).rstrip())
    where = str(cfg.path) if cfg.path else "built-in (no skyward.yaml found)"
    typer.echo(f"config: {where}", err=True)
    return ExitStatus.OK
