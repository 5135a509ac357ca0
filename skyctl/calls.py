"""What a user writes: ``@skyctl.function``, ``fn(args)`` (a ``Call``), ``call >> host``,
``call >> pool``, ``call @ pool``, and ``skyctl.host()`` (a ``Host``, or a ``Pool`` for a group).

Apart from ``api`` (one host) and ``pools`` (many), which know nothing of each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from .api import Host
from .config import load_config
from .errors import SkyctlError
from .pools import Pool


class Call:
    """A function with its arguments, not yet run: ``call >> host`` runs it."""

    def __init__(self, function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.function = function
        self.args = args
        self.kwargs = kwargs

    def __rshift__(self, host: Any) -> Any:
        """``call >> host``: on that host; ``call >> pool``: on the pool's least busy worker."""
        if not isinstance(host, (Host, Pool)):
            return NotImplemented
        return host.run(self)

    def __matmul__(self, pool: Any) -> Any:
        """``call @ pool``: on every host of the pool (a list of results, or ``(host, value)`` pairs)."""
        if isinstance(pool, Host):
            pool = Pool(pool.label, pool.config_path)
        if not isinstance(pool, Pool):
            return NotImplemented
        return pool.broadcast(self)

    def __repr__(self) -> str:
        return f"<Call {getattr(self.function, '__qualname__', self.function)}>"


class RemoteFunction:
    """A function marked with ``@skyctl.function``: calling it makes a ``Call``.

    Call ``.local(...)`` to run it here, as a plain function.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.__skyctl_function__ = fn
        self.local = fn
        self.__wrapped__ = fn
        for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
            setattr(self, attr, getattr(fn, attr, None))

    def __call__(self, *args: Any, **kwargs: Any) -> Call:
        return Call(self.__skyctl_function__, args, kwargs)


def function(fn: Callable[..., Any]) -> RemoteFunction:
    """Mark ``fn`` to run remotely: ``fn(args) >> skyctl.host("gpu-1")``."""
    return RemoteFunction(fn)


def host(name: str | None = None, config: str | Path | None = None, *, timeout: float | str | None = None,
         idle_timeout: float | str | None = None) -> Any:
    """A handle on the host profile ``name`` (default: ``$SKYCTL_HOST`` or the config's default);
    for a group name (or ``"a,b"``), a ``Pool``. ``timeout``/``idle_timeout``: each call's limits
    (seconds or ``"30s"``, ``"5m"``; a call past one raises ``skyctl.TimedOut``)."""
    limits = dict(timeout=timeout, idle_timeout=idle_timeout)
    if name is not None and "," in name:
        return Pool(name, config, **limits)
    try:
        target = load_config(config).resolve(name)
    except SkyctlError:
        return Host(name, config, **limits)  # the error comes with the first call, as for any host
    return Pool(name, config, **limits) if target.is_group else Host(name, config, **limits)


__all__ = ["Call", "RemoteFunction", "function", "host"]
