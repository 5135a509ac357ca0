"""The Python API's ``Host``: one host profile, ready to run calls (``call >> host`` lands here).

The CLI goes through the same ``start_call`` as ``call >> host`` (``Host.start``): one path
from a function and its arguments to a running ``CallStream``; ``start_call`` adds what the
CLI and the scheduler ask of a call (``render``, ``skip``) outside the public ``Host``.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any, Callable, Generic, Iterable, TypeVar

from .hosttypes import host_type, make_transport
from .errors import RemoteError, RemoteTraceback, SkyctlError, UsageError
from .callstream import CallStream, Limits
from .session import Hooks, WorkerSession, WorkerSpec, liveness_of
from .trust import Decoder

T = TypeVar("T")


class Host:
    """A host profile from ``skyward.yaml``, ready to run calls.

    Constructing it does no I/O: the config is read and the host reached on
    the first call. Used as a context manager it keeps one connection and one
    worker for every call inside the block; otherwise each call gets its own
    worker, closed when the call ends.

    Args:
        name: profile name; None → ``$SKYCTL_HOST``, else the config's ``default``.
        config: path of a ``skyward.yaml``; None → the usual lookup.
        hooks: where remote output and status go (default: remote output to stderr).
        timeout: seconds (or a duration such as ``"30s"``, ``"5m"``) each call may run; the
            worker ends the function at the limit and the call raises ``skyctl.TimedOut``.
            None: ``$SKYCTL_TIMEOUT``, else the profile's ``timeout:``, else no limit.
        idle_timeout: the same for a call that sends no value and takes no input item for
            that long (None: ``$SKYCTL_IDLE_TIMEOUT``, else no limit).
    """

    def __init__(self, name: str | None = None, config: str | Path | None = None, *,
                 hooks: Hooks | None = None, reuse: bool | None = None, timeout: float | str | None = None,
                 idle_timeout: float | str | None = None, limit_names: tuple[str, str] = ("timeout=", "idle_timeout=")) -> None:
        #: the limits given here (None: from the environment or the profile), and how messages name them
        self._timeout = duration_limit(timeout, limit_names[0])
        self._idle_timeout = duration_limit(idle_timeout, limit_names[1])
        self._limit_names = limit_names
        self._name = name
        self._config_path = config
        self._reuse = reuse
        self.hooks = hooks or Hooks(log=log_to_stderr)
        self._profile: Any = None
        self._config: Any = None
        self._transport: Any = None
        self._session: WorkerSession | None = None
        #: keep the worker after a call ends (inside ``with host:``, or for a pool's slot)
        self.keep_worker = False
        #: a worker being started in the background (``start_worker_early``)
        self._early: Any = None
        self._early_error: BaseException | None = None

    # -- the profile -------------------------------------------------------
    @property
    def profile(self) -> Any:
        """The validated ``HostProfile`` (reads the config on first use)."""
        if self._profile is None:
            from .config import load_config

            self._config = load_config(self._config_path)
            self._profile = self._config.host(self._name)
        return self._profile

    @property
    def config_path(self) -> str | Path | None:
        """The config file it reads (None: the usual search)."""
        return self._config_path

    @property
    def label(self) -> str:
        return self.profile.name

    def __repr__(self) -> str:
        return f"<Host {self._name or '(default)'}>"

    # -- lifecycle -----------------------------------------------------------
    def __enter__(self) -> Host:
        self.keep_worker = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start_worker_early(self) -> None:
        """Start the worker now, in the background, so that its start-up
        overlaps what the caller does before the first call (the CLI imports
        the target meanwhile). An error surfaces at the first call.

        Only for a ``local`` host (or a ray host whose driver runs on one):
        starting it cannot hang on the network, so ``close()`` may always wait for it.
        """
        import threading

        kind = host_type(self.profile)
        reached = kind.reached_via(self.profile, self._config)  # a ray host: where its driver starts
        if self._early is not None or self._session is not None or not host_type(reached).starts_early:
            return

        def start() -> None:
            try:
                self._worker()
            except BaseException as exc:  # raised again by the first call
                self._early_error = exc

        self._early = threading.Thread(target=start, name="skyctl-early-worker", daemon=True)
        self._early.start()

    def connect(self) -> None:
        """Start the worker now (blocking), so that the first call finds it ready."""
        self._worker()

    def _join_early(self) -> None:
        early, self._early = self._early, None
        if early is not None:
            early.join()
        error, self._early_error = self._early_error, None
        if error is not None:
            raise error

    def close(self) -> None:
        """Close the worker and connection held. Safe to call twice."""
        try:
            self._join_early()
        except BaseException:
            pass  # the worker never started: nothing more to close than what it left
        session, self._session = self._session, None
        if session is not None:
            session.close()
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()

    def _worker(self) -> WorkerSession:
        if self._early is not None and not _on_thread(self._early):
            self._join_early()
        if self._session is not None and not self._session.dead:
            return self._session
        if self._session is not None:
            self._session.close()
        profile = self.profile
        kind = host_type(profile)
        if self._transport is None:
            self.hooks.status("connecting")
            self._transport = make_transport(profile, self._config, reuse=self._reuse,
                                             warn=lambda m: self.hooks.log(2, f"warning: {m}\n".encode()))
        name = kind.worker_name(profile)
        reached = kind.reached_via(profile, self._config)  # a ray host's driver: started on the via host as for it
        spec = WorkerSpec(
            python=reached.python or host_type(reached).default_python(),
            workdir=reached.workdir,
            env={**reached.env, **kind.worker_env(profile)},  # a ray driver: where it connects as it starts
            pip=tuple(getattr(reached, "pip", ())),
            timeout=reached.connect_timeout,
            liveness=liveness_of(reached),
            slack=host_type(reached).liveness_slack(reached),
        )
        session = WorkerSession(self._transport, spec, self.hooks, name=name)
        session.start()
        self._session = session
        return session

    def check(self) -> dict[str, Any]:
        """Start a worker and time one empty call: what ``skyctl check`` reports."""
        import os
        import time

        session = self._worker()
        about = host_type(self.profile).check_info(session, self.profile)
        started = time.monotonic()
        call = session.call(os.getpid, (), {})
        for _ in call:
            pass
        return {
            "python": session.hello.get("python"),
            "pid": call.result,
            "rtt_ms": (time.monotonic() - started) * 1000,
            "sent_bundle": session.sent_bundle,
            "about": about,
        }

    @property
    def pipelines(self) -> bool:
        """Whether this host's worker takes a call while another runs (a distributed ``pipe`` starts
        the next chunk's call there before the current one ends): its type's (``hosttypes``)."""
        return host_type(self.profile).pipelines

    def limits(self, timeout: float | str | None = None, idle_timeout: float | str | None = None) -> Limits:
        """A call's time limits: ``timeout``/``idle_timeout`` given for the call, else this host's
        (the constructor's, e.g. ``--timeout``), else ``$SKYCTL_TIMEOUT``/``$SKYCTL_IDLE_TIMEOUT``,
        else the profile's ``timeout:``."""
        import os

        def pick(own: float | None, own_name: str, env: str, profile: float | None, profile_name: str) -> tuple[float | None, str]:
            if own is not None:
                return own, own_name
            text = os.environ.get(env, "").strip()
            if text:
                return duration_limit(text, env), env
            return profile, profile_name

        timeout_value, timeout_source = pick(duration_limit(timeout, "timeout="), "timeout=", "", None, "")
        if timeout_value is None:
            timeout_value, timeout_source = pick(self._timeout, self._limit_names[0], "SKYCTL_TIMEOUT",
                                                 getattr(self.profile, "timeout", None), "the profile's timeout:")
        idle_value, idle_source = pick(duration_limit(idle_timeout, "idle_timeout="), "idle_timeout=", "", None, "")
        if idle_value is None:
            idle_value, idle_source = pick(self._idle_timeout, self._limit_names[1], "SKYCTL_IDLE_TIMEOUT", None, "")
        return Limits(timeout_value, idle_value, timeout_source, idle_source)

    # -- calls ---------------------------------------------------------------
    def start(self, fn: Callable[..., Any], args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None,
              *, stream: str | None = None, timeout: float | str | None = None,
              idle_timeout: float | str | None = None) -> CallStream:
        """Start ``fn(*args, **kwargs)`` on this host; an iterable given to an
        ``Iterator[T]`` parameter is streamed lazily (only the one named
        ``stream`` when given: the others are sent whole). Values are decoded
        with this host's ``decoder``. ``timeout``, ``idle_timeout``: this call's
        limits (see ``limits``).
        """
        return start_call(self, fn, args, kwargs, stream=stream, timeout=timeout, idle_timeout=idle_timeout)

    @property
    def decoder(self) -> Decoder:
        """How values from this host are unpickled: plain data only, unless the
        profile says ``trust: full`` or ``allow:``s more classes."""
        profile = self.profile
        return Decoder(self.label, allow=getattr(profile, "allow", ()), full=getattr(profile, "trust", "data") == "full")

    def run(self, call: Any) -> Any:
        """What ``call >> host`` does: an iterator for a generator function, else the value."""
        stream = self.start(call.function, call.args, call.kwargs)
        on_end = None if self.keep_worker else self.close
        if inspect.isgeneratorfunction(inspect.unwrap(call.function)):
            # Not held in a local: this frame can outlive the call (connecting
            # leaves paramiko's reference cycles through it until the next gc),
            # and leaving a for loop early closes the remote generator only if
            # the iterator is freed at once.
            return RemoteIterator(stream, on_end=on_end)
        with RemoteIterator(stream, on_end=on_end) as results:
            for _ in results:
                pass
        return stream.result


def start_call(host: Host, fn: Callable[..., Any], args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None,
               *, stream: str | None = None, render: str | None = None, skip: int = 0,
               timeout: float | str | None = None, idle_timeout: float | str | None = None,
               queue: bool = False) -> CallStream:
    """``host.start`` with the CLI's and the scheduler's knobs, which are not the API's:
    ``render`` ("text" or "json", the CLI's ``--output``): values come as the lines to print,
    rendered by the worker; ``skip``: the worker drops that many values first (a chunk re-run
    whose first values were already written); ``queue``: it may start while another call runs
    on the host's worker, and waits there (a distributed ``pipe``'s next chunk: ``WorkerSession.call``)."""
    fn = getattr(fn, "__skyctl_function__", fn)
    args, kwargs, stream_at, stream = _split_stream(fn, args, kwargs or {}, stream)
    limits = host.limits(timeout, idle_timeout)
    _ship_project_modules(fn)
    session = host._worker()
    return session.call(fn, args, kwargs, stream_at, stream, render=render, decoder=host.decoder, skip=skip,
                        options=host_type(host.profile).call_options(host.profile), limits=limits, queue=queue)


class RemoteIterator(Generic[T]):
    """Values of a remote generator as they arrive; ``close()`` (or leaving a
    ``with`` block or a ``for`` loop early) stops the remote generator."""

    def __init__(self, stream: CallStream, on_end: Callable[[], None] | None = None) -> None:
        self._stream = stream
        self._on_end = on_end
        self._done = False

    def __iter__(self) -> RemoteIterator[T]:
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        try:
            return next(self._stream)
        except StopIteration:
            self._end()
            raise StopIteration(self._stream.result) from None
        except RemoteError as err:
            self._end()
            if err.exception is not None:
                err.exception.__cause__ = RemoteTraceback(err.traceback_text)
                raise err.exception from RemoteTraceback(err.traceback_text)
            raise
        except BaseException:
            self.close()
            raise

    @property
    def result(self) -> Any:
        """The generator's return value, once it has finished."""
        return self._stream.result

    def close(self) -> None:
        """Stop the remote generator (its ``finally`` runs) if it is still running."""
        if not self._done:
            self._stream.close()
            self._end()

    def _end(self) -> None:
        self._done = True
        if self._on_end is not None:
            self._on_end()

    def __enter__(self) -> RemoteIterator[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def duration_limit(value: float | str | None, name: str) -> float | None:
    """Seconds from a number or a duration text (``"30s"``, ``"5m"``, ``"1h30m"``); ``UsageError``
    naming ``name`` (``--timeout``, ``SKYCTL_TIMEOUT``, ``timeout=``) for anything else."""
    from .config.checks import DURATION_FORMS, parse_duration

    if value is None:
        return None
    try:
        if isinstance(value, bool):
            raise ValueError("a bool")
        return parse_duration(str(value))
    except ValueError:
        raise UsageError(f"{name} {value!r} is not a duration greater than 0" if not name.startswith("SKYCTL")
                         else f"{name}={value!r} is not a duration greater than 0", hint=DURATION_FORMS) from None


def _split_stream(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], only: str | None = None) -> tuple[
        tuple[Any, ...], dict[str, Any], tuple[str, Any] | None, Iterable[Any] | None]:
    """Take the iterable given to a stream parameter out of the arguments, to be fed lazily."""
    from .coerce import stream_parameters

    try:
        sig = inspect.signature(fn)
        bound = sig.bind(*args, **kwargs)
    except TypeError as exc:
        raise UsageError(f"{getattr(fn, '__name__', fn)}(): {exc}") from None
    except ValueError:
        return args, kwargs, None, None
    streamed = [n for n in stream_parameters(fn) if n in bound.arguments and _is_stream(bound.arguments[n])
                and (only is None or n == only)]
    if not streamed:
        return args, kwargs, None, None
    if len(streamed) > 1:
        raise UsageError(f"only one parameter can be streamed per call; got iterables for {', '.join(streamed)}")
    name = streamed[0]
    stream = bound.arguments[name]
    position = list(sig.parameters).index(name)
    new_args, new_kwargs = list(bound.args), dict(bound.kwargs)
    if position < len(new_args):
        new_args[position] = None
        return tuple(new_args), new_kwargs, ("arg", position), stream
    new_kwargs[name] = None
    return tuple(new_args), new_kwargs, ("kw", name), stream


def _is_stream(value: Any) -> bool:
    if isinstance(value, (str, bytes, bytearray, dict)):
        return False
    try:
        iter(value)
    except TypeError:
        return False
    return True


def _ship_project_modules(fn: Callable[..., Any]) -> None:
    """Register the caller's project modules to travel by value."""
    from .target import register_by_value

    roots = [Path.cwd().resolve()]
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    if main_file:
        roots.append(Path(main_file).resolve().parent)
    register_by_value(roots)


def _on_thread(thread: Any) -> bool:
    import threading

    return threading.current_thread() is thread


def log_to_stderr(fd: int, data: bytes) -> None:
    stream = sys.stderr
    try:
        stream.buffer.write(data)  # type: ignore[attr-defined]
    except AttributeError:
        stream.write(data.decode(errors="replace"))
    stream.flush()


__all__ = ["Host", "RemoteIterator", "SkyctlError", "log_to_stderr", "start_call"]
