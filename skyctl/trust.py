"""What the client accepts from a remote it does not trust.

A compromised or shared host must not be able to run code on the machine that
runs skyctl (a CI runner holds secrets). ``pickle.loads`` of what a remote
sends would hand it that machine, so:

- the CLI never unpickles anything: the worker renders values as text
  (``skyctl.remote.values``) and errors come as type name, message and traceback text;
- the Python API decodes values with ``Decoder``: builtin scalars and
  containers, the standard library's plain data types, builtin exceptions,
  numpy arrays, and classes *defined in* the modules this client shipped
  itself; anything else is refused (``RefusedValue``) unless the profile
  widens it (``trust: full``, or ``allow: ["pkg.mod.Class", …]``);
- what one frame decodes to is bounded by a fixed multiple of its size
  (``DECODE_FACTOR``, ``DECODE_CONSTANT``): a pickle of allowed callables that
  would expand (``list(range(3*10**7))``, ``bytes(10**10)``,
  ``Fraction("1e999999999")``) is refused (``OversizedValue``) before it is built;
- text from the remote shown on a terminal has its control characters
  escaped (``escape_controls``), so it cannot drive the terminal;
- traceback source lines are read only from files the client shipped
  (``shipped_files``), never from a path the remote names.
"""

from __future__ import annotations

import builtins
import copyreg
import io
import math
import os
import pickle
import re
import sys
import types
from typing import Any, Iterable

from .errors import ExitStatus, SkyctlError

#: ``module.name`` a value may be built from, beside the builtins below
ALLOWED_GLOBALS = frozenset({
    "copyreg._reconstructor", "copyreg.__newobj__", "copyreg.__newobj_ex__",
    "datetime.date", "datetime.time", "datetime.datetime", "datetime.timedelta", "datetime.timezone",
    "decimal.Decimal", "fractions.Fraction", "uuid.UUID", "uuid.SafeUUID",
    "pathlib.PurePath", "pathlib.PurePosixPath", "pathlib.PureWindowsPath",
    "pathlib.Path", "pathlib.PosixPath", "pathlib.WindowsPath",
    "collections.OrderedDict", "collections.deque", "collections.Counter", "collections.defaultdict",
    "collections.ChainMap", "zoneinfo.ZoneInfo._unpickle",
    # numpy: arrays, dtypes and scalars (numpy 1.x and 2.x module paths)
    "numpy.ndarray", "numpy.dtype",
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
    "numpy.core.numeric._frombuffer", "numpy._core.numeric._frombuffer",
})

#: builtins that only build data (never ``eval``, ``getattr``, ``__import__``…)
SAFE_BUILTINS = frozenset({
    "object", "int", "float", "complex", "bool", "str", "bytes", "bytearray",
    "list", "tuple", "dict", "set", "frozenset", "range", "slice", "NoneType",
})


def _is_builtin_exception(name: str) -> bool:
    value = getattr(builtins, name, None)
    return isinstance(value, type) and issubclass(value, BaseException)


#: a frame decodes to at most ``DECODE_FACTOR`` bytes per byte of it, plus ``DECODE_CONSTANT``
#: (what the calls of a pickle may build; see ``_Careful``)
DECODE_FACTOR = 32
DECODE_CONSTANT = 1 << 20

#: globals every call of which builds a small, fixed amount whatever its
#: arguments: a pickle naming only these (or none) decodes on the C
#: unpickler as it is; any other allowed global sends the whole frame
#: through ``_Careful``, which weighs each call before making it
_FLAT = frozenset({
    "builtins.object", "builtins.float", "builtins.complex", "builtins.bool", "builtins.range", "builtins.slice",
    "builtins.NoneType",
    "datetime.date", "datetime.time", "datetime.datetime", "datetime.timedelta", "datetime.timezone",
    "uuid.UUID", "uuid.SafeUUID", "zoneinfo.ZoneInfo._unpickle", "copyreg._reconstructor", "copyreg.__newobj__",
    "skyctl.remote.values.shipped_class",
})
#: builtin exceptions whose constructor copies an argument (the others keep references)
_COPYING_EXCEPTIONS = frozenset({"BaseExceptionGroup", "ExceptionGroup", "UnicodeDecodeError"})
#: builtin types whose constructor (or ``__new__``) copies or sizes from its arguments
_EXPANDING = (str, bytes, bytearray, int, tuple, list, dict, set, frozenset)


class OversizedValue(SkyctlError):
    """A frame would decode to far more than it weighs: no honest worker sends one."""

    exit_status = ExitStatus.CONNECTION_LOST

    def __init__(self, host: str, size: int, what: str) -> None:
        super().__init__(
            f"{host} sent a {size:,}-byte value that would decode to more than skyctl allows for its size "
            f"({DECODE_FACTOR} bytes per byte, plus {DECODE_CONSTANT >> 20} MiB: {what}); refused before building it",
            hint=f"skyctl's worker never sends such a value: is {host} compromised, or skyctl's cache on it "
                 "damaged? (a host trusted with this client can be given trust: full)",
        )
        self.host = host


#: ``type.__flags__``: a type whose attributes cannot be set (builtins, most C types)
_IMMUTABLE_TYPE = 1 << 8


def _state(obj: Any) -> tuple[Any, ...]:
    """What a BUILD could change of a class, a function or an enum member: its type, bases, names,
    namespace, code."""
    if isinstance(obj, type):
        return type(obj), obj.__bases__, obj.__name__, obj.__qualname__, dict(vars(obj))
    if isinstance(obj, types.FunctionType):
        return (type(obj), obj.__code__, obj.__defaults__, obj.__kwdefaults__, obj.__name__, obj.__qualname__,
                dict(vars(obj)))
    return type(obj), dict(vars(obj))


def _same(before: tuple[Any, ...], now: tuple[Any, ...]) -> bool:
    """Identity, part by part (``==`` could run the remote's choice of code)."""
    *parts, namespace = before
    *now_parts, now_namespace = now
    return (all(a is b for a, b in zip(parts, now_parts)) and namespace.keys() == now_namespace.keys()
            and all(namespace[k] is v for k, v in now_namespace.items()))


class _Watch:
    """The classes and functions one load hands out whose attributes can be set.

    Pickle's BUILD sets attributes on whatever is on its stack, a class
    included: without this a remote could change the client's classes for
    good (``Counter.most_common = int``, a shipped class's methods). Each is
    recorded as it was; after the load, any change is undone and refused."""

    def __init__(self) -> None:
        self._before: dict[int, tuple[Any, tuple[Any, ...]]] = {}

    def add(self, obj: Any) -> Any:
        if id(obj) not in self._before and (
                (isinstance(obj, type) and not obj.__flags__ & _IMMUTABLE_TYPE) or isinstance(obj, types.FunctionType)):
            self._before[id(obj)] = (obj, _state(obj))
            enum = sys.modules.get("enum")
            if enum is not None and isinstance(obj, type) and issubclass(obj, enum.Enum):
                for member in vars(obj).get("_member_map_", {}).values():  # singletons a REDUCE hands out
                    if hasattr(member, "__dict__"):
                        self._before.setdefault(id(member), (member, _state(member)))
        return obj

    def check(self, host: str) -> None:
        for obj, before in self._before.values():
            if not _same(before, _state(obj)):
                _restore(obj, before)
                label = before[-2] if isinstance(obj, (type, types.FunctionType)) else repr(obj)
                name = f"{getattr(obj, '__module__', '?')}.{label}"
                raise RefusedValue(name, host, message=f"{host} sent a value that changes '{name}' in this client "
                                                       "(the change is undone)",
                                   hint=f"skyctl's worker never sends that: is {host} compromised?")


def _restore(obj: Any, before: tuple[Any, ...]) -> None:
    """Put back what a BUILD changed (best effort: the load is refused anyway)."""
    namespace = before[-1]
    try:
        if isinstance(obj, type):
            _, bases, name, qualname, _ = before
            if obj.__bases__ is not bases:
                obj.__bases__ = bases
            obj.__name__, obj.__qualname__ = name, qualname
        elif not isinstance(obj, types.FunctionType):
            if type(obj) is not before[0]:
                obj.__class__ = before[0]
        else:
            _, code, defaults, kwdefaults, name, qualname, _ = before
            obj.__code__, obj.__defaults__, obj.__kwdefaults__ = code, defaults, kwdefaults
            obj.__name__, obj.__qualname__ = name, qualname
        for key in [k for k in vars(obj) if k not in namespace]:
            delattr(obj, key)
        for key, value in namespace.items():
            if vars(obj).get(key) is not value:
                setattr(obj, key, value)
    except Exception:
        pass


class _Expand(Exception):
    """The fast decode met a global whose calls may expand: decode again, carefully."""


class RefusedValue(SkyctlError):
    """The remote sent a value of a class the client does not rebuild from a remote."""

    exit_status = ExitStatus.REMOTE_RAISED

    def __init__(self, name: str, host: str = "the host", hint: str | None = None, message: str | None = None) -> None:
        super().__init__(
            message or f"{host} sent a value of class '{name}', which skyctl does not unpickle from a remote",
            hint=hint or f"if you trust {host} with this client, allow the class in its profile: "
                         f"allow: [\"{name}\"] (or trust: full)",
        )
        self.name = name


def _not_defined(module: str, qualname: str, host: str) -> RefusedValue:
    """A name under a shipped module that is not a class defined there: no
    honest worker sends one, and allowing it is not the advice to give."""
    return RefusedValue(f"{module}.{qualname}", host,
                        hint=f"'{qualname}' is not a class defined in {module}, the only classes skyctl rebuilds "
                             f"from a module it shipped: {host} does not follow skyctl's protocol (is it compromised?)")


def shipped_modules() -> frozenset[str]:
    """The modules this client ships by value (the target's own project modules)."""
    try:
        import cloudpickle

        return frozenset(cloudpickle.list_registry_pickle_by_value())
    except (ImportError, AttributeError):
        return frozenset()


def shipped_files() -> frozenset[str]:
    """The source files of the modules this client ships: the only files a
    remote traceback's source lines are read from."""
    files = set()
    for name in shipped_modules():
        file = getattr(sys.modules.get(name), "__file__", None)
        if file:
            files.update((file, os.path.abspath(file)))
    return frozenset(files)


class Decoder:
    """Unpickles what a remote sends, allowing only data (see the module docstring).

    Args:
        host: names the host in a refusal.
        allow: extra ``module.Class`` names the profile allows.
        full: ``trust: full`` — the remote is trusted with this client: plain unpickling.
    """

    def __init__(self, host: str = "the host", allow: Iterable[str] = (), full: bool = False) -> None:
        self.host = host
        self.allow = frozenset(allow)
        self.full = full

    def loads(self, data: bytes | memoryview) -> Any:
        if self.full:
            return pickle.loads(data)
        watch = _Watch()
        try:
            try:
                try:  # the fast path: the C unpickler, while every global named is flat
                    return _Unpickler(io.BytesIO(data), self, watch).load()
                except _Dry:
                    pass
                # A class whose instances take BUILD: one state shared by many
                # instances is copied into each. Weigh that on stand-ins first.
                try:
                    _DryRun(io.BytesIO(data), self, watch, len(data)).load()
                except (_Expand, SkyctlError):
                    raise
                except Exception:  # a stand-in did not fit where the real class would: weigh the slow way
                    raise _Expand from None
                return _Unpickler(io.BytesIO(data), self, watch, weighed=True).load()
            except _Expand:
                pass
            return _Careful(io.BytesIO(data), self, watch, len(data)).load()
        finally:
            watch.check(self.host)

    def find(self, module: str, name: str, default: Any, careful: bool = True, watch: _Watch | None = None) -> Any:
        """The global ``module.name`` if it is allowed; ``default(module, name)`` finds it.
        Not ``careful`` (the fast path): raises ``_Expand`` for a global whose calls may expand.
        ``watch`` records what is handed out (``_Watch``)."""
        found = self._find(module, name, default, careful)
        return watch.add(found) if watch is not None else found

    def _find(self, module: str, name: str, default: Any, careful: bool) -> Any:
        key = f"{module}.{name}"
        if module == "skyctl.remote.values" and name == "shipped_class":
            return self._shipped_class if careful else self._flat_shipped_class
        if module == "builtins" and (name in SAFE_BUILTINS or _is_builtin_exception(name)):
            if not careful and key not in _FLAT and (name in SAFE_BUILTINS or name in _COPYING_EXCEPTIONS):
                raise _Expand
            return type(None) if name == "NoneType" else getattr(builtins, name)
        if key in ALLOWED_GLOBALS or key in self.allow:
            found = default(module, name)
            if not careful and key not in _FLAT and (
                    key not in self.allow or (isinstance(found, type) and issubclass(found, _EXPANDING))):
                raise _Expand
            return found
        if module in shipped_modules():
            found = defined_class(module, name)
            if found is not None:
                if not careful and issubclass(found, _EXPANDING):
                    raise _Expand
                return found
            raise _not_defined(module, name, self.host)
        raise RefusedValue(key, self.host)

    def _shipped_class(self, module: str, qualname: str) -> type:
        """A class of a module this client shipped, from the client's own copy of it."""
        if module in shipped_modules():
            found = defined_class(module, qualname)
            if found is not None:
                return found
            raise _not_defined(module, qualname, self.host)
        raise RefusedValue(f"{module}.{qualname}", self.host)

    def _flat_shipped_class(self, module: str, qualname: str) -> type:
        """``_shipped_class`` on the fast path: a subclass of an expanding builtin needs the careful one."""
        found = self._shipped_class(module, qualname)
        if issubclass(found, _EXPANDING):
            raise _Expand
        return found


def defined_class(module: str, qualname: str) -> type | None:
    """The class ``qualname`` *defined* in the loaded module ``module``, else None.

    Every step of ``qualname`` must be a class defined in that module (its
    ``__module__`` is ``module`` and its ``__qualname__`` the path so far),
    looked up in the namespace itself (no ``getattr``, no descriptors). What
    the module merely imports (``mod.subprocess.Popen``,
    ``mod.skyctl.api.inspect.attrgetter``, ``Popen = subprocess.Popen``), its
    functions and ``<locals>`` are never reached: a remote naming a path
    through them could otherwise build any type the client has loaded."""
    value: Any = sys.modules.get(module)
    if value is None:
        return None
    path = ""
    for part in qualname.split("."):
        if not part.isidentifier():
            return None
        try:
            namespace = vars(value)
        except TypeError:
            return None
        value = namespace.get(part)
        path = f"{path}.{part}" if path else part
        if not isinstance(value, type) or value.__module__ != module or value.__qualname__ != path:
            return None
    return value


class _Dry(Exception):
    """The fast decode met a class whose instances take BUILD: weigh a dry run first."""


def _takes_build(found: Any) -> bool:
    """A class whose instances a BUILD copies a state into (an instance ``__dict__``, a ``__setstate__``):
    the flat classes' instances take none, or a bounded one."""
    return isinstance(found, type) and f"{found.__module__}.{found.__qualname__}" not in _FLAT


class _Unpickler(pickle.Unpickler):
    """The fast path (C): plain data, and calls of flat globals only; with
    ``weighed``, also classes whose BUILDs a dry run (``_DryRun``) has weighed."""

    def __init__(self, file: Any, decoder: Decoder, watch: _Watch, weighed: bool = False) -> None:
        super().__init__(file)
        self._decoder = decoder
        self._watch = watch
        self._weighed = weighed

    def find_class(self, module: str, name: str) -> Any:
        found = self._decoder.find(module, name, super().find_class, careful=False, watch=self._watch)
        if module == "skyctl.remote.values":
            return _watched(found, self._watch, None if self._weighed else _refuse_unweighed)
        return found if self._weighed else _refuse_unweighed(found)


def _refuse_unweighed(found: Any) -> Any:
    if _takes_build(found):
        raise _Dry
    return found


def _watched(shipped_class: Any, watch: _Watch, then: Any = None) -> Any:
    """``shipped_class`` whose every class is recorded by ``watch`` (and passed through ``then``)."""
    def resolve(module: str, qualname: str) -> type:
        found = watch.add(shipped_class(module, qualname))
        return then(found) if then is not None else found

    return resolve


class _Stand:
    """In a dry run, an instance of a class that takes BUILD: it weighs what
    the real one would be given (its constructor's arguments, each BUILD's
    state, items added) and keeps nothing."""

    __slots__ = ()
    _real: type
    _dry: "_DryRun"

    # No __new__: NEWOBJ (``cls.__new__(cls, *args)``, a plain instance's
    # making) stays in C. Its arguments go to the real class's own __new__
    # (the user's code, or an exception keeping them by reference); a class
    # whose __new__ copies them (a str, bytes, tuple… subclass) takes the
    # careful path instead.
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if args or kwargs:  # a REDUCE: the real class is called with them
            self._dry.spend(_call_weight(self._real, args, kwargs), self._real)

    def __setstate__(self, state: Any) -> None:
        if type(state) is dict:  # the common case, kept short: it runs once per instance
            dry = self._dry
            dry._left -= 64 * len(state)
            if dry._left < 0:
                dry.spend(0, self._real)
            return
        parts = state if isinstance(state, tuple) and len(state) == 2 else (state,)
        self._dry.spend(sum(_weight(part) for part in parts if part is not None), self._real)

    def append(self, item: Any) -> None:
        self._dry.spend(8, self._real)

    def extend(self, items: Any) -> None:
        self._dry.spend(_weight(items), self._real)

    add = append

    def __setitem__(self, key: Any, value: Any) -> None:
        self._dry.spend(16, self._real)


class _DryRun(pickle.Unpickler):
    """The C unpickler over the same frame with a stand-in (``_Stand``) for
    every class whose instances take BUILD, against the budget of
    ``_Careful``: the real decode that follows is then known to fit. Plain
    data is built (and dropped) as the real decode will build it."""

    def __init__(self, file: Any, decoder: Decoder, watch: _Watch, size: int) -> None:
        super().__init__(file)
        self._decoder = decoder
        self._watch = watch
        self._size = size
        self._left = DECODE_FACTOR * size + DECODE_CONSTANT
        self._stands: dict[int, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        found = self._decoder.find(module, name, super().find_class, careful=False, watch=self._watch)
        if module == "skyctl.remote.values":
            return _watched(found, self._watch, self._stand)
        return self._stand(found)

    def _stand(self, found: Any) -> Any:
        if not _takes_build(found):
            return found
        stand = self._stands.get(id(found))
        if stand is None:
            stand = self._stands[id(found)] = type(found.__name__, (_Stand,), {"_real": found, "_dry": self,
                                                                               "__slots__": ()})
        return stand

    def spend(self, weight: int, what: type) -> None:
        self._left -= weight
        if self._left < 0:
            raise OversizedValue(self._decoder.host, self._size, f"the state of {what.__qualname__}")


_EXPONENT = re.compile(r"[eE]\s*([+-]?\d+)")


#: argument types that weigh nothing (a call cannot build more from them than they are)
_WEIGHTLESS = frozenset({int, float, bool, type(None), complex})


def _weight(value: Any) -> int:
    """Bytes a call may build from one argument (a shallow copy of it; for a
    ``Decimal``, its digits once written out as an integer)."""
    if type(value) in _WEIGHTLESS:
        return 0
    if isinstance(value, (dict, set, frozenset)):  # a hash table: about 64 bytes an entry once copied
        return 64 * len(value)
    if isinstance(value, (str, bytes, bytearray, memoryview, range, list, tuple, dict, set, frozenset)) or \
            hasattr(type(value), "__len__"):
        try:
            return 8 * len(value)
        except (OverflowError, TypeError, ValueError):
            return math.inf if isinstance(value, range) else 0  # type: ignore[return-value]
        except Exception:
            return 0
    decimal = sys.modules.get("decimal")
    if decimal is not None and isinstance(value, decimal.Decimal) and value.is_finite():
        digits, exponent = value.as_tuple()[1:]
        return len(digits) + abs(int(exponent))
    return 0


def _itemsize(dtype: Any) -> int:
    numpy = sys.modules.get("numpy")
    try:
        return max(1, int(numpy.dtype(dtype).itemsize)) if numpy is not None else 8
    except Exception:
        return 8


def _shape_bytes(shape: Any, dtype: Any) -> int:
    """What an array of ``shape`` (an int or a tuple of ints) and ``dtype`` holds."""
    dims = shape if isinstance(shape, tuple) else (shape,)
    if not all(isinstance(d, int) for d in dims):
        return 0
    return math.prod(max(0, d) for d in dims) * _itemsize(dtype)


#: copyreg's helpers, which call the class the pickle gives them
_COPYREG_CALLS = (copyreg._reconstructor, copyreg.__newobj__, copyreg.__newobj_ex__)  # type: ignore[attr-defined]


def _call_weight(func: Any, args: Any, kwargs: Any = None) -> int:
    """Bytes calling ``func(*args, **kwargs)`` may build (an over-estimate for what decoding allows)."""
    if not isinstance(args, tuple):  # ``*args`` of NEWOBJ_EX: the unpacking itself builds a tuple
        return _weight(args) or (math.inf if args is not None and not hasattr(args, "__len__") else 0)
    if func in _COPYREG_CALLS and args:  # they call the class they are given: weigh that call
        if func is _COPYREG_CALLS[0]:  # _reconstructor(cls, base, state): base.__new__(cls, state)
            return _call_weight(args[1], args[2:3]) if len(args) == 3 else 0
        if func is _COPYREG_CALLS[1]:  # __newobj__(cls, *args)
            return _call_weight(args[0], args[1:])
        return _call_weight(args[0], *args[1:3]) if len(args) == 3 else 0  # __newobj_ex__(cls, args, kwargs)
    values = (*args, *(kwargs or {}).values()) if isinstance(kwargs, dict) else args
    weight = sum(map(_weight, values))
    cls = func if isinstance(func, type) else None
    if cls is not None and issubclass(cls, (bytes, bytearray)) and args and isinstance(args[0], int):
        weight += max(0, args[0])  # bytes(n): n zero bytes
    if cls is not None and issubclass(cls, str) and args and not isinstance(args[0], (str, bytes, bytearray, int, float)):
        weight = math.inf  # str(a container) writes it out whole, shared parts once per reference
    fractions = sys.modules.get("fractions")
    if fractions is not None and cls is not None and issubclass(cls, fractions.Fraction):
        for arg in args:
            found = _EXPONENT.search(arg) if isinstance(arg, str) else None
            weight += abs(int(found.group(1))) if found else 0
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        name = getattr(func, "__name__", "")
        if cls is not None and issubclass(cls, numpy.ndarray) and args:
            weight += _shape_bytes(args[0], args[1] if len(args) > 1 else float)
        elif name == "_reconstruct" and len(args) >= 3:
            weight += _shape_bytes(args[1], args[2])
        elif name == "scalar" and args:
            weight += _itemsize(args[0])
    return weight


class _Careful(pickle._Unpickler):  # type: ignore[name-defined,misc]
    """The careful path (pure Python): every call a pickle makes is weighed
    before it is made, against a budget of ``DECODE_FACTOR`` bytes per byte of
    the frame plus ``DECODE_CONSTANT``: beyond it, ``OversizedValue``.

    Plain opcodes build at most a few hundred bytes each (an empty set is the
    most); only calls can build more than their arguments weigh, so only calls
    are weighed. Taken only by frames that name a global that may expand."""

    def __init__(self, file: Any, decoder: Decoder, watch: _Watch, size: int) -> None:
        super().__init__(file)
        self._decoder = decoder
        self._watch = watch
        self._size = size
        self._left = DECODE_FACTOR * size + DECODE_CONSTANT

    def find_class(self, module: str, name: str) -> Any:
        found = self._decoder.find(module, name, super().find_class, watch=self._watch)
        return _watched(found, self._watch) if module == "skyctl.remote.values" else found

    def _spend(self, func: Any, args: Any, kwargs: Any = None) -> None:
        try:
            weight = _call_weight(func, args, kwargs)
        except Exception:  # weighing a value must never be what fails
            weight = 0
        self._left -= weight
        if self._left < 0:
            what = getattr(func, "__qualname__", type(func).__qualname__)
            raise OversizedValue(self._decoder.host, self._size, f"a call of {what}")

    def load_reduce(self) -> None:
        self._spend(self.stack[-2], self.stack[-1])
        super().load_reduce()

    def load_newobj(self) -> None:
        self._spend(self.stack[-2], self.stack[-1])
        super().load_newobj()

    def load_newobj_ex(self) -> None:
        self._spend(self.stack[-3], self.stack[-2], self.stack[-1])
        super().load_newobj_ex()

    def _instantiate(self, klass: Any, args: Any) -> None:
        self._spend(klass, tuple(args))
        super()._instantiate(klass, args)

    def load_build(self) -> None:
        numpy = sys.modules.get("numpy")
        state, inst = self.stack[-1], self.stack[-2]
        if numpy is not None and isinstance(inst, numpy.ndarray) and isinstance(state, tuple) and len(state) >= 3:
            self._left -= _shape_bytes(state[1], state[2])  # ndarray.__setstate__ allocates the shape it names
            what = "an array's shape"
        else:  # the state is copied into the instance: one state shared by many is copied into each
            parts = state if isinstance(state, tuple) and len(state) == 2 else (state,)
            self._left -= sum(_weight(part) for part in parts if part is not None)
            what = f"the state of {type(inst).__qualname__}"
        if self._left < 0:
            raise OversizedValue(self._decoder.host, self._size, what)
        super().load_build()

    dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]
    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex
    dispatch[pickle.BUILD[0]] = load_build


#: C0 controls but tab and newline, DEL, and C1 controls: shown as ``\xNN``
_CONTROLS = {c: f"\\x{c:02x}" for c in [*range(0x00, 0x09), *range(0x0b, 0x20), 0x7f, *range(0x80, 0xa0)]}


def escape_controls(text: str) -> str:
    """``text`` with every control character but tab and newline shown as an
    escape (a remote's text on a terminal cannot move the cursor, retitle the
    window, or hide what it printed)."""
    return text.translate(_CONTROLS)
