"""The Ray driver: the worker on a ``type: ray`` host's ``via`` host runs each call as a Ray task.

Shipped in the worker bundle; stdlib only at import: ``ray`` is imported from
the via host's own Python the first time a call asks for it (skyctl never
installs Ray: missing, the call fails with exit 5 and a hint).

One call, seen from here (the worker's main thread):

1. ``ray.init(address)`` once per worker process, with a deadline (an
   unreachable address makes Ray retry for minutes): exit 4 when it fails.
2. A stream parameter's records (a ``pipe`` chunk) stream into the task as
   they arrive: the task is submitted at once, and a feeder thread puts each
   batch from the Inbox on this driver's input queue (a
   ``ray.util.queue.Queue`` actor, one per driver process, made at its first
   such call), tagged with the call's number; the task takes them from there.
   The queue's bound pauses the feeder, which stops taking from the Inbox,
   which stops the client's credit.
3. The task is ``raytask.run_task``, submitted as a streaming generator
   (``num_returns="streaming"``) with Ray's generator backpressure
   (``_generator_backpressure_num_objects``: the task pauses when that many
   of its results are not yet taken here) and ``max_retries=0`` (skyctl
   re-runs chunks itself, with the same rules as any host).
4. Each result taken from the generator goes into the call's normal Outbox:
   the client's credit still paces everything, so a slow reader stops this
   loop, which stops taking results, which pauses the task.
5. A cancel (Ctrl-C, ``| head``, ``close()``, the client gone) calls
   ``ray.cancel`` on the task (its ``finally`` runs there), then waits here
   until Ray reports the task ended before the call ends CANCELLED.
6. A task that Ray lost (its worker process or node died) ends the call with
   a RAISE marked ``failure: lost``: the client raises ``ChunkLost`` and a
   distributed ``pipe`` runs that chunk again, keeping the host.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any, Callable, Iterator

from . import flow, raytask
from .wire import Kind

#: the Ray versions skyctl's tests ran against (2.40.0 is the one CI installs; benchmarks ran on it too)
CHECKED_RAY = ("2.40.0", "2.60.0")
#: older than this is refused (streaming generators with backpressure)
MIN_RAY = (2, 10)
#: results (Ray objects) a task may have waiting here before it pauses: one value each for a ``run``,
#: a batch of values each for a call whose input was collected (a ``pipe`` chunk)
BACKPRESSURE_VALUES = 16
BACKPRESSURE_BATCHES = 4
#: batches an input queue holds before the driver's feeder waits (each up to flow.BATCH_ITEMS records)
INPUT_QUEUE_BATCHES = 16

#: the hint of every "ray is missing or unusable" error
INSTALL_HINT = ("install ray into that host's python (the cluster's version; skyctl is checked with ray %s), "
                "or point the via host's 'python:' at an interpreter that has it; skyctl never installs Ray"
                % " and ".join(CHECKED_RAY))

_lock = threading.Lock()
#: per worker process: ray once imported, the address connected to, the connecting thread and its outcome
_state: dict[str, Any] = {"ray": None, "address": None, "thread": None, "error": None, "remote": None,
                          "queue": None, "calls": 0}


class Failure(Exception):
    """A failure of the driver, not of the function: the client turns ``info["failure"]`` into
    ``RemoteEnvironmentError`` ("environment", exit 5), ``ConnectError`` ("connect", exit 4),
    ``ChunkLost`` ("lost", exit 6 alone; a re-run in a ``pipe``) or ``ConnectionLost`` ("driver", exit 6)."""

    def __init__(self, kind: str, message: str, hint: str | None = None, type_name: str = "RayError") -> None:
        super().__init__(message)
        self.info = {"failure": kind, "type": type_name, "message": message, "hint": hint, "traceback": "",
                     "where": "ray", "module_not_found": None}


def _import_ray() -> Any:
    if _state["ray"] is not None:
        return _state["ray"]
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")  # each task's output as it is, not "[repeated 3x]"
    os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # no colour codes in forwarded task output
    try:
        import ray
    except ImportError as exc:
        raise Failure("environment", f"ray is not importable by the Ray driver's python {sys.executable} ({exc})",
                      INSTALL_HINT, type(exc).__name__) from None
    version = getattr(ray, "__version__", "0")
    try:
        major_minor = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        major_minor = (0, 0)
    if major_minor < MIN_RAY:
        raise Failure("environment", f"ray {version} on the driver's python {sys.executable} is older than "
                      f"{'.'.join(map(str, MIN_RAY))}, the oldest skyctl supports", INSTALL_HINT)
    # ray.init from a thread (it has a deadline) would warn that it cannot set its SIGTERM handler
    logging.getLogger("ray._private.worker").addFilter(
        lambda record: "SIGTERM handler is not set" not in str(record.getMessage()))
    _state["ray"] = ray
    return ray


def connect(opts: dict[str, Any], cancelled: Callable[[], bool]) -> Any:
    """``ray`` connected to ``opts["address"]`` (once per process); raises ``Failure``."""
    ray = _import_ray()
    address = str(opts.get("address") or "auto")
    timeout = float(opts.get("connect_timeout") or 30.0)
    with _lock:
        if _state["address"] is not None and ray.is_initialized():
            if _state["address"] != address:
                raise Failure("environment", f"this driver is connected to the Ray cluster at {_state['address']}, "
                              f"not {address}")
            return ray
        thread = _state["thread"]
        if thread is None or not thread.is_alive():
            done = threading.Event()

            def init() -> None:
                try:
                    ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True,
                             ignore_reinit_error=True)
                    _state["address"] = address
                    _state["error"] = None
                except BaseException as exc:  # noqa: BLE001 - reported to the call
                    _state["error"] = exc
                finally:
                    done.set()

            thread = threading.Thread(target=init, name="skyctl-ray-init", daemon=True)
            thread.done = done  # type: ignore[attr-defined]
            _state["thread"] = thread
            _state["error"] = None
            thread.start()
    done = thread.done  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    while not done.wait(min(0.1, max(0.0, deadline - time.monotonic()))):
        if cancelled():
            return None
        if time.monotonic() >= deadline:
            raise Failure("connect", f"could not connect to the Ray cluster at {address} within {timeout:g} s",
                          "check that the cluster runs and that 'address:' is right as seen from the via host; "
                          "raise 'connect_timeout' for a slow cluster")
    error = _state["error"]
    if error is not None:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise Failure("connect", f"could not connect to the Ray cluster at {address}: {first}",
                      "start it (ray start --head) or set 'address:' in the ray host's profile", type(error).__name__)
    return ray


def _remote(ray: Any) -> Any:
    """``raytask.run_task`` as a Ray remote function (made once per process); it travels by value."""
    if _state["remote"] is None:
        import ray.cloudpickle

        ray.cloudpickle.register_pickle_by_value(raytask)
        _state["remote"] = ray.remote(raytask.run_task)
    return _state["remote"]


def task_options(opts: dict[str, Any], fn: Any, batched: bool) -> dict[str, Any]:
    """The ``.options()`` of one call's task: streaming, Ray's backpressure, no Ray retries, the profile's resources."""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or "skyctl_task"
    options: dict[str, Any] = {
        "num_returns": "streaming",
        "_generator_backpressure_num_objects": BACKPRESSURE_BATCHES if batched else BACKPRESSURE_VALUES,
        "max_retries": 0,
        "name": str(name),
    }
    resources = opts.get("resources") or {}
    for key in ("num_cpus", "num_gpus", "memory"):
        if key in resources:
            options[key] = resources[key]
    if resources.get("resources"):
        options["resources"] = dict(resources["resources"])
    if opts.get("runtime_env"):
        options["runtime_env"] = opts["runtime_env"]
    return options


def execute(call: Any, fn: Any, args: Any, kwargs: Any, stream_at: Any, opts: dict[str, Any],
            grant_input: Callable[[], None], input_failed: Any) -> tuple[int, bytes]:
    """Run one call as a Ray task (see the module's docstring); returns the frame that ends it."""
    try:
        ray = connect(opts, lambda: call.cancelled)
    except Failure as failure:
        return call.info_frame(failure.info)
    if ray is None or call.cancelled:
        return Kind.CANCELLED, b""
    if opts.get("in_driver"):  # ``skyctl check``: a probe that runs here, not as a task
        try:
            return call.result_frame(fn(*args, **kwargs))
        except Exception as exc:
            return call.raise_frame(exc, "call")
    source: tuple[Any, int] | None = None
    if stream_at is not None:
        try:
            source = (_input_queue(ray), _next_call())
        except Exception as exc:
            return call.info_frame(Failure("environment", f"Ray refused the input queue: {type(exc).__name__}: {exc}",
                                           "check the cluster: the queue is an actor with num_cpus=0").info)
    try:
        import ray.cloudpickle

        payload = ray.cloudpickle.dumps((fn, args, kwargs, stream_at))
    except Exception as exc:
        return call.raise_frame(flow.with_note(exc, "skyctl: the call could not be pickled for its Ray task"), "load")
    batched = stream_at is not None
    try:
        gen = _remote(ray).options(**task_options(opts, fn, batched)).remote(payload, None, False, batched, source)
    except Exception as exc:
        return call.info_frame(Failure("environment", f"Ray refused the task: {type(exc).__name__}: {exc}",
                                       "check 'resources:' and 'runtime_env:' in the ray host's profile").info)
    del payload
    feeding = threading.Event()
    if source is not None:
        grant_input()
        feeding.set()
        threading.Thread(target=_feed, args=(call, source, feeding, input_failed), name="skyctl-ray-input",
                         daemon=True).start()

    def cancel() -> None:
        try:
            ray.cancel(gen)
        except Exception:
            pass

    call.on_cancel = cancel
    if call.cancelled:
        cancel()
    returned: list[Any] = []
    ending: list[tuple[Any, ...]] = []

    def values() -> Iterator[Any]:
        for ref in gen:
            item = ray.get(ref)
            tag = item[0]
            if tag == raytask.VALUE:
                yield item[1]
            elif tag == raytask.BATCH:
                yield from item[1]
            elif tag == raytask.RETURN:
                returned.append(item[1])
            else:
                ending.append(item)

    try:
        delivered = values()
        flow.skip_written(delivered, call.skip)
        _deliver(call, delivered)
    except flow.Cancelled:  # the client cancelled, or a value could not be sent back (the outbox says which)
        cancel()
        _drain(ray, gen)
        return Kind.CANCELLED, b""
    except flow.ChunkMismatch as exc:
        cancel()
        _drain(ray, gen)
        return call.raise_frame(exc, "call")
    except Exception as exc:  # from Ray: the task was cancelled, lost, or could not run
        if call.cancelled:
            _drain(ray, gen)
            return Kind.CANCELLED, b""
        return call.info_frame(_ray_failure(ray, exc).info)
    finally:
        call.on_cancel = None
        if feeding.is_set():  # the task has ended: what is still coming for it is not needed
            feeding.clear()
            call.inbox.end(flow.Cancelled())
    if ending and ending[0][0] == raytask.RAISE:
        return call.info_frame(ending[0][1], ending[0][2])
    if ending and ending[0][0] == raytask.STOPPED:
        return Kind.CANCELLED, b""
    return call.result_frame(returned[0] if returned else None)


def _input_queue(ray: Any) -> Any:
    """This driver's input queue (made once per process): an actor that needs no CPU, so that it
    is placed even when every CPU runs a task."""
    with _lock:
        if _state["queue"] is None:
            from ray.util.queue import Queue

            _state["queue"] = Queue(maxsize=INPUT_QUEUE_BATCHES, actor_options={"num_cpus": 0})
        return _state["queue"]


def _next_call() -> int:
    with _lock:
        _state["calls"] += 1
        return int(_state["calls"])


def _feed(call: Any, source: tuple[Any, int], feeding: threading.Event, input_failed: Any) -> None:
    """Feeder thread: the call's input batches onto the queue as they arrive, then how it ended;
    stops once ``feeding`` is cleared (the task ended, or was cancelled)."""
    queue, number = source
    for batch in call.inbox.batches():
        if not _put(queue, (number, list(batch)), feeding):
            return
    ending = call.inbox.ending
    if call.cancelled or isinstance(ending, flow.Cancelled):
        return  # the task is cancelled: it reads no more
    _put(queue, (number, raytask.INPUT_BROKE if ending is input_failed else raytask.INPUT_END), feeding)


def _put(queue: Any, item: Any, feeding: threading.Event) -> bool:
    """Put ``item`` on the queue, waiting while it is full; False once ``feeding`` is cleared."""
    from ray.util.queue import Full

    while feeding.is_set():
        try:
            queue.put(item, block=True, timeout=0.5)
            return True
        except Full:
            continue
    return False


def _deliver(call: Any, values: Iterator[Any]) -> None:
    """Values into the call's Outbox as its credit allows."""
    outbox = call.outbox
    while True:
        outbox.wait_for_room()
        if not outbox.put_run(values):
            return


def _drain(ray: Any, gen: Any) -> None:
    """Take the task's remaining results until it ends: after ``ray.cancel``, its ``finally`` has then run."""
    try:
        for ref in gen:
            ray.get(ref)
    except Exception:
        pass


def _ray_failure(ray: Any, exc: BaseException) -> Failure:
    """What an exception Ray raised while the call ran means for the client."""
    errors = ray.exceptions
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    name = type(exc).__name__
    environment = tuple(getattr(errors, n) for n in ("RuntimeEnvSetupError", "TaskUnschedulableError", "OutOfDiskError")
                        if hasattr(errors, n))
    if isinstance(exc, environment):
        return Failure("environment", f"Ray could not run the task: {name}: {first}",
                       "check 'resources:' and 'runtime_env:' in the ray host's profile", name)
    if isinstance(exc, errors.RayTaskError) and not isinstance(exc, errors.TaskCancelledError):
        # raised in the task outside the user's code (which run_task reports itself): e.g. a value Ray could not
        # serialize; the function's failure, not the host's
        failure = Failure("", f"{name}: {first}", None, name)
        failure.info.update(failure=None, message=first, traceback=str(exc), where="call")
        return failure
    if isinstance(exc, getattr(errors, "LocalRayletDiedError", ())):
        return Failure("driver", f"the Ray node of the driver died: {first}", None, name)
    if isinstance(exc, errors.RayError):
        return Failure("lost", f"the Ray task was lost: {name}: {first}", None, name)
    return Failure("lost", f"the Ray task's result could not be read: {name}: {first}", None, name)


def cluster_info() -> dict[str, Any]:
    """What ``skyctl check`` shows for a ray host (runs in the driver, connected)."""
    import ray

    resources = ray.cluster_resources()
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    return {
        "ray": ray.__version__,
        "nodes": len(nodes),
        "cpus": float(resources.get("CPU", 0)),
        "gpus": float(resources.get("GPU", 0)),
        "address": _state["address"],
    }
