"""Importing this module fails: it needs a module that does not exist."""

import not_a_real_module_xyz  # noqa: F401


def f() -> int:
    return 1
