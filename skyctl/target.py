"""TARGET strings (``path/to/file.py:NAME``, ``pkg.mod:NAME``) → the function to ship.

Imports the user's module on the client, finds the function, and registers
that module and the project-local modules it imported to travel by value
(cloudpickle), so the remote needs none of the user's files.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import os
import sys
import sysconfig
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from .errors import UsageError, did_you_mean


@dataclass(frozen=True)
class Target:
    """A loaded TARGET: the function and where it came from."""

    spec: str
    module: ModuleType
    name: str
    function: Callable[..., Any]

    @property
    def is_generator(self) -> bool:
        return inspect.isgeneratorfunction(inspect.unwrap(self.function))


def load_target(spec: str, cwd: str | os.PathLike[str] | None = None) -> Target:
    """Import the module named by ``spec`` and return its function; ``UsageError`` otherwise."""
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name:
        raise UsageError(
            f"TARGET '{spec}' is not of the form FILE.py:NAME or MODULE:NAME",
            hint="for example: skyctl run examples/train.py:fibonacci",
        )
    cwd = Path(cwd or os.getcwd())
    before = set(sys.modules)
    if where.endswith(".py") or os.sep in where or "/" in where:
        module = _import_file(cwd / where, where)
        roots = [Path(module.__file__).resolve().parent, cwd.resolve()]  # type: ignore[arg-type]
    else:
        module = _import_module(where, cwd)
        roots = [cwd.resolve()]
    fn = getattr(module, name, None)
    if fn is None:
        names = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
        raise UsageError(f"'{where}' has no function '{name}'", hint=did_you_mean(name, names) or _listing(names))
    if not callable(fn):
        raise UsageError(f"'{where}:{name}' is a {type(fn).__name__}, not a function")
    fn = getattr(fn, "__skyctl_function__", fn)
    register_by_value(roots, new=set(sys.modules) - before | {module.__name__})
    return Target(spec, module, name, fn)


def _listing(names: list[str]) -> str | None:
    if not names:
        return "the module defines no public functions"
    return "it defines: " + ", ".join(sorted(names)[:10])


def _import_file(path: Path, shown: str) -> ModuleType:
    if not path.is_file():
        raise UsageError(f"no such file: {shown}", hint="TARGET files are relative to the current directory")
    path = path.resolve()
    directory = str(path.parent)
    if sys.path[:1] != [directory]:
        sys.path.insert(0, directory)  # as `python file.py` does: sibling imports work
    name = path.stem
    existing = sys.modules.get(name)
    if existing is not None and getattr(existing, "__file__", None) and Path(existing.__file__).resolve() == path:
        return existing
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot import {shown}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        del sys.modules[name]
        raise _import_error(shown, exc) from None
    return module


def _import_module(dotted: str, cwd: Path) -> ModuleType:
    if str(cwd) not in sys.path and "" not in sys.path:
        sys.path.insert(0, str(cwd))
    try:
        return importlib.import_module(dotted)
    except ModuleNotFoundError as exc:
        if exc.name and dotted.startswith(exc.name):
            raise UsageError(
                f"no module named '{dotted}'",
                hint="MODULE:NAME targets must be importable from the current directory; for a file use path/to/file.py:NAME",
            ) from None
        raise _import_error(dotted, exc) from None
    except BaseException as exc:
        raise _import_error(dotted, exc) from None


def _import_error(shown: str, exc: BaseException) -> UsageError:
    """Importing the user's module failed: say where, in one line, with the traceback as details."""
    frames = traceback.extract_tb(exc.__traceback__)
    user = [f for f in frames if "importlib" not in f.filename and not f.filename.startswith(str(Path(__file__).parent))]
    at = f" ({Path(user[-1].filename).name}, line {user[-1].lineno})" if user else ""
    if isinstance(exc, SyntaxError):
        at = f" ({Path(exc.filename or shown).name}, line {exc.lineno})"
    err = UsageError(
        f"cannot import {shown}: {type(exc).__name__}: {exc}{at}",
        hint="fix the error in your module; it is imported on this machine to read the function",
    )
    # the user's last frames only: not skyctl's, nor importlib's <frozen ...> ones in between
    err.details = "".join(traceback.format_list(user[-2:]) + traceback.format_exception_only(type(exc), exc)) if user else ""
    return err


@functools.lru_cache(maxsize=1)
def _library_dirs() -> list[str]:
    paths = sysconfig.get_paths()
    dirs = {paths.get(k, "") for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    return [str(Path(d).resolve()) for d in dirs if d]


_SKYCTL_DIR = str(Path(__file__).resolve().parent)
#: the standard library's directories as this interpreter names them (unresolved)
_LIBRARY_PREFIXES = tuple(d + os.sep for d in {sysconfig.get_paths().get(k, "") for k in ("stdlib", "platstdlib")} if d)


def is_project_module(module: ModuleType, roots: list[Path]) -> bool:
    """True for the user's own modules: under one of ``roots``, not in a library or skyctl."""
    file = getattr(module, "__file__", None)
    if not file:
        return False
    if "site-packages" in file or "dist-packages" in file or file.startswith(_LIBRARY_PREFIXES):
        return False  # the common case, decided without resolving the path (a few syscalls each)
    path = str(Path(file).resolve())
    if path.startswith(_SKYCTL_DIR) or "site-packages" in path or "dist-packages" in path:
        return False
    if any(path.startswith(lib) for lib in _library_dirs()):
        return False
    return any(path.startswith(str(root) + os.sep) for root in roots)


#: per set of roots, the modules already looked at (``Path.resolve`` of every loaded module costs
#: ~30 ms, and the API calls this before every call: each chunk of a distributed pipe)
_EXAMINED: dict[tuple[str, ...], set[str]] = {}


def register_by_value(roots: list[Path], new: set[str] | None = None) -> list[str]:
    """Make cloudpickle ship project modules by value; returns their names.

    ``new`` limits the scan to modules imported since a point (a TARGET load);
    None scans every loaded module (the Python API, where the caller's own
    modules were imported before skyctl saw them).
    """
    import cloudpickle

    seen = _EXAMINED.setdefault(tuple(map(str, roots)), set())
    names = sorted(new if new is not None else [name for name in list(sys.modules) if name not in seen])
    chosen = []
    for name in names:
        module = sys.modules.get(name)
        if module is None or name == "__main__":
            continue
        seen.add(name)  # a module's place does not change: looked at once per set of roots
        if not is_project_module(module, roots):
            continue
        try:
            cloudpickle.register_pickle_by_value(module)
        except ValueError:
            continue
        chosen.append(name)
    return chosen
