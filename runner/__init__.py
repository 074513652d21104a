"""Solo Harness: run a coding agent unattended in a hardened container, with a journal."""

__version__ = "0.1.0"
