"""skyctl: ship a Python function to a machine over SSH and stream with it.

    import skyctl

    @skyctl.function
    def moving_average(data: Iterator[float], window: int = 3): ...

    for avg in moving_average(iter(values), window=3) >> skyctl.host("gpu-1"):
        print(avg)
"""

from .api import Host, RemoteIterator
from .calls import Call, RemoteFunction, function, host
from .many.stats import HostStats
from .pools import Pool, pool
from .trust import OversizedValue, RefusedValue
from .errors import (
    BadRecord,
    ChunkLost,
    ConfigError,
    ConnectError,
    ConnectionLost,
    GroupError,
    RemoteEnvironmentError,
    RemoteError,
    RemoteTraceback,
    SkyctlError,
    TimedOut,
    UsageError,
)

__version__ = "0.1.0"

__all__ = [
    "BadRecord",
    "Call",
    "ChunkLost",
    "ConfigError",
    "ConnectError",
    "ConnectionLost",
    "GroupError",
    "Host",
    "HostStats",
    "OversizedValue",
    "Pool",
    "RefusedValue",
    "RemoteEnvironmentError",
    "RemoteError",
    "RemoteFunction",
    "RemoteIterator",
    "RemoteTraceback",
    "SkyctlError",
    "TimedOut",
    "UsageError",
    "__version__",
    "function",
    "host",
    "pool",
]
