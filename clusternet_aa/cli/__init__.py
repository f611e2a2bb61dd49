"""Command-line entry points only: parse flags, configure logging, run."""
