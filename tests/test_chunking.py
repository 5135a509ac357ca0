"""The chunk sizers of ``skyctl/chunking.py`` (``--chunk``): pure arithmetic, no hosts, no clock."""

from __future__ import annotations

import pytest

from skyctl.chunking import AutoChunks, FixedChunks, RecordedChunks, sizer_for, target_seconds


def test_fixed_chunks_ignore_the_host_its_speed_and_the_end_of_the_input() -> None:
    sizer = FixedChunks(1000)
    sizer.finished("a", 1000, 0.001)
    assert sizer.size("a", 5, live=4, remaining=10) == 1000
    assert sizer.size("b", 6) == 1000


def test_auto_starts_small_on_every_host() -> None:
    sizer = AutoChunks(first=100)
    assert sizer.size("a", 0) == 100
    sizer.finished("a", 100, 0.001)
    assert sizer.size("b", 1) == 100  # b has not been measured: a's speed says nothing about it


def test_auto_grows_a_fast_hosts_chunks_at_most_growth_times_a_step() -> None:
    sizer = AutoChunks(target=0.5, first=100, growth=4, largest=1_000_000, largest_bytes=1 << 40)
    sizes = [sizer.size("fast", 0)]
    for number in range(1, 8):
        sizer.finished("fast", sizes[-1], sizes[-1] / 2_000_000)  # 2 M records/s
        sizes.append(sizer.size("fast", number))
    assert sizes == [100, 400, 1600, 6400, 25600, 102400, 409600, 1_000_000]
    assert AutoChunks().growth == 8 and AutoChunks().size("fresh", 0) == 100


def test_auto_sizes_a_chunk_to_the_target_seconds_of_its_host() -> None:
    sizer = AutoChunks(target=0.5, first=100, growth=4, per_latency=0)
    sizer.finished("steady", 100, 0.1)  # 1000 records/s: 0.5 s is 500 records, capped at 4 × 100
    assert sizer.size("steady", 1) == 400
    sizer.finished("steady", 400, 0.4)
    assert sizer.size("steady", 2) == 500


def test_auto_keeps_a_slow_hosts_chunks_small_at_once() -> None:
    sizer = AutoChunks(target=0.5, first=100, per_latency=0)
    sizer.finished("slow", 100, 20.0)  # 5 records/s
    assert sizer.size("slow", 1) == 2
    sizer.finished("slow", 2, 30.0)  # slower still: never below one record
    assert sizer.size("slow", 2) == 1
    sizer.finished("fast", 100, 0.001)
    assert sizer.size("fast", 3) == 800  # hosts are sized apart (growth 8)


def test_auto_shrinks_to_a_share_of_what_is_left_once_the_input_ends() -> None:
    sizer = AutoChunks(target=0.5, first=100, growth=4, tail=0.0625, largest=200_000, per_latency=0)
    sizer.finished("h", 10_000, 0.05)  # 200 k records/s: 0.5 s would be 100 k (capped at 40 k)
    assert sizer.size("h", 1) == 40_000
    # 4 live workers, 48 k records left: each takes an eighth, but not below 1/16 s of work (12.5 k)
    assert sizer.size("h", 2, live=4, remaining=48_000) == 12_500
    assert sizer.size("h", 3, live=2, remaining=48_000) == 12_500
    assert sizer.size("h", 3, live=2, remaining=80_000) == 20_000
    assert sizer.size("h", 4, live=2, remaining=30) == 12_500  # takes all that is left
    assert sizer.size("h", 4, live=1, remaining=48_000) == 40_000  # one worker: nobody to wait for
    assert sizer.size("new", 5, live=8, remaining=160) == 10  # unmeasured: its share of the rest


def test_auto_aims_longer_where_a_chunk_costs_more() -> None:
    sizer = AutoChunks(target=0.5, first=100, growth=1000, per_latency=20, longest=4.0)
    sizer.finished("near", 100, 0.1, latency=0.01)  # 1000 records/s; 20 × 10 ms is under the target
    assert sizer.size("near", 1) == 500
    sizer.finished("far", 100, 0.1, latency=0.05)  # 50 ms to a first value: aim at 1 s
    assert sizer.size("far", 1) == 1000
    sizer.finished("busy", 100, 0.1, latency=0.5)  # at most ``longest`` seconds
    assert sizer.size("busy", 1) == 4000
    assert sizer.size("busy", 2, live=4, remaining=800) == 100  # the end of the input still shrinks it


def test_auto_caps_a_chunks_records_and_memory() -> None:
    sizer = AutoChunks(target=10.0, first=100, growth=1000, largest=50_000, largest_bytes=1 << 20)
    sizer.finished("h", 100, 0.0001)
    assert sizer.size("h", 1) == 50_000
    assert sizer.size("h", 1, record_bytes=1024.0) == 1024  # 1 KiB records: 1 MiB a chunk
    assert sizer.size("h", 1, record_bytes=1 << 30) == 1


def test_recorded_chunks_follow_the_earlier_run_then_hand_over() -> None:
    sizer = RecordedChunks([100, 400, 7], then=FixedChunks(50))
    assert [sizer.size("any", n, live=3, remaining=5) for n in range(5)] == [100, 400, 7, 50, 50]


@pytest.mark.parametrize("text, expected", [("auto", AutoChunks), (" AUTO ", AutoChunks), ("1000", FixedChunks)])
def test_sizer_for_reads_the_chunk_option(text: str, expected: type) -> None:
    assert type(sizer_for(text, environ={})) is expected


@pytest.mark.parametrize("text", ["0", "-5", "lots", "1.5", ""])
def test_sizer_for_refuses_what_is_no_chunk_size(text: str) -> None:
    with pytest.raises(ValueError):
        sizer_for(text, environ={})


def test_the_target_seconds_come_from_the_environment() -> None:
    assert target_seconds({}) == 0.5
    assert target_seconds({"SKYCTL_CHUNK_SECONDS": "2"}) == 2.0
    sizer = sizer_for("auto", environ={"SKYCTL_CHUNK_SECONDS": "0.25"})
    assert isinstance(sizer, AutoChunks) and sizer.target == 0.25 and sizer.per_latency == 0  # exactly that
    assert sizer_for("auto", environ={}).per_latency > 0
    for bad in ("0", "-1", "soon", "inf", "nan"):
        with pytest.raises(ValueError, match="SKYCTL_CHUNK_SECONDS"):
            target_seconds({"SKYCTL_CHUNK_SECONDS": bad})


def test_a_distributor_follows_recorded_boundaries_and_knows_each_chunks_lines() -> None:
    """What a resume needs: chunks cut where an earlier run cut them, each knowing its size and
    its first and last stdin line (in-process, a fake host)."""
    from typing import Any, Iterator

    from skyctl.remote.flow import LineBatch
    from skyctl.many import Distributor, Slot

    class Stream:
        def __init__(self, feed: Any) -> None:
            self.feed, self.result = feed, None

        def batches(self) -> Iterator[list[str]]:
            for batch in self.feed.batches():
                yield batch.items() if type(batch) is LineBatch else list(batch)

        def interrupt(self, exc: BaseException) -> None:
            pass

        def close(self) -> None:
            pass

    class Host:
        def close(self) -> None:
            pass

    lines = [f"r{i}" for i in range(1, 101)]
    source = [LineBatch("\n".join(lines[:60]).encode()), LineBatch("\n".join(lines[60:]).encode())]
    spans = iter([(1, 60), (61, 100)])
    span: list[tuple[int, int]] = []

    def read() -> Iterator[LineBatch]:
        for batch in source:
            span[:] = [next(spans)]
            yield batch

    chunks: dict[int, Any] = {}
    out: list[str] = []

    def emit(chunk: Any, host: str, batch: Any) -> None:
        chunks[chunk.number] = chunk
        out.extend(batch)

    distributor = Distributor([Slot(Host(), "box", 0)], lambda slot, feed, skip: Stream(feed), read(), emit,
                              chunk=RecordedChunks([10, 55, 5], then=FixedChunks(20)), lines=lambda: span[0],
                              stall_warning=None)
    distributor.run()
    assert distributor.error is None and out == lines
    got = [(chunks[n].count, chunks[n].first_line, chunks[n].last_line) for n in sorted(chunks)]
    assert got == [(10, 1, 10), (55, 11, 65), (5, 66, 70), (20, 71, 90), (10, 91, 100)]


# -- a source's Cut marks (a job log's line ranges) among the chunks a sizer cuts ------------------------


class _FeedStream:
    """A fake call: the feed's records back as values, as they come."""

    def __init__(self, feed: object) -> None:
        self.feed, self.result = feed, None

    def batches(self):  # type: ignore[no-untyped-def]
        for batch in self.feed.batches():  # type: ignore[attr-defined]
            yield list(batch)

    def interrupt(self, exc: BaseException) -> None:
        pass

    def close(self) -> None:
        pass


class _FakeHost:
    def __init__(self, pipelines: bool = False) -> None:
        self.pipelines = pipelines

    def close(self) -> None:
        pass


def _cut_run(source: object, sizer: object, *, pipeline: bool = False, observer: object = None):  # type: ignore[no-untyped-def]
    """Run a Distributor over ``source`` on one fake slot; each chunk's (about, records) in chunk order."""
    from skyctl.many import Distributor, Slot

    chunks: dict[int, object] = {}
    got: dict[int, list[object]] = {}

    def emit(chunk, host, batch) -> None:  # type: ignore[no-untyped-def]
        chunks[chunk.number] = chunk
        got.setdefault(chunk.number, []).extend(batch)

    distributor = Distributor([Slot(_FakeHost(pipeline), "box", 0)], lambda slot, feed, skip: _FeedStream(feed),
                              source, emit, chunk=sizer, stall_warning=None, observer=observer, pipeline=pipeline)
    distributor.run()
    assert distributor.error is None, distributor.error
    return [(chunks[n].about, got[n]) for n in sorted(chunks)]  # type: ignore[attr-defined]


def test_a_cut_ends_the_chunk_below_its_size_and_its_about_goes_to_the_chunks_after_it() -> None:
    """No chunk takes records across a ``Cut``, whatever its sizer says; a cut that follows another with
    nothing between them leaves no empty chunk (the later one's ``about`` counts)."""
    from skyctl.many import Cut

    source = [Cut("a"), list(range(0, 30)), Cut("x"), Cut("b"), list(range(30, 55)), list(range(55, 80)),
              Cut("c"), list(range(80, 90))]
    assert _cut_run(iter(source), FixedChunks(20)) == [
        ("a", list(range(0, 20))), ("a", list(range(20, 30))),
        ("b", list(range(30, 50))), ("b", list(range(50, 70))), ("b", list(range(70, 80))),
        ("c", list(range(80, 90)))]


def test_with_a_sizer_that_never_fills_a_chunk_the_chunks_are_the_cut_ranges() -> None:
    """A job log's run (``1 << 62``): one chunk per range, also when the range is still being read when its
    chunk is taken (the cut then ends the chunk being filled), and with a pipelining slot's two lanes."""
    import threading

    from skyctl.many import Cut

    for pipeline in (False, True):
        taken = threading.Event()

        def source():  # type: ignore[no-untyped-def]
            for number in range(6):
                yield Cut(number)
                yield list(range(number * 10, number * 10 + 5))
                if number == 0:  # chunk 0 is taken and running before the rest of its range is read
                    assert taken.wait(30)
                yield list(range(number * 10 + 5, number * 10 + 10))
                yield Cut(None)

        class Observer:
            def __init__(self) -> None:
                self.log: list[tuple[int, str]] = []

            def started(self, chunk, host) -> None:  # type: ignore[no-untyped-def]
                if chunk.number == 0:  # it is the chunk being filled now
                    taken.set()

            def ended(self, chunk, host, status, error) -> None:  # type: ignore[no-untyped-def]
                self.log.append((chunk.about, status))

        observer = Observer()
        got = _cut_run(source(), FixedChunks(1 << 62), pipeline=pipeline, observer=observer)
        assert got == [(n, list(range(n * 10, n * 10 + 10))) for n in range(6)], pipeline
        assert sorted(observer.log) == [(n, "ok") for n in range(6)]


def test_the_chunk_queued_on_the_same_worker_writes_after_the_one_ahead_of_it() -> None:
    """Pipelining: the worker sends a chunk's values only after the chunk ahead of it has ended, but the
    two lanes hand them on from threads of their own; the second lane waits for the first, so a slot's
    values are written in the order the worker sent them (here the first lane is held until the second
    lane has its batch: without the wait, the second chunk's values would be written first)."""
    import threading

    from skyctl.many import Distributor, Slot

    second_has_values = threading.Event()
    starts: list[int] = []
    written: list[int] = []

    class Stream(_FeedStream):
        def __init__(self, feed: object, nth: int) -> None:
            super().__init__(feed)
            self.nth = nth

        def batches(self):  # type: ignore[no-untyped-def]
            for batch in super().batches():
                if self.nth == 0:
                    second_has_values.wait(10)  # the first lane is slow to take its values
                else:
                    second_has_values.set()
                yield batch

    def start(slot, feed, skip):  # type: ignore[no-untyped-def]
        starts.append(len(starts))
        return Stream(feed, starts[-1])

    def emit(chunk, host, batch) -> None:  # type: ignore[no-untyped-def]
        written.extend(batch)

    distributor = Distributor([Slot(_FakeHost(True), "box", 0)], start, iter([list(range(10))]), emit,
                              chunk=FixedChunks(5), stall_warning=None, pipeline=True)
    distributor.run()
    assert distributor.error is None, distributor.error
    assert second_has_values.is_set(), "the second chunk's call did not run beside the first"
    assert written == list(range(10))
