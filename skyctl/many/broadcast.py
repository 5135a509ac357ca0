"""The group runner: something done on every host of a group at once, one ``skyctl-host-<name>``
thread per host (``on_every_host``); ``broadcast``, the same call on every host, each host's values
handed on as they arrive, is the CLI's ``run`` on a group and the pool API's ``call @ pool``;
``skyctl check`` runs its checks on it too."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Sequence

from ..errors import Cancelled, Interrupted
from .chunks import Result
from .stats import HostStats


def broadcast(hosts: Sequence[Any], start: Callable[[Any], Any], emit: Callable[[str, Any], None], *,
              fail_fast: bool = False, stats: dict[str, HostStats] | None = None,
              stop: threading.Event | None = None) -> dict[str, HostStats]:
    """Run ``start(host)`` (which starts one call, a ``CallStream``) on every
    host at once; ``emit(name, batch)`` for each batch of values as it
    arrives, and ``emit(name, Result(value))`` for a return value.

    ``hosts`` are ``api.Host``s. Returns each host's ``HostStats`` (in the
    order given); Ctrl-C (``KeyboardInterrupt`` in the calling thread) or
    ``stop`` being set cancels every call (their ``finally`` runs) and then
    re-raises / returns.
    """
    stats = stats if stats is not None else {}
    for host in hosts:
        stats.setdefault(host.label, HostStats(host.label))
    streams: dict[str, Any] = {}
    lock = threading.Lock()
    cancelled = threading.Event()
    #: what a host cancelled after ``cancel_all`` ends with: the first reason's type
    reasons: list[type[Interrupted]] = []

    def cancel_all(reason: Interrupted) -> None:
        if not cancelled.is_set():
            reasons.append(type(reason))
        cancelled.set()
        with lock:
            for stream in streams.values():
                stream.interrupt(reason)

    def one(index: int, host: Any) -> None:
        stat = stats[host.label]
        stream = None
        try:
            if cancelled.is_set():
                raise (reasons[0] if reasons else Interrupted)()
            stream = start(host)
            stat.connected = True
            with lock:
                streams[host.label] = stream
            if cancelled.is_set():
                stream.interrupt((reasons[0] if reasons else Interrupted)())
            for batch in stream.batches():
                emit(host.label, batch)
                stat.values += len(batch)  # once written: a batch ``emit`` refused is not counted
            if stream.result is not None:
                emit(host.label, Result(stream.result))
                stat.values += 1
        except BaseException as exc:  # noqa: BLE001 - every way a host ends is reported, none escapes the thread
            if isinstance(exc, Cancelled):  # --fail-fast after another host failed: this one did not
                stat.cancelled = True
            else:
                stat.error = exc
            if isinstance(exc, (Interrupted, KeyboardInterrupt)) and stream is not None:
                stream.close()  # the remote generator's finally runs
            if fail_fast and not isinstance(exc, (Interrupted, KeyboardInterrupt)):
                cancel_all(Cancelled())
        finally:
            stat.ended = time.monotonic()
            try:
                host.close()
            except BaseException:  # noqa: BLE001
                pass

    on_every_host(hosts, one, cancel=lambda: cancel_all(Interrupted()),
                  stop=None if stop is None else lambda: stop.is_set() and not cancelled.is_set())
    return {h.label: stats[h.label] for h in hosts}


def on_every_host(hosts: Sequence[Any], one: Callable[[int, Any], None], *, cancel: Callable[[], None] | None = None,
                  stop: Callable[[], bool] | None = None, interrupt_wait: float = 30.0,
                  label: Callable[[Any], str] = lambda host: host.label) -> None:
    """Run ``one(index, host)`` for every host at once, one ``skyctl-host-<label(host)>`` thread each, after
    a pause of 5 ms per index (at most 0.25 s: not every login in the same millisecond, sshd's MaxStartups);
    return when every one has. ``one`` must not raise (a host's end is its own to record).

    ``cancel()`` is called once when ``stop()`` turns true while they run, and on Ctrl-C
    (``KeyboardInterrupt`` in the calling thread), which then waits up to ``interrupt_wait`` s for
    every host to end (their calls' ``finally`` run) and is raised again.
    """
    def staggered(index: int, host: Any) -> None:
        time.sleep(min(index, 50) * 0.005)
        one(index, host)

    threads = [threading.Thread(target=staggered, args=(i, h), name=f"skyctl-host-{label(h)}", daemon=True)
               for i, h in enumerate(hosts)]
    for thread in threads:
        thread.start()
    stopped = False
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
                if not stopped and stop is not None and stop():
                    stopped = True
                    if cancel is not None:
                        cancel()
    except KeyboardInterrupt:
        if cancel is not None:
            cancel()
        for thread in threads:
            thread.join(interrupt_wait)
        raise
