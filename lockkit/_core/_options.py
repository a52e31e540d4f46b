"""Backend options as typed records, with one parser for URL queries and keywords.

A backend declares its options as a frozen dataclass whose fields carry a converter
in their metadata (:func:`option`). :func:`parse_options` merges the URL's query string
with keyword arguments (keywords win), converts each value, and raises one
:class:`ConfigurationError` that names the option and what is wrong with it; an unknown
name lists the known ones. :class:`TlsOptions` is shared by every ``...s://`` scheme.
"""

from __future__ import annotations

import dataclasses
import math
import ssl
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, final

from ._errors import ConfigurationError

__all__ = (
    "TlsOptions",
    "as_bool",
    "as_count",
    "as_seconds",
    "option",
    "option_names",
    "parse_options",
)

T = TypeVar("T")

#: Metadata key holding a field's converter.
CONVERT = "lockkit.convert"


def option(default: Any, convert: Callable[[Any], Any], *, secret: bool = False) -> Any:
    """A dataclass field for an option: ``default``, converted with ``convert``.
    A ``secret`` option never appears in the record's repr."""
    return dataclasses.field(default=default, repr=not secret, metadata={CONVERT: convert})


def as_bool(value: object) -> bool:
    """Booleans and the usual strings (1/0, true/false, yes/no, on/off)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected true/false, got {value!r}")


def as_seconds(value: object) -> float:
    """A positive, finite number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number of seconds, got {value!r}")
    result = float(value)  # type: ignore[arg-type]
    if not result > 0 or math.isinf(result):
        raise ValueError(f"expected a positive number of seconds, got {value!r}")
    return result


def as_count(value: object) -> int:
    """A whole number, 0 or more."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"expected a whole number, got {value!r}")
    result = value if isinstance(value, int) else int(str(value))
    if result < 0:
        raise ValueError(f"expected 0 or more, got {value!r}")
    return result


def as_text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {type(value).__name__}")
    return value


def _as_cert_reqs(value: object) -> str:
    text = str(value).lower()
    if text not in ("required", "optional", "none"):
        raise ValueError(f"expected required, optional or none, got {value!r}")
    return text


@final
@dataclasses.dataclass(frozen=True, kw_only=True)
class TlsOptions:
    """TLS settings of ``rediss://`` and ``etcds://``: the CA bundle to trust (default:
    the system's), whether the server's certificate is checked, and a client
    certificate and key for mutual TLS."""

    ssl_ca_certs: str | None = option(None, as_text)
    ssl_cert_reqs: str = option("required", _as_cert_reqs)
    ssl_certfile: str | None = option(None, as_text)
    ssl_keyfile: str | None = option(None, as_text)

    def context(self) -> ssl.SSLContext:
        """An SSL context for a client; file errors become ConfigurationError."""
        try:
            ctx = ssl.create_default_context(cafile=self.ssl_ca_certs)
            if self.ssl_certfile is not None:
                ctx.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(f"cannot load the TLS files: {exc}") from None
        if self.ssl_cert_reqs == "none":
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif self.ssl_cert_reqs == "optional":
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_OPTIONAL
        return ctx


def option_names(cls: type[Any]) -> list[str]:
    """The option names a record accepts, nested records (like TLS) flattened."""
    names: list[str] = []
    for f in dataclasses.fields(cls):
        if CONVERT in f.metadata:
            names.append(f.name)
        elif isinstance(f.type, type) and dataclasses.is_dataclass(f.type):
            names.extend(option_names(f.type))
        elif f.name in _NESTED:
            names.extend(option_names(_NESTED[f.name]))
    return names


#: Nested option records by field name (annotations are strings under PEP 563).
_NESTED: dict[str, type[Any]] = {"tls": TlsOptions}


def parse_options(
    cls: type[T],
    kind: str,
    query: Mapping[str, str],
    given: Mapping[str, Any],
    *,
    allowed: set[str] | None = None,
) -> T:
    """Build ``cls`` from a URL query and keyword options (keywords win).

    ``allowed`` narrows the accepted names (for example to the lock options when the
    connection comes from the application). Raises ConfigurationError for an unknown
    name or a bad value.
    """
    merged: dict[str, Any] = {**query, **given}
    known = set(option_names(cls)) if allowed is None else allowed
    unknown = sorted(set(merged) - known)
    if unknown:
        raise ConfigurationError(
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
            f"for the {kind} backend; known options: {', '.join(sorted(known)) or 'none'}"
        )
    return _build(cls, kind, merged)


def _build(cls: type[T], kind: str, merged: Mapping[str, Any]) -> T:
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        nested = _NESTED.get(f.name)
        if nested is not None and CONVERT not in f.metadata:
            values[f.name] = _build(nested, kind, merged)
            continue
        if f.name not in merged:
            continue
        try:
            values[f.name] = f.metadata[CONVERT](merged[f.name])
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"option {f.name!r} of the {kind} backend: {exc or 'invalid value'}"
            ) from None
    return cls(**values)
