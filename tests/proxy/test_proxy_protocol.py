"""PROXY protocol v1/v2 parsing: every form, split feeding, garbage, and the asyncio helper."""

from __future__ import annotations

import asyncio
import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.proxy.proxy_protocol import (
    MAX_HEADER,
    MAX_V1_LINE,
    MAX_V2_LENGTH,
    V2_SIGNATURE,
    ProxyInfo,
    ProxyProtocolError,
    parse_proxy_header,
    read_proxy_header,
)

# ----------------------------------------------------------------------------- a tiny encoder


def encode_v1(info: ProxyInfo | None) -> bytes:
    if info is None:
        return b"PROXY UNKNOWN\r\n"
    proto = "TCP4" if info.transport == "tcp4" else "TCP6"
    return (
        f"PROXY {proto} {info.source[0]} {info.dest[0]} {info.source[1]} {info.dest[1]}\r\n"
    ).encode()


def encode_v2(
    info: ProxyInfo | None,
    *,
    command: int = 1,
    fam: int | None = None,
    tlvs: tuple[tuple[int, bytes], ...] = (),
    extra_address: bytes = b"",
) -> bytes:
    body = b""
    if info is not None:
        if info.transport == "tcp4":
            fam = 0x11 if fam is None else fam
            body = ipaddress.IPv4Address(info.source[0]).packed
            body += ipaddress.IPv4Address(info.dest[0]).packed
        else:
            fam = 0x21 if fam is None else fam
            body = ipaddress.IPv6Address(info.source[0]).packed
            body += ipaddress.IPv6Address(info.dest[0]).packed
        body += struct.pack("!HH", info.source[1], info.dest[1])
    body += extra_address
    for kind, value in tlvs:
        body += struct.pack("!BH", kind, len(value)) + value
    head = V2_SIGNATURE + bytes([0x20 | command, 0x00 if fam is None else fam])
    return head + struct.pack("!H", len(body)) + body


def v4(src: str = "192.0.2.10", sport: int = 51234, dst: str = "198.51.100.1", dport: int = 110):
    return ProxyInfo((src, sport), (dst, dport), 1, "tcp4")


def v6(src: str = "2001:db8::1", sport: int = 40000, dst: str = "2001:db8::ff", dport: int = 995):
    return ProxyInfo((src, sport), (dst, dport), 1, "tcp6")


def incremental(data: bytes) -> tuple[ProxyInfo | None, int]:
    """Feed a growing buffer byte by byte, like a socket delivering one byte per read."""
    for end in range(len(data) + 1):
        parsed = parse_proxy_header(data[:end])
        if parsed is not None:
            return parsed
    raise AssertionError("never decided")


# ----------------------------------------------------------------------------- v1


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"PROXY TCP4 192.0.2.10 198.51.100.1 51234 110\r\n", v4()),
        (b"PROXY TCP6 2001:db8::1 2001:db8::ff 40000 995\r\n", v6()),
        (
            b"PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n",
            v4("0.0.0.0", 0, "255.255.255.255", 65535),
        ),
        (b"PROXY UNKNOWN\r\n", None),
        (b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n", None),
    ],
)
def test_v1_forms(line: bytes, expected: ProxyInfo | None) -> None:
    after = b"USER alice\r\n"
    assert parse_proxy_header(line + after) == (expected, len(line))
    assert incremental(line + after) == (expected, len(line))


def test_v1_longest_valid_line_is_107_bytes() -> None:
    # The spec's worst case: UNKNOWN with two full IPv6 addresses and five-digit ports.
    full = b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    longest = b"PROXY UNKNOWN " + full + b" " + full + b" 65535 65535\r\n"
    assert len(longest) == MAX_V1_LINE
    assert incremental(longest) == (None, MAX_V1_LINE)
    tcp6 = b"PROXY TCP6 " + full + b" " + full + b" 65535 65535\r\n"
    info, used = incremental(tcp6)
    assert used == len(tcp6) and info is not None
    assert info.source == ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535)
    # One byte more and the CRLF falls outside the window: refused, not buffered.
    too_long = b"PROXY UNKNOWN " + full + b"f " + full + b" 65535 65535\r\n"
    with pytest.raises(ProxyProtocolError, match="107"):
        incremental(too_long)
    with pytest.raises(ProxyProtocolError, match="107"):
        parse_proxy_header(too_long)


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY TCP4 192.0.2.10 198.51.100.1 51234 110\n",  # bare LF
        b"PROXY TCP4 192.0.2.10 198.51.100.1 51234\r\n",  # missing field
        b"PROXY TCP4 192.0.2.10 198.51.100.1 51234 110 7\r\n",  # extra field
        b"PROXY TCP4  192.0.2.10 198.51.100.1 51234 110\r\n",  # double space
        b"PROXY TCP4 192.0.2.10 198.51.100.1 65536 110\r\n",  # port out of range
        b"PROXY TCP4 192.0.2.10 198.51.100.1 -1 110\r\n",
        b"PROXY TCP4 192.0.2.10 198.51.100.1 0110 110\r\n",  # leading zero
        b"PROXY TCP4 192.0.2.256 198.51.100.1 1 110\r\n",  # not an address
        b"PROXY TCP4 2001:db8::1 198.51.100.1 1 110\r\n",  # family mismatch
        b"PROXY TCP6 192.0.2.10 2001:db8::ff 1 110\r\n",
        b"PROXY UDP4 192.0.2.10 198.51.100.1 1 110\r\n",
        b"PROXY TCP4 192.0.2.10\x00 198.51.100.1 1 110\r\n",
        b"PROXY TCP4 192.0.2.10\r198.51.100.1 1 110\r\n",
        b"PROXY TCP4 " + b"1" * 120 + b"\r\n",  # no CRLF within 107 bytes
        b"proxy TCP4 192.0.2.10 198.51.100.1 51234 110\r\n",  # case matters
        b"+OK Dovecot ready.\r\n",  # a server greeting, not a header
        b"USER alice\r\n",  # a client that bypassed the balancer
    ],
)
def test_v1_malformed(line: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(line)
    with pytest.raises(ProxyProtocolError):
        incremental(line)


def test_error_message_quotes_only_a_few_bytes() -> None:
    secret = b"PASS correct-horse-battery-staple\r\n"
    with pytest.raises(ProxyProtocolError) as caught:
        parse_proxy_header(secret)
    assert b"battery" not in str(caught.value).encode()
    assert "proxy_protocol" in str(caught.value)  # says what to check


def test_v1_prefixes_wait_for_more() -> None:
    line = b"PROXY TCP4 192.0.2.10 198.51.100.1 51234 110\r\n"
    for end in range(len(line)):
        assert parse_proxy_header(line[:end]) is None


# ----------------------------------------------------------------------------- v2


@pytest.mark.parametrize("info", [v4(), v6(), v4("10.0.0.1", 0, "10.0.0.2", 65535)])
def test_v2_proxy_command(info: ProxyInfo) -> None:
    data = encode_v2(info)
    expected = ProxyInfo(info.source, info.dest, 2, info.transport)
    assert parse_proxy_header(data + b"CAPA\r\n") == (expected, len(data))
    assert incremental(data + b"CAPA\r\n") == (expected, len(data))


def test_v2_tlvs_are_kept_raw_in_order() -> None:
    tlvs = ((0x01, b"pop3"), (0x02, b"mail.example.org"), (0x20, b"\x01\x00\x00\x00\x00"))
    data = encode_v2(v6(), tlvs=(*tlvs, (4, b"")))
    info, used = incremental(data)
    assert used == len(data)
    assert info is not None and info.tlvs == (*tlvs, (4, b""))


def test_v2_local_command_means_use_the_peer_address() -> None:
    # A LOCAL header may still carry an address block; it is skipped, not used.
    for data in (encode_v2(None, command=0), encode_v2(v4(), command=0)):
        assert incremental(data + b"x") == (None, len(data))


@pytest.mark.parametrize(
    "data",
    [
        encode_v2(None, fam=0x00),  # PROXY, AF_UNSPEC
        encode_v2(
            None, fam=0x31, extra_address=b"/run/a".ljust(108, b"\0") + b"/b".ljust(108, b"\0")
        ),
        encode_v2(v4(), fam=0x10),  # INET, transport unspecified
    ],
)
def test_v2_without_a_network_address_gives_none(data: bytes) -> None:
    assert incremental(data) == (None, len(data))


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (V2_SIGNATURE + b"\x11\x11\x00\x0c" + bytes(12), "version"),
        (V2_SIGNATURE + b"\x22\x11\x00\x0c" + bytes(12), "command"),
        (V2_SIGNATURE + b"\x21\x41\x00\x0c" + bytes(12), "family"),
        (V2_SIGNATURE + b"\x21\x12\x00\x0c" + bytes(12), "UDP"),
        (V2_SIGNATURE + b"\x21\x11\x00\x08" + bytes(8), "shorter"),
        (V2_SIGNATURE + b"\x21\x21\x00\x0c" + bytes(12), "shorter"),
        (encode_v2(v4(), extra_address=b"\x01\x00"), "TLV"),
        (encode_v2(v4(), extra_address=b"\x01\x00\x05ab"), "TLV"),
        (V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", MAX_V2_LENGTH + 1), "at most"),
    ],
)
def test_v2_malformed(data: bytes, why: str) -> None:
    with pytest.raises(ProxyProtocolError, match=why):
        incremental(data)


def test_v2_length_cap_is_the_documented_maximum() -> None:
    data = encode_v2(v4(), tlvs=((0xE0, bytes(MAX_V2_LENGTH - 12 - 3)),))
    assert len(data) == MAX_HEADER
    info, used = parse_proxy_header(data) or (None, 0)
    assert used == MAX_HEADER and info is not None


# ----------------------------------------------------------------------------- properties

addresses4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
addresses6 = st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n)))
ports = st.integers(0, 65535)
infos = st.one_of(
    st.builds(
        lambda a, b, p, q: ProxyInfo((a, p), (b, q), 1, "tcp4"),
        addresses4,
        addresses4,
        ports,
        ports,
    ),
    st.builds(
        lambda a, b, p, q: ProxyInfo((a, p), (b, q), 1, "tcp6"),
        addresses6,
        addresses6,
        ports,
        ports,
    ),
)
tlv_lists = st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=40)), max_size=4).map(tuple)


@settings(max_examples=200, deadline=None)
@given(infos, st.binary(max_size=30), st.integers(0, 200))
def test_v1_round_trip_and_split_anywhere(info: ProxyInfo, rest: bytes, cut: int) -> None:
    data = encode_v1(info) + rest
    whole = parse_proxy_header(data)
    assert whole == (info, len(encode_v1(info)))
    assert incremental(data) == whole
    assert parse_proxy_header(data[: min(cut, len(encode_v1(info)) - 1)]) is None


@settings(max_examples=200, deadline=None)
@given(infos, tlv_lists, st.binary(max_size=30))
def test_v2_round_trip_and_split_anywhere(
    info: ProxyInfo, tlvs: tuple[tuple[int, bytes], ...], rest: bytes
) -> None:
    header = encode_v2(info, tlvs=tlvs)
    expected = ProxyInfo(info.source, info.dest, 2, info.transport, tlvs)
    assert parse_proxy_header(header + rest) == (expected, len(header))
    assert incremental(header + rest) == (expected, len(header))


def _decide(data: bytes) -> object:
    try:
        return parse_proxy_header(data)
    except ProxyProtocolError:
        return "error"


prefixes = st.sampled_from(
    [b"", b"PROXY ", b"PROXY TCP4 ", b"PROXY TCP6 ", V2_SIGNATURE, V2_SIGNATURE + b"\x21\x11"]
)


@settings(max_examples=500, deadline=None)
@given(prefixes, st.binary(max_size=300))
def test_arbitrary_bytes_only_give_none_a_result_or_the_typed_error(
    prefix: bytes, tail: bytes
) -> None:
    data = prefix + tail
    whole = _decide(data)  # any other exception fails the test
    if whole is None:
        assert len(data) < MAX_HEADER
        return
    # Byte-at-a-time feeding reaches the same decision at the first prefix that decides.
    first = next(d for d in (_decide(data[:end]) for end in range(len(data) + 1)) if d is not None)
    assert first == whole
    if whole != "error":
        assert isinstance(whole, tuple) and 0 < whole[1] <= len(data)


# ----------------------------------------------------------------------------- asyncio helper


async def _serve(chunks: list[bytes], *, close: bool, pause: float = 0.0):
    """A server whose connection handler writes `chunks` to the test's reader."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(pause)  # the stimulus: the header arrives in pieces
        if close:
            writer.close()
        else:
            await asyncio.sleep(5)  # the stimulus: a peer that goes silent, never closing

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return server, reader, writer


async def test_read_proxy_header_returns_bytes_after_the_header() -> None:
    header = encode_v2(v4(), tlvs=((0x02, b"pop.example"),))
    data = header + b"USER alice\r\nPASS x\r\n"
    # Split inside the signature, inside the TLVs and across the end of the header.
    chunks = [data[:5], data[5:20], data[20 : len(header) + 3], data[len(header) + 3 :]]
    server, reader, writer = await _serve(chunks, close=True, pause=0.01)
    try:
        info, rest = await read_proxy_header(reader, timeout=5)
        assert info is not None and info.source == ("192.0.2.10", 51234)
        rest += await reader.read()
        assert rest == b"USER alice\r\nPASS x\r\n"
    finally:
        writer.close()
        server.close()


async def test_read_proxy_header_garbage_eof_and_timeout() -> None:
    for chunks, close, match in (
        ([b"+OK hello\r\n"], False, "expected a PROXY"),
        ([b"PROXY TCP4 192.0.2.10"], True, "connection closed"),
        ([b"PROXY TCP4 192.0.2.10"], False, "no complete PROXY header within 0.2s"),
    ):
        server, reader, writer = await _serve(chunks, close=close)
        try:
            with pytest.raises(ProxyProtocolError, match=match):
                await read_proxy_header(reader, timeout=0.2)
        finally:
            writer.close()
            server.close()
