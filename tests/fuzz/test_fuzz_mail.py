"""Hypothesis over MIME -> payload: corpus messages mutated at the byte level (flips, cuts,
splices, repeated spans, line-ending rewrites) and arbitrary bytes always give a schema-valid,
encodable webhook body, never an exception. The payload includes `raw` when asked, and an
oversize message's headers go through `metadata_only` the same way."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bridge.mail as mail
from tests.mail.mail_schema_check import check_payload

FUZZ = settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MIN_TRIED = 300
CORPUS = sorted((Path(__file__).parents[1] / "corpus" / "eml").glob("*.eml"))
SMALL = [p.read_bytes() for p in CORPUS if p.stat().st_size <= 64 * 1024]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SMALL)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "repeat", "eol", "truncate"]))
        n = len(data)
        at = draw(st.integers(0, max(n - 1, 0)))
        if op == "flip" and n:
            data[at] = draw(st.integers(0, 255))
        elif op == "cut" and n:
            del data[at : at + draw(st.integers(1, 200))]
        elif op == "insert":
            data[at:at] = draw(
                st.sampled_from(
                    [
                        *b"\r\n \r\n\r\n -- =?utf-8?b? ?= \x00 \r \n. \r\n\t =\r\n \xff".split(
                            b" "
                        ),
                        b"Content-Type: multipart/mixed; boundary=",
                    ]
                )
            )
        elif op == "repeat" and n:
            span = bytes(data[at : at + draw(st.integers(1, 80))])
            data[at:at] = span * draw(st.integers(1, 50))
        elif op == "eol":
            old, new = draw(st.sampled_from([(b"\r\n", b"\n"), (b"\r\n", b"\r"), (b"\n", b"\r\n")]))
            data = bytearray(bytes(data).replace(old, new))
        elif op == "truncate":
            del data[at:]
    return bytes(data)


def test_mutated_corpus_gives_schema_valid_payloads(fuzz_counts: Counter[str]) -> None:
    name = "mail: corpus messages with byte-level mutations -> payload"
    assert len(SMALL) >= 30

    @FUZZ
    @given(mutated(), st.integers(0, 4096), st.booleans())
    def check(raw: bytes, limit: int, include_raw: bool) -> None:
        fuzz_counts[name] += 1
        data = mail.build_message_data(raw, attachment_inline_limit=limit, include_raw=include_raw)
        check_payload(data, len(raw))
        head = raw.split(b"\r\n\r\n", 1)[0]
        check_payload(mail.metadata_only(head, reason="over max_message_size"), len(raw))
        assert isinstance(mail.fingerprint(raw), str)

    check()
    assert fuzz_counts[name] >= MIN_TRIED


def test_arbitrary_bytes_give_schema_valid_payloads(fuzz_counts: Counter[str]) -> None:
    name = "mail: arbitrary bytes -> payload"

    @FUZZ
    @given(st.binary(max_size=2000))
    def check(raw: bytes) -> None:
        fuzz_counts[name] += 1
        check_payload(mail.build_message_data(raw, attachment_inline_limit=100, include_raw=True))

    check()
    assert fuzz_counts[name] >= MIN_TRIED
