"""Built-in backends. Each module imports its driver, so import only what you use."""
