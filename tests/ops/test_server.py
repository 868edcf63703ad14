"""The ops endpoint served for real on a free port and queried with aiohttp."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bridge.ops import metrics
from bridge.ops.logging import clear_secrets, register_secret
from bridge.ops.server import OpsServer
from bridge.ops.status import StatusRegistry


class Flag:
    def __init__(self) -> None:
        self.ok = True

    async def store_reachable(self) -> bool:
        return self.ok


async def get(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, r.headers.get("Content-Type", ""), await r.text()


async def test_every_endpoint() -> None:
    registry = StatusRegistry()
    registry.poll_succeeded("support", new=2, now=1_700_000_000)
    registry.poll_failed("sales<script>", "AuthenticationFailed: -ERR bad login", now=1_700_000_005)
    registry.set_counts("support", pending=3, dead=1)

    async def status() -> dict[str, Any]:
        return {"accounts": registry.snapshot()}

    flag = Flag()
    metrics.POLLS.labels(account="support", outcome="ok").inc()
    metrics.PROXY_COMMANDS.labels(verb=metrics.verb_label("retr"), outcome="ok").inc()
    async with OpsServer("127.0.0.1", 0, [flag.store_reachable], status) as server:
        assert server.port != 0
        code, _, body = await get(server.url + "/healthz")
        assert code == 200 and body.strip() == "ok"

        code, ctype, body = await get(server.url + "/readyz")
        assert code == 200 and "application/json" in ctype and '"ready":true' in body

        flag.ok = False
        code, _, body = await get(server.url + "/readyz")
        assert code == 503 and "store_reachable" in body
        flag.ok = True
        assert (await get(server.url + "/readyz"))[0] == 200

        code, ctype, body = await get(server.url + "/metrics")
        assert code == 200 and ctype.startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(body)}
        assert "pop3bridge_polls" in families
        samples = [
            s
            for s in families["pop3bridge_polls"].samples
            if s.name == "pop3bridge_polls_total"
            and s.labels == {"account": "support", "outcome": "ok"}
        ]
        assert samples and samples[0].value >= 1
        assert all(name.startswith("pop3bridge_") for name in families)
        assert "pop3bridge_proxy_commands" in families

        code, _, body = await get(server.url + "/status")
        assert code == 200
        import orjson

        doc = orjson.loads(body)
        assert doc["accounts"]["support"]["pending"] == 3
        assert doc["accounts"]["support"]["last_new"] == 2

        code, ctype, page = await get(server.url + "/")
        assert code == 200 and "text/html" in ctype
        assert "support" in page and "AuthenticationFailed" in page
        assert "<script>" not in page and "sales&lt;script&gt;" in page
        assert "http://" not in page and "https://" not in page  # no external assets


async def test_failing_and_hanging_checks_fail_readiness() -> None:
    async def broken() -> bool:
        raise ConnectionError("database at postgresql://app:pgpw@db refused")

    async def hangs() -> bool:
        await asyncio.sleep(30)  # the stimulus: a check that never answers in time
        return True

    register_secret("pgpw")
    try:
        async with OpsServer("127.0.0.1", 0, [broken, hangs], check_timeout=0.2) as server:
            code, _, body = await get(server.url + "/readyz")
    finally:
        clear_secrets()
    assert code == 503
    assert "ConnectionError" in body and "timed out" in body
    assert "pgpw" not in body


async def test_status_provider_error_is_500_without_secret() -> None:
    async def status() -> dict[str, Any]:
        raise RuntimeError("password=topsecret oops")

    async with OpsServer("127.0.0.1", 0, [], status) as server:
        code, _, body = await get(server.url + "/status")
        page_code, _, page = await get(server.url + "/")
    assert code == 500 and "topsecret" not in body
    assert page_code == 200 and "topsecret" not in page and "Status unavailable" in page


async def test_port_in_use_is_a_clear_error() -> None:
    async with OpsServer("127.0.0.1", 0) as first:
        second = OpsServer("127.0.0.1", first.port)
        try:
            await second.start()
        except OSError as exc:
            assert "ops.port" in str(exc)
        else:  # pragma: no cover - would mean two sockets bound one port
            await second.stop()
            raise AssertionError("second bind succeeded")


async def test_a_scrape_refreshes_gauges_first_and_survives_a_failing_refresher() -> None:
    depth = {"n": 7.0}
    calls: list[str] = []

    async def from_store() -> None:
        calls.append("store")
        metrics.OUTBOX_DEPTH.set(depth["n"])

    async def broken() -> None:
        calls.append("broken")
        raise ConnectionRefusedError("database down")

    def scraped(body: str) -> float:
        families = {f.name: f for f in text_string_to_metric_families(body)}
        return families["pop3bridge_outbox_depth"].samples[0].value

    async with OpsServer("127.0.0.1", 0, refreshers=[broken, from_store]) as server:
        code, _, body = await get(server.url + "/metrics")
        assert code == 200 and scraped(body) == 7.0
        depth["n"] = 2.0
        code, _, body = await get(server.url + "/metrics")
        assert code == 200 and scraped(body) == 2.0
    assert calls == ["broken", "store", "broken", "store"]


async def test_status_json_is_scrubbed_like_the_logs() -> None:
    register_secret("s3cret-upstream-pw")

    async def status() -> dict[str, Any]:
        return {
            "started_at": 1_700_000_000.5,
            "accounts": {
                "support": {
                    "last_error": "RemoteProtocolError: server echoed PASS s3cret-upstream-pw",
                    "pending": 3,
                    "oldest_pending_age": 1.5,
                    "last_success_at": None,
                }
            },
        }

    try:
        async with OpsServer("127.0.0.1", 0, status_provider=status) as server:
            code, _, body = await get(server.url + "/status")
    finally:
        clear_secrets()
    assert code == 200 and "s3cret-upstream-pw" not in body
    import orjson

    entry = orjson.loads(body)["accounts"]["support"]
    assert entry["last_error"] == "RemoteProtocolError: server echoed PASS ***"
    assert (entry["pending"], entry["oldest_pending_age"], entry["last_success_at"]) == (
        3,
        1.5,
        None,
    )
