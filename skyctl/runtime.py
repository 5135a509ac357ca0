"""The user's private runtime directory: the kept connections' sockets, and what a warm call remembers.

``$XDG_RUNTIME_DIR/skyctl``, or else ``/tmp/skyctl-$UID``. It must be ours, a
real directory (not a symlink) and mode 0700; it is created so, and anything
else is refused (``UnsafeDirectory``): whoever else can write there could
plant a socket the client would talk to, or a memo it would believe.

What is remembered here (the bundle's sha256, a parsed ``skyward.yaml``) only
saves work: every entry is checked by whoever reads it, a missing one is
recomputed, and removing the directory's files is always safe.

Standard library only, and only what the interpreter has loaded at start-up:
it is on the warm path of every call.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Mapping


class UnsafeDirectory(Exception):
    """The runtime directory is not ours alone; the message says why and what to do."""


def private_dir(environ: Mapping[str, str] | None = None) -> str:
    """The private directory, created 0700 if missing; raises ``UnsafeDirectory``
    when it exists but is not a directory of ours with mode 0700."""
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_RUNTIME_DIR", "")
    if base and os.path.isabs(base) and os.path.isdir(base):
        return _ours_alone(os.path.join(base, "skyctl"))
    return _ours_alone(f"/tmp/skyctl-{os.getuid()}")


def private_subdir(name: str, environ: Mapping[str, str] | None = None) -> str:
    """``name`` in the private directory, itself created 0700 and checked as ``private_dir`` is."""
    return _ours_alone(os.path.join(private_dir(environ), name))


def _ours_alone(path: str) -> str:
    """``path``, created 0700 if missing; ``UnsafeDirectory`` unless it is a directory of ours with mode 0700."""
    uid = os.getuid()
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise UnsafeDirectory(f"cannot create {path}: {exc.strerror or exc}") from None
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise UnsafeDirectory(f"cannot inspect {path}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeDirectory(f"{path} is not a directory (remove it)")
    if st.st_uid != uid:
        raise UnsafeDirectory(f"{path} belongs to uid {st.st_uid}, not to you (uid {uid}); remove it, or set XDG_RUNTIME_DIR to a private directory")
    if st.st_mode & 0o077:
        raise UnsafeDirectory(f"{path} has mode {stat.S_IMODE(st.st_mode):04o}, it must be 0700 (chmod 700 {path})")
    return path


def memo(name: str) -> str | None:
    """Where a memo ``name`` lives; None when the directory is not ours alone
    (then nothing is read or written). Looked up once for a read and its write."""
    try:
        return os.path.join(private_dir(), name)
    except UnsafeDirectory:
        return None


def recall(path: str | None, limit: int = 1 << 22) -> bytes | None:
    """What ``remember`` wrote at ``path`` (a ``memo()``; at most ``limit`` bytes);
    None when there is nothing, or no path. A link is not followed."""
    if path is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as handle:
            return handle.read(limit)
    except OSError:
        return None


def remember(path: str | None, data: bytes) -> None:
    """Keep ``data`` at ``path`` (a ``memo()``; nothing when None): written to a new
    file of a random name (never through a link), then renamed over the old one,
    so a reader sees all or nothing."""
    if path is None:
        return
    temp = f"{path}.{os.urandom(8).hex()}.tmp"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temp)
