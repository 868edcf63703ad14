"""Hypothesis: whatever bytes arrive, build_message_data returns a schema-valid payload.

The counters are written to stdout (visible with -s or in the captured-output section on
failure) and asserted, so a run that silently tried nothing cannot pass.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mail_schema_check import check_payload

import bridge.mail as mail

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=False,
)

HEADER_NAMES = st.sampled_from(
    [
        "Subject",
        "From",
        "To",
        "Cc",
        "Date",
        "Message-ID",
        "References",
        "Content-Type",
        "Content-Transfer-Encoding",
        "Content-Disposition",
        "Content-ID",
        "X-Junk",
        "Reply-To",
    ]
)
JUNKY_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "=?utf-8?B?w6k=?=",
            "=?x-bad?Q?=FF?=",
            "=?utf-8?B?####?=",
            "multipart/mixed; boundary=b",
            'multipart/alternative; boundary="b"',
            "text/plain; charset=shift_jis",
            "text/plain; charset=x-unknown",
            "base64",
            "quoted-printable",
            "x-uuencode",
            "attachment; filename*0*=utf-8''%E2%82; filename*1=x",
            "Team: a@b.c;",
            "<<<@>>>",
            "Mon, 1 Jan 2024 10:00:00 +9999",
            "message/rfc822",
            "inline",
            "<cid@x>",
        ]
    ),
)
LINE_END = st.sampled_from([b"\r\n", b"\n", b"\r"])


@st.composite
def mime_ish(draw: st.DrawFn) -> bytes:
    """Roughly MIME-shaped messages: real structure with random damage in every slot."""
    eol = draw(LINE_END)
    out = b""
    for _ in range(draw(st.integers(0, 6))):
        value = draw(JUNKY_TEXT).encode("utf-8", "surrogatepass")
        out += draw(HEADER_NAMES).encode() + b": " + value + eol
    out += eol
    for _ in range(draw(st.integers(0, 4))):
        out += (
            b"--"
            + draw(st.sampled_from([b"b", b"c", b""]))
            + draw(st.sampled_from([b"", b"--"]))
            + eol
        )
        for _ in range(draw(st.integers(0, 3))):
            value = draw(JUNKY_TEXT).encode("utf-8", "surrogatepass")
            out += draw(HEADER_NAMES).encode() + b": " + value + eol
        out += eol + draw(st.binary(max_size=60)) + eol
    return out


class Counter:
    runs = 0


def _check(raw: bytes, limit: int, include_raw: bool) -> None:
    data = mail.build_message_data(raw, attachment_inline_limit=limit, include_raw=include_raw)
    check_payload(data, len(raw))
    mail.fingerprint(raw)
    Counter.runs += 1


@FUZZ
@given(st.binary(max_size=600), st.integers(0, 100), st.booleans())
def test_arbitrary_bytes(raw: bytes, limit: int, include_raw: bool) -> None:
    _check(raw, limit, include_raw)


@FUZZ
@given(mime_ish(), st.integers(0, 100), st.booleans())
def test_mime_shaped(raw: bytes, limit: int, include_raw: bool) -> None:
    _check(raw, limit, include_raw)


@FUZZ
@given(st.binary(max_size=400))
def test_metadata_only_any_header_block(raw: bytes) -> None:
    check_payload(mail.metadata_only(raw, reason="too big"))
    Counter.runs += 1


def test_zz_report_counts() -> None:
    # pytest runs a module's tests in definition order, so this sees the other tests' total.
    print(f"\nmail fuzz: {Counter.runs} inputs through build_message_data/metadata_only")
    assert Counter.runs > 0
