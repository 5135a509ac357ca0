"""``host:`` and ``user:`` are held to OpenSSH's rules, so no name reaches a shell (issue 11, part 8).

``~/.ssh/config`` hands the host and user to a shell (``Match exec``, ``%h``,
``%r``): ``host: "127.0.0.1;id>/tmp/x;true"`` ran ``id`` on the client. The
rules are OpenSSH's own (``valid_hostname`` / ``valid_ruser``): checked when
the config loads (exit 3, naming the file, the host and the key), after
``${VAR}`` expansion, in ``defaults:`` and for gateway hosts; and names that
``~/.ssh/config`` itself gives (HostName, User, ProxyJump hops) are checked
before they are looked up again.
"""

from __future__ import annotations

import os
import pathlib
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import paramiko
import pytest

from helpers import ssh_host_yaml
from ssh_e2e import assert_failure, config, skyctl

from skyctl.config import HostProfile, hostname_problem, parse_config, user_problem
from skyctl.errors import ConfigError, ExitStatus
from skyctl.transports.ssh import SshTransport, resolve_endpoint

if TYPE_CHECKING:
    from sshd import SshServer

pytestmark = pytest.mark.timeout(120)

FILE = pathlib.Path("skyward.yaml")
INJECTION = "127.0.0.1;id>{marker};true"


# -- the rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "gpu-1.example.com", "127.0.0.1", "::1", "2001:db8::1", "fe80::1%eth0", "[::1]",
        "my_host", "under_score.example.com", "bücher.de", "xn--bcher-kva.de", "alias", "H",
        "host-", "a.b.c.", "*.example.com",
    ],
)  # fmt: skip
def test_host_names_openssh_accepts(name: str) -> None:
    assert hostname_problem(name) is None


@pytest.mark.parametrize(
    "name, problem",
    [
        ("127.0.0.1;id>/tmp/x;true", "contains ';'"),
        ("-oProxyCommand=sh", "starts with '-'"),
        ("a b", "contains whitespace"),
        ("a\tb", "contains whitespace"),
        ("a\nb", "contains whitespace"),
        ("$(id)", "contains '$'"),
        ("`id`", "contains '`'"),
        ("a|b", "contains '|'"),
        ("a&b", "contains '&'"),
        ("a>b", "contains '>'"),
        ("a<b", "contains '<'"),
        ("a'b", "contains \"'\""),
        ('a"b', "contains '\"'"),
        ("a\\b", "contains '\\\\'"),
        ("a(b)", "contains '('"),
        ("a{b}", "contains '{'"),
        ("a,b", "contains ','"),
        ("a\x00b", "control character"),
        ("a\x7fb", "control character"),
        ("a\x1b[31mb", "control character"),
        ("a\u202eb", "control character"),  # right-to-left override: shows one name, is another
        ("", "is empty"),
    ],
)
def test_host_names_openssh_refuses(name: str, problem: str) -> None:
    assert problem in (hostname_problem(name) or "")


@pytest.mark.parametrize(
    "name", ["ubuntu", "deploy-user", "svc_x", "user.name", "DOMAIN\\user", "user@corp.example", "a$b", "first last", "u-"]
)
def test_user_names_openssh_accepts(name: str) -> None:
    assert user_problem(name) is None


@pytest.mark.parametrize(
    "name, problem",
    [
        ("-l", "starts with '-'"),
        ("root;id", "contains ';'"),
        ("a`id`", "contains '`'"),
        ("a|b", "contains '|'"),
        ("a&b", "contains '&'"),
        ("a>b", "contains '>'"),
        ("(x)", "contains '('"),
        ("{x}", "contains '{'"),
        ("a'b", "contains \"'\""),
        ("a -oProxyCommand=x", "space before '-'"),
        ("user\\", "ends with '\\'"),
        ("a\nb", "control character"),
        ("a\x1bb", "control character"),
        ("", "is empty"),
    ],
)
def test_user_names_openssh_refuses(name: str, problem: str) -> None:
    assert problem in (user_problem(name) or "")


# -- the config file (exit 3, naming the file, the host and the key) -----------------------------


def error(text: str, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), FILE, {"HOME": "/home/tester", **(environ or {})})
    assert info.value.exit_status == ExitStatus.CONFIG
    assert "\n" not in info.value.message and "OpenSSH refuses the same" in (info.value.hint or "")
    return info.value


def test_a_host_with_shell_characters_is_a_config_error() -> None:
    err = error("hosts:\n  box:\n    host: '127.0.0.1;id>/tmp/x;true'\n")
    assert err.message == "skyward.yaml: host 'box': 'host' is not a valid host name: '127.0.0.1;id>/tmp/x;true' contains ';'"


def test_a_host_is_checked_after_expansion() -> None:
    err = error("hosts:\n  box:\n    host: ${TARGET}\n", {"TARGET": "$(touch x)"})
    assert err.message == "skyward.yaml: host 'box': 'host' is not a valid host name: '$(touch x)' contains '$'"


def test_a_host_that_reads_as_an_option_is_a_config_error() -> None:
    assert "starts with '-'" in error("hosts:\n  box:\n    host: -oProxyCommand=sh\n").message


@pytest.mark.parametrize("where", ["host", "defaults"])
def test_a_user_with_shell_characters_is_a_config_error(where: str) -> None:
    if where == "host":
        err = error("hosts:\n  box:\n    host: box.example.com\n    user: 'me;id'\n")
        assert err.message == "skyward.yaml: host 'box': 'user' is not a valid user name: 'me;id' contains ';'"
    else:
        err = error("defaults:\n  user: ${WHO}\nhosts:\n  box:\n    host: box.example.com\n", {"WHO": "-oProxyCommand=x"})
        assert err.message == "skyward.yaml: defaults: 'user' is not a valid user name: '-oProxyCommand=x' starts with '-'"


def test_a_gateway_host_is_held_to_the_same_rules() -> None:
    err = error("hosts:\n  gpu:\n    host: gpu.internal\n    gateway: bastion\n  bastion:\n    host: 'bastion|x'\n")
    assert err.message == "skyward.yaml: host 'bastion': 'host' is not a valid host name: 'bastion|x' contains '|'"


def test_a_profile_built_in_code_is_held_to_the_same_rules() -> None:
    with pytest.raises(ValueError, match="contains ';'"):
        HostProfile(name="x", type="ssh", host="a;b")
    with pytest.raises(ValueError, match="starts with '-'"):
        HostProfile(name="x", type="ssh", host="a", user="-x")


# -- names that ~/.ssh/config gives are held to them too -----------------------------------------


@pytest.mark.parametrize(
    "lines, keyword, value",
    [
        ("HostName x;id", "HostName", "x;id"),
        ("User -oProxyCommand=x", "User", "-oProxyCommand=x"),
        ("ProxyJump bastion;id", "ProxyJump", "bastion;id"),
        ("ProxyJump ok-hop,me`id`@b2:22", "ProxyJump", "me`id`"),
    ],
)
def test_names_from_ssh_config_are_checked(lines: str, keyword: str, value: str) -> None:
    ssh_config = paramiko.SSHConfig.from_text(f"Host box\n  {lines}\n")
    with pytest.raises(ConfigError) as info:
        resolve_endpoint(HostProfile(name="box", type="ssh", host="box"), ssh_config, config_path="~/.ssh/config")
    assert info.value.message.startswith(f"~/.ssh/config: host 'box': {keyword} {value!r} is not a valid ")
    assert f"fix {keyword} in ~/.ssh/config" in (info.value.hint or "")


def test_a_proxyjump_hop_with_shell_characters_never_reaches_match_exec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", open(os.devnull))  # paramiko runs Match exec with invoke, which reads stdin
    marker, seen = tmp_path / "marker", tmp_path / "seen"
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(f"Host jumpy\n  ProxyJump {INJECTION.format(marker=marker)}\nMatch exec \"test -n %h && touch {seen}\"\n")
    transport = SshTransport(HostProfile(name="jumpy", type="ssh", host="jumpy"), lambda name: None,  # type: ignore[arg-type,return-value]
                             ssh_config_path=str(ssh_config), system_known_hosts=None)
    with pytest.raises(ConfigError) as info, transport:
        transport.start(["true"])
    assert f"{ssh_config}: host 'jumpy': ProxyJump" in info.value.message
    assert seen.exists(), "Match exec ran for the alias itself (a valid name)"
    assert not marker.exists(), "the hop name reached a shell"


# -- end to end: the real skyctl with a ~/.ssh/config that runs Match exec -----------------------


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A HOME whose ``~/.ssh/config`` runs ``Match exec`` with the host name (``%h``) in a shell."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    seen = tmp_path / "match-exec-ran"
    (home / ".ssh" / "config").write_text(
        f"Host jumpy\n  HostName 127.0.0.1\n  ProxyJump {INJECTION.format(marker=tmp_path / 'marker')}\n"
        f"Match exec \"test -n %h && touch {seen}\"\n"
    )
    return home




def run_as(home: Path, run_dir: Path, cfg: str, *flags: str) -> object:
    return skyctl("run", "tests/targets/reuse_targets.py:worker_pid", "-c", cfg, *flags,
                  env={"HOME": str(home), "XDG_RUNTIME_DIR": str(run_dir)})


@pytest.fixture
def server(request: pytest.FixtureRequest) -> SshServer:
    """The suite's sshd; these tests fail, never skip, when it cannot run."""
    try:
        return request.getfixturevalue("sshd")
    except pytest.skip.Exception as exc:
        pytest.fail(f"these tests need a real sshd: {exc}", pytrace=False)


@pytest.mark.parametrize("via", ["direct", "kept"])
def test_a_host_with_shell_characters_never_reaches_match_exec(server: SshServer, home: Path, run_dir: Path,
                                                               tmp_path: Path, via: str) -> None:
    flags = ("--no-reuse",) if via == "direct" else ()
    marker, seen = tmp_path / "marker", tmp_path / "match-exec-ran"
    good = ssh_host_yaml(server, extra=f"workdir: {tmp_path / 'wd'}")
    bad = good.replace("host: 127.0.0.1", f"host: '{INJECTION.format(marker=marker)}'")
    result = run_as(home, run_dir, config(tmp_path / "bad.yaml", bad), *flags)
    assert_failure(result, 3, "bad.yaml", "host 'box'", "'host' is not a valid host name", "contains ';'")  # type: ignore[arg-type]
    assert not marker.exists(), "the host name reached a shell"
    assert not seen.exists(), "nothing of ~/.ssh/config ran for a refused config"
    assert not list(run_dir.glob("skyctl/*.sock")), "no holder was started"

    # the control: a valid name is looked up in that ~/.ssh/config (its Match exec runs) and connects
    ok = run_as(home, run_dir, config(tmp_path / "good.yaml", good), *flags)
    assert ok.returncode == 0 and int(ok.stdout) > 0, ok.stderr  # type: ignore[attr-defined]
    assert seen.exists(), "skyctl applies ~/.ssh/config, Match exec included"
    assert not marker.exists()


@pytest.mark.parametrize("via", ["direct", "kept"])
def test_a_proxyjump_from_ssh_config_with_shell_characters_is_refused(home: Path, run_dir: Path, tmp_path: Path,
                                                                      via: str) -> None:
    flags = ("--no-reuse",) if via == "direct" else ()
    cfg = config(tmp_path / "skyward.yaml", f"  box:\n    host: jumpy\n    known_hosts: {tmp_path / 'kh'}\n")
    result = run_as(home, run_dir, cfg, *flags)
    assert_failure(result, 3, "~/.ssh/config: host 'jumpy': ProxyJump", "is not a valid host name", "contains ';'")  # type: ignore[arg-type]
    assert not (tmp_path / "marker").exists(), "the hop name reached a shell"
