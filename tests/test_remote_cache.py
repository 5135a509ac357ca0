"""The remote cache is verified, not trusted (issue 11, reproductions 2, 3 and 7).

Through the real ``skyctl`` on ``local`` and against the real sshd:

- a workdir that another user owns, or that others can write, or that is a
  symlink is refused (exit 5, the path and the fix in the message) and the
  bundle someone planted there never runs (a second login user, created for
  these tests and removed after, plants it);
- in a private workdir, a bundle with the right name but the wrong content
  (planted, truncated or corrupted) is replaced by the client's and not run;
- a symlink planted where the stub writes (the old, guessable temp name, or
  the bundle's own name) never makes it write through the link.
"""

from __future__ import annotations

import hashlib
import io
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ssh_e2e import assert_failure, box, skyctl, target, timed, tree

from skyctl import bootstrap

pytestmark = pytest.mark.timeout(240)

#: the second user of the story: someone else with a login on the same host
PLANTER = "skyctlplanter"
HOSTS = ["local", "ssh"]


# -- fixtures and helpers ---------------------------------------------------------


@pytest.fixture(scope="module")
def planter() -> Iterator[pwd.struct_passwd]:
    """A second login user, created for this module and removed after (needs root)."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("creating a second login user needs root when CI is set", pytrace=False)
        pytest.skip("creating a second login user needs root")
    try:
        pwd.getpwnam(PLANTER)  # left over by an interrupted run: used, and removed at the end
    except KeyError:
        subprocess.run(["useradd", "-M", "-s", "/bin/sh", PLANTER], check=True, capture_output=True, timeout=60)
    try:
        yield pwd.getpwnam(PLANTER)
    finally:
        subprocess.run(["userdel", PLANTER], capture_output=True, timeout=60)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A sticky, world-writable directory like /tmp (pytest's tmp_path is private to us)."""
    path = Path(tempfile.mkdtemp(prefix="skyctl-shared-"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def trojan(marker: Path) -> bytes:
    """A zip that looks like a worker bundle; its "worker" writes ``marker`` instead of serving calls."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("skyctl/__init__.py", "")
        zf.writestr("skyctl/remote/worker.py", f"def main():\n    open({str(marker)!r}, 'w').write('planted bundle ran')\n")
    return buf.getvalue()


def bundle_name() -> str:
    return f"bundle-{bootstrap.bundle_id()}.zip"


def as_user(user: pwd.struct_passwd, code: str, stdin: bytes = b"", *args: str) -> None:
    """Run ``code`` with the system Python as ``user`` (really: its uid and gid, no other groups)."""
    subprocess.run(["/usr/bin/python3", "-c", code, *args], input=stdin, check=True, timeout=60,
                   user=user.pw_uid, group=user.pw_gid, extra_groups=[], capture_output=True)


def plant(user: pwd.struct_passwd, workdir: Path, mode: int, data: bytes, *, make_dir: bool) -> None:
    """As ``user``: (make ``workdir`` with ``mode`` and) write ``data`` as the bundle in it."""
    code = (
        "import os, sys\n"
        "d, mode, make = sys.argv[1], int(sys.argv[2], 8), sys.argv[3] == '1'\n"
        "if make:\n"
        "    os.mkdir(d)\n"
        "    os.chmod(d, mode)\n"
        "with open(os.path.join(d, sys.argv[4]), 'wb') as f:\n"
        "    f.write(sys.stdin.buffer.read())\n"
    )
    as_user(user, code, data, str(workdir), oct(mode), "1" if make_dir else "0", bundle_name())


def local_config(tmp_path: Path, workdir: Path) -> str:
    path = tmp_path / "skyward.yaml"
    path.write_text(f"default: local\nhosts:\n  local:\n    type: local\n    workdir: {workdir}\n")
    return str(path)


def host_config(request: pytest.FixtureRequest, kind: str, tmp_path: Path, workdir: Path) -> str:
    """A skyward.yaml whose default host (``local`` or the test sshd) keeps its cache in ``workdir``."""
    if kind == "local":
        return local_config(tmp_path, workdir)
    return box(tmp_path / "skyward.yaml", request.getfixturevalue("sshd"), extra=f"workdir: {workdir}")


def fib(cfg: str, *flags: str) -> Any:
    return timed("run", target("fibonacci"), "--arg", "n=5", "-c", cfg, *flags)


def assert_fib(result: Any) -> None:
    assert (result.returncode, result.stdout.split()) == (0, ["0", "1", "1", "2", "3"]), result.stderr


def the_clients_bundle(path: Path) -> bool:
    data = path.read_bytes()
    return hashlib.sha256(data).hexdigest() == bootstrap.bundle().sha256 and stat.S_IMODE(path.lstat().st_mode) == 0o600


# -- a workdir that is not ours alone is refused ------------------------------------------


@pytest.mark.parametrize("kind", HOSTS)
@pytest.mark.parametrize("whose, mode", [("theirs", 0o777), ("theirs", 0o755), ("ours", 0o777), ("ours", 0o770)])
def test_a_workdir_others_control_is_refused_and_their_bundle_never_runs(
        request: pytest.FixtureRequest, planter: pwd.struct_passwd, shared_tmp: Path, tmp_path: Path,
        kind: str, whose: str, mode: int) -> None:
    workdir = shared_tmp / "cache"
    marker = tmp_path / "marker"
    if whose == "theirs":  # the planter made the directory and put a "bundle" in it
        plant(planter, workdir, mode, trojan(marker), make_dir=True)
    else:  # ours, but too open: the planter could write the bundle into it
        workdir.mkdir()
        workdir.chmod(mode if mode & 0o002 else 0o777)
        plant(planter, workdir, mode, trojan(marker), make_dir=False)
        workdir.chmod(mode)
    result, elapsed = fib(host_config(request, kind, tmp_path, workdir))
    line = assert_failure(result, 5, "refusing the workdir", str(workdir), elapsed=elapsed)
    hint = result.stderr.split("hint: ", 1)[1]
    if whose == "theirs":
        assert f"uid {planter.pw_uid} ({PLANTER})" in line and "remove it" in hint, result.stderr
    else:
        assert "writable by group or others" in line and f"chmod 700 {workdir}" in hint, result.stderr
    assert not marker.exists(), "the planted bundle ran"


@pytest.mark.parametrize("kind", HOSTS)
def test_a_symlinked_workdir_is_refused(request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    marker = tmp_path / "marker"
    (real / bundle_name()).write_bytes(trojan(marker))
    link = tmp_path / "cache"
    link.symlink_to(real)
    result, elapsed = fib(host_config(request, kind, tmp_path, link))
    assert_failure(result, 5, "refusing the workdir", str(link), "symlink", elapsed=elapsed)
    assert "remove the link" in result.stderr.split("hint: ", 1)[1]
    assert not marker.exists()
    assert sorted(p.name for p in real.iterdir()) == [bundle_name()], "nothing was written through the link"


def test_a_venvs_directory_others_can_write_is_refused(sshd: Any, tmp_path: Path) -> None:
    workdir = tmp_path / "wd"
    (workdir / "venvs").mkdir(parents=True)
    workdir.chmod(0o700)
    (workdir / "venvs").chmod(0o777)
    cfg = box(tmp_path / "skyward.yaml", sshd, extra=f'workdir: {workdir}\npip: ["skyctl-not-installed-anyway"]')
    result, elapsed = fib(cfg)
    assert_failure(result, 5, "refusing the workdir", str(workdir / "venvs"), "writable by group or others",
                   elapsed=elapsed)


@pytest.mark.parametrize("kind", HOSTS)
def test_a_missing_workdir_is_created_private(request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> None:
    workdir = tmp_path / "deep" / "cache"
    old = os.umask(0)  # whatever the umask, the workdir is 0700
    try:
        result, _ = fib(host_config(request, kind, tmp_path, workdir))
    finally:
        os.umask(old)
    assert_fib(result)
    assert stat.S_IMODE(workdir.stat().st_mode) == 0o700
    assert the_clients_bundle(workdir / bundle_name())


# -- in a private workdir, the bundle is checked on every start ----------------------------


@pytest.mark.parametrize("kind", HOSTS)
def test_a_planted_bundle_in_a_private_workdir_is_replaced_not_run(
        request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> None:
    workdir = tmp_path / "wd"
    workdir.mkdir(mode=0o700)
    marker = tmp_path / "marker"
    (workdir / bundle_name()).write_bytes(trojan(marker))
    result, _ = fib(host_config(request, kind, tmp_path, workdir))
    assert_fib(result)
    assert not marker.exists(), "the planted bundle ran"
    assert the_clients_bundle(workdir / bundle_name())


@pytest.mark.parametrize("flags", [(), ("--no-reuse",)], ids=["kept", "direct"])
@pytest.mark.parametrize("kind", HOSTS)
def test_a_damaged_bundle_is_repaired(request: pytest.FixtureRequest, tmp_path: Path, kind: str,
                                      flags: tuple[str, ...]) -> None:
    """Truncated (a full disk, a killed copy) or corrupted in place: the next call replaces it and works."""
    workdir = tmp_path / "wd"
    cfg = host_config(request, kind, tmp_path, workdir)
    assert_fib(fib(cfg, *flags)[0])
    path = workdir / bundle_name()
    data = path.read_bytes()

    path.write_bytes(data[: len(data) // 2])
    assert_fib(fib(cfg, *flags)[0])
    assert the_clients_bundle(path)

    middle = len(data) // 2
    path.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 64]) + data[middle + 64:])
    assert_fib(fib(cfg, *flags)[0])
    assert the_clients_bundle(path)

    warm = tree(workdir)
    assert_fib(fib(cfg, *flags)[0])
    assert tree(workdir) == warm, "a warm call (verified bundle) writes nothing"


# -- no write ever goes through a planted symlink -------------------------------------------


def _next_pids(count: int) -> range:
    """The pids the kernel will hand out next (give or take other processes starting meanwhile)."""
    last = int(Path("/proc/sys/kernel/ns_last_pid").read_text())
    return range(last + 1, last + 1 + count)


@pytest.mark.parametrize("kind", HOSTS)
def test_links_at_the_guessable_temp_names_are_not_followed(
        request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> None:
    """The old stub wrote the bundle to ``<bundle>.<pid>.tmp``, following a symlink planted there."""
    workdir = tmp_path / "wd"
    workdir.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    cfg = host_config(request, kind, tmp_path, workdir)
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    for pid in _next_pids(20000):
        os.symlink(victim, workdir / f"{bundle_name()}.{pid % pid_max}.tmp")
    result, _ = fib(cfg, "--no-reuse")
    assert_fib(result)
    assert victim.read_bytes() == b"precious\n", "the bundle was written through a planted symlink"
    assert the_clients_bundle(workdir / bundle_name())


@pytest.mark.parametrize("kind", HOSTS)
def test_a_link_at_the_bundles_name_is_replaced_not_followed(
        request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> None:
    workdir = tmp_path / "wd"
    workdir.mkdir(mode=0o700)
    victim = tmp_path / "victim.zip"
    victim.write_bytes(bootstrap.bundle().data)  # even the right content is not used through a link
    (workdir / bundle_name()).symlink_to(victim)
    result, _ = fib(host_config(request, kind, tmp_path, workdir))
    assert_fib(result)
    assert victim.read_bytes() == bootstrap.bundle().data
    assert not (workdir / bundle_name()).is_symlink() and the_clients_bundle(workdir / bundle_name())


# -- the client's memo of the bundle's sha256 ---------------------------------------------


def _check(cfg: str, runtime: Path) -> Any:
    result = skyctl("check", "local", "-c", cfg, env={"XDG_RUNTIME_DIR": str(runtime)})
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_a_wrong_memo_costs_one_resend_and_is_corrected(tmp_path: Path) -> None:
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    workdir = tmp_path / "wd"
    cfg = local_config(tmp_path, workdir)
    assert "bundle sent" in _check(cfg, runtime).stdout
    memo = runtime / "skyctl" / bootstrap.memo_name()
    assert memo.read_text().strip() == bootstrap.bundle().sha256
    assert stat.S_IMODE(memo.stat().st_mode) == 0o600

    memo.write_text("0" * 64 + "\n")
    assert "bundle sent" in _check(cfg, runtime).stdout, "a bundle that does not match is sent again"
    assert memo.read_text().strip() == bootstrap.bundle().sha256
    assert "bundle sent" not in _check(cfg, runtime).stdout


def test_a_memo_in_a_directory_others_can_write_is_not_believed(tmp_path: Path) -> None:
    """Else whoever can write the memo chooses which bundle the stub accepts."""
    runtime = tmp_path / "run"
    (runtime / "skyctl").mkdir(parents=True)
    (runtime / "skyctl").chmod(0o777)
    marker = tmp_path / "marker"
    planted = trojan(marker)
    (runtime / "skyctl" / bootstrap.memo_name()).write_text(hashlib.sha256(planted).hexdigest())
    workdir = tmp_path / "wd"
    workdir.mkdir(mode=0o700)
    (workdir / bundle_name()).write_bytes(planted)
    cfg = local_config(tmp_path, workdir)
    assert "bundle sent" in _check(cfg, runtime).stdout
    assert not marker.exists()
    assert the_clients_bundle(workdir / bundle_name())
