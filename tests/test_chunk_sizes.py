"""``--chunk auto`` end to end: chunk sizes follow each host's speed, and shrink at the end of the input.

The function logs one line per call (its chunk's first record and size), so the
tests count chunks; none depends on how fast the machine is: a slow function is
slow by its own sleeps, and the fast case sets ``SKYCTL_CHUNK_SECONDS`` so high
that only the growth cap bounds the sizes.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from helpers import (REPO, clean_env, numbers, pipe_killing_a_worker,
                     run_skyctl, skyctl_argv, ssh_host_yaml, wait_for)

T = "tests/targets/chunk_sizes.py"
pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def locals_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("chunk-sizes") / "skyward.yaml"
    path.write_text("default: local\nhosts:\n  l1:\n    type: local\n  l2:\n    type: local\n"
                    "groups:\n  duo: [l1, l2]\n")
    return path


def chunks_logged(log: Path) -> list[tuple[int, int]]:
    """(first record, size) of each call, in input order."""
    return sorted(tuple(map(int, line.split())) for line in log.read_text().splitlines())  # type: ignore[misc]


def pipe(config: Path, log: Path, n: int, *extra: str, env: dict[str, str] | None = None):
    return run_skyctl("pipe", f"{T}:sized", "-a", f"log={log}", "-H", "duo", *extra, "-c", str(config),
                      input=numbers(n), cwd=REPO, timeout=200, env=env)


def test_a_fast_function_gets_growing_chunks_and_the_last_ones_are_smaller(locals_config: Path, tmp_path: Path) -> None:
    log, n = tmp_path / "calls", 1_000_000
    result = pipe(locals_config, log, n, env={"SKYCTL_CHUNK_SECONDS": "1000"})
    assert result.returncode == 0, result.stderr
    assert sorted(map(int, result.stdout.split())) == [2 * i for i in range(1, n + 1)]
    chunks = chunks_logged(log)
    sizes = [size for _, size in chunks]
    assert sum(sizes) == n and all(size > 0 for size in sizes)
    # consecutive: each chunk starts where the one before it ended
    assert [first for first, _ in chunks] == [1 + sum(sizes[:i]) for i in range(len(sizes))]
    assert sizes[:2] == [100, 100]  # each host starts small
    # grown ×8 a step, 100, 800, 6,400, 51,200, up to the cap of 250,000 records
    assert max(sizes) == 250_000, sizes
    assert len(chunks) < 30, sizes  # --chunk 100 would be 10,000 calls
    # the reader reads ahead about a chunk per worker: once it meets the end of the input, what is
    # left (at most ~2 × 250,000 records) is cut in shares of a quarter, below the largest
    assert sizes[-1] < max(sizes), sizes
    assert f"total: {len(chunks)} chunks, {n} records in" in result.stderr


def test_a_slow_function_keeps_small_chunks(locals_config: Path, tmp_path: Path) -> None:
    log, n = tmp_path / "calls", 400
    result = pipe(locals_config, log, n, "-a", "delay=0.02", env={"SKYCTL_CHUNK_SECONDS": "0.5"})
    assert result.returncode == 0, result.stderr
    assert sorted(map(int, result.stdout.split())) == [2 * i for i in range(1, n + 1)]
    sizes = [size for _, size in chunks_logged(log)]
    # the chunks cut before a host has finished one (one for each of its two worker processes: the
    # second starts the next chunk while the first runs): at most 100 records, their share of the
    # input when all of it is read at once (100, 75, 57, 42). After that, a chunk of 0.5 s is at most
    # 25 records (50 records/s at best), however fast the machine is
    assert sum(sizes) == n and max(sizes) <= 100, sizes
    assert len([size for size in sizes if size > 25]) <= 4, sizes
    assert len(sizes) >= 10, sizes  # 126 records or more in chunks of 25 at most


def test_a_fixed_chunk_still_fixes_the_size(locals_config: Path, tmp_path: Path) -> None:
    log = tmp_path / "calls"
    result = pipe(locals_config, log, 1050, "--chunk", "100")
    assert result.returncode == 0, result.stderr
    assert [size for _, size in chunks_logged(log)] == [100] * 10 + [50]


@pytest.mark.parametrize("value", ["0", "big", "-3"])
def test_a_bad_chunk_is_a_usage_error(locals_config: Path, tmp_path: Path, value: str) -> None:
    result = pipe(locals_config, tmp_path / "calls", 10, "--chunk", value)
    assert result.returncode == 2, result.stderr
    assert "--chunk" in result.stderr and "Traceback" not in result.stderr


def test_a_bad_chunk_seconds_is_a_usage_error(locals_config: Path, tmp_path: Path) -> None:
    result = pipe(locals_config, tmp_path / "calls", 10, env={"SKYCTL_CHUNK_SECONDS": "soon"})
    assert result.returncode == 2, result.stderr
    assert "SKYCTL_CHUNK_SECONDS" in result.stderr and "Traceback" not in result.stderr


# -- no gap between chunks -------------------------------------------------------------


@pytest.mark.parametrize("where", [["-H", "l1", "-j", "1"], ["-H", "b1", "-j", "1"]], ids=["local", "ssh"])
def test_the_next_chunks_records_reach_the_worker_before_the_current_call_ends(locals_config: Path, farm_config: Path,
                                                                               tmp_path: Path, where: list[str]) -> None:
    """One worker slot: while chunk 5's call runs (held at its first record), chunk 6's call is
    queued on the same worker with its records there, and its function is not entered before
    chunk 5's has ended (one function at a time); stdin is still open (the run is not known to end)."""
    config = farm_config if where[1] == "b1" else locals_config
    proc = subprocess.Popen(
        skyctl_argv("pipe", f"{T}:pipelined", "-a", f"workdir={tmp_path}", "-a", "wait_at=5", *where,
                    "--chunk", "10", "-c", str(config)),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=clean_env())
    try:
        assert proc.stdin is not None
        proc.stdin.write(numbers(80).encode())
        proc.stdin.flush()  # stdin stays open: the run is not known to end
        wait_for(lambda: (tmp_path / "seen").exists() or proc.poll() is not None, timeout=120,
                 what="chunk 6's records on the worker")
        proc.stdin.close()
        proc.stdin = None
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()
    assert (tmp_path / "seen").read_text() == "True False"  # queued with its records, not entered
    assert sorted(map(int, out.split())) == [2 * i for i in range(1, 81)]
    assert sorted(int(p.name.split("-")[1]) for p in tmp_path.glob("enter-*")) == list(range(8))  # one call a chunk
    assert ", 8 chunks, 80 records in, 80 values out, 0 re-runs" in err.decode()
    assert len({p.read_text() for p in tmp_path.glob("enter-*")}) == 1  # one worker process: the slot's


def test_without_pipelining_the_next_call_waits_for_the_current_one(locals_config: Path, tmp_path: Path) -> None:
    """``SKYCTL_PIPELINE=0``: calls one after another on the slot's worker (as before pipelining):
    chunk 5 waits in vain for chunk 6's records and gives up after its patience."""
    proc = subprocess.Popen(
        skyctl_argv("pipe", f"{T}:pipelined", "-a", f"workdir={tmp_path}", "-a", "wait_at=5", "-a", "patience=3",
                    "-H", "l1", "-j", "1", "--chunk", "10", "-c", str(locals_config)),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
        env=clean_env({"SKYCTL_PIPELINE": "0"}))
    try:
        assert proc.stdin is not None
        proc.stdin.write(numbers(80).encode())
        proc.stdin.flush()  # stdin stays open, as above
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err.decode()
    assert "the next chunk's records did not reach the worker while this one ran" in err.decode()
    assert not (tmp_path / "enter-6").exists()
    assert len({p.read_text() for p in tmp_path.glob("enter-*")}) == 1  # one worker process


@pytest.mark.parametrize("order", [[], ["--keep-order"]], ids=["as-they-come", "keep-order"])
def test_a_worker_dying_with_two_chunks_in_flight_reruns_both_exactly_once(locals_config: Path, tmp_path: Path,
                                                                          order: list[str]) -> None:
    """The third call's worker is killed after 5 of its values, while the next chunk's call waits
    there with its records: both chunks run again on the other host, the first skipping the values
    already written, and every value is written once."""
    proc = subprocess.Popen(
        skyctl_argv("pipe", f"{T}:dies_with_two_in_flight", "-a", f"workdir={tmp_path}", "-a", "wait_at=2",
                    "-H", "duo", "-j", "1", "--chunk", "10", *order, "-c", str(locals_config)),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=clean_env())
    try:
        assert proc.stdin is not None
        proc.stdin.write(numbers(80).encode())
        proc.stdin.flush()  # stdin stays open until the kill: the next chunks are still to come
        blocked = wait_for(lambda: list(tmp_path.glob("blocked-*")) or proc.poll() is not None, timeout=120,
                           what="chunk 2 with chunk 3 queued behind it")
        assert blocked is not True and proc.poll() is None, proc.communicate()[1].decode()
        os.kill(int(blocked[0].name.split("-")[1]), signal.SIGKILL)
        proc.stdin.close()
        proc.stdin = None
        out, err = proc.communicate(timeout=120)
    finally:
        (tmp_path / "gate").write_text("open")
        if proc.poll() is None:
            proc.kill()
    stderr = err.decode()
    assert proc.returncode == 0, stderr
    values = [int(v) for v in out.decode().split()]
    expected = [2 * i for i in range(1, 81)]
    assert sorted(values) == expected  # each value exactly once
    if order:
        assert values == expected
    # the queued chunk never ran on the dead worker: its run there is not counted (one re-run: chunk 2's)
    assert "total: 8 chunks, 80 records in, 80 values out, 1 re-run\n" in stderr, stderr
    assert "its unfinished chunk (chunk " in stderr and "another of its chunks (chunk " in stderr, stderr


# -- exactly once, with adaptive chunks, over SSH ------------------------------------


@pytest.fixture(scope="module")
def farm_config(tmp_path_factory: pytest.TempPathFactory, sshd) -> Path:
    path = tmp_path_factory.mktemp("chunk-farm") / "skyward.yaml"
    text = "default: local\nhosts:\n"
    for name in ("b1", "b2", "b3"):
        text += ssh_host_yaml(sshd, name=name, extra=f"env: {{SKYCTL_TEST_HOST: {name}}}")
    path.write_text(text + "groups:\n  farm: [b1, b2, b3]\n")
    return path


@pytest.mark.parametrize("order", [[], ["--keep-order"]], ids=["as-they-come", "keep-order"])
def test_a_worker_killed_mid_run_loses_and_repeats_nothing_with_auto_chunks(farm_config: Path, tmp_path: Path,
                                                                           order: list[str]) -> None:
    n, gate_at = 20_000, 9_150  # 110 KB of stdin: the reader takes it as the chunks go
    values, host, stderr = pipe_killing_a_worker(farm_config, tmp_path, n, "tests/targets/groups.py:double_with_gate",
                                                 "-a", f"gate_at={gate_at}", "-a", f"workdir={tmp_path}", *order)
    expected = [2 * i for i in range(1, n + 1)]
    assert sorted(values) == expected  # each value exactly once
    if order:
        assert values == expected
    assert f"warning: {host}:" in stderr and "runs again on another worker" in stderr, stderr
