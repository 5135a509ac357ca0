"""The trust boundary: what a compromised remote can and cannot do to the client.

The attacks come from a real, patched worker: a ``python:`` wrapper puts
``tests/targets/evil/sitecustomize.py`` in front of the remote interpreter,
which rewrites skyctl's worker as it is imported (an attacker who owns the
host can change anything there). Each test runs on ``local`` and over the
test sshd.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

import skyctl
from skyctl.trust import RefusedValue

from helpers import REPO, TARGETS, clean_env, run_skyctl, skyctl_argv, ssh_host_yaml

T = "tests/targets/trust_targets.py"
REMOTE_PY = "/usr/bin/python3"


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # target modules under the current directory travel by value


@pytest.fixture(params=["local", "ssh"])
def evil(request: pytest.FixtureRequest, tmp_path: Path):
    """``evil(mode)``: a config whose default host ``evil`` runs a worker patched to attack in ``mode``."""

    def make(mode: str) -> Path:
        python = sys.executable if request.param == "local" else REMOTE_PY
        wrapper = tmp_path / f"python-{mode}"
        wrapper.write_text(
            "#!/bin/sh\n"
            f"export SKYCTL_EVIL={mode} SKYCTL_EVIL_MARKER={tmp_path / 'pwned'} "
            f"SKYCTL_EVIL_SECRET={tmp_path / 'id_secret'} PYTHONPATH={TARGETS / 'evil'}\n"
            f'exec {python} "$@"\n'
        )
        wrapper.chmod(0o755)
        config = tmp_path / f"{mode}.yaml"
        workdir = tmp_path / "workdir"
        if request.param == "local":
            host = f"  evil:\n    type: local\n    python: {wrapper}\n    workdir: {workdir}\n"
        else:
            server = request.getfixturevalue("sshd")
            host = ssh_host_yaml(server, name="evil", python=str(wrapper), extra=f"workdir: {workdir}\nreuse: false")
        config.write_text(f"default: evil\nhosts:\n{host}")
        return config

    make.marker = tmp_path / "pwned"  # type: ignore[attr-defined]
    make.secret = tmp_path / "id_secret"  # type: ignore[attr-defined]
    return make


# -- 1. no code runs on the client from what a remote sends ------------------------------


@pytest.mark.parametrize("argv", [["run", f"{T}:one"], ["run", f"{T}:one", "-o", "json"], ["run", f"{T}:add", "-a", "a=1", "-a", "b=2"],
                                  ["run", f"{T}:fails"]])
def test_the_cli_never_unpickles_what_a_remote_sends(evil, argv: list[str]) -> None:
    config = evil("pickle")
    result = run_skyctl(*argv, "-c", str(config), timeout=90)
    assert not evil.marker.exists(), "a pickle from the remote ran code in skyctl"
    assert "Traceback (most recent call last)" not in result.stderr or "skyctl/" not in result.stderr, result.stderr
    if argv[1].endswith(":fails"):  # an error is its type, message and traceback text
        assert result.returncode == 1, result.stderr
        assert "ValueError: evil" in result.stderr
    else:
        assert result.returncode == 6, result.stderr
        err = result.stderr
        assert ("sent a pickle where rendered text was expected" in err  # a RETURN
                or "encoded b'P' where rendered text (b'R')" in err), err  # a batch (the frame check)


def test_skyctl_check_never_unpickles_what_a_remote_sends(evil) -> None:
    config = evil("pickle")
    result = run_skyctl("check", "evil", "-c", str(config), timeout=90)
    assert not evil.marker.exists(), "a pickle from the remote ran code in skyctl check"
    assert result.returncode != 0
    assert "builtins.exec" in result.stdout + result.stderr


def test_the_api_refuses_a_value_that_would_run_code(evil) -> None:
    from tests.targets import trust_targets

    config = evil("pickle")
    with skyctl.host("evil", config) as host:
        with pytest.raises(RefusedValue) as info:
            skyctl.function(trust_targets.add)(1, 2) >> host
        assert "builtins.exec" in info.value.message and 'allow: ["builtins.exec"]' in (info.value.hint or "")
        with pytest.raises(RefusedValue):
            list(skyctl.function(trust_targets.one)() >> host)
        with pytest.raises(skyctl.RemoteError) as raised:  # an exception that cannot be rebuilt: its text only
            skyctl.function(trust_targets.fails)() >> host
        assert raised.value.exception is None
    assert not evil.marker.exists(), "a pickle from the remote ran code in the API's client"


@pytest.mark.parametrize("mode", ["popen", "gadget"])
def test_the_api_never_reaches_a_class_through_a_shipped_modules_imports(evil, mode: str) -> None:
    """A shipped module that imports ``subprocess`` or ``operator`` (as every
    API user's module imports ``skyctl``, and through it ``inspect``,
    ``collections``…) must not hand the remote those modules' types: the
    remote names ``trust_targets.subprocess.Popen``, or chains
    ``trust_targets.operator.attrgetter``/``itemgetter`` to ``os.system``. In
    values, a return value, an exception and ``pool.map``, the client refuses
    and no command runs."""
    from tests.targets import trust_targets

    config = evil(mode)
    name = "subprocess.Popen" if mode == "popen" else "operator.attrgetter"
    with skyctl.host("evil", config) as host:
        with pytest.raises(RefusedValue) as info:  # a RETURN (popen: via a shipped_class reference)
            skyctl.function(trust_targets.add)(1, 2) >> host
        assert f"tests.targets.trust_targets.{name}" in info.value.message
        with pytest.raises(RefusedValue):  # a P batch
            list(skyctl.function(trust_targets.one)() >> host)
        with pytest.raises(skyctl.RemoteError) as raised:  # a RAISE: its text only
            skyctl.function(trust_targets.fails)() >> host
        assert raised.value.exception is None
    with skyctl.pool("evil", config) as pool, pytest.raises(RefusedValue):
        list(pool.map(trust_targets.echo_str, ["a", "b"]))
    assert not evil.marker.exists(), "a class reached through a shipped module's imports ran code in the API's client"


def test_an_uncaught_refusal_in_an_api_script_shows_how_to_allow_the_class(evil) -> None:
    config = evil("pickle")
    script = ("import skyctl\n"
              "from tests.targets import trust_targets\n"
              f"with skyctl.host('evil', {str(config)!r}) as host:\n"
              "    skyctl.function(trust_targets.add)(1, 2) >> host\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=clean_env(), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1, result.stderr
    assert "skyctl.trust.RefusedValue: evil sent a value of class 'builtins.exec'" in result.stderr
    assert ('hint: if you trust evil with this client, allow the class in its profile: allow: ["builtins.exec"] '
            "(or trust: full)") in result.stderr
    assert not evil.marker.exists()


@pytest.mark.parametrize("payload", ["list-range", "bytes", "bytearray", "fraction"])
def test_a_value_that_would_expand_is_refused_naming_the_host(evil, payload: str) -> None:
    """A ~44-byte pickle of allowed builtins (``list(range(3*10**7))``…) grew
    the client to 2.3 GiB: as a P batch, a RETURN or a RAISE it is refused
    before it is built (the in-process tests in ``test_decoder.py`` measure
    the memory held)."""
    from skyctl.trust import OversizedValue
    from tests.targets import trust_targets

    config = evil("expand")
    wrapper = config.parent / "python-expand"  # which payload: told to the worker by its wrapper
    wrapper.write_text(wrapper.read_text().replace("export ", f"export SKYCTL_EVIL_EXPAND={payload} ", 1))
    with skyctl.host("evil", config) as host:
        with pytest.raises(OversizedValue) as info:
            list(skyctl.function(trust_targets.one)() >> host)
        assert info.value.message.startswith("evil sent a ") and "would decode to more than" in info.value.message
        with pytest.raises(OversizedValue):
            skyctl.function(trust_targets.add)(1, 2) >> host
        with pytest.raises(skyctl.RemoteError) as raised:  # the exception cannot be rebuilt: its text only
            skyctl.function(trust_targets.fails)() >> host
        assert raised.value.exception is None and raised.value.type_name == "ValueError"


# -- 4. traceback source lines only from files the client shipped ---------------------


def test_a_remote_traceback_cannot_print_a_client_file(evil) -> None:
    from tests.targets import trust_targets

    config = evil("traceback")
    evil.secret.write_text("-----BEGIN OPENSSH PRIVATE KEY----- secret\n")
    result = run_skyctl("run", f"{T}:one", "-c", str(config), timeout=90)
    assert result.returncode == 1, result.stderr
    assert f'File "{evil.secret}", line 1' in result.stderr
    assert "PRIVATE KEY" not in result.stderr
    with skyctl.host("evil", config) as host, pytest.raises(skyctl.RemoteError) as info:
        skyctl.function(trust_targets.add)(1, 2) >> host
    assert "PRIVATE KEY" not in str(info.value)


# -- 10. frames and credit ------------------------------------------------------------


def test_a_frame_over_the_size_cap_is_refused_at_once(evil) -> None:
    result = run_skyctl("run", f"{T}:one", "-c", str(evil("bigframe")), timeout=90)
    assert result.returncode == 6, result.stderr
    assert ("protocol error" in result.stderr or "broke skyctl's protocol" in result.stderr) and "may carry" in result.stderr


def test_more_items_than_the_credit_granted_end_the_call(evil) -> None:
    result = run_skyctl("run", f"{T}:one", "-c", str(evil("overrun")), timeout=90)
    assert result.returncode == 6, result.stderr
    assert "credit" in result.stderr
    assert "flood" not in result.stdout  # nothing past the credit is written


def _run_on_a_terminal(argv: list[str], config: Path, timeout: float = 90) -> tuple[int, bytes]:
    """Run skyctl with stdout and stderr on one pseudo-terminal; all it wrote, and its exit status."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(skyctl_argv(*argv, "-c", str(config)), stdin=subprocess.DEVNULL, stdout=follower,
                            stderr=follower, cwd=REPO, env=clean_env({"CI": "1"}))
    os.close(follower)
    out = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    os.close(leader)
    return proc.wait(timeout=30), bytes(out)


def test_control_characters_from_the_remote_are_escaped_on_a_terminal(host_config) -> None:
    status, out = _run_on_a_terminal(["run", f"{T}:controls"], host_config)
    assert status == 0, out
    assert b"\x1b" not in out and b"\x07" not in out, out
    assert b"\\x1b]0;pwned\\x07title" in out and b"\\x1b[2Jcleared?" in out, out


def test_control_characters_pass_through_when_not_a_terminal(host_config) -> None:
    result = run_skyctl("run", f"{T}:controls", "-c", str(host_config))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "\x1b]0;pwned\x07title\n"


# -- 11, 12. faithful output ----------------------------------------------------------


def test_parts_json_cannot_hold_are_converted_one_by_one(host_config) -> None:
    for output, expected_first in (("text", '{"step":1,"loss":null}'), ("json", '{"step": 1, "loss": null}')):
        result = run_skyctl("run", f"{T}:metrics", "-o", output, "-c", str(host_config))
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0] == expected_first
        records = [json.loads(line) for line in lines]  # every line is JSON: the stream keeps its shape
        assert records[1] == {"step": 2, "loss": None, "best": None}
        assert records[2] == {"when": "2026-12-02", "at": "2026-12-02T08:30:00", "amount": "1.10",
                              "point": {"x": 1.0, "y": None}, "tags": ["a"], "pair": [1, 2]}
        assert records[3] == [None, 1.5]


def test_a_lone_surrogate_is_written_escaped_not_a_crash(host_config) -> None:
    data = '"\\ud800"\n"ok"\n'
    text = run_skyctl("pipe", f"{T}:echo_str", "--format", "jsonl", "-c", str(host_config), input=data)
    assert text.returncode == 0, text.stderr
    assert text.stdout == "\\ud800\nok\n"
    as_json = run_skyctl("pipe", f"{T}:echo_str", "--format", "jsonl", "-o", "json", "-c", str(host_config), input=data)
    assert as_json.returncode == 0, as_json.stderr
    assert [json.loads(line) for line in as_json.stdout.splitlines()] == ["\ud800", "ok"]


# -- a remote never ends the client ---------------------------------------------------


def test_a_remote_system_exit_arrives_as_remote_error_and_the_script_goes_on(host_config) -> None:
    """``raise SystemExit(0)`` remotely once ended a "verify, then deploy"
    script silently with status 0, past its ``except Exception``."""
    host_name = "box" if "ssh" in str(host_config) else "local"
    script = (
        "import sys\n"
        "import skyctl\n"
        "from tests.targets import trust_targets\n"
        f"with skyctl.host({host_name!r}, {str(host_config)!r}) as host:\n"
        "    try:\n"
        "        skyctl.function(trust_targets.exits)() >> host\n"
        "    except Exception as exc:\n"
        "        print('caught', type(exc).__name__, exc.type_name, exc.exception)\n"
        "    try:\n"
        "        for value in skyctl.function(trust_targets.interrupted)() >> host:\n"
        "            print('value', value)\n"
        "    except Exception as exc:\n"
        "        print('caught', type(exc).__name__, exc.type_name, 'KeyboardInterrupt' in str(exc))\n"
        "print('after')\n"
        "sys.exit(7)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=clean_env(), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 7, result.stdout + result.stderr
    assert result.stdout.splitlines() == ["caught RemoteError SystemExit None", "value 1",
                                          "caught RemoteError KeyboardInterrupt True", "after"], result.stderr


# -- the API still rebuilds what it should --------------------------------------------


def test_the_api_rebuilds_plain_data_and_classes_it_shipped(host_config) -> None:
    import datetime
    import decimal

    from tests.targets import trust_targets

    host_name = "box" if "ssh" in str(host_config) else "local"
    with skyctl.host(host_name, host_config) as host:
        point = skyctl.function(trust_targets.make_point)() >> host
        assert type(point) is trust_targets.Point and point == trust_targets.Point(1.5, 2.5)
        label, record = list(skyctl.function(trust_targets.make_values)() >> host)
        assert type(label) is trust_targets.Label and label.text == "shipped"
        assert record == {"when": datetime.datetime(2026, 1, 2, 3, 4), "amount": decimal.Decimal("3.14"), "pair": (1, 2)}
