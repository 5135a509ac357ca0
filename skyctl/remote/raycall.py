"""The calls inside a Ray task for a ``type: ray`` host, streamed over a direct link to its driver.

Runs in a Ray worker process of the cluster, where skyctl is not installed:
``raytask.run_task`` (which travels by value) builds this module and the ones
it imports from their sources, which the driver put in Ray's object store
once (see ``raytask``). So it imports only the standard library and its
siblings ``flow``, ``wire``, ``values`` and ``raytask``, all stdlib only.

Ray only places and schedules the task; the data goes over a TCP connection
the task opens back to its driver (``raylink``), first sending the one-time
token it was given in its arguments. Over it the two speak skyctl's frames
and credit (``wire``, ``flow``) as the client and a worker do:

- driver → task: CALL (the call), ITEMS_IN (the stream parameter's batches,
  as the client sent them), END_IN / INPUT_FAILED, CREDIT (the client's, for
  values), CANCEL;
- task → driver: ITEMS_OUT (batches encoded exactly as a worker encodes them:
  rendered text for the CLI, a pickle for the API; the driver relays them to
  the client untouched, and the client checks them as any worker's), CREDIT
  (for input, as the task's Inbox takes it), then one RETURN, RAISE or
  CANCELLED (the driver adds the count of values sent).

A task runs its driver's calls one after another (``run``): after one ends
well it waits for the next, so a ``pipe`` slot's chunks share one task. The
next call may come while one runs (the driver attaches a slot's next chunk
ahead): it waits here, its records with it, and starts the moment the one
before it ends. Every frame names its call, both ways.

A cancel comes two ways: a CANCEL frame (the task's Outbox and Inbox stop:
the function is closed where it waits) and ``ray.cancel`` (a
``KeyboardInterrupt`` in the function, so its ``finally`` runs).
"""

from __future__ import annotations

import io
import os
import pickle
import queue
import socket
import sys
import threading
import types
from itertools import chain
from typing import Any, Callable, Iterator

from . import flow, raytask, values, wire
from .wire import Kind

#: seconds the task tries to reach its driver
CONNECT_SECONDS = 30.0
#: seconds a task waits for its first call, and for the next one after a call (the driver hands a task
#: a call only well within them: ``raysubmit``)
STANDBY_SECONDS = 30.0
LINGER_SECONDS = 5.0
#: seconds the task waits for its driver to close its end after the last frame
CLOSE_SECONDS = 10.0

#: the inbox ending the driver's INPUT_FAILED puts after the last good batch
_BROKE = "input broke"


class InputBroke(GeneratorExit):
    """Raised where the function reads past the last good record when the input broke."""


def run(link: tuple[Any, ...]) -> None:
    """Connect to the driver at ``link`` (host, port, token, the seconds to wait for a first call instead
    of ``STANDBY_SECONDS`` or None, and the driver's Unix socket and Ray node or None) and run the calls
    it sends, one after another:
    each a CALL frame (the pickled ``(payload, options)``: ``payload`` the pickled ``(fn, args, kwargs,
    stream_at)``, ``options`` the CALL's ``render``, ``shipped``, ``skip``) and that call's frames. The
    task ends when the driver closes the link, when no call came for ``STANDBY_SECONDS`` (the first) or
    ``LINGER_SECONDS`` (after one), or when a call is cancelled by ``ray.cancel``."""
    sock = _connect_local(link[4] if len(link) > 4 else None)
    try:
        if sock is None:
            sock = socket.create_connection(link[:2], timeout=CONNECT_SECONDS)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(link[2])
    except OSError as exc:
        raise ConnectionError(f"{raytask.UNREACHABLE} at {link[0]}:{link[1]}: {exc}") from None
    sock.settimeout(None)
    conn = _Link(sock)
    try:
        wait = float(link[3]) if len(link) > 3 and link[3] is not None else STANDBY_SECONDS
        while True:
            got = conn.next_call(wait)
            if got is None:
                return
            call, payload = got
            call.run(payload)
            wait = LINGER_SECONDS
    finally:
        conn.close()


def _connect_local(local: Any) -> socket.socket | None:
    """The driver's Unix socket when this task runs on the driver's own Ray node (``local``: its abstract
    name and that node's id); None elsewhere, or when it cannot be reached (then TCP, as on any node)."""
    if not local or not hasattr(socket, "AF_UNIX"):
        return None
    name, node = local
    try:
        import ray

        if str(ray.get_runtime_context().get_node_id()) != node:
            return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    except Exception:
        return None
    try:
        sock.settimeout(CONNECT_SECONDS)
        sock.connect(name)
        return sock
    except OSError:
        sock.close()
        return None


class _Link:
    """The task's end of its link: a reader thread that queues CALLs and hands the current call its frames."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.writer = wire.FrameWriter(sock.sendall)
        #: the calls the driver sent that have not ended here (the running one, and one waiting after it)
        self.open: dict[int, _Call] = {}
        self._calls: queue.SimpleQueue[tuple[_Call, bytes] | None] = queue.SimpleQueue()
        self._reader = threading.Thread(name="skyctl-ray-task-link", target=self._read,
                                        args=(wire.fd_reader(sock.fileno()),), daemon=True)
        self._reader.start()

    def next_call(self, wait: float) -> tuple[_Call, bytes] | None:
        """The next call and its payload; None when the link ended or none came within ``wait`` s."""
        try:
            return self._calls.get(timeout=wait)
        except queue.Empty:
            return None

    def _read(self, read: Callable[[int], bytes]) -> None:
        """Reader thread: CALLs queued, each call's frames to it (a frame of an ended call is ignored,
        as the worker does) until EOF: the driver closes its end when it is done with the task. It reads
        to the end, so that closing the socket never resets the connection under frames the driver has
        yet to read."""
        try:
            while True:
                kind, call_id, payload = wire.read_call_frame(read)
                if kind == Kind.CALL:  # its frames follow
                    payload, options = pickle.loads(payload)
                    call = self.open[call_id] = _Call(self, call_id, options)
                    self._calls.put((call, payload))
                    continue
                call = self.open.get(call_id)
                if call is not None:
                    call.take(kind, payload)
        except BaseException:  # noqa: BLE001 - EOF: the driver is done with the task, or gone
            pass
        self._calls.put(None)
        for call in list(self.open.values()):
            call.cancel()

    def close(self) -> None:
        """FIN, then wait for the driver's EOF before the socket goes (the Ray worker process runs other
        tasks after this one: nothing of it may stay)."""
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self._reader.join(CLOSE_SECONDS)
        self._sock.close()


class _Call:
    """One call in the task: an Outbox for its values, an Inbox for its records."""

    def __init__(self, link: _Link, call_id: int, options: dict[str, Any]) -> None:
        self.id = call_id
        render = options.get("render")
        self.render = render if render in values.MODES else None
        self.skip = int(options.get("skip") or 0)
        self.dumps = _value_dumps(tuple(options.get("shipped", ())))
        self._link = link
        writer = link.writer
        self.outbox = flow.Outbox(lambda kind, data: writer.send(kind, data, call_id), Kind.ITEMS_OUT, self.dumps,
                                  on_unsendable=self._unsendable, pack=self._pack, max_payload=wire.MAX_FRAME)
        self.inbox = flow.Inbox(lambda items, nbytes: writer.grant(items, nbytes, call_id), _loads)
        self._cancelled = False

    def take(self, kind: int, payload: bytes) -> None:
        """A frame of this call from the driver (the link's reader thread)."""
        if kind == Kind.ITEMS_IN:
            self.inbox.push(payload)
        elif kind == Kind.END_IN:
            self.inbox.end(None)
        elif kind == Kind.INPUT_FAILED:
            self.inbox.end(_BROKE)
        elif kind == Kind.CREDIT:
            self.outbox.grant(*wire.unpack_credit(payload))
        elif kind == Kind.CANCEL:
            self.cancel()

    def cancel(self) -> None:
        if not self._cancelled:
            self._cancelled = True
            self.outbox.cancel()
            self.inbox.end(flow.Cancelled())

    def run(self, payload: bytes) -> None:
        if self._cancelled:  # cancelled while it waited behind the call before it: it never runs
            self._end((Kind.CANCELLED, b""))
            return
        try:
            fn, args, kwargs, stream_at = pickle.loads(payload)
            if stream_at is not None:
                where, key = stream_at
                stream = chain.from_iterable(_input_batches(self.inbox))
                if where == "arg":
                    args = list(args)
                    args[key] = stream
                else:
                    kwargs[key] = stream
        except Exception as exc:
            self._end(self._raise(exc, "load"))
            return
        gen = vals = None
        try:
            result = fn(*args, **kwargs)
            if not isinstance(result, types.GeneratorType):
                self._end(self._result(result))
                return
            gen = result
            returned: list[Any] = []
            vals = _returning(gen, returned)
            flow.skip_written(vals, self.skip)
            outbox = self.outbox
            while True:
                outbox.wait_for_room()
                if not outbox.put_run(vals):
                    break
            self._end(self._result(returned[0] if returned else None))
        except KeyboardInterrupt:  # ray.cancel: the user's finally has run; Ray ends the task as cancelled
            _close(vals, gen)
            self._end((Kind.CANCELLED, b""))
            raise
        except (InputBroke, flow.Cancelled):  # a bad record read past, the driver's CANCEL, or a value unsendable
            _close(vals, gen)
            self._end((Kind.CANCELLED, b""))
        except (Exception, SystemExit) as exc:  # SystemExit too: Ray would take it for a dead worker
            self._end(self._raise(exc, "call"))

    def _end(self, frame: tuple[int, bytes]) -> None:
        """The values queued, then the call's last frame (the outbox's unsendable RAISE instead, if any)."""
        self.outbox.finish(frame)
        self.outbox.join()
        self._link.open.pop(self.id, None)

    def _pack(self, items: list[Any]) -> bytes:
        return flow.pack_values(items, self.render, self.dumps)

    def _result(self, value: Any) -> tuple[int, bytes]:
        return Kind.RETURN, flow.pack_return(value, self.render, self.dumps)

    def _raise(self, exc: BaseException, where: str) -> tuple[int, bytes]:
        own = os.path.dirname(run.__code__.co_filename)
        info = raytask.error_info(exc, where, lambda filename: filename.startswith(own))
        return Kind.RAISE, wire.pack_raise(info, flow.pickled_error(exc, self.render, self.dumps))

    def _unsendable(self, exc: BaseException) -> tuple[int, bytes]:
        return self._raise(flow.with_note(exc, flow.unsendable_note(self.render)), "call")


def _input_batches(inbox: flow.Inbox) -> Iterator[Any]:
    yield from inbox.batches()
    if inbox.ending == _BROKE:
        raise InputBroke()


def _returning(gen: Any, returned: list[Any]) -> Iterator[Any]:
    returned.append((yield from gen))


def _close(*gens: Any) -> None:
    for gen in gens:
        if gen is not None:
            try:
                gen.close()
            except BaseException:
                pass


class _Unpickler(pickle.Unpickler):
    """Input batches the client pickled with its cloudpickle: here Ray's own copy stands in for it."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "cloudpickle" or module.startswith("cloudpickle."):
            module = "ray." + module
            if module not in sys.modules:
                __import__(module)
        return super().find_class(module, name)


def _loads(data: Any) -> Any:
    return _Unpickler(io.BytesIO(data)).load()


def _value_dumps(shipped: tuple[str, ...]) -> Callable[[Any], bytes]:
    """Pickles values as the worker does (``values.value_dumps``), with Ray's cloudpickle: a class of a
    module the client shipped goes as ``skyctl.remote.values.shipped_class`` (a reference the client's
    decoder resolves), never by value."""
    import ray.cloudpickle as cloudpickle

    if not shipped:
        return lambda obj: cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return values.reference_dumps(cloudpickle.Pickler, frozenset(shipped), _shipped_stand_in())


def _shipped_stand_in() -> Any:
    """``skyctl.remote.values.shipped_class`` as a name pickle finds (``sys.modules``), so that it goes by
    reference: the real one when skyctl is imported here, else a stand-in registered under that name."""
    name = "skyctl.remote.values"
    module = sys.modules.get(name)
    if module is None or not hasattr(module, "shipped_class"):
        module = types.ModuleType(name)

        def shipped_class(module_name: str, qualname: str) -> type:
            raise RuntimeError(f"{module_name}.{qualname}: resolved only by the client's decoder")

        shipped_class.__module__, shipped_class.__qualname__ = name, "shipped_class"
        module.shipped_class = shipped_class  # type: ignore[attr-defined]
        sys.modules[name] = module
    return module.shipped_class
