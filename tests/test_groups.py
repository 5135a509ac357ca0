"""Many hosts: groups, ``-j``, broadcast ``run`` and distributed ``pipe``, end to end.

The ssh hosts are the test sshd reached under several profile names (each
its own worker processes); ``dead`` is a port nothing listens on. Killing a
host mid-run is SIGKILL of the worker process that holds a chunk, at a
record where the function waits for the test (no timing involved).
"""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

import pytest

from helpers import REPO, numbers, pipe_killing_a_worker, sky, ssh_host_yaml, start_skyctl, wait_for

T = "tests/targets/groups.py"
pytestmark = pytest.mark.timeout(240)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def groups_config(tmp_path_factory: pytest.TempPathFactory, sshd) -> Path:
    root = tmp_path_factory.mktemp("groups")
    text = "default: local\nhosts:\n"
    for name in ("b1", "b2", "b3"):
        text += ssh_host_yaml(sshd, name=name, extra=f"env: {{SKYCTL_TEST_HOST: {name}}}")
    text += ssh_host_yaml(sshd, name="slowb", extra="env: {SKYCTL_TEST_HOST: slowb, SKYCTL_TEST_SLOW: '1'}")
    text += ("  dead:\n    host: 127.0.0.1\n"
             f"    port: {_free_port()}\n    user: {sshd.user}\n    identity_file: {sshd.identity_file}\n"
             f"    known_hosts: {sshd.known_hosts}\n    connect_timeout: 5\n")
    for name in ("l1", "l2"):
        text += f"  {name}:\n    type: local\n    env: {{SKYCTL_TEST_HOST: {name}}}\n"
    text += ("groups:\n  farm: [b1, b2, b3]\n  mixed: [dead, b1, b2]\n  nowhere: [dead]\n"
             "  uneven: [b1, b2, slowb]\n  locals:\n    hosts: [l1, l2]\n    workers: 2\n")
    path = root / "skyward.yaml"
    path.write_text(text)
    return path


# -- config and listing ------------------------------------------------------------


def test_hosts_lists_groups_and_check_checks_every_member(groups_config: Path) -> None:
    listed = sky(groups_config, "hosts")
    assert listed.returncode == 0
    assert any(line.split()[:2] == ["farm", "group"] and "b1, b2, b3" in line for line in listed.stdout.splitlines())
    assert "l1, l2 × 2 workers" in listed.stdout
    checked = sky(groups_config, "check", "mixed")
    assert checked.returncode == 4, checked.stdout + checked.stderr
    lines = checked.stdout.splitlines()
    assert lines[0].startswith("dead: FAILED (4)") and any(line.startswith("b1: ok") for line in lines)
    assert any(line.startswith("b2: ok") for line in lines)


@pytest.mark.parametrize("groups, message", [
    ("groups:\n  local: [local]\n", "share one namespace"),
    ("groups:\n  g: [nope]\n", "'nope' names no host"),
    ("groups:\n  g: [local]\n  h: [g]\n", "a group lists hosts only"),
    ("groups:\n  g: {hosts: [local], workers: 0}\n", "'workers' must be"),
    ("groups:\n  g: []\n", "non-empty list"),
])
def test_bad_groups_are_config_errors(tmp_path: Path, groups: str, message: str) -> None:
    config = tmp_path / "skyward.yaml"
    config.write_text("hosts:\n  local:\n    type: local\n" + groups)
    result = sky(config, "run", f"{T}:where")
    assert result.returncode == 3, result.stderr
    assert message in result.stderr


# -- broadcast run ------------------------------------------------------------------


def test_run_on_a_group_broadcasts_with_host_tags_and_a_summary(groups_config: Path) -> None:
    result = sky(groups_config, "run", f"{T}:where", "-H", "farm")
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == ["b1\tb1", "b2\tb2", "b3\tb3"]
    summary = [line for line in result.stderr.splitlines() if ": ok" in line]
    assert [line.split(":")[0] for line in summary] == ["b1", "b2", "b3"]  # in group order
    as_json = sky(groups_config, "run", f"{T}:where", "-H", "b2,l1", "-o", "json")
    assert as_json.returncode == 0, as_json.stderr
    assert sorted(map(json.dumps, map(json.loads, as_json.stdout.splitlines()))) == sorted(
        [json.dumps({"host": "b2", "value": "b2"}), json.dumps({"host": "l1", "value": "l1"})])
    untagged = sky(groups_config, "run", f"{T}:where", "-H", "l1,l2", "--no-tag", "-q")
    assert sorted(untagged.stdout.splitlines()) == ["l1", "l2"] and untagged.stderr == ""


def test_broadcast_exit_status_is_the_first_failing_host_in_group_order(groups_config: Path) -> None:
    result = sky(groups_config, "run", f"{T}:where", "-H", "mixed")
    assert result.returncode == 4, result.stderr
    assert sorted(result.stdout.splitlines()) == ["b1\tb1", "b2\tb2"]
    lines = [line for line in result.stderr.splitlines() if line.split(":")[0] in ("dead", "b1", "b2")]
    assert lines[0].startswith("dead: exit 4, could not connect")
    assert lines[1].startswith("b1: ok") and lines[2].startswith("b2: ok")


def test_ctrl_c_on_a_broadcast_closes_every_hosts_generator(groups_config: Path, tmp_path: Path) -> None:
    proc = start_skyctl("run", f"{T}:forever", "-a", f"workdir={tmp_path}", "-H", "farm", "-c", str(groups_config),
                        cwd=REPO)
    try:
        seen = set()
        assert proc.stdout is not None
        while len(seen) < 3:
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else ""
            seen.add(line.split()[-1].decode() if isinstance(line, bytes) else line.split()[-1])
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    for host in ("b1", "b2", "b3"):
        wait_for(lambda h=host: (tmp_path / f"finally-{h}").exists(), timeout=30, what=f"{host}'s finally")


# -- distributed pipe ----------------------------------------------------------------


@pytest.mark.parametrize("order", [[], ["--keep-order"]], ids=["as-they-come", "keep-order"])
def test_a_worker_killed_mid_run_loses_and_repeats_nothing(groups_config: Path, tmp_path: Path, order: list[str]) -> None:
    n, gate_at = 6000, 3150  # 30 KB of stdin: within the pipe's buffer
    values, host, stderr = pipe_killing_a_worker(groups_config, tmp_path, n, f"{T}:double_with_gate", "-a", f"gate_at={gate_at}",
                                                 "-a", f"workdir={tmp_path}", "--chunk", "200", *order)
    expected = [2 * i for i in range(1, n + 1)]
    assert sorted(values) == expected  # each value exactly once
    if order:
        assert values == expected
    assert f"warning: {host}:" in stderr and "runs again on another worker" in stderr, stderr
    assert "skipping the values already written" in stderr or order, stderr


def test_minus_j_spreads_one_host_over_several_workers(groups_config: Path) -> None:
    result = sky(groups_config, "pipe", f"{T}:double", "-H", "local", "-j", "3", "--chunk", "100", input=numbers(2000))
    assert result.returncode == 0, result.stderr
    assert sorted(map(int, result.stdout.split())) == [2 * i for i in range(1, 2001)]
    assert "local: ok, 20 chunks, 2000 records in, 2000 values out, 0 re-runs" in result.stderr


def test_workers_from_the_group_and_tags(groups_config: Path) -> None:
    result = sky(groups_config, "pipe", f"{T}:double", "-H", "locals", "--chunk", "50", "--tag", input=numbers(1000))
    assert result.returncode == 0, result.stderr
    pairs = [line.split("\t") for line in result.stdout.splitlines()]
    assert {host for host, _ in pairs} <= {"l1", "l2"}
    assert sorted(int(v) for _, v in pairs) == [2 * i for i in range(1, 1001)]


def test_a_host_that_never_connects_gets_no_chunks(groups_config: Path) -> None:
    result = sky(groups_config, "pipe", f"{T}:double", "-H", "mixed", "--chunk", "100", input=numbers(1500))
    assert result.returncode == 0, result.stderr
    assert sorted(map(int, result.stdout.split())) == [2 * i for i in range(1, 1501)]
    assert "warning: dead: exit 4, could not connect" in result.stderr
    assert "dead: exit 4" in result.stderr and "0 chunks" in [l for l in result.stderr.splitlines() if l.startswith("dead:")][0]


def test_no_host_that_connects_is_exit_4(groups_config: Path) -> None:
    result = sky(groups_config, "pipe", f"{T}:double", "-H", "nowhere", "--retries", "1", input=numbers(10))
    assert result.returncode == 4, result.stderr
    assert result.stdout == ""


def test_a_raising_function_stops_every_chunk(groups_config: Path, tmp_path: Path) -> None:
    result = sky(groups_config, "pipe", f"{T}:fails_at", "-a", "bad=2550", "-a", f"workdir={tmp_path}", "-H", "farm",
                 "--chunk", "100", input=numbers(20000))
    assert result.returncode == 1, result.stderr
    traceback = [line for line in result.stderr.splitlines() if "ValueError: record 2550 is bad" in line]
    assert traceback and traceback[0].startswith("[b"), result.stderr
    assert len(result.stdout.split()) < 20000  # stopped, not finished
    assert list(tmp_path.glob("finally-*"))


def test_a_slow_host_takes_fewer_chunks(groups_config: Path) -> None:
    result = sky(groups_config, "pipe", f"{T}:slow_here", "-H", "uneven", "--chunk", "20", input=numbers(1200))
    assert result.returncode == 0, result.stderr
    taken = {"b1": 0, "b2": 0, "slowb": 0}
    for line in result.stdout.splitlines():
        taken[line.split()[0]] += 1
    assert sum(taken.values()) == 1200
    # fewer than the fastest host (a fast host may itself start late on a busy machine and take little:
    # which fast host does the work is timing, that the slow one does least of it is not)
    assert taken["slowb"] < max(taken["b1"], taken["b2"]), taken


def test_a_bad_record_keeps_its_stdin_line_number(groups_config: Path) -> None:
    data = numbers(3499) + "oops\n" + numbers(100)
    result = sky(groups_config, "pipe", f"{T}:double", "-H", "farm", "--chunk", "100", input=data)
    assert result.returncode == 65, result.stderr
    assert "stdin line 3500: cannot read 'oops' as int" in result.stderr
    assert sorted(map(int, result.stdout.split())) == [2 * i for i in range(1, 3500)]


@pytest.mark.parametrize("good", [0, 2, 20_000], ids=["first-line", "third-line", "after-20000"])
@pytest.mark.parametrize("group, target, flags, header", [
    ("farm", "echo_str", (), b""),
    ("farm", "echo_int", ("--format", "csv"), b"n\n"),
    ("locals", "echo_str", (), b""),
], ids=["farm-str", "farm-csv-int", "locals-str"])
def test_a_bad_utf8_line_comes_after_every_value_before_it(groups_config: Path, good: int, group: str, target: str,
                                                           flags: tuple[str, ...], header: bytes) -> None:
    """As on one host: every chunk before the bad record completes and is written, then exit 65."""
    data = header + b"".join(b"%d\n" % i for i in range(good)) + b"\xff\n7\n"
    result = sky(groups_config, "pipe", f"tests/targets/pipes.py:{target}", "-H", group, "--chunk", "300", *flags, input=data)
    stdout, stderr = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 65, stderr
    assert sorted(map(int, stdout.split())) == list(range(good))
    assert f"error: stdin line {good + 1 + bool(header)}: cannot read '\\\\xff' as " in stderr, stderr

    skipped = sky(groups_config, "pipe", f"tests/targets/pipes.py:{target}", "-H", group, "--chunk", "300", *flags,
                  "--on-bad-line", "skip", input=data)
    assert skipped.returncode == 0, skipped.stderr.decode()
    assert sorted(map(int, skipped.stdout.split())) == sorted([*range(good), 7])
    assert f"warning: stdin line {good + 1 + bool(header)}: cannot read " in skipped.stderr.decode()


def test_a_plain_function_runs_once_per_chunk(groups_config: Path) -> None:
    result = sky(groups_config, "pipe", f"{T}:chunk_sum", "-H", "locals", "--chunk", "100", "--keep-order",
                 input=numbers(1000))
    assert result.returncode == 0, result.stderr
    sums = list(map(int, result.stdout.split()))
    assert sums == [sum(range(k * 100 + 1, k * 100 + 101)) for k in range(10)]


# -- the API ------------------------------------------------------------------------


def test_the_pool_api(groups_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import skyctl
    from tests.targets import groups

    monkeypatch.chdir(REPO)
    pool = skyctl.host("locals", groups_config)
    assert isinstance(pool, skyctl.Pool) and pool.hosts == ["l1", "l2"]
    with pool:
        assert skyctl.function(groups.where)() @ pool == ["l1", "l2"]
        assert skyctl.function(groups.where)() >> pool in ("l1", "l2")
        values = list(pool.map(groups.double, range(1, 3001), chunk=100, ordered=True))
        assert values == [2 * i for i in range(1, 3001)]
    mixed = skyctl.pool(["l1", "dead"], groups_config)
    with pytest.raises(skyctl.GroupError) as info:
        skyctl.function(groups.where)() @ mixed
    assert info.value.results["l1"] == "l1" and isinstance(info.value.results["dead"], skyctl.ConnectError)
