"""The text ``skyctl init`` writes (and the project's own ``./skyward.yaml``), built from the schema.

The header (where the file is looked for, ``default:``, ``defaults:``) is
prose; each host section below it is the table's examples for one host type
(:attr:`~skyctl.config.schema.Key.examples`), one line per key, in the order
:func:`~skyctl.config.schema.shown_keys` gives. A new key with an example
for a type shows up in that type's section with no change here.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

from .schema import KEY, shown_keys

__all__ = ["INIT_TEMPLATE", "write_init"]

#: the column comments start at (before a whole section is commented out)
_COMMENT_COLUMN = 31

_HEADER = """\
# skyward.yaml: the hosts skyctl can run your functions on.
#
# skyctl reads the first of: --config PATH, $SKYCTL_CONFIG, ./skyward.yaml,
# ~/.config/skyctl/skyward.yaml. The host used is --host NAME, else
# $SKYCTL_HOST, else `default` below. Any string value may use ${VAR} or
# ${VAR:-fallback} from the environment. There are no passwords in this
# file: ssh hosts authenticate with keys and ssh-agent only.
# See them with `skyctl hosts`; try one with `skyctl check NAME`.

default: local                 # host used when none is named

# defaults:                    # merged under every ssh host's own keys (the host's win)
#   user: deploy
#   identity_file: ~/.ssh/id_ed25519

hosts:
"""


@dataclass(frozen=True)
class _Section:
    """One example host of the template."""

    #: its host type: the table's examples for it are its lines
    kind: str
    #: its name under ``hosts:``
    name: str
    #: shown after its name
    comment: str = ""
    #: an active host (only ``type:`` switched on) rather than a commented-out example
    active: bool = False
    #: lines after its keys, as written (a second host it refers to)
    extra: str = ""
    #: a blank line before it
    gap: bool = True


_SECTIONS = (
    _Section("local", "local", active=True, gap=False),
    _Section("ssh", "gpu-1", extra="  # bastion:\n  #   host: bastion.example.com\n"),
    _Section("command", "trainer", "a program here that runs a command there, stdin/stdout piped"),
    _Section("ray", "cluster", "a Ray cluster: each call (each pipe chunk) runs as a Ray task", gap=False),
)


def _line(text: str, comment: str) -> str:
    """``text``, then ``# comment`` at the comment column (at least three spaces after the text)."""
    if not comment:
        return text
    return text + " " * max(_COMMENT_COLUMN - len(text), 3) + "# " + comment


def _section(section: _Section) -> str:
    lines = []
    for name in shown_keys(section.kind):
        example = KEY[name].examples.get(section.kind)
        if example is None:
            continue
        value, comment = example
        if section.active and name != "type":
            lines.append(_line(f"    # {name}: {value}", comment))  # switched off in place
        else:
            lines.append(_line(f"    {name}: {value}", comment))
    head = _line(f"  {section.name}:", section.comment)
    if not section.active:  # the whole host commented out: "# " after the first indent
        head, lines = "  # " + head[2:], ["  # " + line[2:] for line in lines]
    return ("\n" if section.gap else "") + "\n".join([head, *lines]) + "\n" + section.extra


#: the text ``skyctl init`` writes, and the project's own ./skyward.yaml
INIT_TEMPLATE = _HEADER + "".join(_section(section) for section in _SECTIONS)


def write_init(path: pathlib.Path) -> None:
    """Write :data:`INIT_TEMPLATE` to ``path``; ``FileExistsError`` (file untouched) if it exists."""
    with open(path, "x", encoding="utf-8") as handle:  # "x": O_EXCL, never overwrites
        handle.write(INIT_TEMPLATE)
