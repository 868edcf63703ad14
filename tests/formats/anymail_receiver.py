"""django-anymail's inbound webhook views in a real Django app, served over HTTP on loopback.

Run as a subprocess by tests/formats (Django's settings are process-global, so the test
process never imports Django): `python anymail_receiver.py RECORDS_FILE` with the shared
secrets in the environment (ANYMAIL_WEBHOOK_SECRET "user:password", ANYMAIL_MAILGUN_KEY).
It prints `listening PORT` once it accepts connections. A handler on anymail's `inbound`
signal appends one JSON line per message to RECORDS_FILE with what anymail parsed; requests
anymail refuses (bad basic auth, bad Mailgun signature) are answered 400 by anymail itself
and leave no record. Nothing here parses the request: that is anymail's job under test.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import threading
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import django
from django.conf import settings
from django.urls import include, path

RECORDS = sys.argv[1]

settings.configure(
    DEBUG=False,
    SECRET_KEY="anymail-receiver-test-only",
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=["anymail"],
    MIDDLEWARE=[],
    # A 3 MB attachment is about 4 MB of JSON for Postmark: receivers raise this limit too.
    DATA_UPLOAD_MAX_MEMORY_SIZE=64 * 1024 * 1024,
    ANYMAIL={
        "WEBHOOK_SECRET": os.environ["ANYMAIL_WEBHOOK_SECRET"],
        "MAILGUN_WEBHOOK_SIGNING_KEY": os.environ["ANYMAIL_MAILGUN_KEY"],
    },
    LOGGING_CONFIG=None,
)
django.setup()

from anymail.signals import inbound  # noqa: E402  (needs configured settings)

urlpatterns = [path("anymail/", include("anymail.urls"))]
_lock = threading.Lock()


def _address(addr: Any) -> list[str]:
    return [addr.display_name, addr.addr_spec]


def _part(part: Any) -> dict[str, Any]:
    return {
        "filename": part.get_filename(),
        "type": part.get_content_type(),
        "content": base64.b64encode(part.get_content_bytes()).decode("ascii"),
        "content_id": part["Content-ID"],
        "inline": part.is_inline(),
    }


def record(sender: Any, event: Any, esp_name: str, **_: Any) -> None:
    msg = event.message
    entry = {
        "esp": esp_name,
        "event_id": event.event_id,
        "timestamp": event.timestamp.isoformat() if event.timestamp else None,
        "subject": msg.subject,
        "from": _address(msg.from_email) if msg.from_email else None,
        "to": [_address(a) for a in msg.to],
        "cc": [_address(a) for a in msg.cc],
        "text": msg.text,
        "html": msg.html,
        "attachments": [_part(p) for p in msg.attachments],
        "inlines": [_part(p) for p in msg.inlines],
        "envelope_sender": msg.envelope_sender,
        "envelope_recipient": msg.envelope_recipient,
        "stripped_text": msg.stripped_text,
        "spam_score": msg.spam_score,
    }
    with _lock, open(RECORDS, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


inbound.connect(record)


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write("anymail-receiver: " + (format % args) + "\n")


def main() -> None:
    from django.core.wsgi import get_wsgi_application

    server: WSGIServer = make_server("127.0.0.1", 0, get_wsgi_application(), handler_class=_Quiet)
    print(f"listening {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
