"""End-to-end: ``type: command`` hosts, with the real ``skyctl`` executable and real programs.

The recipes of ``docs/hosts.md`` that this machine can run:

- ``sh -c 'exec "$@"' sh``: the plainest program that runs its arguments;
- ``setpriv``/``runuser`` to the suite's non-root user (``skyctltest``; needs root);
- the OpenSSH client with ``shell: true`` against the test sshd (these fail,
  not skip, when the sshd cannot run).

Remote functions are in ``tests/targets/command_targets.py`` and
``tests/targets/streams.py``; every wait is for an event, with a deadline.
"""

from __future__ import annotations

import json
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

import skyctl

from helpers import REPO, clean_env, pid_alive, skyctl_argv, start_skyctl, wait_for
from sshd import SshdUnavailable, ensure_user
from targets import api_funcs
from test_run import read_line

CMD = "tests/targets/command_targets.py"
STREAMS = "tests/targets/streams.py"
#: the recipe: a program that runs the rest of its arguments, as docker exec or kubectl exec do
SH = ["sh", "-c", 'exec "$@"', "sh"]
#: the non-root user of the suite (see conftest.NON_ROOT_USER)
OTHER_USER = "skyctltest"
#: a user's own frames only in a traceback
OWN_FRAMES = ("skyctl/remote/worker.py", "skyctl/session.py", "skyctl/callstream.py", "skyctl/failures.py", "skyctl/api.py",
              "skyctl/cli.py", "skyctl/commands/", "cloudpickle")


# --------------------------------------------------------------------------- helpers


def write_config(path: Path, **hosts: dict[str, Any]) -> Path:
    """A skyward.yaml with ``hosts`` (the first one the default) besides the built-in ``local``."""
    path.write_text(yaml.safe_dump({"default": next(iter(hosts)), "hosts": hosts}, sort_keys=False))
    return path


def run_cli(*args: str, input: str | None = None, timeout: float = 90, env: dict[str, str] | None = None
           ) -> subprocess.CompletedProcess[str]:
    """Run skyctl from the repository root without ssh-agent (the ssh recipe offers exactly its key)."""
    full = clean_env(env)
    full.pop("SSH_AUTH_SOCK", None)
    return subprocess.run(skyctl_argv(*args), input=input, capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env=full)


def own_python(tmp_path: Path, name: str = "py") -> str:
    """A symlink to this Python at a path of the test's own: its worker is found by it in /proc."""
    path = tmp_path / name / "python3"
    path.parent.mkdir(parents=True)
    path.symlink_to(sys.executable)
    return str(path)


def processes_running(marker: str) -> list[int]:
    """Live processes whose argv mentions ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes() and pid_alive(int(entry.name)):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def nothing_left(marker: str) -> None:
    """Wait until no process mentions ``marker`` (the program and the worker are gone)."""
    wait_for(lambda: not processes_running(marker), timeout=20, what=f"the processes of {marker} to end")


def read_pid(path: Path) -> int:
    return int(wait_for(lambda: path.exists() and path.read_text(), what=f"the worker's pid in {path}"))


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one ``error:`` line of a failed run (no traceback of skyctl's own, a hint after it)."""
    where = f"exit {result.returncode}\nstdout: {result.stdout!r}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr, where
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, where
    assert any(line.startswith("hint: ") for line in result.stderr.splitlines()), where
    return errors[0]


@pytest.fixture
def sh_host(tmp_path: Path) -> tuple[Path, str]:
    """A config whose default host ``box`` is the ``sh -c 'exec "$@"'`` recipe, and its python (a marker)."""
    python = own_python(tmp_path)
    return write_config(tmp_path / "skyward.yaml", box={"type": "command", "argv": SH, "python": python}), python


# --------------------------------------------------------------------------- sh -c 'exec "$@"'


def test_sh_recipe_run_streams_values(sh_host):
    cfg, python = sh_host
    result = run_cli("run", "-c", str(cfg), "examples/train.py:fibonacci", "--arg", "n=10")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == "0 1 1 2 3 5 8 13 21 34".split()
    nothing_left(python)


def test_sh_recipe_first_value_arrives_while_the_generator_runs(sh_host, tmp_path, procs):
    cfg, _ = sh_host
    release = tmp_path / "release"
    proc = start_skyctl("run", "-c", str(cfg), f"{STREAMS}:first_then_wait", "--arg", f"release={release}",
                        "--arg", "timeout=120")
    procs.append(proc)
    assert read_line(proc, timeout=60) == "first\n"
    assert proc.poll() is None
    release.touch()
    assert read_line(proc, timeout=60) == "second\n"
    assert proc.wait(60) == 0


def test_sh_recipe_pipe(sh_host):
    cfg, python = sh_host
    numbers = "".join(f"{i}\n" for i in range(20_000))
    result = run_cli("pipe", "-c", str(cfg), f"{CMD}:scaled", "--arg", "factor=3", input=numbers)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "".join(f"{3 * i}\n" for i in range(20_000))
    nothing_left(python)


def test_sh_recipe_raise_is_exit_1_with_the_users_traceback(sh_host):
    cfg, _ = sh_host
    result = run_cli("run", "-c", str(cfg), f"{STREAMS}:raises_after", "--arg", "n=3")
    assert result.returncode == 1, result.stderr
    assert result.stdout == "0\n1\n2\n"
    err = result.stderr
    assert err.count("Traceback (most recent call last)") == 1, err
    assert "in raises_after" in err and "in fail_here" in err, err
    assert err.rstrip().endswith("ValueError: boom after 3 values"), err
    for own in OWN_FRAMES:
        assert own not in err, err


def test_sh_recipe_sigint_is_exit_130_and_the_finally_runs(sh_host, tmp_path, procs):
    cfg, python = sh_host
    marker, pid_file = tmp_path / "finally", tmp_path / "pid"
    proc = start_skyctl("run", "-c", str(cfg), f"{STREAMS}:slow_endless",
                        "--arg", f"finally_marker={marker}", "--arg", f"pid_file={pid_file}")
    procs.append(proc)
    assert read_line(proc, timeout=60) == "0\n"
    worker = read_pid(pid_file)
    proc.send_signal(signal.SIGINT)  # as a terminal's Ctrl-C: the worker, in its own session, gets none
    assert proc.wait(60) == 130
    assert marker.read_text() == "finally ran"
    assert proc.stderr is not None and "Traceback" not in proc.stderr.read().decode()
    wait_for(lambda: not pid_alive(worker), timeout=15, what="the worker to exit")
    nothing_left(python)


def test_sh_recipe_head_closes_the_generator_and_exits_0(sh_host, tmp_path):
    cfg, python = sh_host
    marker = tmp_path / "finally"
    argv = skyctl_argv("run", "-c", str(cfg), f"{STREAMS}:endless", "--arg", f"finally_marker={marker}")
    result = subprocess.run(["bash", "-c", f"set -o pipefail; {shlex.join(argv)} | head -3"],
                            capture_output=True, text=True, timeout=90, cwd=REPO, env=clean_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout == "0\n1\n2\n"
    assert result.stderr == ""
    assert marker.read_text() == "finally ran"
    nothing_left(python)


def test_sh_recipe_client_killed_ends_the_worker(sh_host, tmp_path, procs):
    cfg, python = sh_host
    pid_file = tmp_path / "pid"
    proc = start_skyctl("run", "-c", str(cfg), f"{CMD}:pid_then_count", "--arg", f"pid_file={pid_file}")
    procs.append(proc)
    assert read_line(proc, timeout=60) == "0\n"
    worker = read_pid(pid_file)
    proc.kill()
    proc.wait(30)
    wait_for(lambda: not pid_alive(worker), timeout=15, what=f"worker {worker} to exit after its client was killed")
    nothing_left(python)


def test_worker_killed_mid_call_is_exit_6(sh_host, tmp_path, procs):
    cfg, python = sh_host
    pid_file = tmp_path / "pid"
    proc = start_skyctl("run", "-c", str(cfg), f"{CMD}:pid_then_count", "--arg", f"pid_file={pid_file}")
    procs.append(proc)
    assert read_line(proc, timeout=60) == "0\n"
    os.kill(read_pid(pid_file), signal.SIGKILL)
    assert proc.wait(60) == 6
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    assert out == "".join(f"{i}\n" for i in range(len(out.split())))  # the values before it: complete
    assert "error: lost the worker on box during the call" in err and "Traceback" not in err, err
    nothing_left(python)


def test_shell_true_hands_one_quoted_string_to_a_shell(tmp_path):
    """``argv: [sh, -c]`` + ``shell: true``: sh parses the one string appended, stub and all."""
    python = own_python(tmp_path, name="py dir's \"odd\" $HOME `x`")  # quotes, spaces, $ and ` survive
    cfg = write_config(tmp_path / "skyward.yaml", box={"type": "command", "argv": ["sh", "-c"], "shell": True,
                                                       "python": python})
    result = run_cli("run", "-c", str(cfg), "examples/train.py:fibonacci", "--arg", "n=5")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "1", "1", "2", "3"]


def test_shell_true_leaves_a_leading_tilde_of_python_to_the_shell(tmp_path):
    """``python: ~/...`` with ``shell: true``: expanded by the shell over there (here: the program's HOME)."""
    their_home = tmp_path / "their home"
    own_python(their_home, name="venv dir")
    cfg = write_config(tmp_path / "skyward.yaml", box={"type": "command", "argv": ["env", f"HOME={their_home}", "sh", "-c"],
                                                       "shell": True, "python": "~/venv dir/python3"})
    result = run_cli("run", "-c", str(cfg), "examples/train.py:fibonacci", "--arg", "n=3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "1", "1"]


def test_env_and_workdir_apply_on_the_other_side(tmp_path):
    """``workdir: ~/...`` is expanded where the worker runs (the program's HOME), ``env:`` reaches the worker."""
    their_home = tmp_path / "their-home"
    their_home.mkdir()
    cfg = write_config(tmp_path / "skyward.yaml", box={
        "type": "command", "argv": ["env", f"HOME={their_home}", *SH], "python": sys.executable,
        "workdir": "~/skyctl-wd", "env": {"SKYCTL_COMMAND_TEST": "from-the-profile"},
    })
    result = run_cli("run", "-c", str(cfg), "-o", "json", f"{CMD}:whoami", "--arg", "workdir=~/skyctl-wd")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["workdir"] == str(their_home / "skyctl-wd") and info["files"] >= 1, info
    assert not (Path.home() / "skyctl-wd").exists()
    assert info["env"] == "from-the-profile", info


def test_hosts_and_check_show_a_command_host(sh_host):
    cfg, python = sh_host
    listing = run_cli("hosts", "-c", str(cfg))
    assert listing.returncode == 0, listing.stderr
    row = next(line for line in listing.stdout.splitlines() if line.startswith("box"))
    assert row.split()[:3] == ["box", "(default)", "command"], row
    assert "  sh -c 'exec \"$@\"' sh  " in row and row.rstrip().endswith(python), row
    checked = run_cli("check", "-c", str(cfg), "box")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith(f"box: ok  python {sys.version_info[0]}.{sys.version_info[1]}"), checked.stdout


def test_python_api(sh_host, monkeypatch):
    cfg, _ = sh_host
    monkeypatch.chdir(REPO)  # project modules (tests/targets/*) travel by value from under the current directory
    with skyctl.host("box", cfg) as box:
        assert api_funcs.add(2, 3) >> box == 5
        assert list(api_funcs.fibonacci(6) >> box) == [0, 1, 1, 2, 3, 5]
        assert list(api_funcs.echo(iter(range(1000)), scale=2) >> box) == list(range(0, 2000, 2))


def test_bad_profile_is_exit_3_naming_file_host_and_key(tmp_path):
    cfg = write_config(tmp_path / "skyward.yaml", box={"type": "command", "argv": []})
    result = run_cli("hosts", "-c", str(cfg))
    assert result.returncode == 3, result.stderr
    assert "skyward.yaml: host 'box': 'argv' must not be empty" in result.stderr, result.stderr


# --------------------------------------------------------------------------- failures before the worker starts


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["no-such-program-skyctl"], ["could not start 'no-such-program-skyctl': No such file or directory"]),
        (["/nonexistent/dir/docker", "exec"], ["could not start '/nonexistent/dir/docker': No such file or directory"]),
        (["false"], ["'false' exited with status 1 before the worker started"]),
        (["sh", "-c", "echo boom >&2; exit 3", "sh"], ["'sh' exited with status 3 before the worker started: boom"]),
        (["sh", "-c", "echo hello; exec \"$@\"", "sh"], ["'sh' wrote 'hello' to stdout before the worker started"]),
    ],
)
def test_a_program_that_fails_before_the_worker_starts_is_exit_4(tmp_path, argv, needles):
    cfg = write_config(tmp_path / "skyward.yaml", box={"type": "command", "argv": argv, "python": sys.executable})
    for command in (["run", "-c", str(cfg), "examples/train.py:fibonacci"],
                    ["pipe", "-c", str(cfg), f"{CMD}:scaled"]):
        result = run_cli(*command, input="1\n2\n")
        assert result.returncode == 4, result.stderr
        assert result.stdout == ""
        line = error_line(result)
        for needle in needles:
            assert needle in line, result.stderr
    checked = run_cli("check", "-c", str(cfg), "box")
    assert checked.returncode == 4 and checked.stdout.startswith("box: FAILED (4) "), checked.stdout


def test_missing_python_behind_the_program_is_exit_5(tmp_path):
    cfg = write_config(tmp_path / "skyward.yaml", box={"type": "command", "argv": SH, "python": "python-nowhere-9"})
    result = run_cli("run", "-c", str(cfg), "examples/train.py:fibonacci")
    assert result.returncode == 5, result.stderr
    assert "python 'python-nowhere-9' was not found or cannot run on box" in error_line(result)
    assert "python-nowhere-9: not found" in result.stderr  # the program's own words, above the error


def _other_python() -> list[str]:
    """argv of a Python 3 of another minor version than this one: a real one when this machine has one."""
    mine = sys.version_info[1]
    for minor in sorted(range(6, 20), key=lambda m: (abs(m - mine), m)):  # the nearest: the stub runs on it
        if minor == mine:
            continue
        found = [*Path("/usr/bin").glob(f"python3.{minor}"), *Path("/usr/local/bin").glob(f"python3.{minor}"),
                 *sorted(Path("~/.pyenv/versions").expanduser().glob(f"3.{minor}.*/bin/python3.{minor}"))]
        for candidate in found:
            if os.access(candidate, os.X_OK):
                return [str(candidate)]
    # none here: this Python, told it is 3.1 before the stub runs
    return [sys.executable, "-c", "import sys; sys.version_info = (3, 1, 0, 'final', 0); exec(sys.argv[2])"]


def test_a_python_of_another_version_is_exit_5_not_4(tmp_path):
    """The program ran our stub and the stub answered: its verdict stands (exit 5), not the program's."""
    other = _other_python()
    # this program runs another Python in place of the profile's: python3 -c STUB → OTHER -c STUB
    argv = ["sh", "-c", f'shift; exec {shlex.join(other)} "$@"', "sh"]
    cfg = write_config(tmp_path / "skyward.yaml", box={"type": "command", "argv": argv})
    result = run_cli("run", "-c", str(cfg), "examples/train.py:fibonacci")
    assert result.returncode == 5, result.stderr
    line = error_line(result)
    assert "python on box is 3." in line and f"but skyctl runs on {sys.version_info[0]}.{sys.version_info[1]}" in line


# --------------------------------------------------------------------------- another user (setpriv, runuser)


@pytest.fixture
def other_user() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        pytest.skip("switching to another user needs root")
    try:
        ensure_user(OTHER_USER)
    except SshdUnavailable as exc:
        pytest.fail(f"user {OTHER_USER!r} could not be prepared: {exc}")
    return pwd.getpwnam(OTHER_USER)


SWITCH_USER = {
    "setpriv": ["setpriv", f"--reuid={OTHER_USER}", f"--regid={OTHER_USER}", "--init-groups", "--reset-env"],
    "runuser": ["runuser", "-u", OTHER_USER, "--"],
}


@pytest.fixture(params=sorted(SWITCH_USER))
def user_host(request, tmp_path: Path, other_user: pwd.struct_passwd) -> Iterator[tuple[Path, pwd.struct_passwd, Path]]:
    """A config for one recipe; a directory that user owns (marker files, and its python: a marker in /proc)."""
    argv = SWITCH_USER[request.param]
    if shutil.which(argv[0]) is None:
        pytest.skip(f"{argv[0]} is not installed")
    shared = Path(tempfile.mkdtemp(prefix="skyctl-cmd-"))  # pytest's tmp_path is private to root
    try:
        shared.chmod(0o755)
        os.chown(shared, other_user.pw_uid, other_user.pw_gid)
        (shared / "python3").symlink_to("/usr/bin/python3")
        cfg = write_config(tmp_path / "skyward.yaml", box={
            "type": "command", "argv": argv, "python": str(shared / "python3"),
            "workdir": "~/.cache/skyctl-command-test", "env": {"SKYCTL_COMMAND_TEST": request.param},
        })
        yield cfg, other_user, shared
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_another_user_runs_the_worker(user_host):
    cfg, user, _ = user_host
    result = run_cli("run", "-c", str(cfg), "-o", "json", f"{CMD}:whoami", "--arg", "workdir=~/.cache/skyctl-command-test")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["uid"] == user.pw_uid and info["user"] == OTHER_USER, info
    assert info["workdir"] == os.path.join(user.pw_dir, ".cache/skyctl-command-test"), info
    assert info["files"] >= 1 and info["owners"] == [OTHER_USER], info  # its own cache, written by it
    assert info["env"] in SWITCH_USER, info


def test_another_user_pipe_and_sigint(user_host, procs):
    cfg, user, shared = user_host
    result = run_cli("pipe", "-c", str(cfg), f"{CMD}:scaled", input="".join(f"{i}\n" for i in range(1000)))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "".join(f"{2 * i}\n" for i in range(1000))
    # Ctrl-C: the finally runs, as that user; nothing of the call is left (runuser forks: both end)
    pid_file, marker = shared / "pid", shared / "finally"
    proc = start_skyctl("run", "-c", str(cfg), f"{CMD}:pid_then_count", "--arg", f"pid_file={pid_file}",
                        "--arg", f"finally_marker={marker}")
    procs.append(proc)
    assert read_line(proc, timeout=60) == "0\n"
    worker = read_pid(pid_file)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 130
    assert marker.read_text() == "finally ran" and marker.stat().st_uid == user.pw_uid
    wait_for(lambda: not pid_alive(worker), timeout=15, what="the worker to exit")
    nothing_left(str(shared / "python3"))


# --------------------------------------------------------------------------- the OpenSSH client, shell: true


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Any:
    """The test sshd; its absence fails these tests (the recipe is documented as tested)."""
    try:
        return request.getfixturevalue("sshd")
    except pytest.skip.Exception as exc:
        pytest.fail(f"the OpenSSH-client recipe needs the test sshd: {exc}", pytrace=False)


def ssh_recipe(server: Any, tmp_path: Path, *, identity: Path | None = None) -> list[str]:
    """``ssh -T -o BatchMode=yes ... user@host`` for the test sshd, with a known_hosts file of this test's own
    (a marker: the ssh client is found by it in /proc)."""
    known_hosts = tmp_path / "known_hosts"
    shutil.copy(server.known_hosts, known_hosts)
    return [
        "ssh", "-T", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
        "-o", "StrictHostKeyChecking=yes", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", f"UserKnownHostsFile={known_hosts}", "-p", str(server.port),
        "-i", str(identity or server.identity_file), f"{server.user}@{server.host}",
    ]  # fmt: skip


@pytest.fixture
def ssh_host(server, tmp_path: Path) -> tuple[Path, str]:
    argv = ssh_recipe(server, tmp_path)
    cfg = write_config(tmp_path / "skyward.yaml", box={"type": "command", "argv": argv, "shell": True,
                                                       "python": "/usr/bin/python3"})
    return cfg, str(tmp_path / "known_hosts")


def test_openssh_client_run_and_pipe(ssh_host):
    cfg, marker = ssh_host
    result = run_cli("run", "-c", str(cfg), "examples/train.py:fibonacci", "--arg", "n=10")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == "0 1 1 2 3 5 8 13 21 34".split()
    numbers = "".join(f"{i}\n" for i in range(20_000))
    result = run_cli("pipe", "-c", str(cfg), f"{CMD}:scaled", "--arg", "factor=3", input=numbers)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "".join(f"{3 * i}\n" for i in range(20_000))
    nothing_left(marker)


def test_openssh_client_quotes_survive_the_remote_shell(server, tmp_path):
    """The stub (many lines, quotes) and a python path with quotes, spaces and $ go through the login shell intact."""
    odd = tmp_path / "py dir's \"odd\" $HOME"
    odd.mkdir()
    (odd / "python3").symlink_to("/usr/bin/python3")
    cfg = write_config(tmp_path / "skyward.yaml", box={"type": "command", "argv": ssh_recipe(server, tmp_path),
                                                       "shell": True, "python": str(odd / "python3")})
    result = run_cli("run", "-c", str(cfg), "examples/train.py:fibonacci", "--arg", "n=5")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "1", "1", "2", "3"]


def test_openssh_client_sigint_is_exit_130(ssh_host, tmp_path, procs):
    cfg, marker_path = ssh_host
    marker, pid_file = tmp_path / "finally", tmp_path / "pid"
    proc = start_skyctl("run", "-c", str(cfg), f"{CMD}:pid_then_count", "--arg", f"pid_file={pid_file}",
                        "--arg", f"finally_marker={marker}", env={"SSH_AUTH_SOCK": ""})
    procs.append(proc)
    assert read_line(proc, timeout=60) == "0\n"
    worker = read_pid(pid_file)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 130
    assert marker.read_text() == "finally ran"
    wait_for(lambda: not pid_alive(worker), timeout=15, what="the worker behind ssh to exit")
    nothing_left(marker_path)


def test_openssh_client_worker_killed_is_exit_6(ssh_host, tmp_path, procs):
    cfg, marker_path = ssh_host
    pid_file = tmp_path / "pid"
    proc = start_skyctl("run", "-c", str(cfg), f"{CMD}:pid_then_count", "--arg", f"pid_file={pid_file}",
                        env={"SSH_AUTH_SOCK": ""})
    procs.append(proc)
    assert read_line(proc, timeout=60) == "0\n"
    os.kill(read_pid(pid_file), signal.SIGKILL)
    assert proc.wait(60) == 6
    assert proc.stderr is not None and "lost the worker on box" in proc.stderr.read().decode()
    nothing_left(marker_path)


def test_openssh_client_auth_failure_is_exit_4_with_its_words(server, tmp_path):
    argv = ssh_recipe(server, tmp_path, identity=server.unauthorized_identity_file)
    cfg = write_config(tmp_path / "skyward.yaml", box={"type": "command", "argv": argv, "shell": True})
    result = run_cli("run", "-c", str(cfg), "examples/train.py:fibonacci")
    assert result.returncode == 4, result.stderr
    line = error_line(result)
    assert "'ssh' exited with status 255 before the worker started" in line, line
    assert f"{server.user}@{server.host}: Permission denied (publickey)" in line, line
