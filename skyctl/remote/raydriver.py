"""The Ray driver: the worker on a ``type: ray`` host's ``via`` host runs each call as a Ray task.

Shipped in the worker bundle; stdlib only at import: ``ray`` is imported from
the via host's own Python the first time a call asks for it (skyctl never
installs Ray: missing, the call fails with exit 5 and a hint).

One call, seen from here (the worker's main thread):

1. ``ray.init(address)`` once per worker process, with a deadline (an
   unreachable address makes Ray retry for minutes): exit 4 when it fails.
   A worker the client started as a Ray driver (``SKYCTL_RAY`` in its
   environment) begins importing ``ray`` and connecting at once (``warm``),
   while the client sends its first call. A spare driver (``spare``) did
   all of that, and ran a first task, before its client came (``prepare``).
2. The call runs in ``raytask.run_task``, a plain Ray task
   (``max_retries=0``: skyctl re-runs chunks itself, with the same rules as
   any host) whose arguments carry the address and one-time token of a
   ``raylink.Link``: the task connects back and the call, its records and
   values go over that link in skyctl's own frames and credit, not as Ray
   objects. The link takes the place of the call's Inbox and Outbox, so the
   client's credit paces the task end to end and a slow reader pauses it.
   A stream parameter's records flow as soon as the task is submitted.
   The call goes to the task kept from this driver's last call when it fits
   (``raysubmit``): a ``pipe`` slot's chunks run in one task. A slot's next
   chunk, which the client sends while one runs, is attached to that task
   at once by the reader thread (``attach_ahead``): its records stream
   there ahead and it starts the moment the one before it ends (no gap
   between chunks); its values reach the client after that call's end.
3. The call ends with the task's last frame.
4. A cancel (Ctrl-C, ``| head``, ``close()``, a time limit, the client
   gone) sends CANCEL over the link and calls ``ray.cancel`` (a
   ``KeyboardInterrupt`` in the task: its ``finally`` runs), then waits here
   until Ray reports the task ended before the call ends CANCELLED.
5. A task that Ray lost (its worker process or node died) ends the call with
   a RAISE marked ``failure: lost``: the client raises ``ChunkLost`` and a
   distributed ``pipe`` runs that chunk again, keeping the host (a chunk
   attached behind it in the same task is lost with it, and runs again
   too). So does a cancelled call's ``ray.cancel`` for the chunk behind it.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any, Callable

from . import flow, raylink, raysubmit, raytask
from .wire import Kind

#: the Ray versions skyctl's tests ran against (2.40.0 is the one CI installs; benchmarks ran on it too)
CHECKED_RAY = ("2.40.0", "2.60.0")
#: older than this is refused (streaming generators with backpressure)
MIN_RAY = (2, 10)
#: seconds a leaving driver waits for its kept task to end
LEAVE_SECONDS = 2.0

#: the hint of every "ray is missing or unusable" error
INSTALL_HINT = ("install ray into that host's python (the cluster's version; skyctl is checked with ray %s), "
                "or point the via host's 'python:' at an interpreter that has it; skyctl never installs Ray"
                % " and ".join(CHECKED_RAY))

_lock = threading.Lock()
#: per worker process: ray once imported, the address connected to, the connecting thread and its outcome
_state: dict[str, Any] = {"ray": None, "address": None, "thread": None, "error": None, "node": None,
                          "warming": None}


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


#: the environment variable that makes a worker a Ray driver from its start (JSON: address, connect_timeout)
WARM_ENV = "SKYCTL_RAY"


def warm(spec: str, conn: Any, input_failed: Any) -> None:
    """Import ``ray``, connect to the cluster and submit a task ahead of the first call, in the background
    (the worker's start, told by ``SKYCTL_RAY``: the address, ``connect_timeout`` and the task's
    ``resources`` and ``runtime_env``): the first call finds them done or under way. Failures are the
    first call's to see."""
    import json

    warming = _state["warming"] = threading.Event()

    def start() -> None:
        try:
            opts = json.loads(spec)
            if isinstance(opts, dict):
                ray = connect(opts, lambda: False)
                tasks = raysubmit.Tasks.of(ray, conn, input_failed, _node_address(ray))
                tasks.ahead(task_options(opts, None))
        except BaseException:  # noqa: BLE001 - the first call reports it
            pass
        finally:
            warming.set()

    threading.Thread(target=start, name="skyctl-ray-warm", daemon=True).start()


def prepare(spec: str, hold: float) -> None:
    """A spare driver, before any client (``spare``): ray imported and connected, and a task started that
    keeps the job's worker process for up to ``hold`` s without holding cluster resources
    (``Tasks.warm_up``); the first call's task leases that process. Raises ``Failure`` (the spare leaves)."""
    import json

    opts = json.loads(spec)
    ray = connect(opts, lambda: False)
    tasks = raysubmit.Tasks.of(ray, None, None, _node_address(ray))
    tasks.warm_up(task_options(opts, None), float(opts.get("connect_timeout") or 30.0), hold)
    _preload_log_filter()


def _preload_log_filter() -> None:
    """What Ray's log thread in a driver imports the first time the cluster's autoscaler logs (about 45 ms
    of CPU, and a GCS lookup, at a moment of Ray's choosing: in a spare, that was often during its client's
    run): done ahead, while the spare waits. Best effort: not every Ray has it."""
    try:
        from ray.autoscaler.v2.utils import is_autoscaler_v2

        is_autoscaler_v2()
    except Exception:
        pass


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


def task_options(opts: dict[str, Any], fn: Any) -> dict[str, Any]:
    """The ``.options()`` of one call's task: no Ray retries (skyctl re-runs chunks itself), the profile's resources."""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or "skyctl"
    options: dict[str, Any] = {"max_retries": 0, "name": str(name)}
    resources = opts.get("resources") or {}
    for key in ("num_cpus", "num_gpus", "memory"):
        if key in resources:
            options[key] = resources[key]
    if resources.get("resources"):
        options["resources"] = dict(resources["resources"])
    if opts.get("runtime_env"):
        options["runtime_env"] = opts["runtime_env"]
    return options


def execute(call: Any, conn: Any, fn: Any, args: Any, kwargs: Any, stream_at: Any, credit: tuple[int, int],
            options: dict[str, Any], input_failed: Any) -> tuple[int, bytes]:
    """Run one call as a Ray task (see the module's docstring); returns the frame that ends it."""
    opts = options["ray"]
    ahead: _CallTask | None = call.ray_task
    if ahead is not None:  # attached to the task while the call before it ran (``attach_ahead``)
        return _run(call, ahead)
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
    try:
        payload = _task_payload(call, fn, args, kwargs, stream_at, credit, options)
    except Exception as exc:
        return call.raise_frame(flow.with_note(exc, "skyctl: the call could not be pickled for its Ray task"), "load")
    warming = _state["warming"]
    if warming is not None:  # the task it submits ahead is this call's
        warming.wait(float(opts.get("connect_timeout") or 30.0))
    tasks = raysubmit.Tasks.of(ray, conn, input_failed, _node_address(ray))
    submit_options = task_options(opts, fn)
    try:
        link, ref = tasks.take(submit_options)
    except OSError as exc:
        return call.info_frame(Failure("environment", f"the Ray driver could not listen for its task: {exc}").info)
    except Exception as exc:
        return call.info_frame(Failure("environment", f"Ray refused the task: {type(exc).__name__}: {exc}",
                                       "check 'resources:' and 'runtime_env:' in the ray host's profile").info)
    with _handing:
        port = link.attach(call, payload, credit)
        task = call.ray_task = _last["attached"] = _CallTask(ray, tasks, submit_options, link, ref, port)
    del payload
    if stream_at is not None:
        port.open_input()  # records flow from now on: into the link until the task connects, then on to it
    return _run(call, task)


class _CallTask:
    """A call's task: the link it is attached to, and what ``_run`` needs to keep or drop that task."""

    def __init__(self, ray: Any, tasks: raysubmit.Tasks, submit_options: dict[str, Any], link: raylink.Link,
                 ref: Any, port: raylink.Port) -> None:
        self.ray, self.tasks, self.submit_options = ray, tasks, submit_options
        self.link, self.ref, self.port = link, ref, port


#: the call attached last to a task, until it ends: where ``attach_ahead`` puts the next
_last: dict[str, _CallTask | None] = {"attached": None}
#: held while a call is attached ahead, and while a call ending decides what becomes of its task
_handing = threading.Lock()


def attach_ahead(call: Any) -> bool:
    """The worker's reader thread, for a CALL that came while another runs: attach it to that call's task now
    (its CALL and records go there ahead, and it starts the moment the one before it ends, with no round
    trip to the client between). Only for a call whose payload is the one the task's calls were prepared
    from (a ``pipe`` slot's next chunk: nothing is unpickled here) and while the task is well: False
    otherwise, and it waits here to run as any call (a task of its own, or the kept one)."""
    last = _last["attached"]
    source, payload, streams, credit = _prepared[0]
    if last is None or source != call.payload or last.link.done.is_set():
        return False
    with _handing:  # the last call may be ending: it leaves its task to this one only if attached before
        if _last["attached"] is not last or last.link.done.is_set() or call.cancelled:
            return False
        port = last.link.attach(call, payload, credit)
        call.ray_task = _last["attached"] = _CallTask(last.ray, last.tasks, last.submit_options, last.link,
                                                      last.ref, port)
    if streams:
        port.open_input()
    return True


#: the last call's payload as the client sent it, as its task reads it, whether it takes a stream, and the
#: client's credit for its values (a ``pipe`` slot's chunks send the same payload: ``attach_ahead``)
_prepared: list[tuple[bytes, bytes, bool, tuple[int, int]]] = [(b"", b"", False, (0, 0))]


def _task_payload(call: Any, fn: Any, args: Any, kwargs: Any, stream_at: Any, credit: tuple[int, int],
                  options: dict[str, Any]) -> bytes:
    """What the task reads as the call (``raycall.run``), pickled with Ray's cloudpickle: once for the same
    payload from the client."""
    source, prepared, _, _ = _prepared[0]
    if source == call.payload:
        return prepared
    import ray.cloudpickle

    prepared = ray.cloudpickle.dumps((ray.cloudpickle.dumps((fn, args, kwargs, stream_at)),
                                      {key: options.get(key) for key in ("render", "shipped", "skip")}))
    _prepared[0] = (call.payload, prepared, stream_at is not None, credit)
    return prepared


def _run(call: Any, task: _CallTask) -> tuple[int, bytes]:
    """Wait for the call's end on its task, then keep the task for the next call, leave it to the call
    attached after this one, or drop it."""
    kept = False
    try:
        frame = _wait(task.ray, call, task.port, task.ref)
        kept = frame is task.port.terminal and not call.cancelled
        return frame
    finally:
        with _handing:
            if _last["attached"] is task:
                _last["attached"] = None
            handed = task.link.has_next(task.port)
        call.on_cancel = None
        if kept and handed:
            pass  # the call attached after this one runs in it next
        elif kept:
            task.tasks.keep(task.submit_options, task.link, task.ref)
        else:
            task.tasks.drop(task.link, task.ref)


def _wait(ray: Any, call: Any, port: raylink.Port, ref: Any) -> tuple[int, bytes]:
    """Let the link carry the call, and wait for the task's last frame of it (or for Ray to say what
    became of the task)."""

    def cancel() -> None:
        port.cancel()
        try:
            ray.cancel(ref)
        except Exception:
            pass

    call.on_cancel = cancel
    if call.cancelled:
        cancel()
    ended = threading.Event()
    ref.future().add_done_callback(lambda _: ended.set())
    port.when_ended(ended.set)
    ended.wait()
    if port.terminal is not None and not call.cancelled:
        return port.terminal  # the function has ended; the task waits for the next call
    try:  # Ray knows what became of the task (after a cancel: its finally has run)
        ray.get(ref)
        failure = None
    except Exception as exc:
        failure = exc
    if port.terminal is None:
        port.ended.wait(raylink.TOKEN_SECONDS)  # a task that ended well has sent its last frame: it is on its way
    if call.cancelled:
        return Kind.CANCELLED, b""
    if port.terminal is not None:
        return port.terminal
    if failure is None:
        return call.info_frame(Failure("lost", "the Ray task ended without finishing its stream to the driver").info)
    return call.info_frame(_ray_failure(ray, failure).info)


def leave() -> None:
    """The worker is leaving (BYE, or its client gone): the task kept for a next call ends first."""
    tasks = raysubmit.Tasks._one
    if tasks is not None:
        tasks.leave(LEAVE_SECONDS)


def _node_address(ray: Any) -> str:
    """Where a task reaches this driver: the address its Ray node registered."""
    with _lock:
        if _state["node"] is None:
            _state["node"] = ray.util.get_node_ip_address()
        return str(_state["node"])


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
    if isinstance(exc, errors.RayTaskError) and raytask.UNREACHABLE in str(exc):
        return Failure("environment", f"{raytask.UNREACHABLE}: {first}",
                       "the driver listens on the address of its Ray node (ray.util.get_node_ip_address()): "
                       "the cluster's nodes must be able to reach it, as Ray's own servers", name)
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
