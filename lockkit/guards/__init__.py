"""Built-in guards: the storage side of fencing. Each module imports its driver."""
