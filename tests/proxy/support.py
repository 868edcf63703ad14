"""Helpers for proxy integration tests: an in-process proxy over a config dict, and poplib."""

from __future__ import annotations

import asyncio
import contextlib
import poplib
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

from bridge.config import ProxyConfig
from bridge.proxy.server import ProxyServer


@contextlib.asynccontextmanager
async def running_proxy(config: dict[str, Any], **kwargs: Any) -> AsyncIterator[ProxyServer]:
    server = ProxyServer(ProxyConfig.model_validate(config), **kwargs)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(0)


def fixed_config(dovecot: Any, *, upstream_tls: str = "none", **extra: Any) -> dict[str, Any]:
    port = dovecot.pop3s_port if upstream_tls == "implicit" else dovecot.pop3_port
    listener = {"name": "plain", "port": 0}
    listener.update(extra.pop("listener", {}))
    return {
        "listeners": [listener, *extra.pop("more_listeners", [])],
        "upstream": {
            "host": dovecot.host,
            "port": port,
            "tls": upstream_tls,
            "ca_file": str(dovecot.ca_file),
        },
        "log_commands": True,
        **extra,
    }


def fetch_all(
    host: str,
    port: int,
    user: str,
    password: str,
    *,
    pop3s: ssl.SSLContext | None = None,
    stls: ssl.SSLContext | None = None,
    apop: bool = False,
) -> dict[str, Any]:
    """Everything a poplib client sees of a mailbox (blocking; run it in a thread)."""
    if pop3s is not None:
        conn: poplib.POP3 = poplib.POP3_SSL(host, port, context=pop3s, timeout=20)
    else:
        conn = poplib.POP3(host, port, timeout=20)
    try:
        if stls is not None:
            conn.stls(stls)
        if apop:
            conn.apop(user, password)
        else:
            conn.user(user)
            conn.pass_(password)
        stat = conn.stat()
        listing = conn.list()[1]
        uidl = conn.uidl()[1]
        messages = [b"\r\n".join(conn.retr(i + 1)[1]) for i in range(stat[0])]
        tops = [b"\r\n".join(conn.top(i + 1, 2)[1]) for i in range(stat[0])]
        conn.quit()
    finally:
        conn.close()
    return {"stat": stat, "list": listing, "uidl": uidl, "messages": messages, "tops": tops}


async def in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, *args, **kwargs)
