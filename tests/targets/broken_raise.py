"""Importing this module fails: its top level raises."""


def _setup() -> None:
    raise RuntimeError("cannot configure")


_setup()


def f() -> int:
    return 1
