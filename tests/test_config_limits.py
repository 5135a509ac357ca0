"""The config file's limits (docs/security.md): a ``skyward.yaml`` from an untrusted checkout cannot
make skyctl expand YAML aliases ("billion laughs"), recurse without end, or read without end.

Every command reads ``./skyward.yaml`` from the directory it runs in; these run the real ``skyctl``
there, and the Python API and ``parse_config`` in-process.
"""

from __future__ import annotations

import os
import pathlib
import textwrap

import pytest

import skyctl
from skyctl import config
from skyctl.config import MAX_CONFIG_BYTES, MAX_CONFIG_DEPTH, MAX_CONFIG_NODES, load_config, parse_config
from skyctl.errors import ConfigError

from helpers import run_skyctl

#: 13 lines; 9**9 (about 387 million) values once the aliases are expanded
BILLION_LAUGHS = """\
default: local
hosts:
  local: {type: local}
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
j: &j [*i, *i, *i, *i, *i, *i, *i, *i, *i]
"""

#: a generous bound for a command that must answer at once (the bomb ran for minutes before)
PROMPT = 30

ENV = {"HOME": "/home/tester"}


@pytest.fixture
def runtime(tmp_path: pathlib.Path) -> dict[str, str]:
    """A private runtime directory of the test's own, so the config memo starts empty."""
    path = tmp_path / "run"
    path.mkdir(mode=0o700)
    return {"XDG_RUNTIME_DIR": str(path), "HOME": str(tmp_path)}


def test_billion_laughs_in_the_working_directory_is_refused_at_once(tmp_path: pathlib.Path,
                                                                     runtime: dict[str, str]) -> None:
    assert len(BILLION_LAUGHS.splitlines()) == 13
    (tmp_path / "skyward.yaml").write_text(BILLION_LAUGHS)
    for args in (["hosts"], ["check"], ["run", "os:getpid"]):
        done = run_skyctl(*args, cwd=tmp_path, env=runtime, timeout=PROMPT)
        assert done.returncode == 3, (args, done.stderr)
        first = done.stderr.splitlines()[0]
        assert first.startswith("error: skyward.yaml line "), done.stderr
        assert f"more than {MAX_CONFIG_NODES} values once its aliases are expanded" in first
        assert "Traceback" not in done.stderr
    assert not list((pathlib.Path(runtime["XDG_RUNTIME_DIR"]) / "skyctl").glob("config-*")), "nothing remembered"


def test_billion_laughs_named_by_config_is_refused_naming_that_file(tmp_path: pathlib.Path,
                                                                     runtime: dict[str, str]) -> None:
    (tmp_path / "laughs.yaml").write_text(BILLION_LAUGHS)
    done = run_skyctl("hosts", "-c", "laughs.yaml", cwd=tmp_path, env=runtime, timeout=PROMPT)
    assert done.returncode == 3 and done.stderr.startswith("error: laughs.yaml line "), done.stderr
    done = run_skyctl("hosts", cwd=tmp_path, env={**runtime, "SKYCTL_CONFIG": str(tmp_path / "laughs.yaml")},
                      timeout=PROMPT)
    assert done.returncode == 3 and done.stderr.startswith("error: laughs.yaml line "), done.stderr


def test_billion_laughs_through_the_python_api_is_a_config_error(tmp_path: pathlib.Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "skyward.yaml"
    path.write_text(BILLION_LAUGHS)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="once its aliases are expanded"):
        skyctl.host("local", path).profile
    with pytest.raises(ConfigError, match="once its aliases are expanded"):
        load_config(path, environ=ENV, cwd=tmp_path)
    with pytest.raises(ConfigError, match="^skyward.yaml line 9: this list"):  # g: the first over the limit
        parse_config(BILLION_LAUGHS, pathlib.Path("skyward.yaml"), ENV)


def test_a_file_over_the_size_limit_is_refused(tmp_path: pathlib.Path, runtime: dict[str, str]) -> None:
    text = "default: local\nhosts:\n  local: {type: local}\n"
    padding = "# " + "x" * 98 + "\n"
    big = text + padding * (MAX_CONFIG_BYTES // len(padding) + 1)
    assert len(big) > MAX_CONFIG_BYTES
    (tmp_path / "big.yaml").write_text(big)
    done = run_skyctl("hosts", "-c", "big.yaml", cwd=tmp_path, env=runtime, timeout=PROMPT)
    assert done.returncode == 3, done.stderr
    assert done.stderr.startswith("error: big.yaml: the file is larger than 1 MiB"), done.stderr
    with pytest.raises(ConfigError, match="larger than 1 MiB"):
        parse_config(big, pathlib.Path("big.yaml"), ENV)
    # the limit itself is allowed
    exact = text + "#" * (MAX_CONFIG_BYTES - len(text) - 1) + "\n"
    (tmp_path / "exact.yaml").write_text(exact)
    assert list(load_config(tmp_path / "exact.yaml", environ=ENV, cwd=tmp_path).hosts) == ["local"]


def test_a_config_that_is_not_a_regular_file_is_refused_not_read(tmp_path: pathlib.Path,
                                                                  runtime: dict[str, str]) -> None:
    """A checked-out symlink ``skyward.yaml -> /dev/zero`` would otherwise be read for ever."""
    os.symlink("/dev/zero", tmp_path / "skyward.yaml")
    done = run_skyctl("hosts", cwd=tmp_path, env=runtime, timeout=PROMPT)
    assert done.returncode == 3, done.stderr
    assert done.stderr.startswith("error: skyward.yaml: not a regular file"), done.stderr
    fifo = tmp_path / "fifo" / "skyward.yaml"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    done = run_skyctl("hosts", cwd=fifo.parent, env=runtime, timeout=PROMPT)
    assert done.returncode == 3 and "not a regular file" in done.stderr, done.stderr


def test_a_dense_file_without_aliases_is_refused_once_past_the_value_limit() -> None:
    """Composing stops at the limit: PyYAML's nodes cost hundreds of bytes each."""
    text = "hosts: {}\nx: [" + ",".join(["a"] * MAX_CONFIG_NODES) + "]\n"
    assert len(text) < MAX_CONFIG_BYTES
    with pytest.raises(ConfigError, match=f"^skyward.yaml line 2: the document holds more than {MAX_CONFIG_NODES} values"):
        parse_config(text, pathlib.Path("skyward.yaml"), ENV)


def test_a_recursive_document_is_refused() -> None:
    text = "hosts:\n  c:\n    type: ray\n    via: local\n    runtime_env: &r {env_vars: *r}\n"
    with pytest.raises(ConfigError, match=r"^skyward.yaml line 5: an alias refers to a node that contains it"):
        parse_config(text, pathlib.Path("skyward.yaml"), ENV)


@pytest.mark.parametrize("depth", [MAX_CONFIG_DEPTH + 1, 400, 5000])
def test_deep_nesting_is_refused_without_a_recursion_error(depth: int) -> None:
    text = "hosts: {}\nx: " + "[" * depth + "]" * depth + "\n"
    with pytest.raises(ConfigError, match=f"nested more than {MAX_CONFIG_DEPTH} levels deep"):
        parse_config(text, pathlib.Path("skyward.yaml"), ENV)


def test_a_config_with_anchors_and_merge_keys_still_works(tmp_path: pathlib.Path, runtime: dict[str, str]) -> None:
    text = textwrap.dedent("""\
        default: gpu-1
        defaults: &base
          user: deploy
          connect_timeout: 5
        hosts:
          local: {type: local, env: &common {OMP_NUM_THREADS: "4", LANG: C.UTF-8}}
          gpu-1: &gpu
            <<: *base
            host: gpu-1.example.com
            env: *common
          gpu-2:
            <<: [*gpu, *base]
            host: gpu-2.example.com
            port: 2222
        groups:
          farm: &farm [gpu-1, gpu-2]
          again: *farm
        """)
    (tmp_path / "skyward.yaml").write_text(text)
    cfg = load_config(environ=ENV, cwd=tmp_path)
    assert cfg.hosts["gpu-1"].user == cfg.hosts["gpu-2"].user == "deploy"
    assert cfg.hosts["gpu-2"].port == 2222 and cfg.hosts["gpu-2"].connect_timeout == 5.0
    assert dict(cfg.hosts["gpu-1"].env) == dict(cfg.hosts["local"].env) == {"OMP_NUM_THREADS": "4", "LANG": "C.UTF-8"}
    assert cfg.groups["again"].hosts == ("gpu-1", "gpu-2")
    done = run_skyctl("hosts", cwd=tmp_path, env=runtime, timeout=PROMPT)
    assert done.returncode == 0, done.stderr
    assert "gpu-2" in done.stdout and "deploy@gpu-2.example.com:2222" in done.stdout


def test_aliases_used_many_times_within_the_limit_are_fine() -> None:
    """200 hosts sharing one 40-variable env through an alias: about 17,000 values expanded."""
    env = "".join(f"    V{i}: '{i}'\n" for i in range(40))
    hosts = "".join(f"  h{i}: {{host: h{i}.example.com, env: *env}}\n" for i in range(1, 200))
    text = f"hosts:\n  h0:\n   host: h0.example.com\n   env: &env\n{env}{hosts}"
    cfg = parse_config(text, pathlib.Path("skyward.yaml"), ENV)
    assert len(cfg.hosts) == 201 and cfg.hosts["h199"].env["V39"] == "39"


def test_the_limits_are_what_docs_security_md_says() -> None:
    text = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "security.md").read_text()
    assert f"{MAX_CONFIG_NODES:,}" in text and "1 MiB" in text and f"{MAX_CONFIG_DEPTH} levels" in text
    assert "tests/test_config_limits.py" in text
    assert config.MAX_CONFIG_BYTES == 1 << 20
