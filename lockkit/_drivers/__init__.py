"""Driver code shared by more than one user (a backend, Redlock, a guard).

A package goes here when two users need it: ``redis`` serves the Redis backend and,
later, Redlock and the Redis guard. Nothing here is public API.
"""
