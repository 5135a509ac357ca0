"""Failure policy and reports for CI (issue 20): ``--keep-going``, ``--strict``, ``--report``, ``--junit``.

End to end through the real ``skyctl`` on the test sshd (``b1``..``b3``: one
server under several profile names), ``type: local`` hosts and ``dead`` (a
port nothing listens on). A worker is killed where the function waits for the
test (a marker file names its pid); Ctrl-C is sent once a marker file shows the
function running: no timing involved. Every report is checked against
``tests/report.schema.json``; every JUnit file is read with ElementTree.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from helpers import REPO, clean_env, numbers, pipe_killing_a_worker, sky, skyctl_argv, ssh_host_yaml, wait_for
from schema_check import errors as schema_errors

T = "tests/targets/report_targets.py"
F = "tests/targets/group_faults.py"
SCHEMA = json.loads((Path(__file__).parent / "report.schema.json").read_text())
pytestmark = pytest.mark.timeout(300)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, sshd) -> Path:
    text = "default: local\nhosts:\n  local:\n    type: local\n"
    for name in ("b1", "b2", "b3"):
        text += ssh_host_yaml(sshd, name=name, extra=f"env: {{SKYCTL_TEST_HOST: {name}}}")
    text += ("  dead:\n    host: 127.0.0.1\n"
             f"    port: {_free_port()}\n    user: {sshd.user}\n    identity_file: {sshd.identity_file}\n"
             f"    known_hosts: {sshd.known_hosts}\n    connect_timeout: 5\n")
    for name in ("l1", "l2"):
        text += f"  {name}:\n    type: local\n    env: {{SKYCTL_TEST_HOST: {name}}}\n"
    text += "groups:\n  four: [b1, b2, l1, l2]\n  farm: [b1, b2, b3]\n  mixed: [dead, b1, l1]\n  trio: [b1, b2, l1]\n"
    path = tmp_path_factory.mktemp("report") / "skyward.yaml"
    path.write_text(text)
    return path


def report_of(path: Path) -> dict[str, Any]:
    """The report at ``path``, valid against the schema."""
    document = json.loads(path.read_text())
    assert schema_errors(document, SCHEMA) == [], json.dumps(document, indent=1)
    return document


def hosts_of(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {h["name"]: h for h in document["hosts"]}


def adds_up(document: dict[str, Any], values: int) -> None:
    """The hosts' counts sum to the totals, and the values to the lines written."""
    totals = document["totals"]
    for key in ("records", "values", "chunks", "reruns"):
        assert sum(h[key] for h in document["hosts"]) == totals[key], (key, document)
    assert totals["values"] == values
    assert totals["failed_chunks"] == sum(len(h["failed_chunks"]) for h in document["hosts"])


# -- the validator itself ---------------------------------------------------------------


def test_the_schema_check_is_not_vacuous() -> None:
    good = {"report_version": 1, "skyctl": "0", "command": "run", "argv": ["skyctl"], "mode": "single",
            "started": "2026-01-02T03:04:05.678Z", "seconds": 0.5, "exit_status": 0, "error": None,
            "totals": {k: 0 for k in ("hosts", "records", "values", "chunks", "reruns", "failed_chunks",
                                      "cancelled_chunks", "cancelled_records")}, "hosts": []}
    assert schema_errors(good, SCHEMA) == []
    host = {"name": "b1", "status": "ok", "exit_status": 0, "error": None, "connected": True, "chunks": 1,
            "records": 2, "values": 3, "reruns": 0, "seconds": 0.1, "failed_chunks": []}
    assert schema_errors({**good, "hosts": [host]}, SCHEMA) == []
    assert schema_errors({k: v for k, v in good.items() if k != "hosts"}, SCHEMA) == ["$: 'hosts' is missing"]
    assert schema_errors({**good, "hosts": [{**host, "status": "fine"}]}, SCHEMA)
    assert schema_errors({**good, "hosts": [{**host, "records": -1}]}, SCHEMA)
    assert schema_errors({**good, "started": "yesterday"}, SCHEMA)
    assert schema_errors({**good, "extra": 1}, SCHEMA)
    assert schema_errors({**good, "error": {"type": "X"}}, SCHEMA)
    assert schema_errors({**good, "exit_status": True}, SCHEMA)


# -- --keep-going -----------------------------------------------------------------------


def test_keep_going_runs_every_other_chunk_and_exits_1(config: Path, tmp_path: Path) -> None:
    n, bad, chunk = 3000, 1555, 100
    result = sky(config, "pipe", f"{F}:fails_at", "-a", f"bad={bad}", "-H", "four", "--chunk", str(chunk),
                 "--keep-going", "--report", str(tmp_path / "r.json"), "--junit", str(tmp_path / "j.xml"),
                 input=numbers(n))
    assert result.returncode == 1, result.stderr
    values = sorted(map(int, result.stdout.split()))
    # every chunk but the failing one whole; the failing one up to its failure: each value once
    assert values == [i for i in range(1, n + 1) if not bad <= i <= 1600], result.stderr
    assert re.search(r"^\[(b1|b2|l1|l2)\] ValueError: record 1555 is bad$", result.stderr, re.M), result.stderr
    assert re.search(r"^warning: (b1|b2|l1|l2): chunk 16 \(stdin lines 1501–1600\) failed \(exit 1, raised ValueError: "
                     r"record 1555 is bad\); the other chunks go on \(--keep-going\)$", result.stderr, re.M), result.stderr
    assert "total: 30 chunks, 3000 records in, 2954 values out, 0 re-runs; failed: 1 chunk (the function raised)" \
        in result.stderr
    document = report_of(tmp_path / "r.json")
    assert document["exit_status"] == 1 and document["mode"] == "distributed"
    adds_up(document, len(values))
    failed = [h for h in document["hosts"] if h["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["exit_status"] == 1, document
    assert failed[0]["failed_chunks"] == [{"chunk": 16, "first_line": 1501, "last_line": 1600,
                                           "error": {"type": "ValueError", "message": "record 1555 is bad"}}]
    assert [h["status"] for h in document["hosts"] if h is not failed[0]] == ["ok"] * 3
    suite = ET.parse(tmp_path / "j.xml").getroot()
    assert (suite.get("tests"), suite.get("failures")) == ("4", "1")
    failure = suite.find(f".//testcase[@name='{failed[0]['name']}']/failure")
    assert failure is not None and "record 1555 is bad" in failure.get("message", "")
    assert "[chunk 16 (stdin lines 1501–1600)]" in (failure.text or "") and "Traceback" in (failure.text or "")


def test_keep_going_with_keep_order_leaves_the_failed_chunks_values_in_place(config: Path) -> None:
    n, chunk = 2000, 100
    result = sky(config, "pipe", f"{F}:fails_at", "-a", "bad=555", "-H", "four", "--chunk", str(chunk), "--keep-order",
                 "--keep-going", input=numbers(n))
    assert result.returncode == 1, result.stderr
    # what one host would write for each chunk, in input order: the failed chunk's values up to the failure
    assert result.stdout == "".join(f"{i}\n" for i in range(1, n + 1) if not 555 <= i <= 600)
    assert "chunk 6 (stdin lines 501–600) failed" in result.stderr


def test_keep_going_contradicts_fail_fast(config: Path) -> None:
    result = sky(config, "run", f"{T}:host_or_raise", "-a", "bad=none", "-H", "l1,l2", "--keep-going", "--fail-fast")
    assert result.returncode == 2 and "--keep-going and --fail-fast" in result.stderr, result.stderr


# -- --strict ---------------------------------------------------------------------------


def test_strict_fails_a_run_that_recovered_from_a_killed_host(config: Path, tmp_path: Path) -> None:
    n = 4000
    values, host, stderr = pipe_killing_a_worker(
        config, tmp_path, n, f"{F}:gate_at", "-a", "at=2150", "-a", f"workdir={tmp_path}", "--chunk", "200",
        "--strict", "--report", str(tmp_path / "r.json"), marker="at-*", status=6)  # without --strict: 0 (test_group_faults)
    assert sorted(values) == [2 * i for i in range(1, n + 1)]  # the output is complete all the same
    assert f"error: --strict: {host} failed first (exit 6, connection lost" in stderr, stderr
    document = report_of(tmp_path / "r.json")
    assert document["exit_status"] == 6
    adds_up(document, n)
    hosts = hosts_of(document)
    assert hosts[host]["status"] == "lost" and hosts[host]["exit_status"] == 6 and hosts[host]["connected"]
    assert hosts[host]["error"]["type"] == "ConnectionLost"
    assert document["totals"]["reruns"] == 1 and document["totals"]["chunks"] == 20
    assert all(h["status"] == "ok" for name, h in hosts.items() if name != host), document


@pytest.mark.parametrize("strict", [True, False])
def test_strict_fails_a_run_with_a_host_that_never_connected(config: Path, tmp_path: Path, strict: bool) -> None:
    result = sky(config, "pipe", f"{F}:fails_at", "-a", "bad=0", "-H", "mixed", "--chunk", "50",
                 *(["--strict"] if strict else []), "--report", str(tmp_path / "r.json"), input=numbers(500))
    assert result.returncode == (4 if strict else 0), result.stderr
    assert sorted(map(int, result.stdout.split())) == list(range(1, 501))
    document = report_of(tmp_path / "r.json")
    assert document["exit_status"] == result.returncode
    dead = hosts_of(document)["dead"]
    assert (dead["status"], dead["exit_status"], dead["connected"], dead["chunks"]) == ("unreachable", 4, False, 0)
    assert dead["error"]["type"] == "ConnectError"
    adds_up(document, 500)


# -- --report and --junit on every kind of run -------------------------------------------


def test_report_of_a_successful_distributed_pipe(config: Path, tmp_path: Path) -> None:
    result = sky(config, "pipe", f"{F}:fails_at", "-a", "bad=0", "-H", "four", "--chunk", "100",
                 "--report", str(tmp_path / "r.json"), "--junit", str(tmp_path / "j.xml"), input=numbers(1000))
    assert result.returncode == 0, result.stderr
    document = report_of(tmp_path / "r.json")
    assert document["exit_status"] == 0 and document["error"] is None and document["command"] == "pipe"
    assert document["argv"][:2] == ["skyctl", "pipe"] and "--report" in document["argv"]
    assert document["totals"]["chunks"] == 10 and document["totals"]["records"] == 1000
    adds_up(document, 1000)
    assert [h["name"] for h in document["hosts"]] == ["b1", "b2", "l1", "l2"]
    assert all(h["status"] == "ok" and h["error"] is None for h in document["hosts"])
    # the summary on stderr says the same numbers
    for host in document["hosts"]:
        assert re.search(rf"^{host['name']}: ok, {host['chunks']} chunks?, {host['records']} records? in, "
                         rf"{host['values']} values? out, ", result.stderr, re.M), result.stderr
    suite = ET.parse(tmp_path / "j.xml").getroot()
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("4", "0", "0")
    assert {c.get("classname") for c in suite.iter("testcase")} == {"skyctl.pipe"}


def test_report_of_a_failing_single_host_run_and_of_one_that_cannot_connect(config: Path, tmp_path: Path) -> None:
    result = sky(config, "run", f"{T}:host_or_raise", "-a", "bad=l1", "-H", "l1", "--report", str(tmp_path / "r.json"),
                 "--junit", str(tmp_path / "j.xml"))
    assert result.returncode == 1, result.stderr
    document = report_of(tmp_path / "r.json")
    assert document["mode"] == "single" and document["exit_status"] == 1
    (host,) = document["hosts"]
    assert (host["name"], host["status"], host["exit_status"], host["connected"]) == ("l1", "failed", 1, True)
    assert host["error"] == {"type": "RuntimeError", "message": "l1 is bad \x1b[31mred\x00nul\x0cff <&>"}
    assert document["error"] == host["error"]
    suite = ET.parse(tmp_path / "j.xml").getroot()  # parses although the message held an ESC and a NUL
    assert (suite.get("tests"), suite.get("failures")) == ("1", "1")
    failure = suite.find(".//testcase[@name='l1']/failure")
    assert failure is not None and failure.get("type") == "RuntimeError"
    assert "l1 is bad \\x1b[31mred\\x00nul\\x0cff <&>" in failure.get("message", "")
    assert "Traceback" in (failure.text or "")

    result = sky(config, "run", f"{T}:host_or_raise", "-a", "bad=none", "-H", "dead", "--report", "-")
    assert result.returncode == 4
    document = json.loads(result.stderr[result.stderr.index("{\n"):])  # '-': after everything else on stderr
    assert schema_errors(document, SCHEMA) == []
    assert document["exit_status"] == 4 and document["error"]["type"] == "ConnectError"
    assert hosts_of(document)["dead"]["status"] == "unreachable"


def test_report_and_junit_of_a_broadcast(config: Path, tmp_path: Path) -> None:
    result = sky(config, "run", f"{T}:host_or_raise", "-a", "bad=b2", "-H", "trio", "--report", str(tmp_path / "r.json"),
                 "--junit", str(tmp_path / "j.xml"))
    assert result.returncode == 1, result.stderr
    document = report_of(tmp_path / "r.json")
    assert document["mode"] == "broadcast" and document["exit_status"] == 1
    hosts = hosts_of(document)
    assert [h["status"] for h in hosts.values()] == ["ok", "failed", "ok"]
    assert hosts["b1"]["values"] == 2 and hosts["b2"]["values"] == 0 and hosts["b2"]["error"]["type"] == "RuntimeError"
    adds_up(document, len(result.stdout.splitlines()))
    suite = ET.parse(tmp_path / "j.xml").getroot()
    assert (suite.get("tests"), suite.get("failures")) == ("3", "1")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert list(cases) == ["b1", "b2", "l1"] and {c.get("classname") for c in cases.values()} == {"skyctl.run"}
    assert cases["b1"].find("failure") is None and cases["l1"].find("failure") is None
    failure = cases["b2"].find("failure")
    assert failure is not None and "b2 is bad" in failure.get("message", "") and "RuntimeError" in (failure.text or "")

    result = sky(config, "run", f"{T}:host_or_raise", "-a", "bad=none", "-H", "mixed", "--junit", str(tmp_path / "k.xml"))
    assert result.returncode == 4, result.stderr
    suite = ET.parse(tmp_path / "k.xml").getroot()
    assert (suite.get("tests"), suite.get("failures")) == ("3", "1")
    failure = suite.find(".//testcase[@name='dead']/failure")
    assert failure is not None and failure.get("type") == "ConnectError" and "unreachable" in failure.get("message", "")


@pytest.mark.parametrize("how", ["run", "pipe"])
def test_report_after_ctrl_c(config: Path, tmp_path: Path, how: str) -> None:
    report = tmp_path / "r.json"
    if how == "run":
        args = ("run", f"{T}:yield_then_wait", "-a", f"workdir={tmp_path}", "-H", "l1")
    else:
        args = ("pipe", f"{T}:double_until_stopped", "-a", f"workdir={tmp_path}", "-H", "l1,l2", "--chunk", "100")
    proc = subprocess.Popen(skyctl_argv(*args, "--report", str(report), "--junit", str(tmp_path / "j.xml"),
                                        "-c", str(config)),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
                            env=clean_env())
    try:
        assert proc.stdin is not None
        if how == "pipe":
            proc.stdin.write(numbers(250).encode())
            proc.stdin.flush()  # left open: the last chunk waits for more
        running = 1 if how == "run" else 2  # pipe: the first two chunks' calls, one on each host
        wait_for(lambda: len(list(tmp_path.glob("running-*"))) >= running, timeout=120, what="the function running")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err.decode()
    document = report_of(report)
    assert document["exit_status"] == 130 and document["error"]["type"] == "KeyboardInterrupt"
    assert all(h["status"] == "interrupted" and h["connected"] for h in document["hosts"]), document
    adds_up(document, len(out.split()))
    suite = ET.parse(tmp_path / "j.xml").getroot()
    assert all(h["exit_status"] == 130 for h in document["hosts"]), document
    assert suite.get("skipped") == str(len(document["hosts"])) and suite.get("failures") == "1"
    failure = suite.find(".//testcase[@name='(run)']/failure")  # the run's own case: the step did fail
    assert failure is not None and failure.get("type") == "KeyboardInterrupt"


def test_a_report_that_cannot_be_written_is_a_usage_error_before_the_run(config: Path, tmp_path: Path) -> None:
    result = sky(config, "run", f"{T}:host_or_raise", "-a", "bad=none", "-H", "l1",
                 "--report", str(tmp_path / "missing" / "r.json"))
    assert result.returncode == 2 and result.stdout == "", result.stderr
    assert "--report" in result.stderr and "there is no directory" in result.stderr and "mkdir -p" in result.stderr


def test_junit_holds_any_remote_text() -> None:
    from skyctl.report import junit_xml, xml_text

    assert xml_text("a\x00b\x1b[1m\tc\r\n\ud800\ufffe\U0001f600") == "a\\x00b\\x1b[1m\tc\r\n\\ud800\\ufffe\U0001f600"
    nasty = "\x00\x07\x1b]0;title\x07\ud800 </failure>]]> & \"'"
    host = {"name": "h" + nasty, "status": "failed", "exit_status": 1, "error": {"type": "E" + nasty, "message": nasty},
            "connected": True, "chunks": 0, "records": 0, "values": 0, "reruns": 0, "seconds": 0.0, "failed_chunks": []}
    document = {"command": "run", "argv": ["skyctl", nasty], "seconds": 0.1, "started": "2026-01-01T00:00:00.000Z",
                "exit_status": 1, "mode": "single", "error": None, "hosts": [host]}
    root = ET.fromstring(junit_xml(document, {host["name"]: [nasty]}))
    failure = root.find(".//failure")
    assert failure is not None and "</failure>]]> & \"'" in (failure.text or "") and "\\x1b]0;title" in failure.get("message", "")
    assert root.get("tests") == "1" and root.get("failures") == "1"
