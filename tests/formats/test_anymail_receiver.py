"""Postmark-, Mailgun- and SendGrid-shaped deliveries taken by a receiver nobody here wrote.

Mail from the suite's Dovecot goes through `pop3bridge once` to django-anymail's own inbound
webhook views, running in a real Django app on a loopback port (anymail_receiver.py). anymail
checks the request as it checks the real services' (basic auth from the URL, Mailgun's
HMAC signature), parses it into an `AnymailInboundMessage`, and what it parsed must be the
source message: subject, from, to, cc, text, html and every attachment's name, type and bytes.
The source messages are built here with the standard library, so the expectations do not
come from the code under test.
"""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.mail.formats import mailgun_token
from tests.e2e.test_guarantees import once_logged
from tests.support.dovecot import DovecotServer, DovecotUser

pytestmark = pytest.mark.dovecot

HERE = Path(__file__).parent
BASIC = "pop3bridge:s3cret-basic"
MAILGUN_KEY = "key-mailgun-signing-0123456789"

SUBJECT = "Rückfrage zu Bestellung — 注文 #42"
TEXT = "Hallo,\n\nanbei die Übersicht.\n\nGrüße\nZoë\n"
HTML = '<p>Hallo,</p><p>anbei die <b>Übersicht</b>.</p><img src="cid:logo@example.org">\n'
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 8 + b"\n%%EOF\n"
PDF_NAME = "Übersicht_Größe.pdf"
BIG = random.Random(15).randbytes(3 * 1024 * 1024)
BIG_NAME = "daten-groß.bin"


def _top(raw: bytes) -> bytes:
    # What the provider adds above the message: the envelope as POP3 can see it.
    return b"Return-Path: <bounce@example.org>\r\nDelivered-To: support+t42@example.com\r\n" + raw


def rich_message() -> bytes:
    """multipart/mixed[alternative[text, related[html, inline png]], pdf], non-ASCII names."""
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = "Zoë Müller <zoe@example.org>"
    msg["To"] = "Support Desk <support+t42@example.com>"
    msg["Cc"] = "Ops Team <ops@example.com>, ann@example.net"
    msg["Subject"] = SUBJECT
    msg["Message-ID"] = "<rich-1@example.org>"
    msg["Date"] = "Tue, 03 Mar 2026 10:01:00 +0100"
    msg.set_content(TEXT)
    msg.add_alternative(HTML, subtype="html")
    html_part = msg.get_payload()[1]
    html_part.add_related(PNG, "image", "png", cid="<logo@example.org>", filename="logo.png")
    msg.add_attachment(PDF, "application", "pdf", filename=PDF_NAME)
    return _top(msg.as_bytes())


def big_message() -> bytes:
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = "Bob <bob@example.net>"
    msg["To"] = "support@example.com"
    msg["Subject"] = "Logs (3 MB)"
    msg["Message-ID"] = "<big-1@example.net>"
    msg.set_content("The logs are attached.\n")
    msg.add_attachment(BIG, "application", "octet-stream", filename=BIG_NAME)
    return _top(msg.as_bytes())


@dataclass
class Expected:
    subject: str
    sender: list[str]
    to: list[list[str]]
    cc: list[list[str]]
    text: str
    html: str | None
    files: list[tuple[str, str, bytes, str | None]]  # name, type, bytes, content-id


RICH = Expected(
    subject=SUBJECT,
    sender=["Zoë Müller", "zoe@example.org"],
    to=[["Support Desk", "support+t42@example.com"]],
    cc=[["Ops Team", "ops@example.com"], ["", "ann@example.net"]],
    text=TEXT,
    html=HTML,
    files=[
        ("logo.png", "image/png", PNG, "<logo@example.org>"),
        (PDF_NAME, "application/pdf", PDF, None),
    ],
)
LARGE = Expected(
    subject="Logs (3 MB)",
    sender=["Bob", "bob@example.net"],
    to=[["", "support@example.com"]],
    cc=[],
    text="The logs are attached.\n",
    html=None,
    files=[(BIG_NAME, "application/octet-stream", BIG, None)],
)


class AnymailReceiver:
    """The receiver subprocess; `records()` is what anymail's inbound signal saw."""

    def __init__(self, tmp: Path, *, basic: str = BASIC, mailgun_key: str = MAILGUN_KEY) -> None:
        self.records_file = tmp / f"records-{os.getpid()}-{id(self)}.jsonl"
        env = {
            **os.environ,
            "ANYMAIL_WEBHOOK_SECRET": basic,
            "ANYMAIL_MAILGUN_KEY": mailgun_key,
            "PYTHONWARNINGS": "ignore",
        }
        # Its log goes to a file: a pipe nobody drains would block the server once full.
        self.log_file = tmp / f"anymail-{id(self)}.log"
        with open(self.log_file, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(HERE / "anymail_receiver.py"), str(self.records_file)],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=env,
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("listening "):
            self.proc.kill()
            self.proc.wait(10)
            err = self.log_file.read_text(errors="replace")
            raise RuntimeError(f"anymail receiver did not start: {line!r} {err[-2000:]}")
        self.port = int(line.split()[1])

    def url(self, path: str, creds: str = BASIC) -> str:
        return f"http://{creds}@127.0.0.1:{self.port}/anymail/{path}"

    def records(self) -> list[dict[str, Any]]:
        if not self.records_file.exists():
            return []
        lines = self.records_file.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines]

    def stop(self) -> str:
        self.proc.terminate()
        try:
            self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate(timeout=10)
        return self.log_file.read_text(errors="replace")


@pytest.fixture
def anymail(tmp_path: Path) -> Iterator[AnymailReceiver]:
    receiver = AnymailReceiver(tmp_path)
    try:
        yield receiver
    finally:
        receiver.stop()


def write_config(
    path: Path, dovecot: DovecotServer, user: DovecotUser, webhook: dict[str, Any]
) -> Path:
    account = {
        **dovecot.pop3s_account(user),
        "on_delivered": "delete",
        "trusted_authserv_id": "mx.example.com",
    }
    config = {
        "state": {"url": f"sqlite:///{path.parent / 'state.db'}"},
        "webhooks": [{"name": "main", "timeout": 20, "max_attempts": 3, **webhook}],
        "accounts": [account],
        "poller": {"jitter": 0.1, "shutdown_grace": 5},
        "ops": {"enabled": False},
        "logging": {"format": "json", "level": "INFO"},
    }
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _norm(text: str | None) -> str | None:
    # Postmark sends "" for a body the message lacks (its JSON has no null there).
    return None if not text else text.replace("\r\n", "\n").rstrip("\n") or None


def assert_matches(record: dict[str, Any], want: Expected) -> None:
    assert record["subject"] == want.subject
    assert record["from"] == want.sender
    assert record["to"] == want.to
    assert record["cc"] == want.cc
    assert _norm(record["text"]) == _norm(want.text)
    assert _norm(record["html"]) == _norm(want.html)
    got = sorted(
        (p["filename"], p["type"], base64.b64decode(p["content"]), p["content_id"])
        for p in record["attachments"] + record["inlines"]
    )
    assert [(n, t, len(b), c) for n, t, b, c in got] == [
        (n, t, len(b), c) for n, t, b, c in sorted(want.files)
    ]
    assert got == sorted(want.files)
    inline = [p for p in record["inlines"] if p["content_id"]]
    assert all(p["inline"] for p in inline)
    assert record["envelope_recipient"] in (None, "support+t42@example.com")


FORMATS = {
    "postmark": ({"format": "postmark"}, "postmark/inbound/"),
    "postmark-raw": ({"format": "postmark", "include_raw": True}, "postmark/inbound/"),
    "mailgun": (
        {"format": "mailgun", "mailgun_signing_key": MAILGUN_KEY},
        "mailgun/inbound/",
    ),
    "mailgun-mime": (
        {"format": "mailgun", "mailgun": {"mime": True}, "mailgun_signing_key": MAILGUN_KEY},
        "mailgun/inbound_mime/",
    ),
    "sendgrid": ({"format": "sendgrid"}, "sendgrid/inbound/"),
    "sendgrid-raw": ({"format": "sendgrid", "sendgrid": {"raw": True}}, "sendgrid/inbound/"),
}


@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", sorted(FORMATS))
def test_anymail_takes_every_format_and_parses_the_source_message(
    name: str,
    tmp_path: Path,
    dovecot: DovecotServer,
    dovecot_user: DovecotUser,
    anymail: AnymailReceiver,
) -> None:
    webhook, path = FORMATS[name]
    dovecot.deliver_many(dovecot_user, [rich_message(), big_message()])
    cfg = write_config(
        tmp_path / "c.yaml", dovecot, dovecot_user, {**webhook, "url": anymail.url(path)}
    )
    ids = _ids_from_peek(cfg)
    rc, summary, log = once_logged(cfg, timeout=180)
    assert rc == 0, (summary, log[-3000:])
    records = anymail.records()
    assert len(records) == 2, log[-3000:]
    by_subject = {r["subject"]: r for r in records}
    assert_matches(by_subject[SUBJECT], RICH)
    assert_matches(by_subject["Logs (3 MB)"], LARGE)
    # Deleted from the server only after anymail answered 2xx: by this run when the 2xx came
    # within the session's delete wait (3 s), else by the next poll. Django parsing 3 MB can
    # take longer than that on a loaded machine, so the test does not depend on it.
    if dovecot.message_count(dovecot_user):
        rc, summary, log = once_logged(cfg, timeout=180)
        assert rc == 0 and summary["accounts"][_account(cfg)]["new"] == 0, log[-3000:]
    assert dovecot.message_count(dovecot_user) == 0
    assert len(anymail.records()) == 2  # and nothing was delivered twice
    esp = by_subject[SUBJECT]["esp"]
    assert (
        esp
        == {"postmark": "Postmark", "mailgun": "Mailgun", "sendgrid": "SendGrid"}[webhook["format"]]
    )
    if webhook["format"] == "mailgun":
        # The idempotency token anymail reports is derived from the webhook-id: stable
        # across retries and replays.
        assert {r["event_id"] for r in records} == {mailgun_token(i) for i in ids}
    if name == "postmark":
        assert by_subject[SUBJECT]["stripped_text"] == TEXT.rstrip("\n")


def _ids_from_peek(cfg: Path) -> set[str]:
    """The webhook-ids the messages will have (`peek` changes nothing)."""
    proc = cli("peek", "--config", str(cfg), "--account", _account(cfg), "--limit", "10")
    assert proc.returncode == 0, proc.stderr
    return {json.loads(line)["data"]["id"] for line in proc.stdout.splitlines()}


def _account(cfg: Path) -> str:
    return str(yaml.safe_load(cfg.read_text(encoding="utf-8"))["accounts"][0]["name"])


WRONG = {
    "postmark": ({"format": "postmark"}, "postmark/inbound/", "wrong:creds"),
    "mailgun": (
        {"format": "mailgun", "mailgun_signing_key": "not-the-key"},
        "mailgun/inbound/",
        BASIC,
    ),
    "sendgrid": ({"format": "sendgrid"}, "sendgrid/inbound/", "wrong:creds"),
}


@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", sorted(WRONG))
def test_anymail_refuses_a_wrong_key_then_the_replay_with_the_right_one_is_taken(
    name: str,
    tmp_path: Path,
    dovecot: DovecotServer,
    dovecot_user: DovecotUser,
    anymail: AnymailReceiver,
) -> None:
    webhook, path, creds = WRONG[name]
    dovecot.deliver(dovecot_user, rich_message())
    cfg = write_config(
        tmp_path / "c.yaml",
        dovecot,
        dovecot_user,
        {**webhook, "url": anymail.url(path, creds)},
    )
    rc, summary, log = once_logged(cfg, timeout=180)
    assert anymail.records() == []
    listed = cli("dlq", "--config", str(cfg), "list", "--json")
    dead = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(dead) == 1, (summary, log[-2000:])
    assert "400" in json.dumps(dead[0])
    assert dovecot.message_count(dovecot_user) == 1  # never deleted without a 2xx

    fixed = {**webhook, "url": anymail.url(path)}
    if name == "mailgun":
        fixed["mailgun_signing_key"] = MAILGUN_KEY
    write_config(cfg, dovecot, dovecot_user, fixed)
    replay = cli("dlq", "--config", str(cfg), "replay", "--all")
    assert replay.returncode == 0, replay.stderr
    rc, summary, log = once_logged(cfg, timeout=180)
    assert rc == 0, (summary, log[-3000:])
    records = anymail.records()
    assert len(records) == 1
    assert_matches(records[0], RICH)
    # The replayed delivery's 2xx lets the next poll delete the message.
    rc, summary, log = once_logged(cfg, timeout=180)
    assert rc == 0 and dovecot.message_count(dovecot_user) == 0, (summary, log[-3000:])
    assert len(anymail.records()) == 1
