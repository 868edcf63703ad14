"""`body_end`: the one place a multi-line body's end is found (framer and proxy pass-through)."""

from __future__ import annotations

import pytest

from bridge.pop3.wire import body_end


@pytest.mark.parametrize(
    ("buf", "start", "lf", "want"),
    [
        (b"abc\r\n.\r\nnext", 0, False, (3, 3)),
        (b"xx\r\n..stuffed\r\n.\r\n", 2, False, (13, 13)),  # a stuffed line is body
        (b"abc", 0, False, (-1, 3)),
        (b"abc\r", 0, False, (-1, 3)),  # may be the start of CRLF "." CRLF
        (b"abc\r\n.", 0, False, (-1, 5)),
        (b"abc\r\n.\r", 0, False, (-1, 5)),
        (b"ab\r", 3, False, (-1, 3)),  # nothing past `start`: nothing held back
        (b"abc\n.\nrest", 0, True, (3, 3)),
        (b"abc\n.\r\nrest", 0, True, (3, 3)),  # bare-LF servers may still end with CRLF
        (b"abc\r", 0, True, (-1, 4)),  # a lone CR ends nothing on an LF link
        (b"abc\n.", 0, True, (-1, 4)),
        (b"abc\n.\r", 0, True, (-1, 4)),
    ],
)
def test_terminator_or_how_far_is_certainly_body(
    buf: bytes, start: int, lf: bool, want: tuple[int, int]
) -> None:
    assert body_end(buf, start, lf=lf) == want
    assert body_end(bytearray(buf), start, lf=lf) == want
