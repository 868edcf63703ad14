"""Sizes and durations as people write them (``"50MB"``, ``"1h30m"``), and the TLS spellings.

Each is an `Annotated` type whose `BeforeValidator` turns the written form into the number the
code uses, so a model says ``timeout: Duration`` and never parses text itself. `ReferenceName`
rides along in the annotation to give the generated reference a word ("size", "duration")
instead of "integer".
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Literal

from pydantic import BeforeValidator

__all__ = [
    "Duration",
    "ListenerTLS",
    "ReferenceName",
    "Size",
    "TLSSetting",
    "parse_duration",
    "parse_size",
]

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: object) -> int:
    """Bytes from an int or a string like ``"50MB"`` (10^6) / ``"1MiB"`` (2^20)."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 1048576, '50MB' or '1MiB', not a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m and m.group(2).lower() in _SIZE_UNITS:
            return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
    raise ValueError(
        "expected a size in bytes or with a unit: B, KB, MB, GB (powers of 1000) "
        "or KiB, MiB, GiB (powers of 1024), e.g. '50MB'"
    )


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(value: object) -> float:
    """Seconds from a number or a string like ``"10s"``, ``"5m"``, ``"1h30m"``, ``"250ms"``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 10, '10s' or '5m', not a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        try:
            seconds = float(text)
        except ValueError:
            pos, seconds = 0, 0.0
            for m in _DURATION_PART.finditer(text):
                if m.start() != pos:
                    break
                seconds += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
                pos = m.end()
            if pos != len(text) or not text:
                raise ValueError(
                    "expected seconds or a duration with units ms, s, m, h, d, e.g. '30s' or '5m'"
                ) from None
    else:
        raise ValueError("expected a duration such as 10, '10s' or '5m'")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("a duration must be a finite number of seconds, zero or more")
    return seconds


class ReferenceName:
    """Marks an annotated type with the name the generated reference shows for it."""

    def __init__(self, name: str) -> None:
        self.name = name


Size = Annotated[int, BeforeValidator(parse_size), ReferenceName("size")]
Duration = Annotated[float, BeforeValidator(parse_duration), ReferenceName("duration")]


def bool_tls(value: object) -> object:
    """`tls: true` / `false` as the obvious spellings of implicit TLS and none.

    The Helm chart examples say `tls: true`; refusing it would only teach people a synonym.
    """
    if value is True:
        return "implicit"
    if value is False:
        return "none"
    return value


# How a configured connection to a POP3 server starts (accounts, proxy upstreams). The client's
# own `bridge.pop3.client.TLSMode` is the same three words without the boolean spellings.
TLSSetting = Annotated[Literal["implicit", "starttls", "none"], BeforeValidator(bool_tls)]
# A proxy listener offers STLS through its own `starttls` key, so `tls` has two values only.
ListenerTLS = Annotated[Literal["implicit", "none"], BeforeValidator(bool_tls)]
