"""Built-in guards: the storage side of fencing. Each guard module imports its driver
(``lockkit.guards.redis`` needs redis-py, ``lockkit.guards.sql`` asyncpg or aiosqlite...),
so importing this package loads none of them.

The codecs storage guards take (``codec=``) live here: :data:`JSON` (the default),
:data:`TEXT` and :data:`RAW`.
"""

from __future__ import annotations

from ._codec import JSON as JSON
from ._codec import RAW as RAW
from ._codec import TEXT as TEXT
from ._codec import Codec as Codec

__all__ = ("JSON", "RAW", "TEXT", "Codec")
