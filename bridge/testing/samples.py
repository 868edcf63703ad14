"""Deterministic sample mail for tests, benchmarks and `pop3bridge demo`.

Everything is built by hand from a seeded `random.Random`, never from the clock or the process,
so the same arguments always give the same bytes (benchmarks compare runs; tests compare
hashes). Messages use CRLF line endings as they travel over POP3, and some body lines start with
"." so every consumer exercises dot-stuffing.
"""

from __future__ import annotations

import base64
import hashlib
import quopri
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

__all__ = ["big_message", "demo_messages", "encode_word", "generate_messages"]

_EPOCH = datetime(2024, 3, 1, 9, 30, tzinfo=UTC)
_DOMAIN = "samples.pop3bridge.test"

_WORDS = (
    "invoice",
    "quarterly",
    "report",
    "meeting",
    "agenda",
    "schedule",
    "delivery",
    "shipment",
    "review",
    "draft",
    "budget",
    "proposal",
    "contract",
    "summary",
    "update",
    "reminder",
    "follow-up",
    "question",
    "answer",
    "release",
    "server",
    "mailbox",
    "webhook",
    "signature",
    "retry",
    "queue",
    "backlog",
    "latency",
    "throughput",
    "window",
)

# (display name, charset) pairs: each name survives its charset, so decoding must round-trip.
_NAMES: tuple[tuple[str, str], ...] = (
    ("Alice Example", "us-ascii"),
    ("José Müller", "iso-8859-1"),
    ("Zoë Ångström", "utf-8"),
    ("山田太郎", "iso-2022-jp"),
    ("鈴木花子", "shift_jis"),
    ("Ольга Петрова", "utf-8"),
    ("François Lefèvre", "iso-8859-1"),
)

_SUBJECTS: tuple[tuple[str, str], ...] = (
    ("Quarterly report", "us-ascii"),
    ("Réunion à 15h – café ☕", "utf-8"),
    ("Grüße aus München", "iso-8859-1"),
    ("会議の議事録について", "iso-2022-jp"),
    ("お見積りのご依頼", "shift_jis"),
    ("Ваш заказ отправлен", "utf-8"),
    ("Invoice #{n} attached", "us-ascii"),
)

# Lines that exercise dot-stuffing: a lone dot would end the response if not stuffed.
_DOT_LINES = (".", "..", ".hidden line that starts with a dot", "...and an ellipsis")


def encode_word(text: str, charset: str) -> str:
    """RFC 2047 B-encoding of `text`, split so each encoded word stays within 75 characters.

    Splitting happens on characters, never inside one, and each chunk is encoded on its own so
    stateful charsets (ISO-2022-JP) return to ASCII at the end of every word.
    """
    if charset == "us-ascii":
        return text
    words: list[str] = []
    chunk = ""
    for ch in text:
        trial = chunk + ch
        if len(_b_word(trial, charset)) > 75 and chunk:
            words.append(_b_word(chunk, charset))
            chunk = ch
        else:
            chunk = trial
    if chunk:
        words.append(_b_word(chunk, charset))
    return "\r\n ".join(words)


def _b_word(text: str, charset: str) -> str:
    payload = base64.b64encode(text.encode(charset)).decode("ascii")
    return f"=?{charset}?B?{payload}?="


def _address(name: str, charset: str, local: str) -> str:
    shown = encode_word(name, charset)
    if charset == "us-ascii":
        shown = f'"{name}"'
    return f"{shown} <{local}@{_DOMAIN}>"


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("ascii")


def _paragraphs(rng: random.Random, approx: int, dots: bool) -> list[str]:
    """Body lines of about `approx` characters, under 78 each, with some dot-led lines."""
    lines: list[str] = []
    total = 0
    while total < approx:
        words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 11))]
        line = " ".join(words).capitalize() + "."
        if dots and rng.random() < 0.08:
            line = rng.choice(_DOT_LINES)
        lines.append(line)
        total += len(line) + 2
        if rng.random() < 0.15:
            lines.append("")
            total += 2
    if dots and not any(line.startswith(".") for line in lines):
        # Every message must exercise dot-stuffing, however short.
        lines.insert(rng.randrange(len(lines) + 1), rng.choice(_DOT_LINES))
    return lines


def _qp(text: str, charset: str) -> bytes:
    encoded = quopri.encodestring(text.replace("\r\n", "\n").encode(charset))
    return encoded.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _b64_lines(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def _headers(
    rng: random.Random, seed: int, index: int, content_type: str, extra: tuple[str, ...] = ()
) -> str:
    sender = _NAMES[rng.randrange(len(_NAMES))]
    rcpt = _NAMES[rng.randrange(len(_NAMES))]
    subject, charset = _SUBJECTS[rng.randrange(len(_SUBJECTS))]
    subject = subject.replace("{n}", str(1000 + index))
    date = _EPOCH + timedelta(minutes=7 * index + seed % 1000)
    digest = hashlib.sha256(f"{seed}:{index}".encode()).hexdigest()[:12]
    lines = [
        f"Return-Path: <sender{index}@{_DOMAIN}>",
        f"Received: from mx.{_DOMAIN} (mx.{_DOMAIN} [192.0.2.25]) by pop.{_DOMAIN};"
        f"\r\n\t{format_datetime(date)}",
        f"From: {_address(sender[0], sender[1], f'sender{index}')}",
        f"To: {_address(rcpt[0], rcpt[1], 'inbox')}",
        f"Subject: {encode_word(subject, charset)}",
        f"Date: {format_datetime(date)}",
        f"Message-ID: <s{seed}.m{index}.{digest}@{_DOMAIN}>",
        "MIME-Version: 1.0",
        *extra,
        f"Content-Type: {content_type}",
    ]
    return "\r\n".join(lines) + "\r\n"


def _text_plain(rng: random.Random, seed: int, index: int, size: int) -> bytes:
    body = "\r\n".join(_paragraphs(rng, size, dots=True)) + "\r\n"
    head = _headers(rng, seed, index, "text/plain; charset=us-ascii")
    return _crlf(head + "Content-Transfer-Encoding: 7bit\r\n\r\n" + body)


def _alternative(rng: random.Random, seed: int, index: int, size: int) -> bytes:
    boundary = f"=_alt_{seed}_{index}_{rng.getrandbits(32):08x}"
    lines = _paragraphs(rng, size // 2, dots=True)
    greeting = rng.choice(("Grüße", "Saludos", "よろしくお願いします", "Cheers"))
    # quopri writes a lone "." as "=2E"; "..." survives it and still needs stuffing.
    plain = "\r\n".join([*lines, "", "...", greeting]) + "\r\n"
    html_lines = "".join(f"<p>{line}</p>\r\n" for line in lines if line)
    html = f"<html><body>\r\n{html_lines}<p><b>{greeting}</b></p>\r\n</body></html>\r\n"
    head = _headers(rng, seed, index, f'multipart/alternative; boundary="{boundary}"')
    out = _crlf(head + "\r\nThis is a multi-part message in MIME format.\r\n")
    for subtype, text in (("plain", plain), ("html", html)):
        out += _crlf(
            f"--{boundary}\r\nContent-Type: text/{subtype}; charset=utf-8\r\n"
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        )
        out += _qp(text, "utf-8") + b"\r\n"
    return out + _crlf(f"--{boundary}--\r\n")


def _with_attachment(rng: random.Random, seed: int, index: int, size: int) -> bytes:
    boundary = f"=_mix_{seed}_{index}_{rng.getrandbits(32):08x}"
    charset = rng.choice(("iso-8859-1", "utf-8"))
    # quopri writes a lone "." as "=2E", so add a dot-led line it leaves alone.
    paragraphs = _paragraphs(rng, size // 3, True)
    text = "\r\n".join(["Bonjour, voilà le fichier demandé.", *paragraphs, "..fin"])
    blob = rng.randbytes(max(64, min(size // 2, 4096)))
    filename, fname_charset = rng.choice(
        (("report.bin", "us-ascii"), ("résumé.pdf", "utf-8"), ("見積書.dat", "iso-2022-jp"))
    )
    # Encoded words inside a quoted filename break RFC 2047 §5 but are what many real clients
    # send, so parsers must cope with them.
    quoted = f'"{encode_word(filename, fname_charset)}"'
    head = _headers(rng, seed, index, f'multipart/mixed; boundary="{boundary}"')
    out = _crlf(head + "\r\n")
    out += _crlf(
        f"--{boundary}\r\nContent-Type: text/plain; charset={charset}\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    )
    out += _qp(text + "\r\n", charset) + b"\r\n"
    out += _crlf(
        f"--{boundary}\r\nContent-Type: application/octet-stream; name={quoted}\r\n"
        f"Content-Disposition: attachment; filename={quoted}\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
    )
    out += _b64_lines(blob)
    return out + _crlf(f"--{boundary}--\r\n")


def _eight_bit(rng: random.Random, seed: int, index: int, size: int) -> bytes:
    """A text/plain body in raw 8-bit Latin-1 (servers still deliver these)."""
    lines = _paragraphs(rng, size, dots=True)
    lines.insert(0, "Très chère Zoë, voilà le café crème à 3 francs.")
    head = _headers(rng, seed, index, "text/plain; charset=iso-8859-1")
    body = "\r\n".join(lines) + "\r\n"
    return _crlf(head + "Content-Transfer-Encoding: 8bit\r\n\r\n") + body.encode("iso-8859-1")


_KINDS: tuple[Callable[[random.Random, int, int, int], bytes], ...] = (
    _text_plain,
    _alternative,
    _with_attachment,
    _eight_bit,
)


def generate_messages(n: int, seed: int = 0, size: int = 5000) -> list[bytes]:
    """`n` varied, realistic messages of roughly `size` bytes each, identical for equal args.

    Kinds rotate (text/plain, multipart/alternative, multipart/mixed with a base64 attachment,
    8-bit Latin-1) so any prefix of the list mixes them; Message-IDs are unique per
    (seed, index).
    """
    if n < 0 or size < 0:
        raise ValueError("n and size must not be negative")
    out: list[bytes] = []
    for index in range(n):
        rng = random.Random(f"{seed}/{index}")
        kind = _KINDS[index % len(_KINDS)]
        out.append(kind(rng, seed, index, max(size - 900, 200)))
    return out


def big_message(size_bytes: int, seed: int = 0) -> bytes:
    """One message of about `size_bytes` (within a line) carrying a single base64 attachment."""
    if size_bytes < 0:
        raise ValueError("size_bytes must not be negative")
    boundary = f"=_big_{seed}"
    rng = random.Random(f"big/{seed}")
    head = _crlf(
        _headers(rng, seed, 999_999, f'multipart/mixed; boundary="{boundary}"')
        + f"\r\n--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        "The attachment is random data for a size benchmark.\r\n"
        f'--{boundary}\r\nContent-Type: application/octet-stream; name="blob.bin"\r\n'
        'Content-Disposition: attachment; filename="blob.bin"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
    )
    tail = _crlf(f"--{boundary}--\r\n")
    room = max(size_bytes - len(head) - len(tail), 0)
    # base64 with CRLF: every 57 input bytes become a 76-character line plus CRLF = 78 bytes.
    raw = rng.randbytes(room // 78 * 57)
    return head + _b64_lines(raw) + tail


def demo_messages() -> list[bytes]:
    """A few friendly messages for `pop3bridge demo` (fixed content, valid MIME)."""
    welcome = _crlf(
        'From: "pop3bridge demo" <demo@' + _DOMAIN + ">\r\n"
        "To: you@" + _DOMAIN + "\r\n"
        "Subject: Welcome to pop3bridge\r\n"
        "Date: Fri, 01 Mar 2024 09:30:00 +0000\r\n"
        "Message-ID: <demo-welcome@" + _DOMAIN + ">\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        "Hello!\r\n\r\n"
        "This message came from a POP3 mailbox and is now a signed webhook.\r\n"
        "Look at the receiver's output to see the JSON payload.\r\n"
        ".\r\n"
        "(The line above is a lone dot: POP3 dot-stuffing kept it intact.)\r\n"
    )
    rest = generate_messages(4, seed=2024, size=1800)
    return [welcome, *rest]
