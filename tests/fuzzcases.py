"""One case of the protocol fuzz: skyctl against a real worker behind ``fuzzrelay.py``, judged.

Shared by ``tests/test_fuzz_protocol.py`` (a few hundred short cases in CI)
and ``benchmarks/fuzz.py`` (a longer run whose counts go in docs/benchmarks.md).

A case is ``(seed, mutation, scenario)``; the scenarios are ``run`` (a CLI
generator with log lines between its values), ``pipe`` (stdin lines through
a function) and ``api`` (two calls on one worker through the Python API).
The verdict: the exit status, whether skyctl printed a traceback of its own,
whether it hung (no exit within the case's timeout), and, for exit 0,
whether stdout is exactly what an unbroken run prints. A changed byte inside
a value's text, or two batches of values swapped, is something a protocol
without checksums or sequence numbers cannot tell: such a case is counted
``undetectable``, not a failure, when its mutation was of that kind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RELAY = HERE / "fuzzrelay.py"
TARGETS = HERE / "targets" / "fuzz_targets.py"

sys.path.insert(0, str(HERE))
from fuzzrelay import MUTATIONS  # noqa: E402

SCENARIOS = ("run", "pipe", "api")
#: the mutations of the stub's start-up lines: they make sense once per scenario
STARTUP = ("hello", "stub", "progress")

PIPE_INPUT = "".join(f"line {i}\n" for i in range(2000))
EXPECTED = {
    "run": "".join(f"{i}\n" for i in range(1501)),
    "pipe": PIPE_INPUT.upper(),
    "api": f"400 {sum(range(400))} {sum(range(100))}\n",
}
#: the liveness bound the fuzz's host uses (``keepalive`` × ``keepalive_count``): stalls end within it
KEEPALIVE, KEEPALIVE_COUNT = 1.0, 3


@dataclass
class Outcome:
    seed: int
    mutation: str
    scenario: str
    status: int | None  # None: it hung
    traceback: bool
    wrong_output: bool
    undetectable: bool
    what: str
    seconds: float
    stderr: str

    @property
    def hung(self) -> bool:
        return self.status is None

    @property
    def failed(self) -> str:
        """Why this case fails the fuzz ('' when it passes)."""
        if self.hung:
            return "hang"
        if self.traceback:
            return "traceback"
        if self.status not in (0, 1, 5, 6):
            return f"exit {self.status}"
        if self.status == 0 and self.wrong_output and not self.undetectable:
            return "wrong output with exit 0"
        if self.status != 0 and self.stderr.count("\nerror: ") + self.stderr.startswith("error: ") > 1:
            return "more than one error line"
        return ""


def write_config(case_dir: Path, seed: int, mutation: str, workdir: Path) -> tuple[Path, Path]:
    """The config of one case: a ``command`` host whose program is the relay."""
    log = case_dir / "relay.json"
    config = case_dir / "skyward.yaml"
    argv = [sys.executable, str(RELAY), str(seed), mutation, str(log)]
    config.write_text(
        "hosts:\n"
        "  fuzz:\n"
        "    type: command\n"
        f"    argv: {json.dumps(argv)}\n"
        f"    python: {json.dumps(sys.executable)}\n"
        f"    workdir: {json.dumps(str(workdir))}\n"
        "    connect_timeout: 5\n"
        f"    keepalive: {KEEPALIVE}\n"
        f"    keepalive_count: {KEEPALIVE_COUNT}\n"
    )
    return config, log


def skyctl_command(scenario: str, config: Path) -> list[str]:
    exe = Path(sys.executable).parent / "skyctl"
    skyctl = [str(exe)] if exe.exists() else [sys.executable, "-c", "from skyctl.cli import main; main()"]
    if scenario == "run":
        return [*skyctl, "run", "-q", "-c", str(config), "-H", "fuzz", f"{TARGETS}:count"]
    if scenario == "pipe":
        return [*skyctl, "pipe", "-q", "-c", str(config), "-H", "fuzz", f"{TARGETS}:upper"]
    return [sys.executable, str(HERE / "fuzzapi.py"), str(config)]


def run_case(seed: int, mutation: str, scenario: str, base: Path, workdir: Path, timeout: float = 40.0) -> Outcome:
    """Run one case in ``base/<scenario>-<mutation>-<seed>``; never raises for what skyctl did."""
    import time

    case_dir = base / f"{scenario}-{mutation}-{seed}"
    case_dir.mkdir(parents=True, exist_ok=True)
    config, log = write_config(case_dir, seed, mutation, workdir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYCTL_")}
    env.update({"SKYCTL_PIP_SILENCE": "3", "PYTHONPATH": str(REPO), "CI": "1"})
    start = time.monotonic()
    proc = subprocess.Popen(skyctl_command(scenario, config), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=case_dir, start_new_session=True)
    try:
        out, err = proc.communicate(PIPE_INPUT.encode() if scenario == "pipe" else b"", timeout=timeout)
        status: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        status = None
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    seconds = time.monotonic() - start
    stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
    relays = []
    try:
        lines = log.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            relays.append(json.loads(line))
        except ValueError:
            pass
    done = [r for r in relays if r.get("done")]
    info = done[0] if done else {"done": False, "what": "the relay left no log"}
    wrong = stdout != EXPECTED[scenario]
    return Outcome(seed, mutation, scenario, status, "Traceback (most recent call last)" in stderr, wrong,
                   wrong and _undetectable(info), str(info.get("what") if info.get("done") else "not reached"),
                   seconds, stderr[-2000:])


def _undetectable(info: dict) -> bool:
    """A change no checksum-free protocol can see: bytes inside a value's text, or batches swapped."""
    what = str(info.get("what", ""))
    if not info.get("done"):
        return False
    if info.get("mutation") == "flip" and what.startswith(("ITEMS_OUT:", "RETURN:")):
        at = int(what.split("byte ")[1].split()[0])
        return at >= 10 + 5  # past the header, the batch's tag and count: inside the values
    return info.get("mutation") == "reorder" and what.startswith("ITEMS_OUT")


def cases(seeds: range) -> list[tuple[int, str, str]]:
    """Every (seed, mutation, scenario) for ``seeds``; start-up mutations only for the first two seeds."""
    out = []
    for seed in seeds:
        for mutation in MUTATIONS:
            if mutation in STARTUP and seed - seeds.start >= 2:
                continue
            for scenario in SCENARIOS:
                out.append((seed, mutation, scenario))
    return out
