"""Redis driver code: the RESP connections lockkit uses on the hot path."""
