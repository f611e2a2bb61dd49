"""The hub process: its settings, the assembly of its API server and the running of it."""
