"""The requests the backend builds, for :meth:`Link.call <.link.Link.call>` and
:meth:`Link.call_many <.link.Link.call_many>`; and container create (opcode 19), which
aiozk does not offer."""

from __future__ import annotations

from typing import Any

from aiozk import protocol

__all__ = (
    "CreateContainerRequest",
    "CreateContainerResponse",
    "check",
    "children",
    "create_container",
    "create_node",
    "delete",
    "exists",
    "get_data",
    "multi",
    "persistent",
    "set_data",
    "sync",
)


# -- container create (opcode 19), which aiozk does not offer ----------------------------------


class CreateContainerRequest(protocol.Create2Request):  # type: ignore[misc]
    opcode = 19


class CreateContainerResponse(protocol.Create2Response):  # type: ignore[misc]
    """Defining it registers the reply of opcode 19 with aiozk (by its metaclass)."""

    opcode = 19


# -- requests the backend builds ---------------------------------------------------------------


def create_node(path: str, acl: list[Any], data: bytes) -> Any:
    request = protocol.Create2Request(path=path, data=data, acl=acl)
    request.set_flags(ephemeral=True, sequential=True)
    return request


def create_container(path: str, acl: list[Any]) -> Any:
    return CreateContainerRequest(path=path, data=b"", acl=acl, flags=4)


def multi(*requests: Any) -> Any:
    request = protocol.TransactionRequest()
    for r in requests:
        request.add(r)
    return request


def children(path: str) -> Any:
    return protocol.GetChildrenRequest(path=path, watch=False)


def delete(path: str) -> Any:
    return protocol.DeleteRequest(path=path, version=-1)


def exists(path: str) -> Any:
    return protocol.ExistsRequest(path=path, watch=False)


def get_data(path: str, *, watch: bool = False) -> Any:
    """getData, not exists, for a watch: a missing node leaves no creation watch behind."""
    return protocol.GetDataRequest(path=path, watch=watch)


def check(path: str, version: int = -1) -> Any:
    """In a multi: fails the whole multi unless ``path`` is at data ``version`` (-1: any)."""
    return protocol.CheckVersionRequest(path=path, version=version)


def persistent(path: str, acl: list[Any], data: bytes) -> Any:
    """Create a plain (persistent, not sequential) node."""
    return protocol.Create2Request(path=path, data=data, acl=acl, flags=0)


def set_data(path: str, data: bytes, version: int = -1) -> Any:
    """Replace ``path``'s data if it is at data ``version`` (-1: any)."""
    return protocol.SetDataRequest(path=path, data=data, version=version)


def sync(path: str) -> Any:
    """Bring the server this session talks to up to date with the leader: a read sent
    after it on the same session sees every write committed before it."""
    return protocol.SyncRequest(path=path)
