"""Unit tests for what crosses the trust boundary: the restricted decoder, terminal escaping, credit checks."""

from __future__ import annotations

import collections
import copyreg
import datetime
import decimal
import functools
import fractions
import pathlib
import pickle
import uuid

import pytest

from skyctl.remote import flow
from skyctl.trust import Decoder, RefusedValue, escape_controls

PLAIN = [
    1, 2.5, 3j, True, None, "s", b"b", bytearray(b"ba"), [1, (2, 3)], {"a": {1, 2}}, frozenset({4}), range(3),
    datetime.datetime(2026, 12, 2, 8, 30, tzinfo=datetime.timezone.utc), datetime.date(2026, 1, 1),
    datetime.timedelta(seconds=5), decimal.Decimal("1.10"), fractions.Fraction(1, 3), uuid.UUID(int=7),
    pathlib.PurePosixPath("/a/b"), collections.OrderedDict(a=1), collections.deque([1, 2]), collections.Counter("aab"),
    collections.defaultdict(list, {"k": [1]}), ValueError("builtin exceptions come back"), KeyError("k"),
]


@pytest.mark.parametrize("value", PLAIN, ids=lambda v: type(v).__name__)
def test_plain_data_is_rebuilt(value: object) -> None:
    for protocol in (3, pickle.HIGHEST_PROTOCOL):
        back = Decoder().loads(pickle.dumps(value, protocol=protocol))
        assert type(back) is type(value)
        if isinstance(value, BaseException):
            assert back.args == value.args
        else:
            assert back == value


class Evil:
    def __init__(self, how: object, arg: object) -> None:
        self.how, self.arg = how, arg

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.how, (self.arg,)


@pytest.mark.parametrize("how, name", [(eval, "builtins.eval"), (exec, "builtins.exec"), (getattr, "builtins.getattr"),
                                        (__import__, "builtins.__import__"), (pathlib.Path.write_text, "pathlib.Path.write_text")])
def test_a_pickle_that_would_call_something_else_is_refused(how: object, name: str, tmp_path: pathlib.Path) -> None:
    data = pickle.dumps(Evil(how, "1"))
    with pytest.raises(RefusedValue) as info:
        Decoder("box").loads(data)
    assert info.value.name == name
    assert "box" in info.value.message and f'allow: ["{name}"]' in (info.value.hint or "")


def test_os_system_is_refused() -> None:
    import os

    with pytest.raises(RefusedValue, match="posix.system|os.system"):
        Decoder().loads(pickle.dumps(Evil(os.system, "true")))


def test_a_class_the_client_did_not_ship_is_refused_unless_allowed() -> None:
    import textwrap

    data = pickle.dumps(Evil(textwrap.dedent, "  x"))  # a harmless callable, but not data
    with pytest.raises(RefusedValue):
        Decoder().loads(data)
    assert Decoder(allow=["textwrap.dedent"]).loads(data) == "x"
    assert Decoder(full=True).loads(data) == "x"


def test_a_shipped_class_reference_needs_a_module_the_client_shipped() -> None:
    from skyctl.remote import values

    class Reducer:
        def __reduce__(self) -> tuple[object, tuple[str, str]]:
            return values.shipped_class, ("os", "system")

    with pytest.raises(RefusedValue, match="os.system"):
        Decoder().loads(pickle.dumps(Reducer()))


SHIPPED_SOURCE = """
import collections
import operator
import subprocess
from pathlib import PurePosixPath

class Outer:
    class Inner:
        class Deep:
            pass
    def method(self):
        pass
    Popen = subprocess.Popen
    Ordered = collections.OrderedDict

class Sub(PurePosixPath):
    pass

class Tag(str):
    pass

def function():
    pass

def factory():
    class Local:
        pass
    return Local

Local = factory()
Popen = subprocess.Popen
Twin = Outer.Inner
"""


@pytest.fixture
def shipped(monkeypatch: pytest.MonkeyPatch) -> str:
    """A loaded module the client ships (``trust.shipped_modules()`` names it)."""
    import sys
    import types

    from skyctl import trust

    name = "skyctl_test_shipped"
    module = types.ModuleType(name)
    monkeypatch.setitem(sys.modules, name, module)
    exec(compile(SHIPPED_SOURCE, f"<{name}>", "exec"), module.__dict__)
    monkeypatch.setattr(trust, "shipped_modules", lambda: frozenset({name}))
    return name


def _by_global(module: str, name: str) -> bytes:
    """A pickle of just the global ``module`` ``name`` (protocol 4 allows a dotted name)."""
    return pickle.dumps(None, protocol=4)[:2] + b"\x8c" + bytes([len(module)]) + module.encode() + \
        b"\x8c" + bytes([len(name)]) + name.encode() + b"\x93."


def _by_reference(module: str, name: str) -> bytes:
    """The same as the worker sends a shipped class: ``values.shipped_class(module, name)``."""
    from skyctl.remote import values

    class Reference:
        def __reduce__(self) -> tuple[object, tuple[str, str]]:
            return values.shipped_class, (module, name)

    return pickle.dumps(Reference(), protocol=4)


@pytest.mark.parametrize("encode", [_by_global, _by_reference])
@pytest.mark.parametrize("qualname", ["Outer", "Outer.Inner", "Outer.Inner.Deep", "Sub", "Tag"])
def test_a_class_defined_in_a_shipped_module_is_rebuilt(shipped: str, encode, qualname: str) -> None:
    import sys

    found = Decoder().loads(encode(shipped, qualname))
    expected = sys.modules[shipped]
    for part in qualname.split("."):
        expected = getattr(expected, part)
    assert found is expected


@pytest.mark.parametrize("encode", [_by_global, _by_reference])
@pytest.mark.parametrize("qualname", [
    "subprocess.Popen",  # an imported module's class
    "operator.attrgetter", "collections._itemgetter",  # the gadgets of issue 18
    "Popen", "Outer.Popen", "Outer.Ordered",  # an imported class under a name of the module's
    "Twin",  # a class of the module under another name
    "PurePosixPath",  # an imported class
    "function", "Outer.method", "factory", "Local", "factory.<locals>.Local",  # not classes, or not defined there
    "Outer.__class__", "__builtins__", "__loader__", "Outer.Inner.__base__", "__spec__.loader",
])
def test_what_a_shipped_module_imports_or_does_not_define_is_refused(shipped: str, encode, qualname: str) -> None:
    with pytest.raises(RefusedValue) as info:
        Decoder("box").loads(encode(shipped, qualname))
    assert info.value.name == f"{shipped}.{qualname}"


def test_instances_of_a_shipped_str_subclass_are_rebuilt(shipped: str) -> None:
    """A class that subclasses an expanding builtin takes the careful path: still rebuilt."""
    import sys

    tag_class = sys.modules[shipped].Tag
    data = (b"\x80\x04" + _opcodes_global("skyctl.remote.values", "shipped_class") + b"\x8c" + bytes([len(shipped)])
            + shipped.encode() + b"\x8c\x03Tag\x86R\x8c\x02hi\x85R.")
    back = Decoder().loads(data)
    assert type(back) is tag_class and back == "hi"


def _build_on(module: str, name: str, state: bytes) -> bytes:
    """A pickle that pushes the global and BUILDs ``state`` (opcodes) on it: pickle's setattr on a class."""
    return b"\x80\x04" + _opcodes_global(module, name) + state + b"b."


#: slot state (None, {"most_common": int}): setattr(obj, "most_common", int)
_SLOTSTATE = b"N}\x8c\x0bmost_common" + b"\x8c\x08builtins\x8c\x03int\x93" + b"s\x86"


@pytest.mark.parametrize("module, name", [("collections", "Counter"), ("pathlib", "PurePosixPath"),
                                          ("fractions", "Fraction"), ("copyreg", "_reconstructor")])
def test_a_pickle_cannot_change_an_allowed_class_or_function(module: str, name: str) -> None:
    """Pickle's BUILD sets attributes on what is on its stack, a class too: a
    remote could have changed the client's classes for good."""
    import importlib

    target = getattr(importlib.import_module(module), name)
    before = dict(vars(target))
    with pytest.raises(RefusedValue) as info:
        Decoder("box").loads(_build_on(module, name, _SLOTSTATE))
    assert info.value.message == f"box sent a value that changes '{module}.{name}' in this client (the change is undone)"
    assert vars(target).keys() == before.keys() and all(vars(target)[k] is v for k, v in before.items())


def test_a_pickle_cannot_change_an_enum_member() -> None:
    """``SafeUUID(0)`` hands out the client's own singleton: a BUILD on it would change it for good."""
    import uuid

    before = dict(vars(uuid.SafeUUID.safe))
    data = (b"\x80\x04" + _opcodes_global("uuid", "SafeUUID") + b"K\x00\x85R"
            + b"N}\x8c\x06_name_\x8c\x06unsafe" + b"s\x86b.")
    with pytest.raises(RefusedValue, match="changes"):
        Decoder("box").loads(data)
    assert vars(uuid.SafeUUID.safe) == before and uuid.SafeUUID.safe.name == "safe"


def test_a_pickle_cannot_change_a_shipped_class(shipped: str) -> None:
    import sys

    outer = sys.modules[shipped].Outer
    method = outer.method
    data = _build_on(shipped, "Outer", b"N}\x8c\x06method" + b"\x8c\x08builtins\x8c\x03int\x93" + b"s\x86")
    with pytest.raises(RefusedValue, match="changes"):
        Decoder("box").loads(data)
    assert outer.method is method


def test_every_skyctl_error_shows_its_hint_in_a_traceback() -> None:
    """API code sees a ``SkyctlError`` as a traceback: its hint is a note there."""
    import traceback

    from skyctl import errors

    kinds = [cls for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, errors.SkyctlError)
             and cls not in (errors.RemoteError, errors.BadRecord)]
    for error in [cls("it failed", hint="do this") for cls in kinds] + [errors.BadRecord("bad", hint="do this", line=3)]:
        assert "hint: do this" in "".join(traceback.format_exception(error)), type(error)
    refused = RefusedValue("pkg.mod.Class", "box")
    assert 'hint: if you trust box with this client, allow the class in its profile: allow: ["pkg.mod.Class"] ' \
           "(or trust: full)" in "".join(traceback.format_exception(refused))
    refused.hint = "another"  # a hint set later replaces the note, never adds a second
    assert refused.__notes__ == ["hint: another"]
    refused.hint = None
    assert refused.__notes__ == []
    assert str(refused) == refused.message  # the message stays one line: the CLI prints the hint itself


# -- what one frame decodes to is bounded -------------------------------------------------


class Call:
    """Pickles as ``func(*args)``: how an attacker writes a pickle of allowed callables."""

    def __init__(self, func: object, *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.func, self.args


def _opcodes_global(module: str, name: str) -> bytes:
    return b"\x8c" + bytes([len(module)]) + module.encode() + b"\x8c" + bytes([len(name)]) + name.encode() + b"\x93"


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = (value, value)  # shared parts: tiny as a pickle, 2**depth when written out
    return value


def _shared_state(module: str, name: str, count: int) -> bytes:
    """``count`` instances of ``module.name``, each BUILT from the same memoized
    state of ``count`` entries: each BUILD copies the state into its instance."""
    import itertools
    import string

    keys = ["".join(t) for t in itertools.islice(itertools.product(string.ascii_letters, repeat=3), count)]
    state = b"}\x94(" + b"".join(b"\x8c\x03" + key.encode() + b"N" for key in keys) + b"u0"  # memo 1, popped
    one = b"h\x00)Rh\x01b"  # module.name(), BUILD with memo 1
    return b"\x80\x04" + _opcodes_global(module, name) + b"\x94" + state + b"](" + one * count + b"e."


@functools.cache
def _expanding() -> dict[str, bytes]:
    from collections import Counter, deque

    shared = list(range(1000))
    big = "x" * 10_000
    return {
        "list(range(3e7))": pickle.dumps(Call(list, Call(range, 3 * 10**7)), protocol=4),
        "bytes(1e10)": pickle.dumps(Call(bytes, 10**10), protocol=4),
        "bytearray(1e10)": pickle.dumps(Call(bytearray, 10**10), protocol=4),
        "bytes(range)": pickle.dumps(Call(bytes, Call(range, 10**9)), protocol=4),
        "frozenset(range)": pickle.dumps(Call(frozenset, Call(range, 10**9)), protocol=4),
        "Counter(range)": pickle.dumps(Call(Counter, Call(range, 10**9)), protocol=4),
        "deque(range)": pickle.dumps(Call(deque, Call(range, 10**9)), protocol=4),
        "Fraction('1e999999999')": pickle.dumps(Call(fractions.Fraction, "1e999999999"), protocol=4),
        "int(Decimal('1e999999999'))": pickle.dumps(Call(int, decimal.Decimal("1e999999999")), protocol=4),
        "Fraction(Decimal('1e-999999999'))": pickle.dumps(Call(fractions.Fraction, decimal.Decimal("1e-999999999")),
                                                          protocol=4),
        "str(shared tuples)": pickle.dumps(Call(str, _nested(40)), protocol=4),
        "100,000 copies of one list": pickle.dumps([Call(list, shared) for _ in range(100_000)], protocol=4),
        "a path of 10,000 shared parts": pickle.dumps(Call(pathlib.PurePosixPath, *[big] * 10_000), protocol=4),
        "__newobj_ex__(tuple, range)": (b"\x80\x04" + _opcodes_global("copyreg", "__newobj_ex__")
                                        + _opcodes_global("builtins", "tuple") + _opcodes_global("builtins", "range")
                                        + b"J\x00\xca\x9a;\x85R}\x87R."),
        "_reconstructor(bytes, bytes, 1e10)": pickle.dumps(Call(copyreg._reconstructor, bytes, bytes, 10**10),
                                                          protocol=4),
        "one state BUILT into 2,000 exceptions": _shared_state("builtins", "ValueError", 2000),
        "one state BUILT into 2,000 Counters": _shared_state("collections", "Counter", 2000),
        "NEWOBJ bytes 1e10": b"\x80\x04" + _opcodes_global("builtins", "bytes") + b"\x8a\x05\x00\xe4\x0bT\x02\x85\x81.",
        "NEWOBJ_EX tuple range": (b"\x80\x04" + _opcodes_global("builtins", "tuple")
                                  + _opcodes_global("builtins", "range") + b"J\x00\xca\x9a;\x85R}\x92."),
    }


@pytest.mark.parametrize("name", list(_expanding()))
def test_a_frame_that_would_expand_is_refused_before_it_is_built(name: str) -> None:
    """Issue 18: a 44-byte ``P`` batch of allowed builtins grew the client to
    2.3 GiB. Every such pickle is refused, naming the host, and decoding it
    never holds more than a little memory."""
    import tracemalloc

    from skyctl.trust import DECODE_CONSTANT, DECODE_FACTOR, OversizedValue

    data = _expanding()[name]
    tracemalloc.start()
    try:
        with pytest.raises(OversizedValue) as info:
            Decoder("box").loads(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.message.startswith(f"box sent a {len(data):,}-byte value that would decode to more than")
    assert info.value.exit_status == 6 and "compromised" in (info.value.hint or "")
    # what was built before the refusal is within the bound (with room for object headers)
    assert peak < (DECODE_FACTOR + 4) * len(data) + 2 * DECODE_CONSTANT, f"decoding held {peak:,} bytes"


def test_honest_values_that_call_constructors_stay_within_the_bound() -> None:
    """No false alarm: big honest values (protocol 3's ``set([...])`` and
    ``bytearray(b"...")``, collections, exceptions, many shipped-style objects) decode."""
    from collections import Counter, OrderedDict, deque

    values = [set(range(20_000)), frozenset(range(20_000)), bytearray(b"x" * 1_000_000), Counter(range(20_000)),
              deque(range(20_000)), OrderedDict((i, str(i)) for i in range(20_000)), [KeyError("same message")] * 1000,
              [decimal.Decimal(i) / 7 for i in range(5_000)], [fractions.Fraction(i, 7) for i in range(5_000)],
              [pathlib.PurePosixPath("/srv", str(i)) for i in range(5_000)], "x" * 10_000_000, [range(10**12)] * 3]
    for protocol in (3, pickle.HIGHEST_PROTOCOL):
        for value in values:
            back = Decoder().loads(pickle.dumps(value, protocol=protocol))
            assert repr(back) == repr(value) if isinstance(value, list) and isinstance(value[0], KeyError) else back == value


def test_numpy_shapes_are_weighed() -> None:
    numpy = pytest.importorskip("numpy")
    from skyctl.trust import OversizedValue

    array = numpy.arange(100_000, dtype=numpy.float64).reshape(1000, 100)
    assert (Decoder().loads(pickle.dumps(array, protocol=5)) == array).all()
    reconstruct = (numpy._core if hasattr(numpy, "_core") else numpy.core).multiarray._reconstruct
    with pytest.raises(OversizedValue):
        Decoder().loads(pickle.dumps(Call(reconstruct, numpy.ndarray, (10**10,), b"b"), protocol=4))
    with pytest.raises(OversizedValue):
        Decoder().loads(pickle.dumps(Call(numpy.ndarray, (10**6, 10**4)), protocol=4))


def test_escape_controls_keeps_tab_and_newline_only() -> None:
    text = "a\tb\nc\x1b[2J\x07\r\x00\x7f\x9bd é"
    assert escape_controls(text) == "a\tb\nc\\x1b[2J\\x07\\x0d\\x00\\x7f\\x9bd é"


def test_an_inbox_refuses_more_items_than_it_granted() -> None:
    inbox = flow.Inbox(lambda i, b: None, pickle.loads, window=(10, 1 << 20))
    inbox.push(flow.pack_batch(list(range(10)), pickle.dumps))
    with pytest.raises(flow.CreditOverrun, match="11 items sent against a credit of 10"):
        inbox.push(flow.pack_batch([10], pickle.dumps))


def test_an_inbox_allows_what_it_granted_back() -> None:
    inbox = flow.Inbox(lambda i, b: None, pickle.loads, window=(4, 1 << 20), grant_every=(2, 1 << 30))
    inbox.push(flow.pack_batch([0, 1], pickle.dumps))
    inbox.push(flow.pack_batch([2, 3], pickle.dumps))
    batches = inbox.batches()
    assert next(batches) == [0, 1]
    assert next(batches) == [2, 3]  # the first batch is taken: its 2 items are granted back
    inbox.push(flow.pack_batch([4, 5], pickle.dumps))
    with pytest.raises(flow.CreditOverrun):
        inbox.push(flow.pack_batch([6], pickle.dumps))


def test_an_inbox_refuses_bytes_far_over_its_credit() -> None:
    inbox = flow.Inbox(lambda i, b: None, pickle.loads, window=(1 << 20, 1000))
    big = flow.pack_batch(["x" * (flow.OVERRUN_BYTES + 2000)], pickle.dumps)
    inbox.push(big)  # one frame may overshoot
    with pytest.raises(flow.CreditOverrun, match="bytes"):
        inbox.push(flow.pack_batch(["y"], pickle.dumps))


def test_a_batch_over_the_payload_cap_is_cut_and_a_single_item_over_it_is_unsendable() -> None:
    frames: list[bytes] = []
    box = flow.Outbox(lambda kind, payload: frames.append(payload), 6, pickle.dumps, max_payload=1000,
                      on_unsendable=lambda exc: (99, str(exc).encode()))
    box.grant(1 << 20, 1 << 30)
    box.put_many(["a" * 300 for _ in range(10)])
    box.put_many(["b" * 5000])
    box.finish()
    assert box.join(10)
    assert all(len(f) <= 1000 for f in frames[:-1])
    assert sum(len(flow.unpack_batch(f, pickle.loads)) for f in frames[:-1]) == 10
    assert b"over the 1,000 bytes a frame may carry" in frames[-1]
