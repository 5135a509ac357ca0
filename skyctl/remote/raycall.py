"""The call inside a Ray task for a ``type: ray`` host, streamed over a direct link to its driver.

Runs in a Ray worker process of the cluster, where skyctl is not installed:
``raytask.run_task`` (which travels by value) builds this module and the ones
it imports from their sources, which the driver put in Ray's object store
once (see ``raytask``). So it imports only the standard library and its
siblings ``flow``, ``wire``, ``values`` and ``raytask``, all stdlib only.

Ray only places and schedules the task; the data goes over a TCP connection
the task opens back to its driver (``raylink``), first sending the one-time
token it was given in its arguments. Over it the two speak skyctl's frames
and credit (``wire``, ``flow``) as the client and a worker do:

- driver → task: ITEMS_IN (the stream parameter's batches, as the client
  sent them), END_IN / INPUT_FAILED, CREDIT (the client's, for values),
  CANCEL;
- task → driver: ITEMS_OUT (batches encoded exactly as a worker encodes them:
  rendered text for the CLI, a pickle for the API; the driver relays them to
  the client untouched, and the client checks them as any worker's), CREDIT
  (for input, as the task's Inbox takes it), then one RETURN, RAISE or
  CANCELLED (the driver adds the count of values sent).

A cancel comes two ways: a CANCEL frame (the task's Outbox and Inbox stop:
the function is closed where it waits) and ``ray.cancel`` (a
``KeyboardInterrupt`` in the function, so its ``finally`` runs).
"""

from __future__ import annotations

import io
import os
import pickle
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
#: seconds the task waits for its driver to close its end after the last frame
CLOSE_SECONDS = 10.0

#: the inbox ending the driver's INPUT_FAILED puts after the last good batch
_BROKE = "input broke"


class InputBroke(GeneratorExit):
    """Raised where the function reads past the last good record when the input broke."""


def run(payload: bytes, link: tuple[str, int, bytes], options: dict[str, Any]) -> None:
    """Run the call ``payload`` (pickled ``(fn, args, kwargs, stream_at)``) here, its stream
    parameter and its values over a link to the driver at ``link`` (host, port, token);
    ``options``: ``render``, ``shipped``, ``skip`` as in a CALL."""
    try:
        sock = socket.create_connection(link[:2], timeout=CONNECT_SECONDS)
        sock.sendall(link[2])
    except OSError as exc:
        raise ConnectionError(f"{raytask.UNREACHABLE} at {link[0]}:{link[1]}: {exc}") from None
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    task = _Task(sock, options)
    try:
        task.run(payload)
    finally:
        task.close()


class _Task:
    """The task's end of its link: an Outbox for values, an Inbox for records, a reader thread."""

    def __init__(self, sock: socket.socket, options: dict[str, Any]) -> None:
        self._sock = sock
        render = options.get("render")
        self.render = render if render in values.MODES else None
        self.skip = int(options.get("skip") or 0)
        self.dumps = _value_dumps(tuple(options.get("shipped", ())))
        self.writer = wire.FrameWriter(sock.sendall)
        self.outbox = flow.Outbox(self.writer.send, Kind.ITEMS_OUT, self.dumps, on_unsendable=self._unsendable,
                                  pack=self._pack, max_payload=wire.MAX_FRAME)
        self.inbox = flow.Inbox(self.writer.grant, _loads)
        self._reader = threading.Thread(target=self._read, args=(wire.fd_reader(sock.fileno()),),
                                        name="skyctl-ray-task-link", daemon=True)
        self._reader.start()

    def _read(self, read: Callable[[int], bytes]) -> None:
        """Reader thread: the driver's frames to the Inbox and Outbox until EOF (the driver closes its end
        once it has the last frame); a CANCEL, EOF or garbage cancels the call. It reads to the end, so
        that closing the socket never resets the connection under frames the driver has yet to read."""
        cancelled = False
        try:
            while True:
                kind, _, payload = wire.read_call_frame(read)
                if cancelled:
                    continue
                if kind == Kind.ITEMS_IN:
                    self.inbox.push(payload)
                elif kind == Kind.END_IN:
                    self.inbox.end(None)
                elif kind == Kind.INPUT_FAILED:
                    self.inbox.end(_BROKE)
                elif kind == Kind.CREDIT:
                    self.outbox.grant(*wire.unpack_credit(payload))
                else:  # CANCEL
                    cancelled = True
                    self._cancel()
        except BaseException:  # noqa: BLE001 - EOF: the driver is done, or gone
            pass
        self._cancel()

    def _cancel(self) -> None:
        self.outbox.cancel()
        self.inbox.end(flow.Cancelled())

    def run(self, payload: bytes) -> None:
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

    def close(self) -> None:
        """After the last frame: FIN, then wait for the driver's EOF before the socket goes (the Ray
        worker process runs other tasks after this one: nothing of the call may stay)."""
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self._reader.join(CLOSE_SECONDS)
        self.outbox.cancel()
        self._sock.close()

    def _pack(self, items: list[Any]) -> bytes:
        if self.render is not None:
            return flow.pack_rendered(values.render(items, self.render), len(items))
        return flow.pack_batch(items, self.dumps)

    def _result(self, value: Any) -> tuple[int, bytes]:
        if self.render is not None and value is None:
            return Kind.RETURN, flow.pack_rendered(b"", 0)
        return Kind.RETURN, self._pack([value])

    def _raise(self, exc: BaseException, where: str) -> tuple[int, bytes]:
        own = os.path.dirname(run.__code__.co_filename)
        info = raytask.error_info(exc, where, lambda filename: filename.startswith(own))
        pickled = b""
        if self.render is None:
            try:
                pickled = self.dumps(exc)
            except BaseException:
                pickled = b""
        return Kind.RAISE, wire.pack_raise(info, pickled)

    def _unsendable(self, exc: BaseException) -> tuple[int, bytes]:
        note = "skyctl: a value the function yielded could not be " + ("sent back" if self.render else "pickled to send it back")
        return self._raise(flow.with_note(exc, note), "call")


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
            import ray.cloudpickle

            module = "ray." + module
            if module not in sys.modules:
                __import__(module)
        return super().find_class(module, name)


def _loads(data: Any) -> Any:
    return _Unpickler(io.BytesIO(data)).load()


def _value_dumps(shipped: tuple[str, ...]) -> Callable[[Any], bytes]:
    """Pickles values as the worker does (``worker._value_dumps``), with Ray's cloudpickle: a class of a
    module the client shipped goes as ``skyctl.remote.values.shipped_class`` (a reference the client's
    decoder resolves), never by value."""
    import ray.cloudpickle as cloudpickle

    if not shipped:
        return lambda obj: cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stand_in = _shipped_stand_in()
    names = frozenset(shipped)

    class ValuePickler(cloudpickle.Pickler):
        def reducer_override(self, obj: Any) -> Any:
            if isinstance(obj, type) and obj.__module__ in names:
                return stand_in, (obj.__module__, obj.__qualname__)
            return super().reducer_override(obj)

    def dumps(obj: Any) -> bytes:
        buf = io.BytesIO()
        ValuePickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
        return buf.getvalue()

    return dumps


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
