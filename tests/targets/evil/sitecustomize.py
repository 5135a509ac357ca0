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
- ``popen``: every value, return value and exception names
  ``subprocess.Popen`` through the shipped module ``trust_targets``, which
  imports ``subprocess`` (a dotted global, and a ``shipped_class`` reference);
- ``gadget``: the same through ``trust_targets.operator.attrgetter`` and
  ``itemgetter``, chained via ``uuid.UUID.__init__.__globals__`` to ``os.system``;
- ``expand``: pickles of allowed builtins that decode to far more than they
  weigh (``list(range(3*10**7))``, ``bytes(10**10)``, …): see ``EXPAND``.
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

#: the shipped module the client names in every CALL's options
SHIPPED = "tests.targets.trust_targets"
SHELL = ["/bin/sh", "-c", f"echo pwned > {MARKER}"]


def _args(*args) -> bytes:
    """The opcodes that push ``args`` as a tuple (protocol 2, no header, no STOP)."""
    import io
    import pickle

    buf = io.BytesIO()
    pickler = pickle._Pickler(buf, protocol=2)
    pickler.fast = True  # no memo: the opcodes can be spliced anywhere
    pickler.dump(args)
    return buf.getvalue()[2:-1]


def _global(module: str, name: str) -> bytes:
    """STACK_GLOBAL of ``module`` ``name`` (a dotted name, as protocol 4 allows)."""
    def text(value: str) -> bytes:
        data = value.encode()
        return b"\x8c" + bytes([len(data)]) + data

    return text(module) + text(name) + b"\x93"


#: ``mod.subprocess.Popen(SHELL)``, named as a dotted global
POPEN = b"\x80\x04" + _global(SHIPPED, "subprocess.Popen") + _args(SHELL) + b"R."
#: the same through ``skyctl.remote.values.shipped_class(mod, "subprocess.Popen")``
POPEN_REF = (b"\x80\x04" + _global("skyctl.remote.values", "shipped_class") + _args(SHIPPED, "subprocess.Popen") + b"R"
             + _args(SHELL) + b"R.")
#: attrgetter("system")(itemgetter("os")(attrgetter("__init__.__globals__")(uuid.UUID)))(SHELL[2])
GADGET = (b"\x80\x04"
          + _global(SHIPPED, "operator.attrgetter") + _args("system") + b"R"
          + _global(SHIPPED, "operator.itemgetter") + _args("os") + b"R"
          + _global(SHIPPED, "operator.attrgetter") + _args("__init__.__globals__") + b"R"
          + _global("uuid", "UUID") + b"\x85R"  # TUPLE1, REDUCE: UUID.__init__.__globals__
          + b"\x85R"  # itemgetter("os")(...) -> os
          + b"\x85R"  # attrgetter("system")(os) -> os.system
          + _args(SHELL[2]) + b"R.")

#: 44 bytes or so each, of allowed builtins only, that decode to gigabytes (``SKYCTL_EVIL_EXPAND`` picks one)
EXPAND = {
    "list-range": b"\x80\x04" + _global("builtins", "list") + _global("builtins", "range") + _args(3 * 10**7) + b"R\x85R.",
    "bytes": b"\x80\x04" + _global("builtins", "bytes") + _args(10**10) + b"R.",
    "bytearray": b"\x80\x04" + _global("builtins", "bytearray") + _args(10**10) + b"R.",
    "fraction": b"\x80\x04" + _global("fractions", "Fraction") + _args("1e999999999") + b"R.",
}


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
    elif MODE in ("popen", "gadget", "expand"):
        if MODE == "expand":
            values = result = error = EXPAND[os.environ.get("SKYCTL_EVIL_EXPAND", "list-range")]
        else:
            values, result, error = (POPEN, POPEN_REF, POPEN) if MODE == "popen" else (GADGET, GADGET, GADGET)
        worker.CallState._pack = lambda self, items: flow.PICKLED + count(len(items)) + values
        worker.CallState.result_frame = lambda self, value: (Kind.RETURN, flow.PICKLED + count(1) + result)

        def raise_frame(self, exc, where):
            info = {"type": "ValueError", "message": "evil", "traceback": "ValueError: evil\n", "where": where,
                    "module_not_found": None}
            return Kind.RAISE, wire.pack_raise(info, error)

        worker.CallState.raise_frame = raise_frame
    elif MODE in ("bigframe", "overrun"):
        def run_call(self, call):
            if MODE == "bigframe":
                header = wire.HEADER.pack(wire.PROTOCOL_VERSION, Kind.ITEMS_OUT, call.id, 0xFFFFFFF0)
                self.conn.writer._write(header + b"x" * 1024)
            else:  # a well-formed batch (its lines match its count), past the items granted
                self.conn.send(Kind.ITEMS_OUT, flow.RENDERED + count(2_000_000) + b"flood\n" * 2_000_000)
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
        if name != "skyctl.remote.worker":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


if MODE:
    sys.meta_path.insert(0, _Finder())
