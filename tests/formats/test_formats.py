"""Delivery formats without a receiver: stable ids across attempts, boundaries, rows built at
fetch (oversize, the proxy's tap) reshaped from their stored JSON, and the worker path."""

from __future__ import annotations

import base64
import email
import hashlib
import hmac
import time
from email import policy
from pathlib import Path
from typing import Any

import orjson
import pytest

from bridge import mail
from bridge.delivery.sender import WebhookTarget
from bridge.mail._form import Field, encode
from bridge.mail.formats import FormatOptions, content_type_of, mailgun_token, render
from bridge.outbox import DEFER_MAX, DeferredPayload, outbox_row
from bridge.store import Store
from bridge.store.base import OutboxItem
from tests.delivery.test_worker import QuickRetries, ScriptedSender
from tests.formats.test_anymail_receiver import BIG, PDF, PDF_NAME, big_message, rich_message
from tests.support.wait import wait_until

T0 = 1_764_000_000.0
KEY = "mailgun-key"


def _item(row: Any, item_id: int = 1) -> OutboxItem:
    return OutboxItem(
        id=item_id,
        account=row.account,
        uidl=row.uidl,
        msg_id=row.msg_id,
        webhook=row.webhook,
        payload=row.payload,
        attempts=0,
        created_at=T0,
        next_attempt_at=T0,
        last_error=None,
        raw=row.raw,
        size=row.size,
    )


def _row(raw: bytes, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "account": "acct",
        "uidl": "u1",
        "size": len(raw),
        "webhook": "main",
        "now": T0,
        "attachment_inline_limit": 1 << 20,
        "include_raw": False,
        **kw,
    }
    return outbox_row(raw, **args)


def _form(body: bytes) -> email.message.Message:
    head = f"Content-Type: {content_type_of(body)}\r\n\r\n".encode()
    return email.message_from_bytes(head + body, policy=policy.HTTP)


def _fields(body: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in _form(body).iter_parts():
        name = part.get_param("name", header="content-disposition")
        out[name] = part.get_payload(decode=True)
    return out


def test_mailgun_token_is_stable_and_timestamp_is_the_attempts() -> None:
    builder = DeferredPayload(
        attachment_inline_limit=1 << 20,
        include_raw=False,
        format=FormatOptions(name="mailgun", signing_key=KEY),
    )
    item = _item(_row(rich_message(), defer=True))
    first, again, later = (
        builder.body(item, T0 + 5),
        builder.body(item, T0 + 5),
        builder.body(item, T0 + 3600),
    )
    assert first == again  # same inputs, same bytes (boundary included)
    one, two = _fields(first), _fields(later)
    assert one["token"] == two["token"] == mailgun_token(item.msg_id).encode()
    assert len(one["token"]) == 50
    assert (one["timestamp"], two["timestamp"]) == (b"1764000005", b"1764003600")
    for fields in (one, two):
        want = hmac.new(KEY.encode(), fields["timestamp"] + fields["token"], hashlib.sha256)
        assert fields["signature"] == want.hexdigest().encode()


def test_postmark_message_id_is_stable_per_webhook_id() -> None:
    builder = DeferredPayload(
        attachment_inline_limit=0, include_raw=False, format=FormatOptions(name="postmark")
    )
    a = orjson.loads(builder.body(_item(_row(rich_message(), defer=True)), T0))
    b = orjson.loads(builder.body(_item(_row(rich_message(), defer=True)), T0 + 99))
    c = orjson.loads(builder.body(_item(_row(rich_message(), uidl="u2", defer=True)), T0))
    assert a == b and a["MessageID"] != c["MessageID"]
    # Every attachment's bytes whatever the webhook's inline limit: Postmark carries them.
    assert {x["Name"]: base64.b64decode(x["Content"]) for x in a["Attachments"]}[PDF_NAME] == PDF
    assert a["MailboxHash"] == "t42" and a["OriginalRecipient"] == "support+t42@example.com"
    assert a["Headers"][0] == {"Name": "Return-Path", "Value": "<bounce@example.org>"}


def test_boundary_never_occurs_in_the_content() -> None:
    first = encode([Field("a", "x")], "seed")
    boundary = first.split(b"\r\n", 1)[0][2:]
    body = encode([Field("a", b"..." + boundary + b"...")], "seed")
    assert body.split(b"\r\n", 1)[0][2:] != boundary
    assert _fields(body)["a"] == b"..." + boundary + b"..."


def test_sender_sends_a_form_with_its_boundary_and_json_as_json() -> None:
    target = WebhookTarget(name="w", url="http://127.0.0.1:9/x", secrets=())
    form = encode([Field("a", "b")], "s")
    headers = target.signed_headers("msg_1", 1, form)
    assert headers["content-type"] == content_type_of(form)
    assert "webhook-signature" not in headers and headers["webhook-id"] == "msg_1"
    assert target.signed_headers("msg_1", 1, b"{}")["content-type"] == "application/json"


def test_big_messages_are_kept_raw_for_a_format_and_built_at_fetch_otherwise() -> None:
    raw = big_message()
    assert len(raw) > DEFER_MAX
    standard = _row(raw, defer=True)
    assert standard.payload.startswith(b"{")
    reshaped = _row(raw, defer=True, defer_any_size=True)
    assert reshaped.payload.startswith(b"\x00") and reshaped.raw == raw
    builder = DeferredPayload(
        attachment_inline_limit=1024,
        include_raw=False,
        format=FormatOptions(name="sendgrid"),
    )
    fields = _fields(builder.body(_item(reshaped), T0))
    assert fields["attachment1"] == BIG


@pytest.mark.parametrize("name", ["postmark", "mailgun", "sendgrid"])
@pytest.mark.parametrize("mime", [False, True])
def test_rows_built_at_fetch_are_reshaped_from_their_json(name: str, mime: bool) -> None:
    """An oversize message (headers only) and a tap copy have no raw message at delivery."""
    options = FormatOptions(name=name, mime=mime, include_raw=mime, signing_key=KEY)  # type: ignore[arg-type]
    builder = DeferredPayload(attachment_inline_limit=1 << 20, include_raw=False, format=options)
    row = _row(rich_message(), source="proxy")
    body = builder.body(_item(row), T0)
    data = orjson.loads(row.payload)["data"]
    if name == "postmark":
        got = orjson.loads(body)
        assert got["Subject"] == data["subject"] and got["TextBody"] == data["text"]
        assert len(got["Attachments"]) == 2
        if mime:
            assert (
                email.message_from_string(got["RawEmail"])["Message-ID"] == "<rich-1@example.org>"
            )
        return
    fields = _fields(body)
    if mime:
        rebuilt = fields["body-mime" if name == "mailgun" else "email"]
        msg = email.message_from_bytes(rebuilt, policy=policy.default)
        assert msg["Subject"] == data["subject"]
        names = {p.get_filename() for p in msg.iter_attachments()}
        assert PDF_NAME in names
    else:
        files = [k for k in fields if k.startswith("attachment") and k[-1].isdigit()]
        assert len(files) == 2
    oversize = _row(rich_message()[:400], oversize_reason="too big")
    assert builder.body(_item(oversize), T0)  # headers only: still a request


def test_attachments_without_content_are_left_out_of_a_reshaped_json_row() -> None:
    row = _row(rich_message(), attachment_inline_limit=0, source="proxy")
    builder = DeferredPayload(
        attachment_inline_limit=0, include_raw=False, format=FormatOptions(name="postmark")
    )
    assert orjson.loads(builder.body(_item(row), T0))["Attachments"] == []


def test_account_options_travel_with_a_deferred_row() -> None:
    options = mail.MailOptions(mailbox_hash_separator="-", trusted_authserv_ids=("mx.example.com",))
    raw = rich_message()
    eager, deferred = _row(raw, options=options), _row(raw, options=options, defer=True)
    builder = DeferredPayload(attachment_inline_limit=1 << 20, include_raw=False)
    built = orjson.loads(builder.body(_item(deferred), T0))
    assert built == orjson.loads(eager.payload)
    assert built["data"]["to"][0]["mailbox_hash"] is None  # "-" does not occur in support+t42
    plain = orjson.loads(builder.body(_item(_row(raw, defer=True)), T0))
    assert plain["data"]["to"][0]["mailbox_hash"] == "t42"


async def test_the_worker_reshapes_rows_built_at_fetch(store: Store) -> None:
    from bridge.delivery.worker import DeliveryWorker, WebhookRoute

    row = _row(rich_message())  # not deferred: a standard JSON body in the outbox
    await store.record([row], time.time())
    builder = DeferredPayload(
        attachment_inline_limit=1 << 20, include_raw=False, format=FormatOptions(name="sendgrid")
    )
    sender = ScriptedSender(script={row.msg_id: [503]})
    routes = {"main": WebhookRoute(target="t", policy=QuickRetries(), prepare=builder)}  # type: ignore[arg-type]
    worker = DeliveryWorker(store, sender, routes, holder="t", claim_seconds=30)  # type: ignore[arg-type]

    async def delivered() -> bool:  # the 503, then the retry once it is due (QuickRetries)
        await worker.deliver_due()
        return await store.pending_count() == 0

    await wait_until(delivered)
    bodies = [body for _, msg_id, body in sender.calls if msg_id == row.msg_id]
    assert len(bodies) == 2 and bodies[0] == bodies[1]  # retried with the same bytes
    assert _fields(bodies[0])["subject"].decode() == "Rückfrage zu Bestellung — 注文 #42"


def test_render_standard_is_the_json_body() -> None:
    data = mail.build_message_data(rich_message(), attachment_inline_limit=0, include_raw=False)
    body = {"type": "message.received", "timestamp": "x", "data": {"id": "msg_1", **data}}
    assert render(FormatOptions(), body, raw=None, now=T0) == orjson.dumps(body)


CORPUS = sorted((Path(__file__).resolve().parent.parent / "corpus" / "eml").glob("*.eml"))
VARIANTS = [
    FormatOptions(name=n, mime=m, include_raw=m, signing_key=KEY)  # type: ignore[arg-type]
    for n in ("postmark", "mailgun", "sendgrid")
    for m in (False, True)
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_every_corpus_message_renders_in_every_format(path: Path) -> None:
    """Hostile and broken mail never makes a format's body fail (it would dead-letter)."""
    raw = path.read_bytes()
    deferred, eager = _row(raw, defer=True), _row(raw, source="proxy")
    for options in VARIANTS:
        builder = DeferredPayload(attachment_inline_limit=4096, include_raw=False, format=options)
        for row in (deferred, eager):
            body = builder.body(_item(row), T0)
            if options.name == "postmark":
                orjson.loads(body)
            else:
                assert _form(body).is_multipart()


def test_readme_sample_payload_names_every_field_of_the_schema() -> None:
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    block = next(
        b for b in re.findall(r"```json\n(.*?)```", readme, re.S) if "message.received" in b
    )
    sample = orjson.loads(block.replace('"sha256": "e5c62df5…"', '"sha256": "x"'))
    schema = mail.schema()["$defs"]
    assert set(sample["data"]) == set(schema["data"]["required"])
    assert set(sample["data"]["to"][0]) == set(schema["recipient"]["required"])
    assert set(sample["data"]["auth"]) == set(
        schema["data"]["properties"]["auth"]["oneOf"][1]["required"]
    )
    assert set(sample["data"]["spam"]) == set(
        schema["data"]["properties"]["spam"]["oneOf"][1]["required"]
    )


def test_tap_copies_for_a_format_webhook_are_kept_raw_until_delivery() -> None:
    from types import SimpleNamespace

    from bridge.proxy.tap import targets_from_settings

    hook = SimpleNamespace(name="desk", format="postmark", attachment_inline_limit=0)
    route = SimpleNamespace(
        match="*", tap=SimpleNamespace(webhook="desk", max_message_size=1 << 30)
    )
    settings = SimpleNamespace(webhooks=[hook], proxy=SimpleNamespace(routes=[route]))
    target = targets_from_settings(settings)["*"]
    assert target.reshaped
    row = _row(big_message(), source="proxy", defer=True, defer_any_size=True)
    builder = DeferredPayload(
        attachment_inline_limit=0, include_raw=False, format=FormatOptions(name="postmark")
    )
    got = orjson.loads(builder.body(_item(row), T0))
    assert [base64.b64decode(a["Content"]) for a in got["Attachments"]] == [BIG]
