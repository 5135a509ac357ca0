"""The private runtime directory: created private, refused when it is not ours alone; memos never through a link."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from skyctl import runtime


@pytest.fixture
def xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    return tmp_path


def test_created_private(xdg: Path) -> None:
    path = runtime.private_dir()
    assert path == str(xdg / "skyctl")
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o700


@pytest.mark.parametrize("unsafe", ["mode", "symlink", "file"])
def test_not_ours_alone_is_refused(xdg: Path, tmp_path_factory: pytest.TempPathFactory, unsafe: str) -> None:
    target = xdg / "skyctl"
    if unsafe == "mode":
        target.mkdir(mode=0o700)
        target.chmod(0o755)
    elif unsafe == "symlink":
        elsewhere = tmp_path_factory.mktemp("elsewhere")
        elsewhere.chmod(0o700)
        target.symlink_to(elsewhere)
    else:
        target.write_text("")
    with pytest.raises(runtime.UnsafeDirectory) as caught:
        runtime.private_dir()
    assert str(target) in str(caught.value)
    assert runtime.memo("memo") is None  # so nothing is read or written
    runtime.remember(runtime.memo("memo"), b"x")
    assert runtime.recall(runtime.memo("memo")) is None
    if unsafe == "mode":
        assert os.listdir(target) == []


def test_remembered_bytes_come_back_and_no_temp_file_stays(xdg: Path) -> None:
    memo = runtime.memo("memo")
    runtime.remember(memo, b"first")
    runtime.remember(memo, b"second")
    assert runtime.recall(memo) == b"second"
    assert os.listdir(xdg / "skyctl") == ["memo"]
    assert stat.S_IMODE(os.lstat(xdg / "skyctl" / "memo").st_mode) == 0o600


def test_a_link_is_not_followed(xdg: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    planted = tmp_path_factory.mktemp("planted") / "memo"
    planted.write_bytes(b"believe me")
    memo = runtime.memo("memo")
    os.symlink(planted, memo)
    assert runtime.recall(memo) is None
    runtime.remember(memo, b"ours")  # replaces the link itself, never writes through it
    assert planted.read_bytes() == b"believe me"
    assert runtime.recall(memo) == b"ours"


def test_recall_reads_at_most_the_limit(xdg: Path) -> None:
    memo = runtime.memo("memo")
    runtime.remember(memo, b"0123456789")
    assert runtime.recall(memo, 4) == b"0123"
