"""URL scheme -> backend class, resolved lazily so ``import lockkit`` loads no driver."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from ._errors import ConfigurationError

if TYPE_CHECKING:
    from ._backend import Backend

__all__ = ("BUILTIN_SCHEMES", "backend_class")

#: scheme -> (dotted path, pip extra that brings its driver)
BUILTIN_SCHEMES: dict[str, tuple[str, str | None]] = {
    "memory": ("lockkit.backends.memory:MemoryBackend", None),
    "redis": ("lockkit.backends.redis:RedisBackend", "redis"),
    "rediss": ("lockkit.backends.redis:RedisBackend", "redis"),
    "redis+sentinel": ("lockkit.backends.redis:RedisBackend", "redis"),
    "redis+cluster": ("lockkit.backends.redis:RedisBackend", "redis"),
    "redlock": ("lockkit.backends.redlock:RedlockBackend", "redis"),
    "redlocks": ("lockkit.backends.redlock:RedlockBackend", "redis"),
    "zookeeper": ("lockkit.backends.zookeeper:ZooKeeperBackend", "zookeeper"),
    "zk": ("lockkit.backends.zookeeper:ZooKeeperBackend", "zookeeper"),
    "etcd": ("lockkit.backends.etcd:EtcdBackend", "etcd"),
    "etcds": ("lockkit.backends.etcd:EtcdBackend", "etcd"),
}

ENTRY_POINT_GROUP = "lockkit.backends"


def backend_class(scheme: str) -> type[Backend]:
    """The backend class serving ``scheme``.

    Raises:
        ConfigurationError: unknown scheme, or its driver is not installed.
    """
    if scheme in BUILTIN_SCHEMES:
        target, extra = BUILTIN_SCHEMES[scheme]
    else:
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == scheme]
        if not found:
            known = sorted(
                set(BUILTIN_SCHEMES) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
            )
            raise ConfigurationError(
                f"unknown URL scheme {scheme + '://'!r}; lockkit knows "
                f"{', '.join(s + '://' for s in known)}"
            )
        target, extra = found[0].value, None
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if extra is not None and exc.name != module_name:
            raise ConfigurationError(
                f"the {scheme}:// backend needs the {exc.name!r} package: "
                f"pip install 'lockkit[{extra}]'"
            ) from exc
        raise
    cls: type[Backend] = getattr(module, attr)
    return cls
