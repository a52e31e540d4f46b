from __future__ import annotations

import importlib
import pickle
import types

import pytest

import lockkit
import lockkit.abc
import lockkit.testing


@pytest.mark.parametrize("module", [lockkit, lockkit.abc, lockkit.testing])
def test_all_is_sorted_and_complete(module) -> None:
    names = module.__all__
    # isort's order, as ruff keeps it: CONSTANTS, then Classes, then functions
    assert list(names) == sorted(names, key=lambda n: (not n.isupper(), not n[:1].isupper(), n))
    for name in names:
        assert hasattr(module, name), name
    public = {n for n in vars(module) if not n.startswith("_")}
    public -= {"annotations", "TYPE_CHECKING"}
    public = {n for n in public if not isinstance(getattr(module, n), type(importlib))}
    own = {n for n in public if getattr(getattr(module, n), "__module__", "") in (module.__name__,)}
    missing = {n for n in own if not n.endswith("T")}
    assert missing <= set(names), missing - set(names)


def test_reexports_claim_lockkit_module() -> None:
    for name in ("LockClient", "Lock", "FencingToken", "LockError", "connect"):
        assert getattr(lockkit, name).__module__ == "lockkit"


def test_version_from_metadata() -> None:
    from importlib.metadata import version

    assert lockkit.__version__ == version("lockkit")


def test_import_loads_no_driver() -> None:
    import subprocess
    import sys

    code = (
        "import sys, lockkit; "
        "bad = [m for m in ('redis', 'aiozk', 'etcetra', 'aiokafka', 'aiosqlite', 'rich', 'click') "
        "if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_error_tree() -> None:
    for cls in (
        lockkit.ConfigurationError,
        lockkit.InvalidLockName,
        lockkit.LockTimeout,
        lockkit.LockNotOwnedError,
        lockkit.LockLostError,
        lockkit.StaleTokenError,
        lockkit.BackendUnavailable,
    ):
        assert issubclass(cls, lockkit.LockError)
        assert cls.__doc__
    assert issubclass(lockkit.LockTimeout, TimeoutError)
    assert issubclass(lockkit.BackendUnavailable, ConnectionError)
    assert issubclass(lockkit.ConfigurationError, ValueError)
    assert lockkit.LockTimeout.retriable and lockkit.BackendUnavailable.retriable
    assert not lockkit.StaleTokenError.retriable


def test_token_is_an_int_with_identity() -> None:
    t = lockkit.FencingToken(7, name="orders:1", backend="memory", owner="abc")
    assert t == 7 and t > 6 and hash(t) == hash(7)
    assert str(t) == "7" and f"{t}" == "7"
    assert "orders:1" in repr(t) and "memory" in repr(t)
    clone = pickle.loads(pickle.dumps(t))
    assert clone.same_acquisition(t) and isinstance(clone, lockkit.FencingToken)
    other = lockkit.FencingToken(7, name="orders:1", backend="memory", owner="xyz")
    assert not other.same_acquisition(t)
    with pytest.raises(ValueError, match="negative"):
        lockkit.FencingToken(-1, name="n", backend="b", owner="o")
    with pytest.raises(TypeError):
        lockkit.FencingToken(True, name="n", backend="b", owner="o")


def _unexpected_public_names(module: types.ModuleType, names: list[str]) -> set[str]:
    """Public-looking names of ``module`` (from ``names``, its ``dir()``) that are not in
    its ``__all__``, and ``__all__`` entries that are missing.

    A submodule of the package is fine: the import system binds ``lockkit.testing`` as an
    attribute of ``lockkit`` as soon as anything imports it, and it is public API in its
    own right. Anything else public-looking (``logging``, ``version``, ``annotations``...)
    is a helper that leaked and should be imported under a private name or deleted.
    """
    exported = {name for name in module.__all__ if not name.startswith("_")}
    public = set()
    for name in names:
        if name.startswith("_"):
            continue
        value = getattr(module, name, None)
        if isinstance(value, types.ModuleType) and value.__name__ == f"{module.__name__}.{name}":
            continue  # a submodule
        public.add(name)
    return public ^ exported


def test_dir_of_lockkit_is_its_all() -> None:
    """``dir(lockkit)`` shows the API and nothing else, in this process (where tests have
    imported submodules such as ``lockkit.testing``) and right after ``import lockkit``."""
    assert _unexpected_public_names(lockkit, dir(lockkit)) == set()
    import json
    import subprocess
    import sys

    code = "import json, lockkit; print(json.dumps(dir(lockkit)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert _unexpected_public_names(lockkit, json.loads(out.stdout)) == set()
