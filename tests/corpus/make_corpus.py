"""Writes the hostile/broken/torture corpus into tests/corpus/eml/.

Run once (`.venv/bin/python tests/corpus/make_corpus.py`) and commit the output; the files
are the fixtures, this script only documents how each was made. Keep the total under ~2 MB.
"""

from __future__ import annotations

import base64
import pathlib

OUT = pathlib.Path(__file__).with_name("eml")

H = b"From: Sender <sender@example.com>\r\nTo: rcpt@example.com\r\nSubject: corpus\r\n"
DATE = b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <corpus@example.com>\r\n"


def nested(levels: int) -> bytes:
    out = H + b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n"
    for i in range(1, levels):
        out += b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i - 1, i)
    out += b"--b%d\r\nContent-Type: text/plain\r\n\r\ndeep inside\r\n" % (levels - 1)
    for i in reversed(range(levels)):
        out += b"--b%d--\r\n" % i
    return out


def mixed(*parts: bytes, boundary: bytes = b"XYZ", close: bool = True) -> bytes:
    out = H + DATE + b"Content-Type: multipart/mixed; boundary=" + boundary + b"\r\n\r\n"
    for part in parts:
        out += b"--" + boundary + b"\r\n" + part + b"\r\n"
    return out + (b"--" + boundary + b"--\r\n" if close else b"")


TEXT = b"Content-Type: text/plain; charset=utf-8\r\n\r\nhello"
PDF = base64.encodebytes(b"%PDF-1.4 " + bytes(range(256)) * 4)

# (declared charset, codec that wrote the bytes, text): each part must decode back to `text`.
CHARSET_ALIASES = (
    (b"latin1", "latin-1", "café"),
    (b"utf8", "utf-8", "café"),
    (b"cp1252", "cp1252", "café €"),
    (b"ks_c_5601-1987", "cp949", "한국어"),
    (b"x-sjis", "shift_jis", "日本語"),
    (b'"ISO_8859-1"', "latin-1", "café"),
    (b"unicode-1-1-utf-7", "utf-7", "café"),
)


def _rfc822_nest(levels: int) -> bytes:
    inner = H + DATE + b"\r\ninnermost text\r\n"
    for i in range(levels):
        inner = (
            b"From: level%d@example.com\r\nSubject: wrapper %d\r\n" % (i, i)
            + b"Content-Type: message/rfc822\r\n\r\n"
            + inner
        )
    return inner


CORPUS: dict[str, bytes] = {
    "empty.eml": b"",
    "only-headers.eml": H + DATE,
    "only-headers-no-final-newline.eml": H.rstrip(b"\r\n"),
    "only-body.eml": b"\r\nThis message has no headers at all.\r\n",
    "body-no-separator.eml": b"This line is not a header\r\nnor is this\r\n",
    "lf-only.eml": (H + DATE + b"\r\nline one\r\nline two\r\n").replace(b"\r\n", b"\n"),
    "cr-only.eml": (H + b"\r\nold mac\r\nline endings\r\n").replace(b"\r\n", b"\r"),
    "mixed-line-endings.eml": H + b"X-A: 1\nX-B: 2\r\rbody\n\r\nmore\r",
    "header-without-colon.eml": H + b"This header has no colon\r\nX-After: x\r\n\r\nbody\r\n",
    "header-block-10000-lines.eml": H
    + b"".join(b"X-Line-%d: value %d\r\n" % (i, i) for i in range(10_000))
    + b"\r\nbody after a huge header block\r\n",
    "header-10000-continuations.eml": H
    + b"X-Folded: start\r\n"
    + b" continued\r\n" * 10_000
    + b"\r\nbody\r\n",
    "long-header-line.eml": H + b"X-Long: " + b"a" * 200_000 + b"\r\n\r\nbody\r\n",
    "long-body-line.eml": H + b"\r\n" + b"b" * 300_000 + b"\r\n",
    "duplicate-headers.eml": H + H + DATE + DATE + b"Subject: third subject\r\n\r\nbody\r\n",
    "nul-bytes.eml": H.replace(b"corpus", b"nul\x00subject") + b"\r\nbefore\x00after\r\n\x00\r\n",
    "eight-bit-junk-headers.eml": b"From: \xff\xfe junk <a@\xe9xample.com>\r\n"
    b"Subject: \x80\x81\x82\x83 \xc3\r\nX-\xe9\xe8: \xa0\r\n\r\nbody \xff\r\n",
    "eight-bit-body-no-charset.eml": H + b"\r\n\xe4\xf6\xfc caf\xe9 \x9d\x81\r\n",
    "lying-charset-ascii.eml": H
    + b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    + "Grüße aus Köln".encode()
    + b"\r\n",
    "lying-charset-utf8.eml": H
    + b"Content-Type: text/plain; charset=utf-8\r\n\r\nGr\xfc\xdfe \xc3\r\n",
    "unknown-charset.eml": H + b"Content-Type: text/plain; charset=x-klingon\r\n\r\nqapla'\r\n",
    "charset-is-a-codec.eml": H + b"Content-Type: text/plain; charset=zlib\r\n\r\nxx\r\n",
    "iso-2022-jp.eml": H.replace(b"Subject: corpus", b"Subject: =?ISO-2022-JP?B?GyRCRnxLXDhsGyhC?=")
    + b"Content-Type: text/plain; charset=ISO-2022-JP\r\n\r\n"
    + "日本語の本文".encode("iso-2022-jp")
    + b"\r\n",
    "invalid-base64.eml": mixed(
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"!!!!****not base64 at all****!!!!",
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"aGVsbG8gd29ybGQ",  # missing padding, odd length
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"aGVsbG8=aGVsbG8=\r\nA",
    ),
    "invalid-quoted-printable.eml": H
    + b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n"
    + b"\r\nbad =ZZ escape = trailing = =\r\n=C3\r\n",
    "wrong-cte.eml": H
    + b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + b"This body says base64 but is plain prose, with spaces and punctuation!\r\n",
    "unknown-cte.eml": H
    + b"Content-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n"
    + b"begin 644 file.txt\r\n#0V%T\r\n`\r\nend\r\n",
    "truncated-mime.eml": mixed(
        TEXT,
        b"Content-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgoAAAANSUhE",
        close=False,
    )[:-40],
    "missing-boundary-end.eml": mixed(TEXT, TEXT, close=False),
    "boundary-never-found.eml": H
    + b"Content-Type: multipart/mixed; boundary=NEVER\r\n\r\njust text, no parts\r\n",
    "multipart-without-boundary.eml": H + b"Content-Type: multipart/mixed\r\n\r\nno boundary\r\n",
    "empty-multipart.eml": H + b"Content-Type: multipart/mixed; boundary=E\r\n\r\n--E--\r\n",
    "nested-200-levels.eml": nested(200),
    "nested-1500-levels.eml": nested(1500),
    "garbage-content-type.eml": H + b"Content-Type: ;;;===///\r\n\r\nbody\r\n",
    "garbage-date.eml": H + b"Date: the day after tomorrow, probably\r\n\r\nbody\r\n",
    "impossible-date.eml": H + b"Date: Mon, 31 Feb 2024 25:61:61 +9999\r\n\r\nbody\r\n",
    "broken-address-lists.eml": b'From: <<<>>>\r\nTo: a@, @b, "unterminated <x@y,,,\r\n'
    b"Cc: Group: ;, =?utf-8?q?=FF?= <z@example.com>\r\nBcc: ::::;;;;\r\n\r\nbody\r\n",
    "encoded-word-torture.eml": b"Subject: =?utf-8?B?####?= =?utf-8?Q?=E2=82?= "
    b"=?utf-8?Q?=AC?= =?utf-8?X?nope?= =?=?= =?\xff?Q?x?=\r\n"
    b"From: =?x-unknown?Q?Name?= <a@example.com>\r\n\r\nbody\r\n",
    "rfc2231-torture.eml": mixed(
        b"Content-Type: application/octet-stream\r\n"
        b"Content-Disposition: attachment; filename*0*=utf-8''%E2%82; filename*2=c;"
        b" filename*1*=%AC; filename*99=x; filename*=bogus''%ZZ\r\n\r\nx",
        b"Content-Type: application/octet-stream; name*=x-unknown'en'%FF%FE\r\n\r\ny",
    ),
    "message-rfc822-broken.eml": mixed(
        b"Content-Type: message/rfc822\r\n\r\nNot: really\r\n\xff\xfe\r\n",
        b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(b"Subject: inner\r\n\r\nencoded rfc822\r\n"),
        b"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n"
        b"Final-Recipient: rfc822; a@b\r\nAction: failed\r\n",
    ),
    "inline-image-and-pdf.eml": mixed(
        TEXT,
        b"Content-Type: image/gif\r\nContent-ID: <img1@x>\r\nContent-Transfer-Encoding: base64"
        b"\r\n\r\nR0lGODlhAQABAAAAACw=",
        b"Content-Type: application/pdf; name=doc.pdf\r\nContent-Transfer-Encoding: base64"
        b"\r\n\r\n" + PDF,
    ),
    "many-parts.eml": mixed(*([TEXT] * 2000)),
    "binary-junk.eml": bytes(range(256)) * 16,
    "utf16-bom-body.eml": H
    + b"Content-Type: text/plain; charset=utf-16\r\n\r\n"
    + "BOM body".encode("utf-16")
    + b"\xff",
    # Real-world shapes added with the soak/fuzz work (issue 8).
    "mbox-from-line.eml": b"From sender@example.com Mon Jan  1 10:00:00 2024\r\n"
    + H
    + DATE
    + b"\r\nquoted mbox line follows\r\n>From the archive\r\nFrom a line that was not quoted\r\n",
    "utf8-headers-rfc6532.eml": "From: Zoë Ünïcode <zoë@exämple.com>\r\nTo: 日本 <user@例え.jp>\r\n"
    "Subject: Grüße — 你好 🎉\r\nMessage-ID: <ü@example.com>\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n\r\nBody: naïve café\r\n".encode(),
    "charset-aliases.eml": mixed(
        *(
            b"Content-Type: text/plain; charset=" + cs + b"\r\nContent-Transfer-Encoding: 8bit"
            b"\r\n\r\n" + text.encode(codec) + b"\r\n"
            for cs, codec, text in CHARSET_ALIASES
        )
    ),
    "nested-message-rfc822-60.eml": (lambda: _rfc822_nest(60))(),
    "header-folding-abuse.eml": b" leading continuation before any header\r\n"
    + H
    + b"X-Empty-Folds:\r\n \r\n\t\r\n \r\n"
    + b"X-Split-Word: =?utf-8?Q?caf?=\r\n =?utf-8?Q?=C3=A9?=\r\n"
    + b"X-Fold-Before-Colon\r\n : value\r\n"
    + b"Subject: folded\r\n  subject\r\n\tacross\r\n lines\r\n\r\nbody\r\n",
    "base64-junk.eml": mixed(
        TEXT,
        b"Content-Type: application/octet-stream; name=a.bin\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        b"SGVs bG8g!!d29y\r\nbGQ===junk\x00\r\n" + b"QUJD" * 300 + b"\r\n====\r\n",
    ),
    "long-lines-998-plus.eml": H
    + b"X-Exactly-998: "
    + b"x" * (998 - 15)
    + b"\r\nX-Over: "
    + b"y" * 5000
    + b"\r\n\r\n"
    + b"z" * 998
    + b"\r\n"
    + b"w" * 999
    + b"\r\n",
    "boundary-edge-cases.eml": H
    + b'Content-Type: multipart/mixed; boundary="ab"; boundary="abc"\r\n\r\n'
    + b"preamble --ab not a boundary\r\n--ab \t\r\nContent-Type: text/plain\r\n\r\n"
    + b"first\r\n--abc\r\n\r\nsecond\r\n--ab--  \r\nepilogue\r\n",
    "attachment-hostile-names.eml": mixed(
        b"Content-Type: text/plain\r\nContent-Disposition: attachment; "
        b'filename="../../etc/passwd"\r\n\r\nx\r\n',
        b"Content-Type: text/html\r\nContent-Disposition: attachment; "
        b'filename="<script>alert(1)</script>.html"\r\n\r\n<b>x</b>\r\n',
        b"Content-Type: application/octet-stream\r\nContent-Disposition: attachment; "
        b"filename*=utf-8''%00nul%0D%0Ainjected\r\n\r\ny\r\n",
    ),
    # Helpdesk fields from a provider's delivery headers (accounts trusting mx.example.com).
    "helpdesk-provider-headers.eml": b"Delivered-To: support+case-7@example.com\r\n"
    b"Return-Path: <bob@example.org>\r\n"
    b"Received: from mail.example.org by mx.example.com with ESMTPS\r\n"
    b"Authentication-Results: mx.example.com; dkim=pass header.d=example.org header.s=k1;"
    b" spf=pass smtp.mailfrom=bob@example.org; dmarc=pass header.from=example.org;"
    b" arc=none\r\n"
    b"X-Spam-Status: No, score=0.4 required=5.0\r\n"
    b"X-Spam-Flag: NO\r\n"
    b"DKIM-Signature: v=1; d=example.org; s=k1; b=abc\r\n"
    b"Authentication-Results: mx.example.com; dkim=pass header.d=bank.example; dmarc=pass\r\n"
    b"From: Bob <bob@example.org>\r\nTo: Support <support+case-7@example.com>\r\n"
    b"Cc: Ops <ops+urgent@example.com>\r\nSubject: Re: case 7\r\n"
    + DATE
    + b"Auto-Submitted: no\r\n\r\nStill broken after the update.\r\n\r\n"
    b"On Mon, 1 Jan 2024 at 09:00, Support <support@example.com> wrote:\r\n"
    b"> Please update and tell us.\r\n",
    # Every helpdesk header malformed: each is a parse error and a null, never a lost message.
    "helpdesk-malformed.eml": b"Delivered-To: \xff\xfe not an address\r\n"
    b"X-Original-To: <<<>>>\r\n"
    b"Authentication-Results: mx.example.com; dkim=\r\n"
    b"X-Spam-Score: \xe9norme\r\n"
    b"X-Spam-Status: Maybe, score=lots\r\n"
    b"Auto-Submitted: \x00\xff\r\n"
    b"From: a@example.org\r\nTo: =?utf-8?q?x?= <+@example.com>, @@+@\r\n"
    b"Subject: malformed\r\n\r\n> only a quote\r\n",
}


def main() -> None:
    OUT.mkdir(exist_ok=True)
    total = 0
    for name, data in CORPUS.items():
        (OUT / name).write_bytes(data)
        total += len(data)
    print(f"wrote {len(CORPUS)} files, {total / 1e6:.2f} MB, to {OUT}")


if __name__ == "__main__":
    main()
