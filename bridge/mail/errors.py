"""Typed errors of bridge.mail. Parsing never raises; only building the envelope can."""

from __future__ import annotations

__all__ = ["MailError", "PayloadEncodingError"]


class MailError(Exception):
    """Base class for errors raised by bridge.mail."""


class PayloadEncodingError(MailError, ValueError):
    """The webhook body could not be built or encoded (a programming error upstream)."""
