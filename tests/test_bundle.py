"""The code shipped to the remote: stdlib only, deterministic, and runnable in isolation."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from skyctl import bootstrap, wire
from skyctl.transports.local import LocalTransport

PACKAGE = Path(bootstrap.__file__).parent


def test_the_worker_modules_import_only_the_stdlib_at_top_level() -> None:
    for name in bootstrap.WORKER_MODULES:
        tree = ast.parse((PACKAGE / name).read_text())
        for node in tree.body:  # top level only: cloudpickle is imported inside functions
            if isinstance(node, ast.Import):
                roots = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # a sibling shipped in the bundle
                    shipped = {m.removesuffix(".py") for m in bootstrap.WORKER_MODULES}
                    assert (node.module in shipped) or {a.name for a in node.names} <= shipped, name
                    continue
                roots = [(node.module or "").split(".")[0]]
            else:
                continue
            for root in roots:
                assert root in sys.stdlib_module_names or root == "__future__", f"{name} imports {root}"


def test_the_bundle_is_byte_identical_and_named_by_its_hash() -> None:
    import hashlib

    one = bootstrap.bundle()
    bootstrap.bundle.cache_clear()
    two = bootstrap.bundle()
    assert one.data == two.data and one.sha256 == two.sha256 == hashlib.sha256(one.data).hexdigest()


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
