"""Credit-based flow control: a producer never gets further ahead than the credit granted."""

from __future__ import annotations

import pickle
import threading
import time

import pytest

from skyctl import flow
from skyctl.wire import Kind


class Sink:
    def __init__(self) -> None:
        self.frames: list[tuple[int, bytes]] = []
        self.arrived = threading.Condition()

    def send(self, kind: int, payload: bytes) -> None:
        with self.arrived:
            self.frames.append((kind, payload))
            self.arrived.notify_all()

    def items(self) -> list[object]:
        return [x for kind, p in self.frames if kind == Kind.ITEMS_OUT for x in pickle.loads(p)]

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
    box = flow.Inbox(lambda i, b: grants.append((i, b)), pickle.loads)
    first, second = pickle.dumps([1, 2]), pickle.dumps([3])
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


def test_wait_for_end_discards_batches_and_times_out() -> None:
    box = flow.Inbox(lambda i, b: None, pickle.loads)
    box.push(pickle.dumps([1]))
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
