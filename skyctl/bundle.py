"""The bundle: the worker's code as one zip (``skyctl/remote/`` and the client's
cloudpickle, each module beside its bytecode), its id, and its remembered sha256.

Why apart from ``bootstrap``: what ships is decided here (the folder is listed),
how it reaches a host is ``bootstrap``'s job.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import sys
from dataclasses import dataclass

from . import runtime

#: the folder whose modules run on the remote: every ``*.py`` in it ships in the bundle
REMOTE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "remote")


def worker_modules() -> tuple[str, ...]:
    """The file names of ``skyctl/remote/`` (``__init__.py`` included), sorted: what the bundle ships."""
    return tuple(sorted(name for name in os.listdir(REMOTE_DIR) if name.endswith(".py")))


@dataclass(frozen=True)
class Bundle:
    """The worker's code as one zip: ``data`` and its ``sha256`` (checked by the stub on arrival)."""

    data: bytes
    sha256: str


@functools.lru_cache(maxsize=1)
def _sources() -> tuple[tuple[str, bytes], ...]:
    """The files of the bundle, by their path inside it: our worker modules and the client's cloudpickle."""
    import cloudpickle

    files: list[tuple[str, bytes]] = [("skyctl/__init__.py", b'"""skyctl worker bundle."""\n')]
    for name in worker_modules():
        with open(os.path.join(REMOTE_DIR, name), "rb") as f:
            files.append((f"skyctl/remote/{name}", f.read()))
    cp_dir = os.path.dirname(os.path.abspath(cloudpickle.__file__))
    for name in sorted(os.listdir(cp_dir)):
        if name.endswith(".py"):
            with open(os.path.join(cp_dir, name), "rb") as f:
                files.append((f"cloudpickle/{name}", f.read()))
    return tuple(files)


@functools.lru_cache(maxsize=1)
def bundle_id() -> str:
    """The bundle's name on the host: a hash of its sources and of the bytecode
    format they are compiled for. Cheap (no zip is built): every call needs it,
    only a call that finds the bundle missing needs ``bundle()``."""
    import importlib.util

    digest = hashlib.sha256(b"skyctl bundle 2\0" + importlib.util.MAGIC_NUMBER)
    for name, data in _sources():
        digest.update(b"%s\0%d\0" % (name.encode(), len(data)))
        digest.update(data)
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def bundle() -> Bundle:
    """Build the bundle once per process: each source beside its bytecode."""
    import zipfile  # only when the bundle is built: a warm call knows its sha256 from the memo

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in _sources():
            for member, content in ((name, data), (name + "c", _bytecode(name, data))):
                info = zipfile.ZipInfo(member, date_time=(2000, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                zf.writestr(info, content, zipfile.ZIP_DEFLATED)
    data = buf.getvalue()
    return Bundle(data, hashlib.sha256(data).hexdigest())


#: the file name compiled into the bundle's bytecode (the worker strips frames under it from tracebacks)
BUNDLE_FILENAME_PREFIX = "<skyctl bundle>/"


def _bytecode(name: str, source: bytes) -> bytes:
    """``name``'s compiled module as a checked-hash .pyc (PEP 552), for zipimport.

    A zip never caches bytecode, so without it every worker start compiles
    cloudpickle and the worker (~30 ms). The remote runs the client's
    major.minor (the stub checks), so the magic number matches; were it not
    to, or were the source not to match the hash, zipimport compiles the
    source beside it instead.
    """
    import importlib.util
    import marshal

    code = compile(source, BUNDLE_FILENAME_PREFIX + name, "exec", dont_inherit=True)
    flags = 0b11  # hash-based, checked against the source
    return importlib.util.MAGIC_NUMBER + flags.to_bytes(4, "little") + importlib.util.source_hash(source) + marshal.dumps(code)


@functools.lru_cache(maxsize=1)
def bundle_sha256() -> str:
    """The sha256 the stub checks its cached bundle against on every start.

    Building the bundle to learn it costs ~30 ms (compiling and zipping) in
    every client process, which a warm call must not pay; so it is
    remembered per bundle id (and Python build) in the client's private
    runtime directory. A missing or stale memo costs one build
    (``remember_bundle``); one in a directory others can write is ignored.
    """
    text = (runtime.recall(runtime.memo(memo_name()), 128) or b"").decode("ascii", "replace").strip()
    if len(text) == 64 and all(c in "0123456789abcdef" for c in text):
        return text
    return remember_bundle()


def remember_bundle() -> str:
    """Build the bundle (~30 ms), write its sha256 to the memo and return it."""
    sha = bundle().sha256
    bundle_sha256.cache_clear()
    runtime.remember(runtime.memo(memo_name()), sha.encode() + b"\n")
    return sha


def memo_name() -> str:
    """The memo's file name: per bundle id and per exact Python build (which compiled the bytecode)."""
    return f"bundle-{bundle_id()}-{sys.hexversion:x}.sha256"
