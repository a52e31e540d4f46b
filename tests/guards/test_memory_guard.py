from __future__ import annotations

import pytest

import lockkit
from lockkit import FencingToken, StaleTokenError
from lockkit.guards.memory import MemoryGuard


def tok(value: int, owner: str = "o1", name: str = "lock", backend: str = "memory") -> FencingToken:
    return FencingToken(value, name=name, backend=backend, owner=owner)


async def test_accepts_higher_and_same_acquisition() -> None:
    guard: MemoryGuard[str] = MemoryGuard()
    await guard.write("r", "a", token=tok(1))
    await guard.write("r", "b", token=tok(1))  # same acquisition writes again
    await guard.write("r", "c", token=tok(5, owner="o2"))
    assert await guard.read("r") == "c"
    fence = await guard.fence("r")
    assert fence is not None and fence.token == 5 and fence.owner == "o2"


async def test_refuses_older_token() -> None:
    guard: MemoryGuard[str] = MemoryGuard()
    await guard.write("r", "new", token=tok(5))
    with pytest.raises(StaleTokenError) as info:
        await guard.write("r", "old", token=tok(4, owner="o0"))
    assert info.value.resource == "r" and info.value.offered == 4 and info.value.current == 5
    assert await guard.read("r") == "new"
    assert guard.refused == 1


async def test_refuses_equal_token_from_another_acquisition() -> None:
    guard: MemoryGuard[str] = MemoryGuard()
    await guard.write("r", "a", token=tok(5, owner="o1"))
    with pytest.raises(StaleTokenError, match="handed out a token twice"):
        await guard.write("r", "b", token=tok(5, owner="o2"))


async def test_refuses_token_of_another_lock() -> None:
    guard: MemoryGuard[str] = MemoryGuard()
    await guard.write("r", "a", token=tok(5, name="lock-a"))
    with pytest.raises(StaleTokenError, match="minted for lock 'lock-b'"):
        await guard.write("r", "b", token=tok(50, name="lock-b"))


async def test_check_raises_fence_without_value() -> None:
    guard: MemoryGuard[int] = MemoryGuard()
    await guard.check("r", token=tok(3))
    assert await guard.read("r") is None
    with pytest.raises(StaleTokenError):
        await guard.write("r", 1, token=tok(2))


async def test_plain_int_is_refused_with_a_hint() -> None:
    guard: MemoryGuard[int] = MemoryGuard()
    with pytest.raises(TypeError, match="FencingToken"):
        await guard.write("r", 1, token=5)  # type: ignore[arg-type]


async def test_real_lock_tokens_fence_writes() -> None:
    guard: MemoryGuard[int] = MemoryGuard()
    async with lockkit.connect() as locks:
        async with locks.lock("stock") as first:
            await guard.write("stock", 10, token=first)
        async with locks.lock("stock") as second:
            await guard.write("stock", 9, token=second)
        with pytest.raises(StaleTokenError):
            await guard.write("stock", 100, token=first)
