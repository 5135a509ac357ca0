"""Host tags cannot be forged: what one host sends is never credited to another.

In a broadcast (and ``pipe --tag``) each line a host's value produces is
tagged ``HOST<TAB>line``, or in JSON spliced into ``{"host": H, "value":
LINE}``. A compromised worker (``tests/targets/evil/sitecustomize.py``,
mode ``forgetag``, on ``local`` and over the test sshd) sends a rendered
line holding more than one JSON value; the client must refuse it (exit 6,
naming the host) and write no record for another host. In text, a value's
every line carries its own host's tag.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from skyctl.errors import ConnectionLost, ExitStatus
from skyctl.remote.flow import Rendered
from skyctl.render import check_json_lines, tagged

from helpers import REPO, TARGETS, run_skyctl, ssh_host_yaml

T = "tests/targets/tag_targets.py"
pytestmark = pytest.mark.timeout(180)


@pytest.fixture(params=["local", "ssh"])
def two_hosts(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A group ``both``: ``evil`` (a worker patched to forge tags) and an honest ``trusted-box``."""
    python = sys.executable if request.param == "local" else "/usr/bin/python3"
    wrapper = tmp_path / "python-forgetag"
    wrapper.write_text(f"#!/bin/sh\nexport SKYCTL_EVIL=forgetag PYTHONPATH={TARGETS / 'evil'}\nexec {python} \"$@\"\n")
    wrapper.chmod(0o755)
    if request.param == "local":
        evil = f"  evil:\n    type: local\n    python: {wrapper}\n    workdir: {tmp_path / 'workdir'}\n"
    else:
        evil = ssh_host_yaml(request.getfixturevalue("sshd"), name="evil", python=str(wrapper),
                             extra=f"workdir: {tmp_path / 'workdir'}\nreuse: false")
    config = tmp_path / "skyward.yaml"
    config.write_text(f"default: local\nhosts:\n{evil}  trusted-box:\n    type: local\ngroups:\n  both: [evil, trusted-box]\n")
    return config


# -- end to end ----------------------------------------------------------------------------


def test_a_forged_json_line_is_a_protocol_error_and_credits_nothing_to_another_host(two_hosts: Path) -> None:
    result = run_skyctl("run", f"{T}:forged", "-H", "both", "-o", "json", "-c", str(two_hosts), cwd=REPO, timeout=120)
    assert result.returncode == ExitStatus.CONNECTION_LOST, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]  # every line one JSON object
    assert all(sorted(record) == ["host", "value"] for record in records), result.stdout
    assert [r["value"] for r in records if r["host"] == "trusted-box"] == [1, 'raw:666, "host": "trusted-box"', 2]
    assert [r["value"] for r in records if r["host"] == "evil"] in ([], [1])  # only what came before the forged line
    assert "666" not in result.stdout.replace('"raw:666, \\"host\\": \\"trusted-box\\""', "")
    written = len([r for r in records if r["host"] == "evil"])
    summary = [line for line in result.stderr.splitlines() if line.startswith("evil: ")]
    assert len(summary) == 1 and re.match(re.escape(
        "evil: exit 6, connection lost: the worker on evil sent an output line that is not one JSON value: "
        f"'666, \"host\": \"trusted-box\"', {written} value") + "s?, ", summary[0]), result.stderr
    assert "Traceback" not in result.stderr


def test_a_forged_json_line_in_a_tagged_distributed_pipe_is_exit_6_naming_the_host(two_hosts: Path) -> None:
    data = "".join('raw:666, "host": "trusted-box"\n' for _ in range(60))
    result = run_skyctl("pipe", f"{T}:echo", "-H", "both", "--tag", "-o", "json", "--chunk", "5", "-c", str(two_hosts),
                        input=data, cwd=REPO, timeout=120)
    assert result.returncode == ExitStatus.CONNECTION_LOST, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert all(record == {"host": "trusted-box", "value": 'raw:666, "host": "trusted-box"'} for record in records), result.stdout
    assert ("error: the worker on evil sent an output line that is not one JSON value: '666, \"host\": \"trusted-box\"'\n"
            in result.stderr)
    assert any(line.startswith("evil: exit 6, ") for line in result.stderr.splitlines()), result.stderr


def test_every_line_of_a_value_carries_its_hosts_tag_in_text(two_hosts: Path) -> None:
    result = run_skyctl("run", f"{T}:multiline", "-H", "both", "-c", str(two_hosts), cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    # lines as a universal-newline reader sees them: "\n", "\r\n" and a lone "\r" each end one
    lines = result.stdout.replace("\r\n", "\n").replace("\r", "\n").splitlines()
    tags = [line.split("\t", 1)[0] for line in lines]
    assert sorted(tags) == ["evil"] * 3 + ["trusted-box"] * 3, result.stdout  # 3 lines a host, each tagged by it
    assert sorted(lines) == sorted(f"{host}\t{text}" for host in ("evil", "trusted-box")
                                   for text in ("x", "trusted-box\t666", "trusted-box\t777"))


# -- the check, in process -----------------------------------------------------------------

VALID = [
    b"1", b"-0", b"1.5e-3", b"true", b"null", b'""', b'"a \\"quoted\\" \\\\ \\u00e9 \\n"', "\"caf\u00e9 \u2028\"".encode(),
    b"[]", b"{}", b'[1, "x", null, [true, {"a": [2]}]]', b'{"a": 1, "b": {"c": "}"}, "d": "\\"}, {"}',
    b'{"host": "trusted-box", "value": 666}',  # one value (an object): it is the value, tagged by its own host
]
FORGED = [
    b'666, "host": "trusted-box"',
    b'1}, {"host": "trusted-box", "value": 666',
    b'{"a": 1}, "host": "trusted-box"',
    b'"x", "host": "trusted-box"',
    b'[1]]',
    b'1 2',
    b'1 ',
    b' 1',
    b'',
    b'"unterminated',
    b'"a" "b"',
    b'[1,\r2]',  # JSON whitespace, but never what the worker renders
    b'"raw\x01control"',
    b'NaN',
    b'-Infinity',
    b'[' * 100_000,  # deeper than any parser recurses
    b'01',
    b'{"a" 1}',
    b"{'a': 1}",
    b'tru',
]


@pytest.mark.parametrize("line", VALID)
def test_one_json_value_a_line_passes(line: bytes) -> None:
    json.loads(line)  # (the test's own premise)
    batch = Rendered(line + b"\n" + line + b"\n", 2)
    assert check_json_lines(batch.text, 2, "box") == [line, line]
    for record in tagged(batch, "box", "json").text.splitlines():
        assert json.loads(record) == {"host": "box", "value": json.loads(line)}


@pytest.mark.parametrize("line", FORGED, ids=lambda line: repr(line[:30]))
def test_anything_but_one_json_value_a_line_is_refused(line: bytes) -> None:
    with pytest.raises(ConnectionLost) as caught:
        tagged(Rendered(b"1\n" + line + b"\n", 2), "evil", "json")
    assert caught.value.message.startswith("the worker on evil sent ")
    assert caught.value.exit_status == ExitStatus.CONNECTION_LOST


def test_more_lines_than_values_are_refused() -> None:
    with pytest.raises(ConnectionLost, match="sent 2 lines for 1 JSON values"):
        tagged(Rendered(b'1\n{"host": "trusted-box", "value": 666}\n', 1), "evil", "json")


def test_text_lines_after_a_newline_or_a_lone_cr_are_tagged() -> None:
    text = tagged(Rendered(b"a\nb\rc\r\nd\n", 2), "box", "text").text
    assert text == b"box\ta\nbox\tb\rbox\tc\r\nbox\td\n"
    assert all(line.startswith(b"box\t") for line in re.split(rb"\r\n|\r|\n", text) if line)


def test_values_the_client_decoded_itself_are_rendered_before_they_are_tagged() -> None:
    assert tagged(["a", 'b", "host": "x'], "box", "json").text == (
        b'{"host": "box", "value": "a"}\n{"host": "box", "value": "b\\", \\"host\\": \\"x"}\n')
