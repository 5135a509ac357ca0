"""``skyctl completion bash|zsh|fish`` and ``skyctl hosts --names`` (issue 20, shell completion).

Each script is checked by its own shell's parser (``bash -n``; ``zsh -n`` and
``fish -n`` where those shells are installed), and the bash one is driven as
bash's completion would drive it: host and group names come from the config.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import clean_env, run_skyctl, skyctl_argv

pytestmark = pytest.mark.timeout(120)

CONFIG = "hosts:\n  gpu-1: {host: g1}\n  gpu-2: {host: g2}\ngroups:\n  farm: [gpu-1, gpu-2]\n"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "skyward.yaml").write_text(CONFIG)
    return tmp_path


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_each_script_is_accepted_by_its_shell(shell: str, tmp_path: Path) -> None:
    result = run_skyctl("completion", shell)
    assert result.returncode == 0, result.stderr
    assert "hosts --names" in result.stdout
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed: the script was written but not parsed")
    script = tmp_path / f"skyctl.{shell}"
    script.write_text(result.stdout)
    checked = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr


def test_an_unknown_shell_is_a_usage_error() -> None:
    result = run_skyctl("completion", "tcsh")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr


def test_hosts_names_lists_profiles_and_groups(project: Path) -> None:
    result = run_skyctl("hosts", "--names", cwd=project)
    assert (result.returncode, result.stdout, result.stderr) == (0, "local\ngpu-1\ngpu-2\nfarm\n", "")
    other = project / "other.yaml"
    other.write_text("hosts:\n  solo: {host: s}\n")
    assert run_skyctl("hosts", "--names", "-c", str(other), cwd=project).stdout == "local\nsolo\n"


def _complete(project: Path, *words: str) -> list[str]:
    """What the bash script offers for the command line ``words`` (the last one being completed)."""
    script = run_skyctl("completion", "bash").stdout
    exe = Path(skyctl_argv()[0])
    if exe.name != "skyctl":
        pytest.skip("the skyctl console script is not on PATH")
    driver = (
        script
        + 'COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMPREPLY=(); _skyctl\n'
        + 'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    result = subprocess.run(["bash", "-c", driver, "bash", str(exe), *words], capture_output=True, text=True,
                            timeout=60, cwd=project, env=clean_env())
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if line]


def test_bash_completes_commands_options_and_choices(project: Path) -> None:
    assert _complete(project, "pi") == ["pipe"]
    assert _complete(project, "pipe", "--for") == ["--format"]
    assert _complete(project, "pipe", "--format", "c") == ["csv"]
    assert _complete(project, "run", "-o", "") == ["text", "json"]
    assert _complete(project, "completion", "") == ["bash", "zsh", "fish"]


def test_bash_completes_host_and_group_names_from_the_config(project: Path) -> None:
    assert _complete(project, "run", "-H", "") == ["local", "gpu-1", "gpu-2", "farm"]
    assert _complete(project, "pipe", "--host", "gpu") == ["gpu-1", "gpu-2"]
    assert _complete(project, "run", "-H", "gpu-1,f") == ["gpu-1,farm"]  # after a comma: the next name
    assert _complete(project, "check", "gpu-1", "") == ["local", "gpu-1", "gpu-2", "farm"]
    other = project / "other.yaml"
    other.write_text("hosts:\n  solo: {host: s}\n")
    assert _complete(project, "run", "-c", str(other), "-H", "") == ["local", "solo"]  # the --config given


def test_fish_completes_host_and_group_names_from_the_config(project: Path, tmp_path: Path) -> None:
    if shutil.which("fish") is None:
        pytest.skip("fish is not installed")
    exe = Path(skyctl_argv()[0])
    if exe.name != "skyctl":
        pytest.skip("the skyctl console script is not on PATH")
    script = tmp_path / "skyctl.fish"
    script.write_text(run_skyctl("completion", "fish").stdout)

    def complete(line: str) -> list[str]:
        result = subprocess.run(["fish", "--no-config", "-c", f"source {script}; complete -C '{line}'"],
                                capture_output=True, text=True, timeout=60, cwd=project, env=clean_env())
        assert result.returncode == 0, result.stderr
        return sorted(line.split("\t")[0] for line in result.stdout.splitlines() if line)

    assert complete("skyctl run -H ") == ["farm", "gpu-1", "gpu-2", "local"]
    assert complete("skyctl pipe -H gpu-1,f") == ["gpu-1,farm"]
    assert complete("skyctl check gpu-") == ["gpu-1", "gpu-2"]
    assert complete("skyctl pipe --format c") == ["csv"]
