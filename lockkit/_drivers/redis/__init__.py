"""Redis driver code shared by the Redis backend (and later Redlock and the Redis guard).

* :mod:`.resp`: lockkit's own pipelined RESP connection and subscriber.
* :mod:`.topology`: where Redis is (:class:`Single`, :class:`Sentinel`,
  :class:`Cluster`, :class:`AppClient`) and the executors that talk to it.
* :mod:`.wakeups`: hearing wake-ups (one channel per client, or sharded per lock).
* :mod:`.scripts`: the Lua scripts and the key layout of a lock.
* :mod:`.options`: the option records.
* :mod:`.errors`: the driver-error table for :func:`lockkit._core._errors.map_errors`.
"""

from __future__ import annotations

from .errors import REDIS_ERRORS as REDIS_ERRORS
from .options import RedisLockOptions as RedisLockOptions
from .options import RedisOptions as RedisOptions
from .options import topology_from_url as topology_from_url
from .resp import ConnectOptions as ConnectOptions
from .resp import Script as Script
from .scripts import LockKeys as LockKeys
from .scripts import encode_name as encode_name
from .topology import AppClient as AppClient
from .topology import Cluster as Cluster
from .topology import Executor as Executor
from .topology import Sentinel as Sentinel
from .topology import Single as Single
from .topology import Topology as Topology
from .topology import WakeKind as WakeKind
from .wakeups import Listen as Listen
from .wakeups import Wakeups as Wakeups
