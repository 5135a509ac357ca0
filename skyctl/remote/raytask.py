"""What runs inside a Ray task for a ``type: ray`` host.

Shipped in the worker bundle like ``worker.py``, but it runs in a Ray worker
process of the cluster, where skyctl is not installed: the driver
(``raydriver``) registers this module with Ray's cloudpickle to travel *by
value*, so everything here must be self-contained (stdlib only; ``pickle``
loads what the driver pickled with ``ray.cloudpickle``, which imports ``ray``
there, as every Ray worker has it). Nothing here may refer to another skyctl
module: it would be pickled by reference and fail to import on the cluster.

``run_task`` is a Ray streaming generator: it runs the user's function and
yields tagged tuples the driver turns into frames:

- ``(VALUE, v)``: one value (a ``run``: every value is its own Ray object, so
  the first one reaches the client while the task still runs);
- ``(BATCH, [v, ...])``: several values (a call whose input was collected, a
  ``pipe`` chunk: one Ray object per value would cost more than the function);
- ``(RETURN, v)``: the function's return value (``None`` for a generator
  that returned nothing); the last item;
- ``(RAISE, info, exc)``: the function raised: ``info`` holds its type,
  message and traceback (this module's frames removed), ``exc`` the exception
  when it pickles, else None; the last item;
- ``(STOPPED,)``: the input broke (a bad stdin record) and the function read
  past its last good record: it was closed there; the last item.

A cancel (``ray.cancel``) raises ``KeyboardInterrupt`` in the task: it goes
through the user's code (its ``finally`` runs) and on out, so that Ray ends
the task as cancelled.
"""

from __future__ import annotations

import pickle
import time
import traceback
import types
from typing import Any, Callable, Iterator

VALUE, BATCH, RETURN, RAISE, STOPPED = range(5)

#: a batch is yielded once it holds this many values ...
BATCH_VALUES = 256
#: ... or when a value comes this many seconds after the last batch was yielded
BATCH_SECONDS = 0.01


class InputBroke(GeneratorExit):
    """Raised where the function reads past the last good record when the input broke."""


def _records(records: list[Any], broke: bool) -> Iterator[Any]:
    yield from records
    if broke:
        raise InputBroke()


#: what the driver puts on an input queue after a call's batches: the input ended, or broke
INPUT_END, INPUT_BROKE = "end", "broke"


def _queued(source: tuple[Any, int]) -> Iterator[Any]:
    """The records the driver puts on its input queue (a ``ray.util.queue.Queue``) for call
    ``number``, as they come: ``(number, batch)`` items, then ``(number, INPUT_END)`` or
    ``INPUT_BROKE``. Items of an earlier call (one that ended before reading all) are skipped."""
    queue, number = source
    while True:
        tag, item = queue.get(block=True)
        if tag != number:
            continue
        if item == INPUT_END:
            return
        if item == INPUT_BROKE:
            raise InputBroke()
        yield from item


def run_task(payload: bytes, records: list[Any] | None, broke: bool, batched: bool,
             source: tuple[Any, int] | None = None) -> Iterator[tuple[Any, ...]]:
    """Run the call ``payload`` (pickled ``(fn, args, kwargs, stream_at)``) here;
    ``records`` feed the stream parameter (``stream_at``) as an iterator, or (``source``:
    the driver's input queue and this call's number) the records streamed through the queue."""
    try:
        fn, args, kwargs, stream_at = pickle.loads(payload)
        if stream_at is not None:
            where, key = stream_at
            stream = _queued(source) if source is not None else _records(records or [], broke)
            if where == "arg":
                args = list(args)
                args[key] = stream
            else:
                kwargs[key] = stream
    except Exception as exc:
        yield _failure(exc, "load")
        return
    gen = None
    batch: list[Any] = []
    try:
        result = fn(*args, **kwargs)
        if not isinstance(result, types.GeneratorType):
            yield (RETURN, result)
            return
        gen = result
        if not batched:
            while True:
                try:
                    value = next(gen)
                except StopIteration as stop:
                    yield (RETURN, stop.value)
                    return
                yield (VALUE, value)
        last = time.monotonic()
        while True:
            try:
                value = next(gen)
            except StopIteration as stop:
                if batch:
                    yield (BATCH, batch)
                    batch = []
                yield (RETURN, stop.value)
                return
            batch.append(value)
            now = time.monotonic()
            if len(batch) >= BATCH_VALUES or now - last >= BATCH_SECONDS:
                yield (BATCH, batch)
                batch = []
                last = now
    except InputBroke:
        if batch:
            yield (BATCH, batch)
        _close(gen)
        yield (STOPPED,)
    except KeyboardInterrupt:  # ray.cancel: the user's finally has run; Ray ends the task as cancelled
        _close(gen)
        raise
    except (Exception, SystemExit) as exc:  # SystemExit too: Ray would take it for a dead worker
        if batch:
            yield (BATCH, batch)
        yield _failure(exc, "call")


def _close(gen: Any) -> None:
    if gen is not None:
        try:
            gen.close()
        except BaseException:
            pass


def error_info(exc: BaseException, where: str, is_own: Callable[[str], bool]) -> dict[str, Any]:
    """What a RAISE frame says of an exception: type name, message, and the
    traceback text without the frames of files ``is_own`` names (skyctl's).
    Here, not in ``worker``, because this module travels to a Ray task by
    value, alone: the worker uses it too."""
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


def _failure(exc: BaseException, where: str) -> tuple[Any, ...]:
    """``(RAISE, info, exc)``: what the worker's RAISE frame needs, this module's frames removed."""
    own = run_task.__code__.co_filename
    info = error_info(exc, where, lambda filename: filename == own)
    try:
        import ray.cloudpickle as cp

        cp.loads(cp.dumps(exc))
        kept: BaseException | None = exc
    except Exception:
        kept = None
    if kept is not None:
        kept.__traceback__ = None
    return (RAISE, info, kept)
