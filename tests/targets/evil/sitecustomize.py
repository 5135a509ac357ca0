"""A compromised remote, for the trust tests: loaded by ``python:`` wrappers the tests write.

An attacker who owns the host can change anything there, skyctl's worker
included. This patches the worker as it is imported so that it attacks the
client in the way ``SKYCTL_EVIL`` names:

- ``pickle``: every value, return value and exception it sends is a pickle
  whose loading runs code (it writes ``SKYCTL_EVIL_MARKER``);
- ``traceback``: an exception whose traceback names a file of the client's
  (``SKYCTL_EVIL_SECRET``), hoping the client prints its lines;
- ``bigframe``: a frame header claiming more bytes than any frame may carry;
- ``overrun``: more items than the client granted credit for;
- ``forgetag``: a value ``"raw:TEXT"`` is sent as the rendered line TEXT itself
  (``666, "host": "trusted-box"``, hoping to be credited to another host).
"""

import importlib.abc
import importlib.machinery
import os
import sys
import time

MODE = os.environ.get("SKYCTL_EVIL", "")
MARKER = os.environ.get("SKYCTL_EVIL_MARKER", "/nonexistent/marker")
SECRET = os.environ.get("SKYCTL_EVIL_SECRET", "/nonexistent/secret")

#: protocol 0: exec("open(MARKER, 'w').write('pwned')")
EVIL = b"cbuiltins\nexec\n(V" + f"open({MARKER!r}, 'w').write('pwned')".encode() + b"\ntR."


def _patch(worker):
    flow, wire = worker.flow, worker.wire
    Kind = wire.Kind
    count = flow.COUNT.pack

    if MODE == "pickle":
        worker.CallState._pack = lambda self, items: flow.PICKLED + count(len(items)) + EVIL
        worker.CallState.result_frame = lambda self, value: (Kind.RETURN, flow.PICKLED + count(1) + EVIL)

        def raise_frame(self, exc, where):
            info = {"type": "ValueError", "message": "evil", "traceback": "ValueError: evil\n", "where": where,
                    "module_not_found": None}
            return Kind.RAISE, wire.pack_raise(info, EVIL)

        worker.CallState.raise_frame = raise_frame
    elif MODE == "traceback":
        def raise_frame(self, exc, where):
            text = ("Traceback (most recent call last):\n"
                    f'  File "{SECRET}", line 1, in stolen\n'
                    "ValueError: look at the line above\n")
            info = {"type": "ValueError", "message": "look", "traceback": text, "where": "call",
                    "module_not_found": None}
            return Kind.RAISE, wire.pack_raise(info, b"")

        worker.CallState.raise_frame = raise_frame
        worker.CallState.result_frame = lambda self, value: raise_frame(self, None, "call")
    elif MODE in ("bigframe", "overrun"):
        def run_call(self, call):
            if MODE == "bigframe":
                header = wire.HEADER.pack(wire.PROTOCOL_VERSION, Kind.ITEMS_OUT, 0xFFFFFFF0)
                self.conn._writer._write(header + b"x" * 1024)
            else:
                self.conn.send(Kind.ITEMS_OUT, flow.RENDERED + count(2_000_000) + b"flood\n")
            time.sleep(600)

        worker.Worker.run_call = run_call
    elif MODE == "forgetag":
        def pack(self, items):
            def line(item):
                if isinstance(item, str) and item.startswith("raw:"):
                    return item[4:].encode() + b"\n"
                return worker.values.render([item], self.render)

            return flow.pack_rendered(b"".join(map(line, items)), len(items))

        worker.CallState._pack = pack


class _Loader(importlib.abc.Loader):
    """The worker module's own loader, patching the module once it has run."""

    def __init__(self, inner):
        self.inner = inner

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        self.inner.exec_module(module)
        _patch(module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "skyctl.worker":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


if MODE:
    sys.meta_path.insert(0, _Finder())
