"""The code shipped to the remote: stdlib only, deterministic, and runnable in isolation."""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

from skyctl import bootstrap
from skyctl.remote import wire
from skyctl.transports.local import LocalTransport

PACKAGE = Path(bootstrap.REMOTE_DIR)


def test_the_worker_modules_import_only_the_stdlib_at_top_level() -> None:
    for name in bootstrap.worker_modules():
        tree = ast.parse((PACKAGE / name).read_text())
        for node in tree.body:  # top level only: cloudpickle is imported inside functions
            if isinstance(node, ast.Import):
                roots = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # a sibling shipped in the bundle
                    shipped = {m.removesuffix(".py") for m in bootstrap.worker_modules()}
                    assert (node.module in shipped) or {a.name for a in node.names} <= shipped, name
                    continue
                roots = [(node.module or "").split(".")[0]]
            else:
                continue
            for root in roots:
                assert root in sys.stdlib_module_names or root == "__future__", f"{name} imports {root}"


def test_the_bundle_and_its_id_are_the_same_in_every_client_process() -> None:
    """Else every call would upload it again: bytecode and hash must not depend on hash seeds."""
    import hashlib
    import subprocess

    one = bootstrap.bundle()
    assert one.sha256 == hashlib.sha256(one.data).hexdigest()
    code = "from skyctl import bootstrap as b; print(b.bundle_id(), b.bundle().sha256)"
    seen = {
        tuple(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed}).stdout.split())
        for seed in ("0", "1", "12345")
    }
    assert seen == {(bootstrap.bundle_id(), one.sha256)}


def test_the_bundle_carries_bytecode_that_zipimport_uses(tmp_path: Path) -> None:
    import subprocess
    import zipfile

    path = tmp_path / "bundle.zip"
    path.write_bytes(bootstrap.bundle().data)
    names = zipfile.ZipFile(path).namelist()
    assert "skyctl/remote/worker.py" in names and "skyctl/remote/worker.pyc" in names and "cloudpickle/cloudpickle.pyc" in names
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); import skyctl.remote.worker as w, cloudpickle; "
             "print(w.__file__, w.main.__code__.co_filename, sep='|')")
    out = subprocess.run([sys.executable, "-I", "-c", probe, str(path)], capture_output=True, text=True, check=True).stdout.strip().split("|")
    assert out == [f"{path}/skyctl/remote/worker.pyc", "<skyctl bundle>/skyctl/remote/worker.py"]


class IsolatedPython(LocalTransport):
    """Runs the stub with ``-I -S``: no site-packages, no user site, no PYTHON* variables."""

    def start(self, argv: list[str]):  # type: ignore[override]
        return super().start([argv[0], "-I", "-S", *argv[1:]])


def test_the_bundle_runs_without_site_packages(tmp_path: Path) -> None:
    started = bootstrap.start_worker(IsolatedPython(), sys.executable, str(tmp_path / "wd"), {})
    try:
        assert started.sent_bundle
        assert started.hello["protocol"] == wire.PROTOCOL_VERSION
        assert started.hello["python"].startswith("%d.%d." % sys.version_info[:2])
        started.pipes.write(wire.encode(wire.Kind.BYE))
        assert started.pipes.exit_status(timeout=10) == 0
    finally:
        started.pipes.close()
    bundles = list((tmp_path / "wd").glob("bundle-*.zip"))
    assert len(bundles) == 1 and oct(bundles[0].stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "wd").stat().st_mode & 0o777) == "0o700"
