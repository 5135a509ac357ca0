"""End-to-end: the Python API in-process (``skyctl.function``, ``skyctl.host``, ``call >> host``).

On the built-in ``local`` host and over SSH to the test sshd. The remote
functions are in ``tests/targets/api_funcs.py``; they travel by value.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path

import pytest

import skyctl
from skyctl.remote import flow

from helpers import REPO, pid_alive, wait_for
from targets import api_funcs

#: the host named ``default:`` in each config of the ``host_config`` fixture
HOST_NAMES = {"local": "local", "ssh": "box"}


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    # project modules (tests/targets/*) travel by value when under the current directory
    monkeypatch.chdir(REPO)


@pytest.fixture
def host_name(request: pytest.FixtureRequest, host_config) -> str:
    return HOST_NAMES[request.node.callspec.params["host_config"]]


@pytest.fixture
def host(host_config, host_name):
    h = skyctl.host(host_name, host_config)
    yield h
    h.close()


def settled(value, *, still: float = 2.0, timeout: float = 60.0) -> int:
    """``value()`` once it has not changed for ``still`` seconds."""
    last, since = value(), time.monotonic()
    deadline = since + timeout
    while time.monotonic() - since < still:
        assert time.monotonic() < deadline, f"still changing after {timeout}s (now {last})"
        time.sleep(0.1)
        now = value()
        if now != last:
            last, since = now, time.monotonic()
    return last


def test_generator_gives_values_and_its_return_value(host):
    results = api_funcs.fibonacci(8) >> host
    assert isinstance(results, skyctl.RemoteIterator)
    assert list(results) == [0, 1, 1, 2, 3, 5, 8, 13]
    assert results.result == 8


def test_plain_function_gives_its_return_value(host):
    assert api_funcs.add(2, 3) >> host == 5
    assert api_funcs.add(a=2) >> host == 12
    assert api_funcs.nothing() >> host is None


def test_an_input_item_that_does_not_pickle_raises_after_the_items_before_it(host):
    import threading

    results = api_funcs.echo(iter([1, 2, threading.Lock(), 4])) >> host
    got = []
    with pytest.raises(TypeError, match="cannot pickle"):
        for value in results:
            got.append(value)
    assert got == [1, 2]


def test_a_value_that_does_not_pickle_is_a_clear_remote_error(host):
    got = []
    with pytest.raises(TypeError, match="cannot pickle '_thread.lock' object") as info:
        for value in api_funcs.yields_a_lock() >> host:
            got.append(value)
    assert got == [1]
    assert "a value the function yielded could not be pickled" in "".join(traceback.format_exception(info.value))


def test_a_last_value_that_does_not_pickle_after_fast_ones_still_fails_the_call(host):
    got = []
    with pytest.raises(TypeError, match="cannot pickle"):
        for value in api_funcs.fast_then_a_lock() >> host:
            got.append(value)
    assert got == list(range(5000))


def test_default_host_from_the_config(host_config):
    with skyctl.host(config=host_config) as h:
        assert list(api_funcs.fibonacci(3) >> h) == [0, 1, 1]


def test_marked_function_still_runs_locally():
    assert api_funcs.add.local(1, 2) == 3
    assert isinstance(api_funcs.add(1, 2), skyctl.Call)


def test_context_manager_keeps_one_worker_for_several_calls(host_config, host_name):
    with skyctl.host(host_name, host_config) as h:
        first = api_funcs.worker_pid() >> h
        assert list(api_funcs.fibonacci(4) >> h) == [0, 1, 1, 2]
        assert api_funcs.add(1, 1) >> h == 2
        assert api_funcs.worker_pid() >> h == first
        assert pid_alive(first)
    wait_for(lambda: not pid_alive(first), timeout=15, what="the kept worker to exit after the block")


def test_without_context_manager_each_call_has_its_own_worker(host):
    first = api_funcs.worker_pid() >> host
    second = api_funcs.worker_pid() >> host
    assert first != second
    wait_for(lambda: not pid_alive(first), timeout=15, what="the first call's worker to exit")


def test_close_stops_the_remote_generator(host, tmp_path):
    marker = tmp_path / "finally"
    results = api_funcs.endless(str(marker)) >> host
    assert [next(results), next(results)] == [0, 1]
    assert not marker.exists()
    results.close()
    assert marker.read_text() == "finally ran"
    results.close()  # twice is fine
    assert list(results) == []


def test_leaving_a_for_loop_early_stops_the_remote_generator(host, tmp_path):
    marker = tmp_path / "finally"
    for value in api_funcs.endless(str(marker)) >> host:
        if value == 3:
            break
    assert marker.read_text() == "finally ran"


def test_with_block_on_the_results_stops_the_remote_generator(host_config, host_name, tmp_path):
    marker = tmp_path / "finally"
    with skyctl.host(host_name, host_config) as h:
        pid = api_funcs.worker_pid() >> h
        with api_funcs.endless(str(marker)) >> h as results:
            assert next(results) == 0
        assert marker.read_text() == "finally ran"
        # the kept worker serves the next call
        assert api_funcs.worker_pid() >> h == pid
        for value in api_funcs.endless(str(marker) + "2") >> h:
            break
        assert Path(str(marker) + "2").read_text() == "finally ran"
        assert api_funcs.add(4, 4) >> h == 8


def _numbers(count: int, pulled: list[int]):
    """0..count-1, recording in ``pulled[0]`` how many were taken so far."""
    for i in range(count):
        pulled[0] = i + 1
        yield i


#: items the client may pull ahead of what it has received back: the input
#: window plus the output window (64 Ki items each) and a batch, with slack
# the input and the output windows, plus what sits in queues: far from the end
AHEAD_LIMIT = 3 * flow.WINDOW_ITEMS
COUNT = 6 * flow.WINDOW_ITEMS


@pytest.mark.parametrize("by", ["position", "keyword"])
def test_iterable_to_an_iterator_parameter_is_streamed_lazily(host, by):
    pulled = [0]
    numbers = _numbers(COUNT, pulled)
    call = api_funcs.echo(numbers, scale=2) if by == "position" else api_funcs.echo(scale=2, data=numbers)
    results = call >> host
    assert next(results) == 0
    # Nothing more is taken from the results: the worker's echo pauses, so the
    # client's iterable stops being pulled, far from its end.
    paused_at = settled(lambda: pulled[0])
    assert 0 < paused_at < AHEAD_LIMIT
    received = 1
    for value in results:
        assert value == 2 * received
        received += 1
        assert pulled[0] - received < AHEAD_LIMIT
    assert received == COUNT and pulled[0] == COUNT


CHUNK, CHUNKS = 512 << 10, 160


def test_large_items_are_pulled_a_bounded_number_of_bytes_ahead(host, tmp_path):
    release = tmp_path / "release"
    pulled = [0]

    def chunks():
        for i in range(CHUNKS):
            pulled[0] = i + 1
            yield bytes(CHUNK)

    results = api_funcs.hold_after_first(chunks(), str(release)) >> host
    assert next(results) == CHUNK
    # The function holds after one chunk: what the client pulls meanwhile is
    # what the flow control lets through (the credit window is in bytes too).
    ahead = settled(lambda: pulled[0]) * CHUNK
    assert ahead <= 4 * flow.WINDOW_BYTES, f"{ahead >> 20} MiB pulled while the function holds"
    release.touch()
    assert next(results) == CHUNKS and pulled[0] == CHUNKS


def test_plain_function_consumes_a_streamed_iterable(host):
    pulled = [0]
    assert api_funcs.total(_numbers(1000, pulled)) >> host == sum(range(1000))
    assert pulled[0] == 1000


def test_remote_exception_is_raised_as_the_same_type_with_remote_frames(host):
    got = []
    with pytest.raises(ValueError, match="remote failure after 2") as info:
        for value in api_funcs.fails_after(2) >> host:
            got.append(value)
    assert got == [0, 1]
    assert type(info.value) is ValueError
    text = "".join(traceback.format_exception(info.value))
    assert "api_funcs.py" in text and "in fails_after" in text and "in _explode" in text, text
    assert 'raise ValueError(f"remote failure after {n}")' in text, text
    assert "skyctl/remote/worker.py" not in text and "cloudpickle" not in text, text


def test_plain_function_exception_is_raised_as_the_same_type(host):
    with pytest.raises(KeyError) as info:
        api_funcs.plain_fails() >> host
    assert "in plain_fails" in "".join(traceback.format_exception(info.value))


def test_user_defined_exception_class_is_rebuilt(host):
    with pytest.raises(api_funcs.CustomError, match="custom failure") as info:
        api_funcs.raises("custom") >> host
    assert "in raises" in "".join(traceback.format_exception(info.value))


def test_exception_that_cannot_be_rebuilt_is_a_remote_error(host):
    with pytest.raises(skyctl.RemoteError) as info:
        api_funcs.raises("unrebuildable") >> host
    err = info.value
    assert isinstance(err, skyctl.SkyctlError)
    assert err.type_name.endswith("Unrebuildable")
    assert "7: cannot come back" in err.message
    assert "in raises" in str(err) and "api_funcs.py" in str(err)
    assert "skyctl/remote/worker.py" not in str(err)


def test_the_host_is_usable_after_a_remote_exception(host_config, host_name):
    with skyctl.host(host_name, host_config) as h:
        with pytest.raises(ValueError):
            list(api_funcs.fails_after(1) >> h)
        assert api_funcs.add(1, 2) >> h == 3


def test_leaving_the_host_block_stops_a_call_still_running(host_config, host_name, tmp_path):
    marker = tmp_path / "finally"
    with skyctl.host(host_name, host_config) as h:
        results = api_funcs.endless(str(marker)) >> h
        assert next(results) == 0
    assert marker.read_text() == "finally ran"
