"""Issue 19, findings 7 and 8: webhook URLs that carry `user:password@`.

7. aiohttp sends URL credentials as `Authorization: Basic base64(user:password)`. A receiver that
   echoes the request's headers in its error body must not get that base64 form into our
   errors or logs.
8. URL credentials plus a configured `Authorization` header make aiohttp refuse every request:
   `config check` refuses the combination (exit 2), and an error that would repeat on every
   attempt dead-letters the delivery with its reason instead of leaving it pending forever.
"""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from aiohttp import web

from bridge.cli import main
from bridge.delivery.sender import WebhookSender, WebhookTarget
from bridge.delivery.worker import DeliveryWorker, WebhookRoute
from bridge.ops.logging import clear_secrets, redact
from bridge.runtime import webhook_target
from bridge.store import NewMessage, Store
from tests.support.receiver import new_secret

USER, PASSWORD = "hookuser", "url-pass-w0rd-echoed"
BASIC = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


@pytest.fixture
async def echoing_receiver() -> AsyncIterator[str]:
    """Answers 500 quoting every request header back, as some debugging endpoints do."""

    async def handler(request: web.Request) -> web.Response:
        quoted = "; ".join(f"{k}: {v}" for k, v in request.headers.items())
        return web.Response(status=500, text=f"rejected request with headers {quoted}")

    app = web.Application()
    app.router.add_post("/hook", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://{USER}:{PASSWORD}@127.0.0.1:{port}/hook"
    finally:
        await runner.cleanup()


class _Hook:
    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.name = "main"
        self.url = url
        self.secret = new_secret()
        self.headers = headers or {}
        self.timeout = 5.0


async def test_basic_auth_echoed_by_the_receiver_is_redacted(echoing_receiver: str) -> None:
    clear_secrets()
    target = webhook_target(_Hook(echoing_receiver))
    async with WebhookSender(connect_retries=0) as sender:
        result = await sender.send(target, "msg_1", b"{}")
    assert result.status == 500 and result.error is not None
    assert "rejected request" in result.error  # the reason is kept
    assert BASIC not in result.error and PASSWORD not in result.error
    # The log redactor knows the wire form too, so any log line quoting it is scrubbed.
    assert BASIC not in redact(f"receiver said: Basic {BASIC} (again: {BASIC})")


def _config(tmp_path: Path, url: str, headers: dict[str, str]) -> str:
    data = {
        "webhooks": [{"name": "main", "url": url, "secret": new_secret(), "headers": headers}],
        "accounts": [
            {
                "name": "a",
                "url": "pop3s://someone@mail.example.com",
                "password": "pw-for-pop3-xyz",
                "webhook": "main",
            }
        ],
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_config_check_refuses_url_credentials_with_an_authorization_header(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"https://{USER}:{PASSWORD}@hooks.example.com/in"
    bad = _config(tmp_path, url, {"Authorization": "Bearer header-token-xyz"})
    assert main(["config", "check", "--config", bad]) == 2
    out, err = capsys.readouterr()
    assert "webhooks[0].headers" in err and "user:password@" in err
    for secret in (PASSWORD, BASIC, "header-token-xyz"):
        assert secret not in out + err
    # Either one alone is fine.
    assert main(["config", "check", "--config", _config(tmp_path, url, {})]) == 0
    plain = "https://hooks.example.com/in"
    good = _config(tmp_path, plain, {"authorization": "Bearer header-token-xyz"})
    assert main(["config", "check", "--config", good]) == 0


def test_the_target_refuses_the_combination_too() -> None:
    with pytest.raises(ValueError, match="keep only one"):
        WebhookTarget(
            name="main",
            url=f"https://{USER}:{PASSWORD}@hooks.example.com/in",
            secrets=(new_secret(),),
            headers={"AUTHORIZATION": "Bearer x"},
        )


async def test_a_request_aiohttp_refuses_is_a_permanent_failure(echoing_receiver: str) -> None:
    """A target built before the check existed (or any request aiohttp cannot build): a
    permanent result with the reason, not an exception out of the delivery round."""
    target = WebhookTarget(name="main", url=echoing_receiver, secrets=(new_secret(),))
    headers = dict(target._static_headers, Authorization="Bearer header-token-xyz")
    object.__setattr__(target, "_static_headers", headers)
    async with WebhookSender(connect_retries=0) as sender:
        result = await sender.send(target, "msg_1", b"{}")
    assert not result.ok and result.permanent and result.status is None
    assert result.error is not None and "could not be built" in result.error
    assert PASSWORD not in result.error and "header-token-xyz" not in result.error


class _RaisingSender:
    def __init__(self) -> None:
        self.calls = 0

    async def send(self, target: object, msg_id: str, body: bytes) -> object:
        self.calls += 1
        raise ValueError("Cannot combine AUTHORIZATION header with AUTH argument")


class _Retries:
    def next_attempt(self, attempts: int, result: object, now: float) -> float | None:
        return now


async def test_an_error_that_repeats_dead_letters_instead_of_looping(store: Store) -> None:
    message = NewMessage(
        account="a",
        uidl="u1",
        msg_id="msg_" + "0" * 32,
        webhook="main",
        size=1,
        fingerprint="fp",
        payload=b"{}",
        raw=b"x",
        delete_after_delivery=False,
    )
    await store.record([message], time.time())
    sender = _RaisingSender()
    routes = {"main": WebhookRoute(target="t", policy=_Retries())}
    worker = DeliveryWorker(store, sender, routes, holder="t", claim_seconds=30)  # type: ignore[arg-type]
    for _ in range(3):
        await worker.deliver_due()
    assert sender.calls == 1
    assert await store.pending_count() == 0
    [dead] = await store.dead_letters()
    assert dead.msg_id == message.msg_id
    assert "Cannot combine AUTHORIZATION" in (dead.last_error or "")
