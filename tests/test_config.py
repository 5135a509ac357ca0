"""Tests for skyctl.config: lookup order, parsing, every validation rule and its message."""

from __future__ import annotations

import os
import pathlib
import pickle
import re
import subprocess
import sys
import textwrap
from dataclasses import FrozenInstanceError, fields

import pytest

from skyctl import config
from skyctl.config import (
    BUILTIN_LOCAL,
    INIT_TEMPLATE,
    Config,
    HostProfile,
    find_config_path,
    load_config,
    parse_config,
    write_init,
)
from skyctl.errors import ConfigError, ExitStatus

REPO = pathlib.Path(__file__).resolve().parents[1]
HOME = "/home/tester"
ENV = {"HOME": HOME}
FILE = pathlib.Path("skyward.yaml")  # relative, so messages start with exactly "skyward.yaml"


def parse(text: str, environ: dict[str, str] | None = None) -> Config:
    return parse_config(textwrap.dedent(text), FILE, ENV if environ is None else environ)


def error(text: str, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text, environ)
    return info.value


def ssh(body: str = "") -> str:
    """A config with one ssh host 'gpu-1' whose extra keys are ``body``."""
    extra = textwrap.indent(textwrap.dedent(body), "    ")
    return "hosts:\n  gpu-1:\n    host: gpu-1.example.com\n" + extra


CONTRACT_EXAMPLE = """\
default: local
defaults:
  user: deploy
  identity_file: ~/.ssh/id_ed25519
hosts:
  local:
    type: local
  gpu-1:
    host: gpu-1.example.com
    port: 22
    user: ubuntu
    identity_file: ~/.ssh/id_ed25519
    python: python3
    workdir: ~/.cache/skyctl
    env: {OMP_NUM_THREADS: "8"}
    pip: ["numpy>=2"]
    known_hosts: ~/.ssh/known_hosts
    host_key_policy: strict
    gateway: bastion
    connect_timeout: 10
    keepalive: 15
    reuse: true
    reuse_idle: 60
  bastion:
    host: bastion.example.com
"""


# --------------------------------------------------------------------------- lookup order


class TestFindConfigPath:
    def test_nothing_found_gives_none(self, tmp_path: pathlib.Path) -> None:
        home = tmp_path / "home"
        assert find_config_path(environ={"HOME": str(home)}, cwd=tmp_path) is None

    def test_cwd_file_is_found(self, tmp_path: pathlib.Path) -> None:
        (tmp_path / "skyward.yaml").write_text("")
        assert find_config_path(environ={"HOME": str(tmp_path / "h")}, cwd=tmp_path) == tmp_path / "skyward.yaml"

    def test_home_file_is_found(self, tmp_path: pathlib.Path) -> None:
        home_file = tmp_path / "h" / ".config" / "skyctl" / "skyward.yaml"
        home_file.parent.mkdir(parents=True)
        home_file.write_text("")
        assert find_config_path(environ={"HOME": str(tmp_path / "h")}, cwd=tmp_path) == home_file

    def test_cwd_wins_over_home(self, tmp_path: pathlib.Path) -> None:
        home_file = tmp_path / "h" / ".config" / "skyctl" / "skyward.yaml"
        home_file.parent.mkdir(parents=True)
        home_file.write_text("")
        work = tmp_path / "work"
        work.mkdir()
        (work / "skyward.yaml").write_text("")
        assert find_config_path(environ={"HOME": str(tmp_path / "h")}, cwd=work) == work / "skyward.yaml"

    def test_env_wins_over_cwd(self, tmp_path: pathlib.Path) -> None:
        (tmp_path / "skyward.yaml").write_text("")
        other = tmp_path / "other.yaml"
        other.write_text("")
        environ = {"HOME": str(tmp_path), "SKYCTL_CONFIG": str(other)}
        assert find_config_path(environ=environ, cwd=tmp_path) == other

    def test_explicit_wins_over_env(self, tmp_path: pathlib.Path) -> None:
        explicit = tmp_path / "explicit.yaml"
        explicit.write_text("")
        environ = {"HOME": str(tmp_path), "SKYCTL_CONFIG": str(tmp_path / "missing.yaml")}
        assert find_config_path(explicit, environ=environ, cwd=tmp_path) == explicit

    def test_relative_explicit_is_relative_to_cwd(self, tmp_path: pathlib.Path) -> None:
        (tmp_path / "conf").mkdir()
        (tmp_path / "conf" / "a.yaml").write_text("")
        assert find_config_path("conf/a.yaml", environ=ENV, cwd=tmp_path) == tmp_path / "conf" / "a.yaml"

    def test_explicit_tilde_uses_environ_home(self, tmp_path: pathlib.Path) -> None:
        (tmp_path / "a.yaml").write_text("")
        assert find_config_path("~/a.yaml", environ={"HOME": str(tmp_path)}, cwd="/") == tmp_path / "a.yaml"

    def test_missing_explicit_is_an_error(self, tmp_path: pathlib.Path) -> None:
        (tmp_path / "skyward.yaml").write_text("")  # not used as a fallback
        with pytest.raises(ConfigError) as info:
            find_config_path("nope.yaml", environ=ENV, cwd=tmp_path)
        assert "config file not found: nope.yaml (from --config)" == info.value.message
        assert info.value.exit_status == ExitStatus.CONFIG

    def test_missing_env_file_is_an_error(self, tmp_path: pathlib.Path) -> None:
        with pytest.raises(ConfigError) as info:
            find_config_path(environ={"HOME": HOME, "SKYCTL_CONFIG": "gone.yaml"}, cwd=tmp_path)
        assert info.value.message == "config file not found: gone.yaml (from $SKYCTL_CONFIG)"

    def test_explicit_directory_is_an_error(self, tmp_path: pathlib.Path) -> None:
        with pytest.raises(ConfigError, match="is a directory"):
            find_config_path(str(tmp_path), environ=ENV, cwd=tmp_path)

    def test_empty_env_variable_is_ignored(self, tmp_path: pathlib.Path) -> None:
        environ = {"HOME": str(tmp_path / "h"), "SKYCTL_CONFIG": ""}
        assert find_config_path(environ=environ, cwd=tmp_path) is None


class TestLoadConfig:
    def test_no_file_gives_builtin_local(self, tmp_path: pathlib.Path) -> None:
        cfg = load_config(environ={"HOME": str(tmp_path)}, cwd=tmp_path)
        assert cfg.path is None
        assert cfg.default == BUILTIN_LOCAL == "local"
        assert list(cfg.hosts) == ["local"]
        local = cfg.host(environ={})
        assert local.type == "local" and local.address == "local"
        assert local.workdir == f"{tmp_path}/.cache/skyctl"

    def test_reads_the_found_file(self, tmp_path: pathlib.Path) -> None:
        (tmp_path / "skyward.yaml").write_text("default: box\nhosts:\n  box:\n    host: box.lan\n")
        cfg = load_config(environ={"HOME": str(tmp_path)}, cwd=tmp_path)
        assert cfg.path == tmp_path / "skyward.yaml"
        assert cfg.host(environ={}).host == "box.lan"

    def test_errors_name_the_file(self, tmp_path: pathlib.Path) -> None:
        path = tmp_path / "mine.yaml"
        path.write_text("hosts:\n  a:\n    prot: 1\n")
        with pytest.raises(ConfigError) as info:
            load_config(path, environ=ENV, cwd=tmp_path)
        assert "mine.yaml: host 'a': unknown key 'prot'" in info.value.message

    def test_not_utf8_is_a_config_error(self, tmp_path: pathlib.Path) -> None:
        path = tmp_path / "skyward.yaml"
        path.write_bytes(b"default: \xff\xfe\n")
        with pytest.raises(ConfigError, match="not UTF-8"):
            load_config(path, environ=ENV, cwd=tmp_path)


class TestConfigHost:
    CFG = """\
        default: gpu-1
        hosts:
          gpu-1: {host: a}
          gpu-2: {host: b}
        """

    def test_name_wins(self) -> None:
        assert parse(self.CFG).host("gpu-2", environ={"SKYCTL_HOST": "local"}).name == "gpu-2"

    def test_env_wins_over_default(self) -> None:
        assert parse(self.CFG).host(environ={"SKYCTL_HOST": "local"}).name == "local"

    def test_default_is_last(self) -> None:
        assert parse(self.CFG).host(environ={}).name == "gpu-1"

    def test_empty_env_is_ignored(self) -> None:
        assert parse(self.CFG).host(environ={"SKYCTL_HOST": ""}).name == "gpu-1"

    def test_unknown_name(self) -> None:
        with pytest.raises(ConfigError) as info:
            parse(self.CFG).host("gpu1", environ={})
        assert info.value.message == "skyward.yaml: unknown host 'gpu1'"
        assert info.value.hint is not None
        assert "did you mean 'gpu-1'?" in info.value.hint
        assert "known hosts: local, gpu-1, gpu-2" in info.value.hint

    def test_unknown_name_from_env_says_so(self) -> None:
        with pytest.raises(ConfigError, match=re.escape("unknown host 'zzz' (from $SKYCTL_HOST)")):
            parse(self.CFG).host(environ={"SKYCTL_HOST": "zzz"})

    def test_unknown_name_on_builtin_suggests_init(self) -> None:
        with pytest.raises(ConfigError) as info:
            config.builtin_config(ENV).host("gpu-1", environ={})
        assert info.value.message == "built-in config: unknown host 'gpu-1'"
        assert "skyctl init" in (info.value.hint or "")


# --------------------------------------------------------------------------- parsing


class TestWholeFile:
    def test_contract_example(self) -> None:
        cfg = parse(CONTRACT_EXAMPLE)
        assert list(cfg.hosts) == ["local", "gpu-1", "bastion"]
        gpu = cfg.hosts["gpu-1"]
        assert gpu == HostProfile(
            name="gpu-1",
            type="ssh",
            host="gpu-1.example.com",
            port=22,
            user="ubuntu",
            identity_file=(f"{HOME}/.ssh/id_ed25519",),
            python="python3",
            workdir="~/.cache/skyctl",
            env={"OMP_NUM_THREADS": "8"},
            pip=("numpy>=2",),
            known_hosts=f"{HOME}/.ssh/known_hosts",
            host_key_policy="strict",
            gateway="bastion",
            connect_timeout=10.0,
            keepalive=15.0,
            reuse=True,
            reuse_idle=60.0,
        )
        assert isinstance(gpu.connect_timeout, float)
        bastion = cfg.hosts["bastion"]
        assert bastion.user == "deploy"  # from defaults
        assert bastion.identity_file == (f"{HOME}/.ssh/id_ed25519",)
        assert bastion.address == "deploy@bastion.example.com"

    @pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n"])
    def test_empty_file_is_builtin_local(self, text: str) -> None:
        cfg = parse(text)
        assert cfg.default == "local" and list(cfg.hosts) == ["local"]
        assert cfg.path == FILE

    def test_hosts_null_is_empty(self) -> None:
        assert list(parse("hosts:\n").hosts) == ["local"]

    def test_yaml_syntax_error_has_line(self) -> None:
        err = error("default: local\nhosts:\n  a:\n    host: [x\n  b: {\n")
        assert re.match(r"skyward\.yaml line \d+: ", err.message), err.message
        err = error("hosts:\n  a:\n    host: x\n   port: 22\n")
        assert err.message.startswith("skyward.yaml line 4: "), err.message
        assert err.hint == "line 4: port: 22"

    def test_tab_indentation_hint(self) -> None:
        err = error("hosts:\n\ta: {host: x}\n")
        assert err.message.startswith("skyward.yaml line 2: ")
        assert err.hint == "YAML indents with spaces, not tabs"

    def test_duplicate_key_is_an_error(self) -> None:
        err = error("hosts:\n  a: {host: x}\n  a: {host: y}\n")
        assert err.message == "skyward.yaml line 3: duplicate key 'a'"

    def test_merge_keys_still_work(self) -> None:
        cfg = parse(
            """\
            hosts:
              a: &base {host: x, port: 2200}
              b:
                <<: *base
                host: y
            """
        )
        assert cfg.hosts["b"].host == "y" and cfg.hosts["b"].port == 2200

    def test_top_level_must_be_a_mapping(self) -> None:
        err = error("- a\n- b\n")
        assert err.message.startswith("skyward.yaml: the file must be a mapping with keys default, defaults, hosts")

    def test_unknown_top_level_key(self) -> None:
        err = error("hostz: {}\n")
        assert err.message == "skyward.yaml: unknown key 'hostz'"
        assert err.hint == "did you mean 'hosts'?"

    def test_unknown_top_level_key_without_close_match_lists_keys(self) -> None:
        assert error("gpu-1: {host: x}\n").hint == "valid keys: default, defaults, hosts, groups"

    def test_hosts_must_be_a_mapping(self) -> None:
        assert error("hosts: [a, b]\n").message == "skyward.yaml: 'hosts' must be a mapping of host name to settings, got a list"

    def test_host_settings_must_be_a_mapping(self) -> None:
        assert error("hosts:\n  a: gpu.example.com\n").message == (
            "skyward.yaml: host 'a': settings must be a mapping, got 'gpu.example.com'"
        )

    def test_host_name_must_be_a_string(self) -> None:
        err = error("hosts:\n  1: {host: x}\n")
        assert err.message == "skyward.yaml: host name 1 is not a name"

    def test_whole_file_is_validated_whichever_host_is_used(self, tmp_path: pathlib.Path) -> None:
        path = tmp_path / "skyward.yaml"
        path.write_text("default: local\nhosts:\n  local: {type: local}\n  unused: {host: x, port: nope}\n")
        with pytest.raises(ConfigError, match="host 'unused': 'port'"):
            load_config(path, environ=ENV, cwd=tmp_path)


class TestHostType:
    def test_host_makes_ssh(self) -> None:
        assert parse(ssh()).hosts["gpu-1"].type == "ssh"

    def test_explicit_ssh_with_host(self) -> None:
        assert parse(ssh("type: ssh\n")).hosts["gpu-1"].type == "ssh"

    def test_type_local(self) -> None:
        profile = parse("hosts:\n  here: {type: local}\n").hosts["here"]
        assert profile.type == "local" and profile.address == "local"

    def test_neither_host_nor_type_is_an_error(self) -> None:
        err = error("hosts:\n  a: {user: x}\n")
        assert err.message == "skyward.yaml: host 'a': needs 'host' (an ssh host) or 'type: local'"

    def test_empty_host_entry_is_an_error(self) -> None:
        assert "needs 'host'" in error("hosts:\n  a:\n").message

    def test_local_with_host_is_an_error(self) -> None:
        err = error("hosts:\n  a: {type: local, host: x}\n")
        assert err.message == "skyward.yaml: host 'a': 'host' is set but 'type' is local"

    def test_ssh_without_host_is_an_error(self) -> None:
        assert error("hosts:\n  a: {type: ssh}\n").message == "skyward.yaml: host 'a': type ssh needs 'host'"

    def test_bad_type(self) -> None:
        err = error("hosts:\n  a: {type: locale}\n")
        assert err.message == "skyward.yaml: host 'a': 'type' must be 'local', 'ssh', 'command' or 'ray', got 'locale'"
        assert err.hint == "did you mean 'local'?"

    @pytest.mark.parametrize("key, value", [("python", "/opt/py/bin/python"), ("env", "{A: b}"), ("workdir", "/tmp/w")])
    def test_local_allows_python_workdir_env(self, key: str, value: str) -> None:
        parse(f"hosts:\n  here:\n    type: local\n    {key}: {value}\n")

    @pytest.mark.parametrize("key, value", [("port", "22"), ("user", "u"), ("gateway", "b")])
    def test_ssh_only_keys_on_local_are_errors(self, key: str, value: str) -> None:
        err = error(f"hosts:\n  b: {{host: b}}\n  here:\n    type: local\n    {key}: {value}\n")
        assert err.message == f"skyward.yaml: host 'here': '{key}' is only for ssh hosts; this host is local"

    @pytest.mark.parametrize("key, value", [("reuse", "true"), ("reuse_idle", "5")])
    def test_reuse_keys_are_for_ssh_and_ray_hosts(self, key: str, value: str) -> None:
        err = error(f"hosts:\n  here:\n    type: local\n    {key}: {value}\n")
        assert err.message == f"skyward.yaml: host 'here': '{key}' is only for ssh and ray hosts; this host is local"
        ray = parse(f"hosts:\n  here: {{type: local}}\n  c:\n    type: ray\n    via: here\n    {key}: {value}\n")
        assert getattr(ray.host("c"), key) in (True, 5.0)

    def test_builtin_local_exists_when_not_listed(self) -> None:
        cfg = parse(ssh())
        assert list(cfg.hosts) == ["local", "gpu-1"]
        assert cfg.hosts["local"].type == "local"

    def test_file_may_override_local(self) -> None:
        cfg = parse("hosts:\n  gpu: {host: g}\n  local: {type: local, python: /opt/bin/python3}\n")
        assert list(cfg.hosts) == ["gpu", "local"]
        assert cfg.hosts["local"].python == "/opt/bin/python3"

    def test_local_may_even_be_an_ssh_host(self) -> None:
        assert parse("hosts:\n  local: {host: box}\n").hosts["local"].type == "ssh"


class TestUnknownKeysAndPasswords:
    def test_unknown_host_key_with_did_you_mean(self) -> None:
        err = error(ssh("prot: 22\n"))
        assert err.message == "skyward.yaml: host 'gpu-1': unknown key 'prot'"
        assert err.hint == "did you mean 'port'?"
        assert err.exit_status == ExitStatus.CONFIG

    def test_unknown_host_key_without_close_match_lists_keys(self) -> None:
        hint = error(ssh("zzzzzz: 1\n")).hint or ""
        assert hint.startswith("valid keys: type, host, port")

    def test_unknown_defaults_key(self) -> None:
        err = error("defaults:\n  usr: deploy\n")
        assert err.message == "skyward.yaml: defaults: unknown key 'usr'"
        assert err.hint == "did you mean 'user'?"

    @pytest.mark.parametrize("key", ["host", "type"])
    def test_defaults_cannot_set_host_or_type(self, key: str) -> None:
        assert error(f"defaults:\n  {key}: x\n").message == f"skyward.yaml: defaults: '{key}' cannot be a default"

    @pytest.mark.parametrize("key", ["password", "passphrase", "Password"])
    def test_password_in_host(self, key: str) -> None:
        err = error(ssh(f"{key}: hunter2\n"))
        assert err.message.startswith("skyward.yaml: host 'gpu-1': ")
        assert "no passwords in skyward.yaml: use keys or ssh-agent" in err.message

    def test_password_in_defaults(self) -> None:
        err = error("defaults:\n  password: x\n")
        assert err.message == "skyward.yaml: defaults: 'password' is not allowed: no passwords in skyward.yaml: use keys or ssh-agent"

    def test_password_on_local_host(self) -> None:
        assert "no passwords" in error("hosts:\n  l: {type: local, password: x}\n").message


class TestValues:
    @pytest.mark.parametrize(
        "line, fragment",
        [
            ('port: "abc"', "'port' must be an integer from 1 to 65535, got 'abc'"),
            ("port: 70000", "'port' must be an integer from 1 to 65535, got 70000"),
            ("port: 0", "'port' must be an integer from 1 to 65535, got 0"),
            ("port: true", "'port' must be an integer from 1 to 65535, got true"),
            ("port: 22.5", "'port' must be an integer from 1 to 65535, got 22.5"),
            ("reuse: maybe", "'reuse' must be true or false, got 'maybe'"),
            ("reuse: 2", "'reuse' must be true or false, got 2"),
            ("env: {A: [1, 2]}", "'env.A' must be a string, number or boolean, got a list"),
            ("env: [A]", "'env' must be a mapping of NAME: value, got a list"),
            ("pip: numpy", "'pip' must be a list of requirements, got 'numpy'"),
            ("pip: [numpy, 3]", "'pip' item 2 must be a string, got 3"),
            ("host_key_policy: trust", "'host_key_policy' must be 'strict' or 'accept-new', got 'trust'"),
            ("host_key_policy: off", "'host_key_policy' must be 'strict' or 'accept-new', got false"),
            ("connect_timeout: 0", "'connect_timeout' must be a number of seconds greater than 0, got 0"),
            ("keepalive: -1", "'keepalive' must be a number of seconds greater than 0, got -1"),
            ("reuse_idle: soon", "'reuse_idle' must be a number of seconds greater than 0, got 'soon'"),
            ("connect_timeout: .nan", "'connect_timeout' must be a number of seconds greater than 0, got nan"),
            ("user: 1000", "'user' must be a string, got 1000"),
            ("user: ''", "'user' must not be empty"),
            ("python: [python3]", "'python' must be a string, got a list"),
            ("identity_file: 5", "'identity_file' must be a path or a list of paths, got 5"),
            ("identity_file: [a, {b: c}]", "'identity_file' item 2 must be a path, got a mapping"),
            ("known_hosts: [a]", "'known_hosts' must be a string, got a list"),
            ("workdir: {a: b}", "'workdir' must be a string, got a mapping"),
        ],
    )
    def test_wrong_types(self, line: str, fragment: str) -> None:
        err = error(ssh(line + "\n"))
        assert err.message == f"skyward.yaml: host 'gpu-1': {fragment}"

    def test_host_with_user_part_is_an_error(self) -> None:
        err = error("hosts:\n  a: {host: ubuntu@box}\n")
        assert err.message == "skyward.yaml: host 'a': 'host' must be an address or alias, got 'ubuntu@box'"
        assert err.hint == "put the user in 'user:'"

    def test_host_policy_off_hint_refuses(self) -> None:
        assert "never turns host-key checking off" in (error(ssh("host_key_policy: off\n")).hint or "")

    def test_policy_did_you_mean(self) -> None:
        assert error(ssh("host_key_policy: accept_new\n")).hint == "did you mean 'accept-new'?"

    def test_accept_new(self) -> None:
        assert parse(ssh("host_key_policy: accept-new\n")).hosts["gpu-1"].host_key_policy == "accept-new"

    @pytest.mark.parametrize("text, expected", [("true", True), ("no", False), ("'off'", False), ("'YES'", True), ("'1'", True)])
    def test_reuse_booleans(self, text: str, expected: bool) -> None:
        assert parse(ssh(f"reuse: {text}\n")).hosts["gpu-1"].reuse is expected

    @pytest.mark.parametrize("key", ["connect_timeout", "keepalive", "reuse_idle"])
    def test_seconds_accept_int_and_float(self, key: str) -> None:
        assert getattr(parse(ssh(f"{key}: 3\n")).hosts["gpu-1"], key) == 3.0
        assert getattr(parse(ssh(f"{key}: 0.25\n")).hosts["gpu-1"], key) == 0.25

    def test_env_values_are_stringified(self) -> None:
        env = parse(ssh("env: {S: x, I: 8, F: 0.5, B: true, N: null, D: 2024-01-02}\n")).hosts["gpu-1"].env
        assert dict(env) == {"S": "x", "I": "8", "F": "0.5", "B": "true", "N": "", "D": "2024-01-02"}

    def test_env_name_must_be_a_string(self) -> None:
        assert error(ssh("env: {1: x}\n")).message == "skyward.yaml: host 'gpu-1': 'env' has a bad variable name 1"

    def test_identity_file_string_or_list(self) -> None:
        assert parse(ssh("identity_file: ~/.ssh/a\n")).hosts["gpu-1"].identity_file == (f"{HOME}/.ssh/a",)
        profile = parse(ssh("identity_file: [~/.ssh/a, /keys/b]\n")).hosts["gpu-1"]
        assert profile.identity_file == (f"{HOME}/.ssh/a", "/keys/b")

    def test_null_means_not_set(self) -> None:
        profile = parse(ssh("port: null\nreuse: ~\nworkdir:\n")).hosts["gpu-1"]
        assert profile.port is None and profile.reuse is True and profile.workdir == "~/.cache/skyctl"


class TestPaths:
    def test_ssh_defaults(self) -> None:
        profile = parse(ssh()).hosts["gpu-1"]
        assert profile.workdir == "~/.cache/skyctl"  # the remote home, not ours
        assert profile.known_hosts == f"{HOME}/.ssh/known_hosts"
        assert profile.python is None and profile.effective_python == "python3"

    def test_ssh_workdir_and_python_are_not_expanded(self) -> None:
        profile = parse(ssh("workdir: ~/w\npython: ~/venv/bin/python\n")).hosts["gpu-1"]
        assert profile.workdir == "~/w" and profile.python == "~/venv/bin/python"

    def test_local_paths_are_expanded(self) -> None:
        profile = parse("hosts:\n  l: {type: local, workdir: ~/w, python: ~/venv/bin/python}\n").hosts["l"]
        assert profile.workdir == f"{HOME}/w"
        assert profile.python == f"{HOME}/venv/bin/python"

    def test_local_default_workdir_is_expanded(self) -> None:
        cfg = parse("hosts:\n  l: {type: local}\n")
        assert cfg.hosts["l"].workdir == f"{HOME}/.cache/skyctl"
        assert cfg.hosts["local"].workdir == f"{HOME}/.cache/skyctl"
        assert cfg.hosts["l"].effective_python == sys.executable

    def test_known_hosts_is_expanded(self) -> None:
        assert parse(ssh("known_hosts: ~/kh\n")).hosts["gpu-1"].known_hosts == f"{HOME}/kh"


class TestExpansion:
    def test_var(self) -> None:
        cfg = parse(ssh("user: ${WHO}\n"), {"HOME": HOME, "WHO": "alice"})
        assert cfg.hosts["gpu-1"].user == "alice"

    def test_var_inside_text(self) -> None:
        cfg = parse("hosts:\n  a: {host: 'gpu-${N}.example.com'}\n", {"N": "3"})
        assert cfg.hosts["a"].host == "gpu-3.example.com"

    @pytest.mark.parametrize("environ, expected", [({}, "fallback"), ({"WHO": ""}, "fallback"), ({"WHO": "bob"}, "bob")])
    def test_default(self, environ: dict[str, str], expected: str) -> None:
        assert parse(ssh("user: ${WHO:-fallback}\n"), environ).hosts["gpu-1"].user == expected

    def test_set_but_empty_without_default_is_empty(self) -> None:
        assert parse(ssh("env: {A: '${E}'}\n"), {"E": ""}).hosts["gpu-1"].env["A"] == ""

    def test_unset_var_is_an_error_naming_it(self) -> None:
        err = error(ssh("user: ${DEPLOY_USER}\n"), {})
        assert err.message == "skyward.yaml: host 'gpu-1': 'user' uses ${DEPLOY_USER}, which is not set"
        assert err.hint == "set DEPLOY_USER, or write ${DEPLOY_USER:-fallback}"

    def test_expanded_in_lists_env_and_top_level(self) -> None:
        environ = {"HOME": HOME, "V": "2", "K": "/keys", "D": "gpu-1", "T": "8"}
        cfg = parse(ssh("identity_file: ['${K}/a']\npip: ['numpy>=${V}']\nenv: {T: '${T}'}\n").replace("hosts:", "default: ${D}\nhosts:"), environ)
        profile = cfg.host(environ={})
        assert profile.name == "gpu-1"
        assert profile.identity_file == ("/keys/a",) and profile.pip == ("numpy>=2",) and profile.env["T"] == "8"

    def test_numbers_and_booleans_from_variables(self) -> None:
        environ = {"HOME": HOME, "P": "2222", "R": "no", "C": "2.5"}
        profile = parse(ssh("port: ${P}\nreuse: ${R}\nconnect_timeout: ${C}\n"), environ).hosts["gpu-1"]
        assert (profile.port, profile.reuse, profile.connect_timeout) == (2222, False, 2.5)

    def test_bad_number_from_variable(self) -> None:
        err = error(ssh("port: ${P}\n"), {"P": "ssh"})
        assert err.message == "skyward.yaml: host 'gpu-1': 'port' must be an integer from 1 to 65535, got 'ssh'"

    def test_tilde_after_expansion(self) -> None:
        assert parse(ssh("identity_file: ${KEY}\n"), {"HOME": HOME, "KEY": "~/k"}).hosts["gpu-1"].identity_file == (f"{HOME}/k",)

    def test_escaped_reference_is_literal(self) -> None:
        assert parse(ssh("env: {A: '$${NOT}'}\n"), {}).hosts["gpu-1"].env["A"] == "${NOT}"

    def test_plain_dollar_is_left_alone(self) -> None:
        assert parse(ssh("env: {A: '$HOME/x'}\n"), {}).hosts["gpu-1"].env["A"] == "$HOME/x"

    @pytest.mark.parametrize("ref", ["${1X}", "${A B}", "${A:=x}"])
    def test_bad_reference(self, ref: str) -> None:
        err = error(ssh(f"user: '{ref}'\n"), {})
        assert err.message == f"skyward.yaml: host 'gpu-1': 'user' has a bad variable reference '{ref}'"

    def test_unterminated_reference(self) -> None:
        assert "unterminated" in error(ssh("user: '${A'\n"), {"A": "x"}).message

    def test_variable_in_env_value_names_the_env_key(self) -> None:
        assert "'env.A' uses ${MISSING}" in error(ssh("env: {A: '${MISSING}'}\n"), {}).message

    def test_keys_are_not_expanded(self) -> None:
        assert "${X}" in parse("hosts:\n  '${X}': {host: a}\n", {"X": "y"}).hosts


class TestDefaults:
    BASE = """\
        defaults:
          user: deploy
          port: 2200
          env: {A: "1", B: "2"}
          pip: [numpy]
        hosts:
          here: {type: local, env: {C: "3"}}
          plain: {host: p}
          custom:
            host: c
            user: root
            env: {B: "20", D: "4"}
            pip: [pandas]
        """

    def test_defaults_fill_ssh_hosts(self) -> None:
        plain = parse(self.BASE).hosts["plain"]
        assert (plain.user, plain.port, dict(plain.env), plain.pip) == ("deploy", 2200, {"A": "1", "B": "2"}, ("numpy",))

    def test_host_keys_win_and_env_merges_by_key(self) -> None:
        custom = parse(self.BASE).hosts["custom"]
        assert custom.user == "root" and custom.port == 2200
        assert dict(custom.env) == {"A": "1", "B": "20", "D": "4"}
        assert custom.pip == ("pandas",)

    def test_defaults_do_not_apply_to_local_hosts(self) -> None:
        here = parse(self.BASE).hosts["here"]
        assert dict(here.env) == {"C": "3"}
        assert parse(self.BASE).hosts["local"].env == {}

    def test_null_in_host_opts_out_of_a_default(self) -> None:
        cfg = parse("defaults: {gateway: jump, port: 2200}\nhosts:\n  jump: {host: j, gateway: null}\n  a: {host: a, port: ~}\n")
        assert cfg.hosts["jump"].gateway is None
        assert cfg.hosts["a"].gateway == "jump" and cfg.hosts["a"].port is None

    def test_defaults_values_are_validated(self) -> None:
        assert error("defaults:\n  port: x\n").message == (
            "skyward.yaml: defaults: 'port' must be an integer from 1 to 65535, got 'x'"
        )

    def test_defaults_must_be_a_mapping(self) -> None:
        assert error("defaults: [a]\n").message == "skyward.yaml: 'defaults' must be a mapping of host keys, got a list"


class TestCrossReferences:
    def test_default_must_name_a_host(self) -> None:
        err = error("default: gpu1\nhosts:\n  gpu-1: {host: g}\n")
        assert err.message == "skyward.yaml: 'default' is 'gpu1', which names no host or group"
        assert err.hint == "did you mean 'gpu-1'? known hosts: local, gpu-1"

    def test_default_may_name_builtin_local(self) -> None:
        assert parse("default: local\nhosts:\n  a: {host: a}\n").default == "local"

    def test_missing_default_is_local(self) -> None:
        assert parse(ssh()).default == "local"

    def test_default_must_be_a_string(self) -> None:
        assert error("default: [a]\n").message == "skyward.yaml: 'default' must be a string, got a list"

    def test_gateway_must_name_a_host(self) -> None:
        err = error("hosts:\n  bastion: {host: b}\n  gpu: {host: g, gateway: bastoin}\n")
        assert err.message == "skyward.yaml: host 'gpu': 'gateway' is 'bastoin', which names no host"
        assert (err.hint or "").startswith("did you mean 'bastion'?")

    def test_gateway_must_not_be_local(self) -> None:
        err = error("hosts:\n  gpu: {host: g, gateway: local}\n")
        assert err.message == "skyward.yaml: host 'gpu': 'gateway' is 'local', which is a local host"

    def test_gateway_chain_is_fine(self) -> None:
        cfg = parse("hosts:\n  a: {host: a, gateway: b}\n  b: {host: b, gateway: c}\n  c: {host: c}\n")
        assert cfg.hosts["a"].gateway == "b"

    def test_gateway_cycle(self) -> None:
        err = error("hosts:\n  a: {host: a, gateway: b}\n  b: {host: b, gateway: a}\n")
        assert err.message == "skyward.yaml: host 'a': 'gateway' makes a cycle: a -> b -> a"

    def test_gateway_cycle_not_through_the_first_host(self) -> None:
        err = error("hosts:\n  x: {host: x, gateway: a}\n  a: {host: a, gateway: b}\n  b: {host: b, gateway: a}\n")
        assert err.message.endswith("'gateway' makes a cycle: a -> b -> a")

    def test_gateway_to_itself(self) -> None:
        assert error("hosts:\n  a: {host: a, gateway: a}\n").message.endswith("makes a cycle: a -> a")

    def test_default_gateway_on_the_gateway_itself_is_a_cycle(self) -> None:
        err = error("defaults: {gateway: j}\nhosts:\n  j: {host: j}\n")
        assert err.message.endswith("cycle: j -> j")
        assert "gateway: null" in (err.hint or "")


# --------------------------------------------------------------------------- type: command


def command(body: str = "argv: [docker, exec, -i, trainer]\n") -> str:
    """A config with one command host 'box' whose keys (after ``type``) are ``body``."""
    return "hosts:\n  box:\n    type: command\n" + textwrap.indent(textwrap.dedent(body), "    ")


class TestCommandHost:
    def test_minimal(self) -> None:
        profile = parse(command()).hosts["box"]
        assert profile.type == "command" and profile.argv == ("docker", "exec", "-i", "trainer")
        assert profile.shell is False and profile.python is None and profile.effective_python == "python3"
        assert profile.workdir == "~/.cache/skyctl"  # expanded on the other side, like an ssh host's
        assert profile.address == "docker exec -i trainer"

    def test_every_key(self) -> None:
        profile = parse(command("""\
            argv: [ssh, -T, -o, BatchMode=yes, "${HOST}"]
            shell: true
            python: ~/venv/bin/python
            workdir: ~/w
            env: {A: 1}
            pip: ["numpy>=2"]
            trust: full
            allow: [pkg.mod.Cls]
        """), {"HOME": HOME, "HOST": "gpu-1"}).hosts["box"]
        assert profile.argv == ("ssh", "-T", "-o", "BatchMode=yes", "gpu-1") and profile.shell is True
        assert profile.python == "~/venv/bin/python" and profile.workdir == "~/w"  # not expanded here
        assert profile.env == {"A": "1"} and profile.pip == ("numpy>=2",)
        assert profile.trust == "full" and profile.allow == ("pkg.mod.Cls",)

    def test_address_quotes_like_a_shell(self) -> None:
        profile = parse(command("argv: [sh, -c, 'exec \"$@\"', sh]\n")).hosts["box"]
        assert profile.address == "sh -c 'exec \"$@\"' sh"

    @pytest.mark.parametrize(
        "body, message, hint",
        [
            ("shell: true\n", "type command needs 'argv'", "the program to run, e.g. argv: [docker, exec, -i, trainer]"),
            ("argv: null\n", "type command needs 'argv'", "the program to run, e.g. argv: [docker, exec, -i, trainer]"),
            ("argv: []\n", "'argv' must not be empty: it names the program to run", "e.g. argv: [docker, exec, -i, trainer]"),
            ("argv: docker exec -i 'my box'\n", "'argv' must be a list of strings (the program and its arguments), "
             "got \"docker exec -i 'my box'\"", "write it as a list: argv: [docker, exec, -i, my box]"),
            ("argv: {a: b}\n", "'argv' must be a list of strings (the program and its arguments), got a mapping", None),
            ("argv: [ssh, -p, 2222, box]\n", "'argv' item 3 must be a string, got 2222", 'quote it: "2222"'),
            ("argv: [ssh, [a]]\n", "'argv' item 2 must be a string, got a list", "e.g. argv: [docker, exec, -i, trainer]"),
            ("argv: ['', x]\n", "'argv' item 1 (the program) must not be empty", None),
            ("argv: [x]\nshell: sometimes\n", "'shell' must be true or false, got 'sometimes'", None),
            ("argv: [x]\nargs: [y]\n", "unknown key 'args'", "did you mean 'argv'?"),
            ("argv: [x]\nuser: me\n", "'user' is only for ssh hosts; this host is command",
             "a command host takes: type, python, workdir, env, pip, connect_timeout, keepalive, keepalive_count, timeout, trust, allow, argv, shell"),
            ("argv: [x]\nhost: h\n", "'host' is set but 'type' is command",
             "a command host has no 'host': remove it, or remove 'type: command'"),
        ],
    )
    def test_errors_name_file_host_and_key(self, body: str, message: str, hint: str | None) -> None:
        err = error(command(body))
        assert err.message == f"skyward.yaml: host 'box': {message}"
        assert err.exit_status == ExitStatus.CONFIG
        if hint is not None:
            assert err.hint == hint

    def test_null_key_of_another_type_is_harmless(self) -> None:
        assert parse(command("argv: [x]\nport: null\n")).hosts["box"].port is None

    @pytest.mark.parametrize("kind", ["ssh", "local"])
    def test_argv_and_shell_belong_to_command_hosts(self, kind: str) -> None:
        head = "host: h\n" if kind == "ssh" else "type: local\n"
        for key in ("argv: [x]", "shell: true"):
            err = error("hosts:\n  a:\n    " + head.replace("\n", "\n    ") + key + "\n")
            name = key.split(":")[0]
            assert err.message == f"skyward.yaml: host 'a': '{name}' is only for command hosts; this host is {kind}"
            assert err.hint is not None and err.hint.startswith(f"'{name}' belongs to 'type: command'")

    def test_pip_is_for_ssh_and_command_hosts(self) -> None:
        err = error("hosts:\n  here: {type: local, pip: [x]}\n")
        assert err.message == "skyward.yaml: host 'here': 'pip' is only for ssh and command hosts; this host is local"

    def test_defaults_do_not_apply(self) -> None:
        cfg = parse("defaults: {python: /opt/py, env: {A: b}}\n" + command())
        assert cfg.hosts["box"].python is None and cfg.hosts["box"].env == {}

    @pytest.mark.parametrize("key", ["argv: [x]", "shell: true"])
    def test_command_keys_cannot_be_defaults(self, key: str) -> None:
        err = error(f"defaults: {{{key}}}\n" + command())
        assert err.message == f"skyward.yaml: defaults: '{key.split(':')[0]}' cannot be a default"

    def test_gateway_must_not_be_a_command_host(self) -> None:
        err = error(command() + "  gpu: {host: g, gateway: box}\n")
        assert err.message == "skyward.yaml: host 'gpu': 'gateway' is 'box', which is a command host"

    def test_direct_construction(self) -> None:
        profile = HostProfile(name="x", type="command", argv=["a", "b"])  # type: ignore[arg-type]
        assert profile.argv == ("a", "b") and profile.address == "a b"
        for bad in ((), ("",), "docker exec", (1,)):
            with pytest.raises(ValueError):
                HostProfile(name="x", type="command", argv=bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- profiles


class TestHostProfile:
    @pytest.mark.parametrize(
        "kwargs, address",
        [
            ({"host": "h"}, "h"),
            ({"host": "h", "user": "u"}, "u@h"),
            ({"host": "h", "port": 2222}, "h:2222"),
            ({"host": "h", "user": "u", "port": 22}, "u@h:22"),
            ({"host": "::1", "port": 22}, "[::1]:22"),
        ],
    )
    def test_address(self, kwargs: dict[str, object], address: str) -> None:
        assert HostProfile(name="x", type="ssh", **kwargs).address == address  # type: ignore[arg-type]

    def test_local_address(self) -> None:
        assert HostProfile(name="x", type="local").address == "local"

    def test_frozen_and_env_read_only(self) -> None:
        profile = HostProfile(name="x", type="ssh", host="h", env={"A": "1"})
        with pytest.raises(FrozenInstanceError):
            profile.port = 1  # type: ignore[misc]
        with pytest.raises(TypeError):
            profile.env["B"] = "2"  # type: ignore[index]
        assert profile.env == {"A": "1"}

    def test_hashable_and_picklable(self) -> None:
        cfg = parse(CONTRACT_EXAMPLE)
        assert hash(cfg.hosts["gpu-1"]) == hash(pickle.loads(pickle.dumps(cfg.hosts["gpu-1"])))
        assert pickle.loads(pickle.dumps(cfg)) == cfg

    def test_config_hosts_are_read_only(self) -> None:
        with pytest.raises(TypeError):
            parse(ssh()).hosts["new"] = HostProfile(name="new", type="local")  # type: ignore[index]

    def test_direct_construction_normalises(self) -> None:
        profile = HostProfile(name="x", type="ssh", host="h", identity_file=["~/k"], pip=["a"])  # type: ignore[arg-type]
        assert profile.identity_file == (os.path.expanduser("~/k"),) and profile.pip == ("a",)

    def test_bad_direct_construction(self) -> None:
        with pytest.raises(ValueError):
            HostProfile(name="x", type="ssh")
        with pytest.raises(ValueError):
            HostProfile(name="x", type="docker")


# --------------------------------------------------------------------------- init template


def uncomment(template: str) -> str:
    """The template with its commented-out example keys switched on (the header comment left alone)."""
    start = re.search(r"^[^#\s]", template, flags=re.MULTILINE)
    assert start is not None
    body = re.sub(r"^(\s*)# (\s*[\w-]+:(?: |$))", r"\1\2", template[start.start():], flags=re.MULTILINE)
    return template[: start.start()] + body


class TestInitTemplate:
    def test_repo_file_is_the_template(self) -> None:
        assert (REPO / "skyward.yaml").read_text(encoding="utf-8") == INIT_TEMPLATE

    def test_template_loads_as_builtin_local(self) -> None:
        cfg = parse_config(INIT_TEMPLATE, FILE, ENV)
        assert cfg.default == "local" and list(cfg.hosts) == ["local"]
        assert cfg.hosts["local"] == config.builtin_config(ENV).hosts["local"]

    def test_commented_example_shows_every_key_and_is_valid(self) -> None:
        text = uncomment(INIT_TEMPLATE)
        assert text != INIT_TEMPLATE
        cfg = parse_config(text, FILE, ENV)
        assert set(cfg.hosts) == {"local", "gpu-1", "bastion", "trainer", "cluster"}
        assert cfg.hosts["gpu-1"].gateway == "bastion"
        assert cfg.hosts["trainer"].type == "command" and cfg.hosts["trainer"].argv == ("docker", "exec", "-i", "trainer")
        assert cfg.hosts["cluster"].via == "gpu-1"
        shown = set(re.findall(r"^\s+([\w-]+):", text, flags=re.MULTILINE))
        # a ray host's ``address:`` is the field ``ray_address`` (``address`` is every profile's display address)
        every = {"address" if f.name == "ray_address" else f.name for f in fields(HostProfile)} - {"name", "config_file"}
        assert every <= shown, every - shown

    def test_write_init_writes_the_template(self, tmp_path: pathlib.Path) -> None:
        path = tmp_path / "skyward.yaml"
        write_init(path)
        assert path.read_text(encoding="utf-8") == INIT_TEMPLATE

    def test_write_init_leaves_an_existing_file_untouched(self, tmp_path: pathlib.Path) -> None:
        path = tmp_path / "skyward.yaml"
        path.write_text("mine\n")
        with pytest.raises(FileExistsError):
            write_init(path)
        assert path.read_text() == "mine\n"


def test_import_pulls_in_no_heavy_modules() -> None:
    code = "import sys, skyctl.config; print(sorted(m for m in ('typer', 'rich', 'paramiko', 'fabric') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


class TestRememberedDocuments:
    """A parsed config is remembered (JSON in the private runtime dir, checked by the text's sha256):
    a warm call reads its config without PyYAML, and an edit or a planted entry is never believed."""

    LOAD = ("import json, sys, skyctl.config as c; cfg = c.load_config(sys.argv[1]); "
            "print(json.dumps([cfg.resolve('box').profiles[0].port, 'yaml' in sys.modules]))")

    def load(self, path: pathlib.Path, runtime: pathlib.Path) -> list:
        env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
        done = subprocess.run([sys.executable, "-c", self.LOAD, str(path)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        import json

        return json.loads(done.stdout)

    @pytest.fixture
    def runtime(self, tmp_path: pathlib.Path) -> pathlib.Path:
        runtime = tmp_path / "run"
        runtime.mkdir(mode=0o700)
        return runtime

    def write(self, path: pathlib.Path, port: int) -> None:
        path.write_text(f"default: box\nhosts:\n  box:\n    host: example.test\n    port: {port}\n")

    def test_a_second_process_reads_it_without_yaml(self, tmp_path: pathlib.Path, runtime: pathlib.Path) -> None:
        path = tmp_path / "skyward.yaml"
        self.write(path, 2201)
        assert self.load(path, runtime) == [2201, True]
        assert self.load(path, runtime) == [2201, False]
        entries = list((runtime / "skyctl").glob("config-*.json"))
        assert len(entries) == 1 and entries[0].stat().st_mode & 0o777 == 0o600

    def test_an_edited_file_is_parsed_again(self, tmp_path: pathlib.Path, runtime: pathlib.Path) -> None:
        path = tmp_path / "skyward.yaml"
        self.write(path, 2201)
        self.load(path, runtime)
        self.write(path, 2202)
        assert self.load(path, runtime) == [2202, True]
        assert self.load(path, runtime) == [2202, False]

    def test_an_entry_that_does_not_match_the_text_is_not_believed(self, tmp_path: pathlib.Path,
                                                                   runtime: pathlib.Path) -> None:
        import json

        path = tmp_path / "skyward.yaml"
        self.write(path, 2201)
        self.load(path, runtime)
        (entry,) = (runtime / "skyctl").glob("config-*.json")
        planted = json.loads(entry.read_text())
        planted["document"] = json.dumps({"default": "box", "hosts": {"box": {"host": "example.test", "port": 6666}}})
        entry.write_text(json.dumps(planted))  # same sha256, another document: believed (the dir is private)
        assert self.load(path, runtime) == [6666, False]
        planted["sha256"] = "0" * 64  # an entry for another text: ignored, the file is parsed
        entry.write_text(json.dumps(planted))
        assert self.load(path, runtime) == [2201, True]

    def test_no_entry_in_a_runtime_dir_that_is_not_private(self, tmp_path: pathlib.Path) -> None:
        runtime = tmp_path / "run"
        (runtime / "skyctl").mkdir(parents=True, mode=0o755)
        (runtime / "skyctl").chmod(0o755)
        path = tmp_path / "skyward.yaml"
        self.write(path, 2201)
        assert self.load(path, runtime) == [2201, True]
        assert self.load(path, runtime) == [2201, True]
        assert not list((runtime / "skyctl").glob("config-*"))

    def test_a_document_json_cannot_hold_is_not_remembered(self) -> None:
        from skyctl.config.memo import DOCUMENTS
        from skyctl.config.yamldoc import load_yaml

        parsed: list[str] = []

        def parse(text: str) -> object:
            parsed.append(text)
            return load_yaml(text, "skyward.yaml")

        text = "default: box\nhosts:\n  box:\n    host: example.test\n    env: {WHEN: 2024-01-01}\n"
        DOCUMENTS.load(text, None, parse)  # YAML reads a date: JSON would give back a str
        DOCUMENTS.load(text, None, parse)
        assert parsed == [text, text]
        ok = "default: box\nhosts:\n  box:\n    host: example.test\n    port: 2201\n"
        first = DOCUMENTS.load(ok, None, parse)
        assert DOCUMENTS.load(ok, None, parse) == first
        assert parsed == [text, text, ok]
