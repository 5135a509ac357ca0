"""What a profile built in code is made to hold: frozen mappings, tuples, floats, ``~`` expanded.

The schema's table names one of these per key (``normalize=``), so that
``HostProfile(...)`` written in code holds what the parser would have made
from the same values, and refuses what no config could give (``ValueError``).

Standard library only.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator, Mapping, Protocol, TypeVar

__all__ = [
    "FrozenMap", "Normalize", "Profile", "as_float", "as_tuple", "at_least_one", "expand_path", "expand_paths",
    "frozen_env", "frozen_or_none", "frozen_resources", "name_rule", "worker_path",
]  # fmt: skip

_K = TypeVar("_K")
_V = TypeVar("_V")


class Profile(Protocol):
    """What a normalizer reads of the profile being built."""

    @property
    def name(self) -> str: ...

    @property
    def type(self) -> str: ...


class FrozenMap(Mapping[_K, _V]):
    """A read-only, hashable, picklable dict: what ``env`` and ``hosts`` are."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[_K, _V] | None = None) -> None:
        self._data: dict[_K, _V] = dict(data or {})

    def __getitem__(self, key: _K) -> _V:
        return self._data[key]

    def __iter__(self) -> Iterator[_K]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))

    def __repr__(self) -> str:
        return repr(self._data)

    def __reduce__(self) -> tuple[type, tuple[dict[_K, _V]]]:
        return (type(self), (self._data,))


#: a value made what the profile holds, for a profile built in code: (profile, field name, value) -> value;
#: raises ``ValueError`` for a value no config could give
Normalize = Callable[[Profile, str, Any], Any]


def as_float(profile: Profile, name: str, value: Any) -> float:
    return float(value)


def as_tuple(profile: Profile, name: str, value: Any) -> tuple[Any, ...]:
    return tuple(value)


def expand_paths(profile: Profile, name: str, value: Any) -> tuple[str, ...]:
    return tuple(os.path.expanduser(p) for p in value)


def expand_path(profile: Profile, name: str, value: Any) -> str:
    path: str = os.path.expanduser(value)
    return path


def worker_path(profile: Profile, name: str, value: Any) -> Any:
    """``~`` expanded for a local host only (an ssh or command host's home is over there)."""
    return os.path.expanduser(value) if profile.type == "local" and value is not None else value


def at_least_one(profile: Profile, name: str, value: Any) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(f"HostProfile {profile.name!r}: {name} must be at least 1, not {number}")
    return number


def frozen_env(profile: Profile, name: str, value: Mapping[Any, Any]) -> FrozenMap[str, str]:
    return FrozenMap({str(k): str(v) for k, v in value.items()})


def frozen_resources(profile: Profile, name: str, value: Mapping[str, Any]) -> FrozenMap[str, Any]:
    resources = dict(value)
    if isinstance(resources.get("resources"), Mapping):
        resources["resources"] = FrozenMap(resources["resources"])
    return FrozenMap(resources)


def frozen_or_none(profile: Profile, name: str, value: Mapping[str, Any] | None) -> FrozenMap[str, Any] | None:
    return None if value is None else FrozenMap(value)


def name_rule(rule: Callable[[str], str | None]) -> Normalize:
    """The config's host/user name rule, for a profile built in code (defence in depth)."""

    def normalize(profile: Profile, name: str, value: Any) -> Any:
        problem = rule(value) if value is not None else None
        if problem:
            raise ValueError(f"HostProfile {profile.name!r}: {name} {value!r} {problem}")
        return value

    return normalize
