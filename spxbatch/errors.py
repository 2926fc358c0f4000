"""The exceptions that cross stages: each names what is wrong in one sentence, and the CLI maps it to an exit code."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration file or option that cannot be used; the message says which and why."""
