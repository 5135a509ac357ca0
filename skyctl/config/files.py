"""Which config file is read, and reading it: a regular file of bounded size, as UTF-8 text.

``./skyward.yaml`` comes from whatever directory skyctl runs in (in CI, a
pull request's checkout), so what reading it may cost is bounded here, before
YAML sees a byte (the YAML limits are in :mod:`skyctl.config.yamldoc`).

Standard library and ``skyctl.errors`` only.
"""

from __future__ import annotations

import os
import pathlib
import stat
from typing import Mapping

from skyctl.errors import ConfigError

from .expand import expanduser

__all__ = ["CONFIG_FILENAME", "ENV_CONFIG", "MAX_CONFIG_BYTES", "display", "find_config_path", "read_config", "too_big"]

#: the file name looked for in the current directory and in ~/.config/skyctl/
CONFIG_FILENAME = "skyward.yaml"
#: the environment variable that names the file
ENV_CONFIG = "SKYCTL_CONFIG"
#: the largest config file read, in bytes (a skyward.yaml is a few KiB). ``./skyward.yaml`` comes from
#: whatever directory skyctl runs in (in CI, a pull request's checkout): what it may cost is bounded
MAX_CONFIG_BYTES = 1 << 20


def find_config_path(
    explicit: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> pathlib.Path | None:
    """The config file to read, or None when there is none.

    In order: ``explicit`` (``--config``), ``$SKYCTL_CONFIG``, ``./skyward.yaml``
    (in ``cwd``), ``~/.config/skyctl/skyward.yaml`` (``~`` from ``environ``'s
    ``HOME``). A file named by ``--config`` or ``$SKYCTL_CONFIG`` must exist.
    """
    environ = os.environ if environ is None else environ
    base = pathlib.Path.cwd() if cwd is None else pathlib.Path(cwd)
    named: list[tuple[str, str]] = []
    if explicit is not None:
        named.append((os.fspath(explicit), "--config"))
    elif environ.get(ENV_CONFIG):
        named.append((environ[ENV_CONFIG], f"${ENV_CONFIG}"))
    for text, origin in named:
        path = base / expanduser(text, environ)
        if path.is_dir():
            raise ConfigError(f"config file {text} (from {origin}) is a directory", f"name the file, e.g. {path / CONFIG_FILENAME}")
        if not path.is_file():
            raise ConfigError(
                f"config file not found: {text} (from {origin})",
                "check the path, or run 'skyctl init' to write a skyward.yaml",
            )
        return path
    candidates = (base / CONFIG_FILENAME, pathlib.Path(expanduser("~/.config/skyctl", environ)) / CONFIG_FILENAME)
    for path in candidates:
        if path.exists():
            return path
    return None


def read_config(path: pathlib.Path) -> str:
    """The text of the config file at ``path``: a regular file of at most :data:`MAX_CONFIG_BYTES`,
    read no further than that (a link to ``/dev/zero`` or a FIFO is refused, not read for ever)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # O_NONBLOCK: opening a FIFO does not wait
        with open(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise ConfigError(f"{display(path)}: not a regular file",
                                  "a config is read from a regular file only (not a FIFO or a device)")
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{display(path)}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(*too_big(display(path)))
    try:
        text = data.decode("utf-8-sig")  # a leading BOM is dropped
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{display(path)}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")  # as text mode reads it (universal newlines)


def too_big(where: str) -> tuple[str, str]:
    """The message and hint of a config over :data:`MAX_CONFIG_BYTES`."""
    return (f"{where}: the file is larger than {MAX_CONFIG_BYTES / (1 << 20):g} MiB, the most skyctl reads as a config",
            "is it the right file? a skyward.yaml is a few KiB (see docs/security.md)")


def display(path: pathlib.Path | None) -> str:
    """How a config path appears in messages: relative to the cwd or ``~`` when shorter."""
    if path is None:
        return CONFIG_FILENAME
    if not path.is_absolute():
        return str(path)
    try:
        return str(path.relative_to(pathlib.Path.cwd()))
    except (ValueError, OSError):
        pass
    try:
        return "~/" + str(path.relative_to(pathlib.Path.home()))
    except (ValueError, RuntimeError, OSError):
        return str(path)
