"""What the client accepts from a remote it does not trust.

A compromised or shared host must not be able to run code on the machine that
runs skyctl (a CI runner holds secrets). ``pickle.loads`` of what a remote
sends would hand it that machine, so:

- the CLI never unpickles anything: the worker renders values as text
  (``skyctl.values``) and errors come as type name, message and traceback text;
- the Python API decodes values with ``Decoder``: builtin scalars and
  containers, the standard library's plain data types, builtin exceptions,
  numpy arrays, and classes of the modules this client shipped itself;
  anything else is refused (``RefusedValue``) unless the profile widens it
  (``trust: full``, or ``allow: ["pkg.mod.Class", …]``);
- text from the remote shown on a terminal has its control characters
  escaped (``escape_controls``), so it cannot drive the terminal;
- traceback source lines are read only from files the client shipped
  (``shipped_files``), never from a path the remote names.
"""

from __future__ import annotations

import builtins
import io
import os
import pickle
import sys
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


class RefusedValue(SkyctlError):
    """The remote sent a value of a class the client does not rebuild from a remote."""

    exit_status = ExitStatus.REMOTE_RAISED

    def __init__(self, name: str, host: str = "the host", hint: str | None = None) -> None:
        super().__init__(
            f"{host} sent a value of class '{name}', which skyctl does not unpickle from a remote",
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
        return _Unpickler(io.BytesIO(data), self).load()

    def find(self, module: str, name: str, default: Any) -> Any:
        """The global ``module.name`` if it is allowed; ``default(module, name)`` finds it."""
        key = f"{module}.{name}"
        if module == "skyctl.values" and name == "shipped_class":
            return self._shipped_class
        if module == "builtins" and (name in SAFE_BUILTINS or _is_builtin_exception(name)):
            return type(None) if name == "NoneType" else getattr(builtins, name)
        if key in ALLOWED_GLOBALS or key in self.allow:
            return default(module, name)
        if module in shipped_modules():
            found = defined_class(module, name)
            if found is not None:
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


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: Any, decoder: Decoder) -> None:
        super().__init__(file)
        self._decoder = decoder

    def find_class(self, module: str, name: str) -> Any:
        return self._decoder.find(module, name, super().find_class)


#: C0 controls but tab and newline, DEL, and C1 controls: shown as ``\xNN``
_CONTROLS = {c: f"\\x{c:02x}" for c in [*range(0x00, 0x09), *range(0x0b, 0x20), 0x7f, *range(0x80, 0xa0)]}


def escape_controls(text: str) -> str:
    """``text`` with every control character but tab and newline shown as an
    escape (a remote's text on a terminal cannot move the cursor, retitle the
    window, or hide what it printed)."""
    return text.translate(_CONTROLS)
