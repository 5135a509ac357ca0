"""Functions the ``pip:`` and bootstrap-deadline tests run on a host (``tests/targets/pip_targets.py:NAME``)."""

from __future__ import annotations


def uses_skyctl_slow() -> dict:
    """Import the package the test's local build backend installed into the profile's venv."""
    import sys

    import skyctl_slow

    return {"value": skyctl_slow.VALUE, "prefix": sys.prefix}
