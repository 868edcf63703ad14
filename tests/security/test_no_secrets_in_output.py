"""No password, OAuth token, client secret, refresh token, webhook signing secret, webhook
header or URL token appears in anything the bridge prints, at DEBUG level, on the success paths
(every POP3 mechanism Dovecot offers) and under failure: wrong password, TLS failure, refused
OAuth refresh (the token endpoint even echoes the secrets back), a webhook answering 500 with
the signing secret in its body, an unreachable PostgreSQL whose URL carries a password. Also
`config check` and `accounts list`. Each secret is searched for in the forms it takes on the
wire too (base64, SASL PLAIN blob, URL-encoded)."""

from __future__ import annotations

import base64
import json
import secrets
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bridge.testing.samples import generate_messages
from tests.security.cli import bridge, write_config
from tests.support.dovecot import DovecotServer
from tests.support.receiver import Reply, ThreadedReceiver

pytestmark = pytest.mark.dovecot


def token() -> str:
    return secrets.token_urlsafe(18)


def wire_forms(secret: str, user: str = "") -> set[str]:
    """The secret as it may travel: itself, base64, inside a SASL PLAIN blob, URL-encoded."""
    b = secret.encode()
    forms = {
        secret,
        base64.b64encode(b).decode(),
        urllib.parse.quote(secret, safe=""),
        base64.b64encode(b"\0" + user.encode() + b"\0" + b).decode(),
    }
    return {f for f in forms if len(f) >= 8}


class TokenEndpoint:
    """An OAuth2 token endpoint that refuses every refresh and quotes the form back (rude, but
    real endpoints do put request data into error descriptions)."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                form = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                body = json.dumps(
                    {"error": "invalid_grant", "error_description": f"refused: {form}"}
                ).encode()
                self.send_response(400)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def token_endpoint() -> Iterator[TokenEndpoint]:
    ep = TokenEndpoint()
    yield ep
    ep.close()


def test_no_secret_in_any_output_at_debug(
    tmp_path: Path, dovecot: DovecotServer, token_endpoint: TokenEndpoint
) -> None:
    forms: set[str] = set()
    accounts: list[dict[str, Any]] = []

    def pop3s(name: str, **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "host": dovecot.host,
            "port": dovecot.pop3s_port,
            "tls": "implicit",
            "ca_file": str(dovecot.ca_file),
            "webhook": "main",
            **extra,
        }

    # Successful logins with every mechanism, each with mail so the webhook gets called.
    for mech in ("plain", "login", "cram-md5", "apop", "user"):
        user = dovecot.add_user(password=token())
        dovecot.deliver_many(user, generate_messages(1, seed=len(accounts)))
        forms |= wire_forms(user.password, user.name)
        accounts.append(pop3s(f"ok-{mech}", username=user.name, password=user.password, auth=mech))
    # Failures: wrong password, TLS verification, OAuth refresh refused.
    victim = dovecot.add_user(password=token())
    wrong = token()
    forms |= wire_forms(wrong, victim.name) | wire_forms(victim.password, victim.name)
    accounts.append(pop3s("wrong-password", username=victim.name, password=wrong))
    accounts.append(
        pop3s(
            "bad-ca",
            username=victim.name,
            password=victim.password,
            ca_file=str(dovecot.certs.other_ca_file),
        )
    )
    refresh, client_secret = token(), token()
    forms |= wire_forms(refresh) | wire_forms(client_secret)
    accounts.append(
        pop3s(
            "oauth-refused",
            username=victim.name,
            auth="xoauth2",
            oauth2={
                "token_url": token_endpoint.url,
                "client_id": "bridge-client",
                "client_secret": client_secret,
                "refresh_token": refresh,
            },
        )
    )
    # The webhook: signing secret, an Authorization header and a token in the URL query.
    signing = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    header_secret, url_token = token(), token()
    forms |= {signing, signing.removeprefix("whsec_")} | wire_forms(header_secret)
    forms |= wire_forms(url_token)
    with ThreadedReceiver(secrets=[signing], default_status=500) as rx:
        rx.script(*[Reply(500, body=f"bad signature, expected {signing}".encode())] * 20)
        cfg = write_config(
            tmp_path / "c.yaml",
            accounts,
            state=f"sqlite:///{tmp_path / 's.db'}",
            webhook={
                "url": f"{rx.url}?token={url_token}",
                "secret": signing,
                "headers": {"Authorization": f"Bearer {header_secret}"},
                "max_attempts": 2,
                "retry_max_delay": 0.2,
            },
        )
        outputs = {"once": bridge("once", "--config", str(cfg))}
        delivered_calls = len(rx.requests)
    assert delivered_calls >= 5, outputs["once"][1][-3000:]  # the webhook was really called
    outputs["config check"] = bridge("config", "check", "--config", str(cfg))
    outputs["dlq list"] = bridge("dlq", "--config", str(cfg), "list")

    db_password = token()
    forms |= wire_forms(db_password)
    code, out = bridge(
        "accounts",
        "--config",
        str(cfg),
        "add",
        "from-db",
        "--url",
        f"pop3s://someone@{dovecot.host}:{dovecot.pop3s_port}",
        "--webhook",
        "main",
        "--set",
        f"password={db_password}",
    )
    outputs["accounts add"] = (code, out)
    outputs["accounts list"] = bridge("accounts", "--config", str(cfg), "list")

    pg_password = token()
    forms |= wire_forms(pg_password)
    pg_cfg = write_config(
        tmp_path / "pg.yaml",
        accounts[:1],
        state=f"postgresql://postgres:{pg_password}@127.0.0.1:1/test",
    )
    outputs["once (store down)"] = bridge("once", "--config", str(pg_cfg))

    # The failures really happened (otherwise this proves little).
    once = outputs["once"][1]
    for expected in ("AuthenticationFailed", "TLSFailure", "invalid_grant", "500"):
        assert expected in once, f"{expected} missing from:\n{once[-3000:]}"
    assert '"level":"DEBUG"' in once
    assert outputs["once (store down)"][0] != 0
    assert outputs["accounts list"][0] == 0 and "from-db" in outputs["accounts list"][1]

    leaks = {
        (what, form) for what, (_code, out) in outputs.items() for form in forms if form in out
    }
    assert not leaks, f"secrets in output: {sorted(leaks)}"
