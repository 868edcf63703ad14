"""The helpdesk fields through the real CLI: account options from the config file reach the
body built at delivery (they travel with the deferred row), and the body is schema-valid."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest

from bridge import mail
from tests.corpus.test_corpus import EML
from tests.e2e import harness
from tests.e2e.harness import Receiver, dovecot_account, write_config
from tests.e2e.test_guarantees import once_logged
from tests.support.dovecot import DovecotServer, DovecotUser

pytestmark = pytest.mark.dovecot
receiver = harness.receiver  # the e2e suite's fixture


@pytest.mark.timeout(120)
def test_helpdesk_fields_reach_the_webhook_with_the_accounts_options(
    tmp_path: Path, dovecot: DovecotServer, dovecot_user: DovecotUser, receiver: Receiver
) -> None:
    raw = (EML / "helpdesk-provider-headers.eml").read_bytes()
    dovecot.deliver(dovecot_user, raw)
    account = dovecot_account(
        dovecot,
        dovecot_user,
        trusted_authserv_id=["mx.example.com"],
        trust_spam_headers=True,
        mailbox_hash_separator="-",
    )
    cfg = write_config(
        tmp_path / "c.yaml", db=tmp_path / "s.db", receiver=receiver, accounts=[account]
    )
    rc, summary, log = once_logged(cfg)
    assert rc == 0, (summary, log[-2000:])
    [got] = receiver.delivered
    jsonschema.validate(got.json, mail.schema())
    data = got.json["data"]
    assert data["reply_text"] == "Still broken after the update."
    assert data["original_recipient"] == "support+case-7@example.com"
    assert data["mailbox_hash"] == "7"  # the account's separator is "-"
    assert data["auth"]["dmarc"] == {"result": "pass", "domain": "example.org"}
    assert data["spam"]["score"] == 0.4
    assert data["auto_submitted"] is False
