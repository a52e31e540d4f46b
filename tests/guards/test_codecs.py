"""The codecs storage guards use to store values."""

from __future__ import annotations

import pytest

from lockkit.guards import JSON, RAW, TEXT


def test_json_round_trips_and_names_what_it_cannot_store() -> None:
    value = {"state": "paid", "items": [1, 2], "note": "été"}
    assert JSON.decode(JSON.encode(value)) == value
    with pytest.raises(TypeError, match=r"codec=lockkit\.guards\.RAW"):
        JSON.encode({1, 2})


def test_text_and_raw_keep_their_types() -> None:
    assert TEXT.decode(TEXT.encode("été")) == "été"
    assert RAW.decode(RAW.encode(b"\x00\xff")) == b"\x00\xff"
    with pytest.raises(TypeError, match="stores str"):
        TEXT.encode(b"x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="stores bytes"):
        RAW.encode("x")  # type: ignore[arg-type]
