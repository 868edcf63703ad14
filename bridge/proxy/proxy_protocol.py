"""HAProxy PROXY protocol v1 (text) and v2 (binary), receiving side, sans-I/O.

A load balancer in front of the proxy opens its own TCP connection, so without this header every
session would seem to come from the balancer: per-IP limits would lump all clients together and
logs would be useless. The balancer writes one header before the client's first byte; we parse
it and hand the rest of the stream to the POP3 session untouched.

`parse_proxy_header` is pure: it looks at the bytes received so far and says "need more", "here
is the header and its length", or raises. Feeding it a growing buffer gives the same answer as
feeding it everything at once, which is what lets the asyncio helper below stay trivial.

Spec facts (haproxy's doc/proxy-protocol.txt) this module relies on:
- v1 is one ASCII line `PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\\r\\n` or `PROXY UNKNOWN
  ...\\r\\n`, never longer than 107 bytes including the CRLF, single spaces between fields.
- v2 starts with the 12-byte signature `\\r\\n\\r\\n\\x00\\r\\nQUIT\\n`, then a version/command byte
  (version 2; command LOCAL=0 or PROXY=1), a family/transport byte, a 16-bit big-endian length of
  what follows: the addresses (12 bytes for AF_INET, 36 for AF_INET6, 216 for AF_UNIX) and then
  TLVs (type: 1 byte, length: 2 bytes, value).

The v2 length field allows 65535 bytes of TLVs; nobody needs that many before a POP3 greeting,
and accepting them would let any peer that reaches the port make us buffer 64 KiB per connection
before we know anything. We refuse lengths over `MAX_V2_LENGTH` (4096, room for every TLV haproxy
and the cloud balancers send, SSL and AWS/Azure/GCP ids included).

Results that carry no usable address give `info = None`, meaning "use the TCP peer address":
v1 `UNKNOWN`, v2 `LOCAL` (a health check from the balancer itself), and v2 `PROXY` with an
unspecified family or an AF_UNIX pair (a POP3 listener has no use for socket paths). UDP is
refused: a POP3 session cannot have come over a datagram transport.
"""

from __future__ import annotations

import asyncio
import ipaddress
import struct
from dataclasses import dataclass

__all__ = [
    "MAX_HEADER",
    "MAX_V1_LINE",
    "MAX_V2_LENGTH",
    "V2_SIGNATURE",
    "ProxyInfo",
    "ProxyProtocolError",
    "parse_proxy_header",
    "read_proxy_header",
]

V1_PREFIX = b"PROXY "
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
MAX_V1_LINE = 107
MAX_V2_LENGTH = 4096
_V2_FIXED = 16
MAX_HEADER = _V2_FIXED + MAX_V2_LENGTH  # the most bytes that can be needed before a decision

_ADDRESS_SIZE = {0x1: 12, 0x2: 36, 0x3: 216}  # AF_INET, AF_INET6, AF_UNIX
_SHOWN = 8  # bytes of offending input an error message may quote


class ProxyProtocolError(Exception):
    """The bytes before the POP3 session are not a valid PROXY header (or never arrived).

    The connection must be closed: without a trustworthy header we cannot know who the client
    is, and guessing would let a client behind the balancer spoof its address.
    """


@dataclass(frozen=True, slots=True)
class ProxyInfo:
    """The real client (`source`) and the address it connected to (`dest`), as (host, port)."""

    source: tuple[str, int]
    dest: tuple[str, int]
    version: int  # 1 or 2
    transport: str  # "tcp4" | "tcp6"
    tlvs: tuple[tuple[int, bytes], ...] = ()  # v2 only, raw (type, value) in wire order


def _shown(data: bytes) -> str:
    return repr(bytes(data[:_SHOWN])) + ("..." if len(data) > _SHOWN else "")


def parse_proxy_header(data: bytes) -> tuple[ProxyInfo | None, int] | None:
    """(info, bytes consumed) once `data` starts with a whole header; None while more is needed.

    Raises `ProxyProtocolError` as soon as the bytes cannot be the start of a valid header.
    """
    view = bytes(data[:MAX_HEADER])
    if view.startswith(V2_SIGNATURE):
        return _parse_v2(view)
    if view.startswith(V1_PREFIX):
        return _parse_v1(view)
    if V1_PREFIX.startswith(view) or V2_SIGNATURE.startswith(view):
        return None  # a (possibly empty) prefix of one of the two signatures
    raise ProxyProtocolError(
        f"expected a PROXY protocol header (v1 'PROXY ...' or the v2 signature) from the load "
        f"balancer, got {_shown(view)}; is proxy_protocol enabled on a listener clients reach "
        f"directly?"
    )


def _parse_v1(data: bytes) -> tuple[ProxyInfo | None, int] | None:
    end = data.find(b"\r\n", 0, MAX_V1_LINE)
    if end < 0:
        if b"\n" in data[:MAX_V1_LINE]:
            raise ProxyProtocolError("PROXY v1 header line must end with CRLF, not a bare LF")
        if len(data) >= MAX_V1_LINE:
            raise ProxyProtocolError(f"PROXY v1 header has no CRLF within {MAX_V1_LINE} bytes")
        return None
    line = data[:end]
    consumed = end + 2
    if b"\r" in line or b"\n" in line or b"\x00" in line:
        raise ProxyProtocolError("PROXY v1 header contains a stray CR, LF or NUL")
    fields = line.split(b" ")
    if len(fields) >= 2 and fields[1] == b"UNKNOWN":
        return None, consumed  # the balancer does not know the client: use the TCP peer
    if len(fields) != 6:
        raise ProxyProtocolError(
            "PROXY v1 header must be 'PROXY TCP4|TCP6 <src> <dst> <sport> <dport>' with single "
            f"spaces; got {len(fields)} fields"
        )
    proto, src, dst, sport, dport = fields[1:]
    if proto == b"TCP4":
        version, transport = 4, "tcp4"
    elif proto == b"TCP6":
        version, transport = 6, "tcp6"
    else:
        raise ProxyProtocolError(
            f"PROXY v1 protocol must be TCP4, TCP6 or UNKNOWN, got {_shown(proto)}"
        )
    source = (_v1_address(src, version), _v1_port(sport))
    dest = (_v1_address(dst, version), _v1_port(dport))
    return ProxyInfo(source=source, dest=dest, version=1, transport=transport), consumed


def _v1_address(text: bytes, version: int) -> str:
    try:
        address = ipaddress.ip_address(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ProxyProtocolError(
            f"PROXY v1 address {_shown(text)} is not a valid IPv{version} address"
        ) from None
    if address.version != version:
        raise ProxyProtocolError(
            f"PROXY v1 address {_shown(text)} is not IPv{version} as the protocol field says"
        )
    return str(address)


def _v1_port(text: bytes) -> int:
    # Decimal, no sign, no leading zero (the spec's grammar), at most 65535.
    if not (1 <= len(text) <= 5 and text.isdigit() and (text == b"0" or text[:1] != b"0")):
        raise ProxyProtocolError(f"PROXY v1 port {_shown(text)} is not a decimal 0-65535")
    port = int(text)
    if port > 65535:
        raise ProxyProtocolError(f"PROXY v1 port {port} is out of range 0-65535")
    return port


def _parse_v2(data: bytes) -> tuple[ProxyInfo | None, int] | None:
    if len(data) < _V2_FIXED:
        return None
    ver_cmd, fam, length = data[12], data[13], struct.unpack_from("!H", data, 14)[0]
    if ver_cmd >> 4 != 2:
        raise ProxyProtocolError(f"PROXY v2 header has version {ver_cmd >> 4}, expected 2")
    command = ver_cmd & 0x0F
    if command not in (0, 1):
        raise ProxyProtocolError(f"PROXY v2 command {command} is neither LOCAL (0) nor PROXY (1)")
    if length > MAX_V2_LENGTH:
        raise ProxyProtocolError(
            f"PROXY v2 header announces {length} bytes of addresses and TLVs; this proxy accepts "
            f"at most {MAX_V2_LENGTH}"
        )
    family, transport = fam >> 4, fam & 0x0F
    if family > 3 or transport > 2:
        raise ProxyProtocolError(f"PROXY v2 family/transport byte 0x{fam:02x} is not defined")
    total = _V2_FIXED + length
    if len(data) < total:
        return None
    body = data[_V2_FIXED:total]
    if command == 0:
        return None, total  # LOCAL: the balancer's own connection (health check)
    if transport == 2:
        raise ProxyProtocolError("PROXY v2 header says UDP; a POP3 listener only takes TCP")
    if family == 0 or transport == 0:
        return None, total  # PROXY with UNSPEC: no address to report
    size = _ADDRESS_SIZE[family]
    if length < size:
        raise ProxyProtocolError(
            f"PROXY v2 length {length} is shorter than the {size}-byte address block of its family"
        )
    tlvs = _tlvs(body[size:])
    if family == 3:
        return None, total  # AF_UNIX socket paths say nothing about a network client
    src: ipaddress.IPv4Address | ipaddress.IPv6Address
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address
    if family == 1:
        src, dst = ipaddress.IPv4Address(body[0:4]), ipaddress.IPv4Address(body[4:8])
        ports = struct.unpack_from("!HH", body, 8)
        name = "tcp4"
    else:
        src, dst = ipaddress.IPv6Address(body[0:16]), ipaddress.IPv6Address(body[16:32])
        ports = struct.unpack_from("!HH", body, 32)
        name = "tcp6"
    info = ProxyInfo(
        source=(str(src), ports[0]),
        dest=(str(dst), ports[1]),
        version=2,
        transport=name,
        tlvs=tlvs,
    )
    return info, total


def _tlvs(data: bytes) -> tuple[tuple[int, bytes], ...]:
    out: list[tuple[int, bytes]] = []
    at = 0
    while at < len(data):
        if len(data) - at < 3:
            raise ProxyProtocolError("PROXY v2 TLV list ends inside a TLV header")
        kind, size = data[at], struct.unpack_from("!H", data, at + 1)[0]
        at += 3
        if at + size > len(data):
            raise ProxyProtocolError(
                f"PROXY v2 TLV of type 0x{kind:02x} is {size} bytes but only "
                f"{len(data) - at} remain"
            )
        out.append((kind, data[at : at + size]))
        at += size
    return tuple(out)


async def read_proxy_header(
    reader: asyncio.StreamReader,
    timeout: float,  # noqa: ASYNC109 - part of the interface the server calls; one deadline
) -> tuple[ProxyInfo | None, bytes]:
    """Read the header from `reader`; returns it and any bytes that came after it.

    The whole header must arrive within `timeout` seconds (a connection that sends nothing must
    not hold a slot forever). Bytes past the header belong to the POP3 session: the caller feeds
    them to its framer before reading more.
    """
    buffer = b""
    try:
        async with asyncio.timeout(timeout):
            while True:
                parsed = parse_proxy_header(buffer)
                if parsed is not None:
                    info, used = parsed
                    return info, buffer[used:]
                chunk = await reader.read(MAX_HEADER)
                if not chunk:
                    raise ProxyProtocolError(
                        f"connection closed after {len(buffer)} bytes, before the PROXY header "
                        "was complete"
                    )
                buffer += chunk
    except TimeoutError:
        raise ProxyProtocolError(
            f"no complete PROXY header within {timeout:g}s ({len(buffer)} bytes received)"
        ) from None
