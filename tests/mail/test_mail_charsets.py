from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

Build = Callable[..., dict[str, Any]]

SAMPLE = "日本語のテキスト"


def plain(body: bytes, charset: str | None, cte: str | None = None) -> bytes:
    ctype = "text/plain" + (f"; charset={charset}" if charset else "")
    head = f"From: a@example.com\r\nSubject: t\r\nContent-Type: {ctype}\r\n"
    if cte:
        head += f"Content-Transfer-Encoding: {cte}\r\n"
    return head.encode() + b"\r\n" + body


@pytest.mark.parametrize(
    ("charset", "text"),
    [
        ("ISO-2022-JP", SAMPLE),
        ("Shift_JIS", SAMPLE),
        ("EUC-JP", SAMPLE),
        ("GB18030", "简体中文测试"),
        ("GB2312", "简体中文测试"),
        ("Big5", "繁體中文測試"),
        ("KOI8-R", "Привет, мир"),
        ("EUC-KR", "안녕하세요"),
        ("windows-1251", "Привет"),
        ("ISO-8859-15", "Prix: 5 €"),
        ("utf-16", "two bytes each"),
    ],
)
def test_known_charsets_decode_exactly(build: Build, charset: str, text: str) -> None:
    data = build(plain(text.encode(charset), charset))
    assert data["text"] == text
    assert data["parse_errors"] == []


def test_cp932_extensions_under_shift_jis_label(build: Build) -> None:
    # Windows mailers label cp932 as Shift_JIS; ① is not in Shift_JIS proper.
    data = build(plain("①番".encode("cp932"), "shift_jis"))
    assert data["text"] == "①番"
    assert data["parse_errors"] == []


def test_gbk_characters_under_gb2312_label(build: Build) -> None:
    text = "镕"  # in GBK/GB18030, not in GB2312
    data = build(plain(text.encode("gbk"), "gb2312"))
    assert data["text"] == text


def test_ascii_label_with_utf8_bytes_is_read_as_utf8(build: Build) -> None:
    data = build(plain("Grüße".encode(), "us-ascii"))
    assert data["text"] == "Grüße"


def test_utf8_label_with_latin1_bytes_uses_replacement_and_reports(build: Build) -> None:
    data = build(plain("Grüße".encode("latin-1"), "utf-8"))
    assert data["text"] == "Gr\ufffd\ufffde"
    assert any("utf-8" in e and "U+FFFD" in e for e in data["parse_errors"])


def test_lying_label_with_valid_utf8_says_so(build: Build) -> None:
    data = build(plain("中文".encode(), "iso-2022-jp"))
    assert data["text"] == "中文"
    assert any("actually UTF-8" in e for e in data["parse_errors"])


@pytest.mark.parametrize("label", ["x-unknown-charset", "base64", "zlib", "rot13", "x-mac-klingon"])
def test_unknown_or_non_text_charset(build: Build, label: str) -> None:
    data = build(plain("Grüße".encode(), label))
    assert data["text"] == "Grüße"
    assert data["parse_errors"], "an unusable charset label must be reported"


def test_8bit_without_charset_not_utf8(build: Build) -> None:
    data = build(plain(b"caf\xe9 \xff\xfe", None))
    assert data["text"] == "caf\ufffd \ufffd\ufffd"
    assert any("no charset" in e for e in data["parse_errors"])


def test_charset_in_quoted_printable_and_base64(build: Build) -> None:
    qp = build(plain(b"Gr=FC=DFe =\r\nsoft", "iso-8859-1", "quoted-printable"))
    assert qp["text"] == "Grüße soft"
    b64 = build(plain(b"5pel5pys6Kqe\r\n", "utf-8", "base64"))
    assert b64["text"] == "日本語"


def test_nul_bytes_are_kept_and_crlf_normalised(build: Build) -> None:
    data = build(plain(b"a\x00b\r\nc\r\n", "utf-8"))
    assert data["text"] == "a\x00b\nc\n"


def test_utf7_lone_surrogate_never_reaches_json(build: Build) -> None:
    data = build(plain(b"+2D3-", "utf-7"))
    assert data["text"] is not None
    data["text"].encode("utf-8")  # would raise on a lone surrogate
