"""The one error of the simulated TAP service."""

from __future__ import annotations


class TapError(Exception):
    """A query the service cannot run; the message goes into the TAP error document."""
