"""``pipe``'s input options checked into what runs it: the parameter fed from stdin, the chunk size,
the share of stdin done. Each bad value is a usage error (exit 2) with a hint."""

from __future__ import annotations

from typing import Any, Callable

from ..errors import UsageError


def stream_param(fn: Any, params: dict[str, Any], chosen: str | None) -> str:
    """The ``Iterator[T]`` parameter stdin feeds: ``--param``, else the function's only one."""
    name = getattr(fn, "__name__", "the function")
    if chosen is not None:
        if chosen not in params:
            from ..errors import did_you_mean

            raise UsageError(
                f"--param {chosen}: {name}() has no Iterator[T] parameter named '{chosen}'",
                hint=did_you_mean(chosen, list(params)) or (f"its stream parameters: {', '.join(params)}" if params else None),
            )
        return chosen
    if not params:
        raise UsageError(
            f"{name}() has no parameter annotated Iterator[T] to feed stdin into",
            hint="annotate one, e.g. def f(data: Iterator[float]); or use 'skyctl run'",
        )
    if len(params) > 1:
        raise UsageError(
            f"{name}() has several Iterator[T] parameters: {', '.join(params)}",
            hint="choose the one fed from stdin with --param NAME",
        )
    return next(iter(params))


def chunk_sizer(text: str | None) -> Any:
    """``--chunk``: ``auto`` (also when not given) or a number of records, as a ``skyctl.chunking`` sizer."""
    from ..chunking import DEFAULT, sizer_for

    try:
        return sizer_for(DEFAULT if text is None else text)
    except ValueError as exc:
        raise UsageError(str(exc), hint="use --chunk auto (the default) or --chunk N with N >= 1, and SKYCTL_CHUNK_SECONDS > 0") from None


def joblog_chunk(text: str | None) -> int:
    """``--chunk`` with ``--joblog``: N stdin lines (1000 when not given; the job log's header records it)."""
    from ..chunking import joblog_chunk as lines_per_chunk

    try:
        return lines_per_chunk(text)
    except ValueError as exc:
        raise UsageError(str(exc), hint="pass --chunk N (stdin lines per chunk; 1000 when --chunk is not given), "
                                        "the same N on every --resume") from None


def input_fraction(stdin: Any, reader: Any, total: int | None) -> Callable[[], float | None] | None:
    """The share of stdin done, for the percent and ETA: records read of ``--total``,
    else bytes read of a regular file's size; None when the total is not known."""
    from ..render import file_fraction

    if total is not None:
        return lambda: min(reader.read / total, 1.0)
    return file_fraction(getattr(stdin, "buffer", stdin))
