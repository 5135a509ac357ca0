"""How the Ray driver gets a task for a call: the remote function, the modules it builds, the task kept.

- The remote function is ``raytask.run_task``, registered with Ray's
  cloudpickle to travel by value and exported once per driver process; the
  modules it builds (``raytask.MODULES``) are put in Ray's object store once,
  as source text.
- A task gets only its link's addresses and token (``raylink.Link``); its
  calls come over the link (``Link.attach``). A task whose call ended well is
  kept (``keep``) and the driver's next call with the same ``.options()``
  runs in it (``take``): a ``pipe`` slot's chunks follow one another in one
  task, each a call of the function of its own, without a lease, a start
  and a connection per chunk. A kept task waits at most
  ``raycall.LINGER_SECONDS`` for its next call (holding its resources
  meanwhile) and is used only well within that; one of other options is
  dropped (its link closed, ``ray.cancel``).
- A driver told its host's resources at its start (``raydriver.warm``)
  submits a task ahead of its first call (``ahead``), so that Ray starts a
  worker process for it while the call is on its way.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from . import raylink, raytask
from .raycall import LINGER_SECONDS, STANDBY_SECONDS

class Tasks:
    """This driver process's task submission (one: ``of``)."""

    _one: Tasks | None = None
    _lock = threading.Lock()

    @classmethod
    def of(cls, ray: Any, conn: Any, input_failed: Any, host: str) -> Tasks:
        """The one, its links sending to ``conn`` from now on (a spare's warm-up had none: ``None``)."""
        with cls._lock:
            if cls._one is None:
                cls._one = cls(ray, conn, input_failed, host)
            elif conn is not None:
                cls._one._conn, cls._one._input_failed = conn, input_failed
            return cls._one

    def __init__(self, ray: Any, conn: Any, input_failed: Any, host: str) -> None:
        import ray.cloudpickle

        ray.cloudpickle.register_pickle_by_value(raytask)
        self._ray = ray
        self._remote = ray.remote(raytask.run_task)
        self._conn = conn
        self._input_failed = input_failed
        self._host = host
        try:  # a task on this node connects over a Unix socket (``raylink.Link.local``)
            self._node: str | None = str(ray.get_runtime_context().get_node_id())
        except Exception:
            self._node = None
        self._code: tuple[str, list[Any]] | None = None
        #: the task kept for the next call: ``(its options' key, used until, link, ref)``; it is used only
        #: well within the time it waits (``raycall.STANDBY_SECONDS``, ``LINGER_SECONDS``)
        self._kept: tuple[str, float, raylink.Link, Any] | None = None
        #: a spare's warm-up task (``warm_up``): its link and ref
        self._warm: tuple[raylink.Link, Any] | None = None

    def take(self, options: dict[str, Any]) -> tuple[raylink.Link, Any]:
        """A task for a call with these ``.options()``: the one kept when it fits, else a new one."""
        with self._lock:
            kept, self._kept = self._kept, None
        if kept is not None:
            key, until, link, ref = kept
            if key == _key(options) and time.monotonic() < until and not link.done.is_set():
                return link, ref
            self.drop(link, ref)
        return self._submit(options)

    def keep(self, options: dict[str, Any], link: raylink.Link, ref: Any, first: bool = False) -> None:
        """A task for the next call: one whose call ended well, or (``first``) one submitted ahead of any."""
        until = time.monotonic() + (STANDBY_SECONDS if first else LINGER_SECONDS) / 2
        with self._lock:
            old, self._kept = self._kept, (_key(options), until, link, ref)
        if old is not None:
            self.drop(old[2], old[3])

    def ahead(self, options: dict[str, Any]) -> None:
        """Submit a task before any call (the driver's start): Ray leases and starts its worker process
        while the first call is on its way (a spare's warm-up task lets its worker go first, for this one
        to lease). A failure is the first call's to see."""
        self.release_warm(2.0)
        try:
            link, ref = self._submit(options)
        except Exception:
            return
        self.keep(options, link, ref, first=True)

    def warm_up(self, options: dict[str, Any], timeout: float, hold: float) -> None:
        """Start a task that asks for no resources and waits up to ``hold`` s for a call that never comes
        (a spare driver, before its client): Ray starts the job's worker process, which builds the modules;
        the task keeps it busy, so Ray does not end it as an idle worker while the spare waits, and it
        holds none of the cluster's CPUs, GPUs or memory. ``release_warm`` lets it go."""
        free = {key: value for key, value in options.items() if key not in ("num_gpus", "memory", "resources")}
        link, ref = self._submit({**free, "num_cpus": 0}, standby=hold)
        self._warm = (link, ref)
        link.connected.wait(timeout)

    def release_warm(self, timeout: float) -> None:
        """End the warm-up task (its worker process goes back to Ray idle, for the call's task to lease)."""
        warm, self._warm = self._warm, None
        if warm is not None:
            warm[0].close()  # the task sees EOF before any call and ends
            try:
                self._ray.wait([warm[1]], timeout=timeout)
            except Exception:
                pass

    def _submit(self, options: dict[str, Any], standby: float | None = None) -> tuple[raylink.Link, Any]:
        conn = self._conn  # None: a spare's warm-up, whose task gets no call
        link = raylink.Link(conn.send if conn else _no_client, conn.grant if conn else _no_client,
                            self._input_failed, self._host, self._node)
        try:
            args = (*link.address, link.token, standby, link.local)
            ref = self._remote.options(**options).remote(args, self._code_ref())
        except BaseException:
            link.close()
            raise
        return link, ref

    def leave(self, wait: float) -> None:
        """The driver is leaving: let the kept task go and wait (up to ``wait`` s) until it has ended, so
        that its worker process goes back to Ray idle, as after any task, rather than killed busy."""
        self.release_warm(wait)
        with self._lock:
            kept, self._kept = self._kept, None
        if kept is not None:
            kept[2].close()
            try:
                self._ray.wait([kept[3]], timeout=wait)
            except Exception:
                pass

    def drop(self, link: raylink.Link, ref: Any) -> None:
        """Let the task go: its link closed (it ends), ``ray.cancel`` (if it had not started)."""
        link.close()
        try:
            self._ray.cancel(ref)
        except Exception:
            pass

    def _code_ref(self) -> tuple[str, list[Any]]:
        """The modules' sources in Ray's object store (once): their digest and, in a list (Ray then hands the
        task the reference, not the text), the reference."""
        if self._code is None:
            import hashlib
            import importlib

            import importlib.util
            import marshal

            sources = {}
            for name in raytask.MODULES:
                module = importlib.import_module(f"{__package__}.{name}")
                sources[name] = module.__loader__.get_source(module.__name__)  # type: ignore[union-attr]
            digest = hashlib.sha256("\0".join(sources[n] for n in raytask.MODULES).encode()).hexdigest()
            # compiled here too: a task whose Python reads this bytecode (Ray wants the driver's Python on the
            # cluster) skips compiling them, which costs a task start tens of ms
            compiled = {name: marshal.dumps(compile(sources[name], raytask.filename(name), "exec"))
                        for name in raytask.MODULES}
            self._code = (digest, [self._ray.put((sources, importlib.util.MAGIC_NUMBER, compiled))])
        return self._code


def _no_client(*_: Any) -> None:
    raise OSError("no client yet")


def _key(options: dict[str, Any]) -> str:
    """What a task's options must share with a call's to run it: all but the name (Ray's display only)."""
    return json.dumps({k: v for k, v in options.items() if k != "name"}, sort_keys=True, default=repr)
