"""Credit-based flow control: a producer never gets further ahead than the credit granted."""

from __future__ import annotations

import pickle
import threading
import time

import pytest

from skyctl.remote import flow
from skyctl.remote.wire import Kind


class Sink:
    def __init__(self) -> None:
        self.frames: list[tuple[int, bytes]] = []
        #: the thread that sent each frame
        self.threads: list[int] = []
        self.arrived = threading.Condition()

    def send(self, kind: int, payload: bytes) -> None:
        with self.arrived:
            self.frames.append((kind, payload))
            self.threads.append(threading.get_ident())
            self.arrived.notify_all()

    def items(self) -> list[object]:
        return [x for kind, p in self.frames if kind == Kind.ITEMS_OUT for x in flow.unpack_batch(p, pickle.loads)]

    def wait_items(self, n: int) -> None:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.items()) >= n, 10)


def test_put_blocks_when_the_item_credit_is_used_up() -> None:
    sink = Sink()
    box = flow.Outbox(sink.send, Kind.ITEMS_OUT, pickle.dumps)
    box.grant(5, 1 << 20)
    produced: list[int] = []

    def produce() -> None:
        for i in range(20):
            box.put(i)
            produced.append(i)

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    sink.wait_items(5)
    t.join(0.5)
    assert t.is_alive() and len(produced) == 5  # paused at the credit
    box.grant(15, 1 << 20)
    t.join(10)
    assert not t.is_alive()
    box.finish((Kind.RETURN, b"r"))
    assert box.join(10)
    assert sink.items() == list(range(20))
    assert sink.frames[-1] == (Kind.RETURN, b"r")


def test_cancel_wakes_a_blocked_producer() -> None:
    box = flow.Outbox(Sink().send, Kind.ITEMS_OUT, pickle.dumps)
    raised: list[BaseException] = []

    def produce() -> None:
        try:
            box.put(1)
        except flow.Cancelled as exc:
            raised.append(exc)

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    t.join(0.2)
    box.cancel()
    t.join(10)
    assert raised and not t.is_alive()


def test_inbox_grants_credit_back_only_when_a_batch_is_taken() -> None:
    grants: list[tuple[int, int]] = []
    box = flow.Inbox(lambda i, b: grants.append((i, b)), pickle.loads, grant_every=(1, 1))
    first, second = flow.pack_batch([1, 2], pickle.dumps), flow.pack_batch([3], pickle.dumps)
    box.push(first)
    box.push(second)
    box.end("done")
    items = box.items()
    assert [next(items), next(items)] == [1, 2]
    assert grants == []  # the consumer holds the batch's last item
    assert next(items) == 3
    assert grants == [(2, len(first))]
    assert list(items) == []
    assert grants == [(2, len(first)), (1, len(second))]
    assert box.ending == "done"


def test_inbox_returns_credit_in_lumps() -> None:
    grants: list[tuple[int, int]] = []
    box = flow.Inbox(lambda i, b: grants.append((i, b)), pickle.loads, grant_every=(5, 1 << 30))
    payloads = [flow.pack_batch([n, n + 1], pickle.dumps) for n in range(0, 12, 2)]
    for payload in payloads:
        box.push(payload)
    box.end(None)
    assert list(box.items()) == list(range(12))
    # owed after the 3rd batch is taken (6 items), then after the 6th (6 more)
    assert grants == [(6, sum(map(len, payloads[:3]))), (6, sum(map(len, payloads[3:])))]


def test_a_sender_out_of_credit_always_gets_it_back() -> None:
    """Lumps never strand a stream: a sender that used its whole window gets credit once the receiver took it all."""
    sink = Sink()
    out = flow.Outbox(sink.send, Kind.ITEMS_OUT, pickle.dumps)
    box = flow.Inbox(out.grant, pickle.loads, grant_every=(100, 1 << 30))
    out.grant(100, 1 << 30)  # the window: exactly one lump
    moved: list[object] = []

    def relay() -> None:  # frames from the outbox into the inbox, as the wire would
        done = 0
        while done < 1000:
            with sink.arrived:
                assert sink.arrived.wait_for(lambda: len(sink.frames) > 0, 10)
                frames, sink.frames[:] = list(sink.frames), []
            for _kind, payload in frames:
                box.push(payload)
                done += len(flow.unpack_batch(payload, pickle.loads))
        box.end(None)

    threading.Thread(target=relay, daemon=True).start()
    producer = threading.Thread(target=lambda: [out.put_many(list(range(i, i + 10))) for i in range(0, 1000, 10)], daemon=True)
    producer.start()
    for value in box.items():
        moved.append(value)
    producer.join(10)
    assert moved == list(range(1000))


def test_wait_for_end_discards_batches_and_times_out() -> None:
    box = flow.Inbox(lambda i, b: None, pickle.loads)
    box.push(flow.pack_batch([1], pickle.dumps))
    started = time.monotonic()
    assert box.wait_for_end(0.2) is False
    assert time.monotonic() - started >= 0.2
    box.end("x")
    assert box.wait_for_end(5) is True and box.ending == "x"


@pytest.mark.parametrize("n", [1, 3000])
def test_put_many_keeps_order(n: int) -> None:
    sink = Sink()
    box = flow.Outbox(sink.send, Kind.ITEMS_OUT, pickle.dumps)
    box.grant(1 << 20, 1 << 30)
    for start in range(0, 9000, n):
        box.put_many(list(range(start, min(start + n, 9000))))
    box.finish()
    assert box.join(10)
    assert sink.items() == list(range(9000))


def test_put_run_drives_an_iterator_within_the_credit_and_keeps_order() -> None:
    sink = Sink()
    box = flow.Outbox(sink.send, Kind.ITEMS_OUT, pickle.dumps)
    box.grant(2500, 1 << 30)
    items = iter(range(3000))
    produced: list[bool] = []

    def produce() -> None:
        while True:
            box.wait_for_room()
            if not box.put_run(items):
                produced.append(True)
                return

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    sink.wait_items(2500)
    t.join(0.3)
    assert t.is_alive() and box.produced == 2500  # paused at the credit, mid-iterator
    box.grant(1000, 1 << 30)
    t.join(10)
    assert produced == [True]
    box.finish()
    assert box.join(10)
    assert sink.items() == list(range(3000))


def test_a_value_put_by_a_run_goes_before_the_run_ends() -> None:
    """Liveness: a generator that yields once and then waits still gets its value sent."""
    sink = Sink()
    box = flow.Outbox(sink.send, Kind.ITEMS_OUT, pickle.dumps)
    box.grant(1 << 20, 1 << 30)
    release = threading.Event()
    box.put_many(["warm-up"] * 10)  # once a batch has been sized, a run may take hundreds of items
    sink.wait_items(10)

    def slow():
        yield "first"
        assert release.wait(10)
        yield "second"

    def produce() -> None:
        values = slow()
        while box.put_run(values):
            pass

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    sink.wait_items(11)  # while the run still waits inside the generator
    assert sink.items()[10:] == ["first"] and t.is_alive()
    release.set()
    t.join(10)
    box.finish()
    assert box.join(10)
    assert sink.items()[10:] == ["first", "second"]


class Text(str):
    pass


@pytest.mark.parametrize(
    "batch, encoding",
    [
        (["a", "", "ü€", "x y"], flow.LINES),
        ([""], flow.LINES),
        (["two\nlines", "b"], flow.PICKLED),
        (["a", 1], flow.PICKLED),
        ([1, 2.5, None], flow.PICKLED),
        ([b"bytes"], flow.PICKLED),
        (["\udcff"], flow.PICKLED),  # a lone surrogate cannot be UTF-8
        ([Text("subclass")], flow.PICKLED),  # keeps its type
    ],
)
def test_batches_round_trip_as_text_lines_or_pickles(batch: list[object], encoding: bytes) -> None:
    payload = flow.pack_batch(batch, pickle.dumps)
    assert payload[:1] == encoding
    back = flow.unpack_batch(payload, pickle.loads)
    assert back == batch and [type(x) for x in back] == [type(x) for x in batch]


def test_an_unknown_batch_encoding_is_an_error() -> None:
    with pytest.raises(ValueError):
        flow.unpack_batch(b"Zjunk", pickle.loads)


def test_only_the_first_finish_counts_and_later_items_are_dropped() -> None:
    sink = Sink()
    box = flow.Outbox(sink.send, Kind.ITEMS_OUT, pickle.dumps)
    box.grant(1 << 20, 1 << 30)
    box.put_many([1, 2])
    box.finish((Kind.END_IN, b""))
    box.put_many([3])  # a producer that was cancelled late
    box.finish()
    assert box.join(10)
    assert sink.items() == [1, 2]
    assert sink.frames[-1] == (Kind.END_IN, b"")


def _drive(box: flow.Outbox, values) -> threading.Thread:
    """A producer thread driving ``values`` as the worker drives a generator."""

    def produce() -> None:
        while True:
            box.wait_for_room()
            if not box.put_run(values):
                break

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    return t


def _slow_then_fast(release: threading.Event, fast: int):
    yield "slow"
    assert release.wait(10)
    yield from range(fast)


def test_a_slow_first_value_then_a_fast_stream_makes_big_batches() -> None:
    """The state that used to stick: a slow step made every later frame one item long.

    Now the slow value goes alone (a batch of one) and the fast stream that
    follows piles up while the sender writes: few frames, whatever the timing.
    """
    sink = Sink()
    box = flow.Outbox(sink.send, Kind.ITEMS_OUT, pickle.dumps)
    box.grant(1 << 20, 1 << 30)
    release = threading.Event()
    fast = 200_000
    t = _drive(box, _slow_then_fast(release, fast))
    sink.wait_items(1)  # the slow value went on its own, before the rest exists
    assert sink.items() == ["slow"] and len(sink.frames) == 1
    release.set()
    t.join(30)
    box.finish()
    assert box.join(30)
    assert sink.items() == ["slow", *range(fast)]
    # one frame per value would be 200,001; BATCH_ITEMS alone cuts it into 25
    assert len(sink.frames) < fast // 200, f"{len(sink.frames)} frames for {fast + 1} values"
    assert box.frames == len(sink.frames)


def test_slow_steps_in_the_middle_of_a_fast_stream_do_not_shrink_later_batches() -> None:
    """Several slow values between fast stretches: each fast stretch still goes in big frames."""
    sink = Sink()
    box = flow.Outbox(sink.send, Kind.ITEMS_OUT, pickle.dumps)
    box.grant(1 << 20, 1 << 30)
    turns = [threading.Event() for _ in range(5)]

    def values():
        for n, turn in enumerate(turns):
            assert turn.wait(10)
            yield f"slow {n}"
            yield from range(50_000)

    t = _drive(box, values())
    for n, turn in enumerate(turns):
        turn.set()
        sink.wait_items(n * 50_001 + 1)  # the slow value was sent while the producer runs on
    t.join(30)
    box.finish()
    assert box.join(30)
    assert len(sink.items()) == 5 * 50_001
    assert len(sink.frames) < 5 * 50_001 // 200, f"{len(sink.frames)} frames"


def test_a_value_yielded_mid_run_is_sent_while_the_generator_waits() -> None:
    """Liveness with no timer: a value queued in the middle of a run wakes the sender."""
    sink = Sink()
    box = flow.Outbox(sink.send, Kind.ITEMS_OUT, pickle.dumps)
    box.grant(1 << 20, 1 << 30)
    release = threading.Event()

    def values():
        yield from range(5000)
        yield "stalled"
        assert release.wait(10)

    t = _drive(box, values())
    sink.wait_items(5001)
    assert sink.items()[-1] == "stalled" and t.is_alive()
    release.set()
    t.join(10)
    box.finish()
    assert box.join(10)
    assert sink.items() == [*range(5000), "stalled"]


def test_a_slow_producers_values_each_go_at_once() -> None:
    sink = Sink()
    box = flow.Outbox(sink.send, Kind.ITEMS_OUT, pickle.dumps)
    box.grant(1 << 20, 1 << 30)
    turn = threading.Semaphore(0)
    producer: list[int] = []

    def slow():
        for i in range(5):
            assert turn.acquire(timeout=10)
            yield i

    def produce() -> None:
        producer.append(threading.get_ident())
        values = slow()
        while box.put_run(values):
            pass

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    for i in range(5):
        turn.release()
        sink.wait_items(i + 1)  # each value goes before the next is made
    t.join(10)
    box.finish()
    assert box.join(10)
    assert sink.items() == list(range(5))
    assert sink.threads[0] == producer[0]  # the lone first value: no hand-over to the sender thread
    assert len(sink.frames) == 5  # each value went on its own, as it came
