"""What a Ray task for a ``type: ray`` host runs first: skyctl's remote modules, then the call.

The driver (``raydriver``) registers this module with Ray's cloudpickle to
travel *by value* (Ray's worker processes have no skyctl), so it is
self-contained: stdlib only, no other skyctl module at import. The modules
the call needs (``raycall`` and what it imports: ``wire``, ``flow``,
``values``, this one) travel as source text and its bytecode, put in Ray's object store once
per driver process: a task gets a reference to them and their digest, and a
Ray worker process builds them once per digest (a private package in
``sys.modules``), so later tasks there start at once.

``error_info`` is here because the worker uses it too and this module must
stand alone.
"""

from __future__ import annotations

import sys
import traceback
import types
from typing import Any, Callable

#: bytes of the one-time token the task sends first on its link
TOKEN_BYTES = 16
#: what the task raises when it cannot reach its driver (the driver turns it into exit 5 with a hint)
UNREACHABLE = "skyctl: the Ray task could not connect back to its driver"
#: the modules a task builds, in import order (each imports only those before it)
MODULES = ("wire", "values", "flow", "raytask", "raycall")


def run_task(link: tuple[Any, ...], code: tuple[str, list[Any]]) -> None:
    """Run a call here (``raycall.run``: it comes over the link to the driver at ``link``); ``code``: the
    digest of the modules' sources and, in a list (so that Ray does not fetch it for every task), the
    reference to them."""
    load(code)["raycall"].run(link)


def filename(name: str) -> str:
    """The file a built module's frames name (skyctl's, as in the bundle: left out of user tracebacks)."""
    return f"<skyctl bundle>/skyctl/remote/{name}.py"


def load(code: tuple[str, list[Any]]) -> dict[str, types.ModuleType]:
    """The modules of ``code``, built once per process under a package named by their digest."""
    digest, holder = code
    package = f"_skyctl_ray_{digest[:16]}"
    if package not in sys.modules:
        import ray

        import importlib.util
        import marshal

        sources, magic, compiled = ray.get(holder[0])
        same = magic == importlib.util.MAGIC_NUMBER
        root = types.ModuleType(package)
        root.__path__ = []  # type: ignore[attr-defined]
        sys.modules[package] = root
        for name in MODULES:
            module = types.ModuleType(f"{package}.{name}")
            module.__package__ = package
            module.__file__ = filename(name)
            sys.modules[module.__name__] = module
            code = marshal.loads(compiled[name]) if same else compile(sources[name], module.__file__, "exec")
            exec(code, module.__dict__)
            setattr(root, name, module)
    root = sys.modules[package]
    return {name: getattr(root, name) for name in MODULES}


def error_info(exc: BaseException, where: str, is_own: Callable[[str], bool]) -> dict[str, Any]:
    """What a RAISE frame says of an exception: type name, message, and the
    traceback text without the frames of files ``is_own`` names (skyctl's).
    Here, not in ``worker``, because this module travels to a Ray task by
    value: the worker uses it too."""
    tbe = traceback.TracebackException(type(exc), exc, exc.__traceback__)
    seen: set[int] = set()
    todo = [tbe]
    while todo:
        t = todo.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        t.stack[:] = [f for f in t.stack if not is_own(f.filename)]
        todo.extend(x for x in (t.__cause__, t.__context__) if x is not None)
    cls = type(exc)
    try:
        message = str(exc)
    except BaseException:
        message = "<unprintable exception>"
    return {
        "type": cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}",
        "message": message,
        "traceback": "".join(tbe.format()),
        "where": where,
        "module_not_found": getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else None,
    }
