"""``-H user@host:port`` and ``-H ssh://user@host:port``: ssh hosts without a profile (issue 20, part 5).

A destination takes ``defaults:`` and ``~/.ssh/config`` as a profile without
those keys would, host keys stay strict, and its name in messages is the
destination as written. A name that is neither a profile, a group nor a
destination stays a config error (exit 3) with a did-you-mean.
"""

from __future__ import annotations

import pathlib
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ssh_e2e import assert_failure, skyctl

from skyctl.config import builtin_config, parse_config
from skyctl.destination import parse_destination
from skyctl.errors import ConfigError

if TYPE_CHECKING:
    from sshd import SshServer

pytestmark = pytest.mark.timeout(180)

WHERE = str(Path(__file__).resolve().parent / "targets" / "groups.py") + ":where"
DOUBLE = str(Path(__file__).resolve().parent / "targets" / "groups.py") + ":double"


# -- parsing (in-process) -----------------------------------------------------------------


@pytest.mark.parametrize(
    "text, user, host, port",
    [
        ("root@127.0.0.1", "root", "127.0.0.1", None),
        ("root@127.0.0.1:2222", "root", "127.0.0.1", 2222),
        ("ssh://root@box.example.com:22", "root", "box.example.com", 22),
        ("ssh://box.example.com", None, "box.example.com", None),
        ("SSH://deploy@box", "deploy", "box", None),
        ("root@[::1]:2222", "root", "::1", 2222),
        ("ssh://root@[::1]", "root", "::1", None),
        ("root@::1", "root", "::1", None),
        ("me@corp.example@gpu-1:22", "me@corp.example", "gpu-1", 22),
    ],
)  # fmt: skip
def test_destination_forms(text: str, user: str | None, host: str, port: int | None) -> None:
    parsed = parse_destination(text)
    assert (parsed.text, parsed.user, parsed.host, parsed.port) == (text, user, host, port)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("root@a;id", "host 'a;id' contains ';'"),
        ("root@-oProxyCommand=id", "host '-oProxyCommand=id' starts with '-'"),
        ("-oProxyCommand=id@h", "user '-oProxyCommand=id' starts with '-'"),
        ("ro|ot@h", "user 'ro|ot' contains '|'"),
        ("root@$(id)", "contains '$'"),
        ("@h", "user '' is empty"),
        ("root@", "host '' is empty"),
        ("root@h:0", "port '0' is not a number from 1 to 65535"),
        ("root@h:99999", "port '99999'"),
        ("root@h:ssh", "port 'ssh'"),
        ("ssh://h/path", "has no path"),
        ("root@[::1", "IPv6"),
        ("root@[::1]x", "IPv6"),
    ],
)  # fmt: skip
def test_bad_destinations_are_config_errors(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        builtin_config(environ={}).host(text, environ={})
    assert info.value.exit_status == 3
    assert problem in info.value.message, info.value.message
    assert f"{text!r} is not a valid ssh destination" in info.value.message
    assert info.value.hint


def test_a_destination_takes_defaults_and_the_destination_wins() -> None:
    cfg = parse_config(
        "defaults: {user: deploy, port: 2200, identity_file: /keys/id, python: /usr/bin/python3, env: {A: '1'}}\n"
        "hosts:\n  box: {host: b}\n",
        pathlib.Path("skyward.yaml"), environ={},
    )
    profile = cfg.host("root@10.0.0.5:2222", environ={"HOME": "/home/me"})
    assert profile.name == "root@10.0.0.5:2222" and profile.type == "ssh"
    assert (profile.user, profile.host, profile.port) == ("root", "10.0.0.5", 2222)
    assert profile.identity_file == ("/keys/id",) and profile.python == "/usr/bin/python3" and dict(profile.env) == {"A": "1"}
    assert profile.host_key_policy == "strict" and profile.known_hosts == "/home/me/.ssh/known_hosts"
    bare = cfg.host("ssh://10.0.0.5", environ={})
    assert (bare.user, bare.port) == ("deploy", 2200)  # not given: from defaults, as for a profile


def test_a_profile_or_group_of_that_name_wins() -> None:
    cfg = parse_config('hosts:\n  "root@h": {host: other}\ngroups:\n  "g@x": ["root@h"]\n', pathlib.Path("skyward.yaml"), environ={})
    assert cfg.host("root@h", environ={}).host == "other"
    assert [p.name for p in cfg.resolve("g@x", environ={}).profiles] == ["root@h"]


def test_a_comma_list_mixes_profiles_groups_and_destinations() -> None:
    cfg = parse_config("hosts:\n  box: {host: b}\ngroups:\n  farm: [box]\n", pathlib.Path("skyward.yaml"), environ={})
    target = cfg.resolve("local,root@h:22,farm,ssh://u@[::1]:2", environ={})
    assert target.is_group
    assert [p.name for p in target.profiles] == ["local", "root@h:22", "box", "ssh://u@[::1]:2"]


def test_an_unknown_bare_name_is_still_unknown_with_did_you_mean() -> None:
    cfg = parse_config("hosts:\n  gpu-1: {host: g}\n", pathlib.Path("skyward.yaml"), environ={})
    with pytest.raises(ConfigError) as info:
        cfg.host("gpu1", environ={})
    assert info.value.message == "skyward.yaml: unknown host 'gpu1'"
    assert "did you mean 'gpu-1'?" in (info.value.hint or "")
    assert "user@host[:port]" in (info.value.hint or "")


# -- end to end, against the test sshd -------------------------------------------------------


def _defaults_only(tmp_path: Path, sshd: "SshServer") -> Path:
    """A skyward.yaml with no ssh profile at all: only ``defaults:`` (key, known_hosts, python, env)."""
    path = tmp_path / "skyward.yaml"
    path.write_text(
        "defaults:\n"
        f"  identity_file: {sshd.identity_file}\n"
        f"  known_hosts: {sshd.known_hosts}\n"
        "  python: /usr/bin/python3\n"
        "  env: {SKYCTL_TEST_HOST: from-defaults}\n"
    )
    return path


@pytest.mark.parametrize("form", ["user@host:port", "ssh://user@host:port"])
def test_run_on_a_destination_takes_defaults(tmp_path: Path, sshd: "SshServer", form: str) -> None:
    cfg = _defaults_only(tmp_path, sshd)
    dest = f"{sshd.user}@127.0.0.1:{sshd.port}"
    if form.startswith("ssh://"):
        dest = "ssh://" + dest
    result = skyctl("run", WHERE, "-H", dest, "-c", str(cfg))
    assert (result.returncode, result.stdout) == (0, "from-defaults\n"), result.stderr


def test_pipe_on_a_destination(tmp_path: Path, sshd: "SshServer") -> None:
    cfg = _defaults_only(tmp_path, sshd)
    result = skyctl("pipe", DOUBLE, "-H", f"{sshd.user}@127.0.0.1:{sshd.port}", "-c", str(cfg), input="1\n2\n3\n")
    assert (result.returncode, result.stdout) == (0, "2\n4\n6\n"), result.stderr


def test_a_destination_in_a_comma_list_with_local_is_tagged_as_written(tmp_path: Path, sshd: "SshServer") -> None:
    cfg = _defaults_only(tmp_path, sshd)
    dest = f"{sshd.user}@127.0.0.1:{sshd.port}"
    result = skyctl("run", WHERE, "-H", f"local,{dest}", "-c", str(cfg))
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == sorted(["local\t?", f"{dest}\tfrom-defaults"])
    assert f"{dest}: ok" in result.stderr and "local: ok" in result.stderr


def test_check_a_destination(tmp_path: Path, sshd: "SshServer") -> None:
    cfg = _defaults_only(tmp_path, sshd)
    dest = f"{sshd.user}@127.0.0.1:{sshd.port}"
    result = skyctl("check", dest, "-c", str(cfg))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"{dest}: ok"), result.stdout


def test_no_skyward_yaml_takes_ssh_config_and_strict_host_keys_stay(tmp_path: Path, sshd: "SshServer") -> None:
    """No config file at all: the key comes from ~/.ssh/config, the host key from ~/.ssh/known_hosts."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(f"Host 127.0.0.1\n  IdentityFile {sshd.identity_file}\n")
    work = tmp_path / "work"
    work.mkdir()
    dest = f"{sshd.user}@127.0.0.1:{sshd.port}"
    env = {"HOME": str(home)}

    unknown = skyctl("run", WHERE, "-H", dest, "--no-reuse", cwd=work, env=env)  # no known_hosts yet: refused
    assert_failure(unknown, 4, dest.split("@")[1].split(":")[0])
    assert "host key" in unknown.stderr.lower(), unknown.stderr

    (home / ".ssh" / "known_hosts").write_text(sshd.known_hosts.read_text())
    result = skyctl("run", WHERE, "-H", dest, cwd=work, env=env)
    assert (result.returncode, result.stdout) == (0, "?\n"), result.stderr


@pytest.mark.parametrize(
    "host, needle",
    [
        ("gpu1", "unknown host 'gpu1'"),
        ("root@127.0.0.1;id", "host '127.0.0.1;id' contains ';'"),
        ("root@127.0.0.1:notaport", "port 'notaport'"),
    ],
)  # fmt: skip
def test_a_bad_destination_is_exit_3(tmp_path: Path, host: str, needle: str) -> None:
    cfg = tmp_path / "skyward.yaml"
    cfg.write_text("hosts:\n  gpu-1: {host: g}\n")
    for argv in (["run", WHERE], ["pipe", DOUBLE]):
        result = skyctl(*argv, "-H", f"local,{host}" if argv[0] == "pipe" else host, "-c", str(cfg), input="")
        assert_failure(result, 3, needle)
    result = skyctl("run", WHERE, "-H", "gpu1", "-c", str(cfg))
    assert "did you mean 'gpu-1'?" in result.stderr
