"""lockkit internals. Nothing here is public API unless re-exported by :mod:`lockkit`."""
