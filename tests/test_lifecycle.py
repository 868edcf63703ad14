"""The one lifecycle base (bridge/lifecycle.py) and the servers built on it.

The shutdown path is tested once here, on the base, and then each server is shown to use it:
no server keeps a connection task alive past `stop()`, a failed start undoes what it set up,
and a second `stop()` waits for the first instead of running it again.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from bridge.config import ProxyConfig
from bridge.delivery.sender import WebhookSender
from bridge.lifecycle import Service, ServiceStateError
from bridge.ops.server import OpsEndpointError, OpsServer
from bridge.proxy.server import ProxyServer, ProxyStartError
from bridge.testing.fakepop3 import FakePOP3Server
from tests.support.faultrelay import FaultRelay


class Probe(Service):
    """Records the calls the base makes, and runs tasks that finish on cue or never."""

    def __init__(self, *, fail_start: bool = False) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.fail_start = fail_start
        self.release = asyncio.Event()

    async def _start(self) -> None:
        self.calls.append("start")
        self.spawn(stubborn=False)
        if self.fail_start:
            raise OSError("cannot bind")

    async def _stop(self, grace: float | None) -> None:
        self.calls.append(f"stop {grace}")

    async def _finish(self) -> None:
        self.calls.append(f"finish with {self.task_count} tasks")

    def spawn(self, *, stubborn: bool) -> asyncio.Task[None]:
        async def work() -> None:
            if stubborn:
                await asyncio.Event().wait()
            await self.release.wait()

        task = asyncio.ensure_future(work())
        self.track(task)
        return task


async def test_start_stop_and_the_phases() -> None:
    probe = Probe()
    assert probe.phase == "new" and not probe.running
    await probe.start()
    assert probe.running
    await probe.wait_ready()
    await probe.start()  # starting a running service does nothing
    assert probe.calls == ["start"]
    await probe.stop()
    assert probe.phase == "stopped" and not probe.running and probe.stopping
    assert probe.calls == ["start", "stop None", "finish with 0 tasks"]


async def test_grace_lets_tasks_finish_then_the_rest_are_cancelled() -> None:
    probe = Probe()
    await probe.start()
    polite = probe.spawn(stubborn=False)
    stubborn = probe.spawn(stubborn=True)
    asyncio.get_running_loop().call_later(0.05, probe.release.set)
    await probe.stop(grace=5)
    assert polite.done() and not polite.cancelled()
    assert stubborn.cancelled()
    assert probe.calls[-1] == "finish with 0 tasks"


async def test_failed_start_undoes_itself_and_raises_the_original_error() -> None:
    probe = Probe(fail_start=True)
    with pytest.raises(OSError, match="cannot bind"):
        await probe.start()
    assert probe.phase == "stopped"
    assert probe.calls == ["start", "stop 0.0", "finish with 0 tasks"]
    with pytest.raises(ServiceStateError):
        await probe.wait_ready()


async def test_concurrent_stops_run_the_shutdown_once() -> None:
    probe = Probe()
    await probe.start()
    probe.spawn(stubborn=True)
    await asyncio.gather(probe.stop(grace=0.05), probe.stop(), probe.stop())
    assert probe.calls.count("stop 0.05") == 1 and len(probe.calls) == 3
    assert probe.task_count == 0


async def test_stop_cancelled_while_waiting_still_ends_every_task() -> None:
    # An operator's second signal cancels the task that is waiting out the grace period.
    probe = Probe()
    await probe.start()
    session = probe.spawn(stubborn=True)
    stopper = asyncio.ensure_future(probe.stop(grace=60))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    stopper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopper
    assert session.cancelled() and probe.task_count == 0 and probe.phase == "stopped"


async def test_stop_before_start_and_restart_after_stop() -> None:
    probe = Probe()
    await probe.stop()
    assert probe.calls == []
    await probe.start()
    await probe.stop()
    await probe.start()
    assert probe.running and probe.calls.count("start") == 2
    await probe.stop()


async def test_wait_ready_returns_once_started() -> None:
    probe = Probe()
    waiter = asyncio.ensure_future(probe.wait_ready())
    await asyncio.sleep(0)
    assert not waiter.done()
    await probe.start()
    await asyncio.wait_for(waiter, 5)
    await probe.stop()


# -- every server uses it -----------------------------------------------------------------------


async def _open_session(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert (await reader.readline()).startswith(b"+OK")
    return reader, writer


async def test_fake_server_and_fault_relay_cut_open_sessions_on_stop() -> None:
    async with FakePOP3Server([b"Subject: x\r\n\r\nhi\r\n"]) as pop:
        assert isinstance(pop, Service) and pop.running
        relay = FaultRelay("127.0.0.1", pop.port)
        async with relay:
            reader, writer = await _open_session(relay.port)
            assert relay.task_count == 1
        assert relay.phase == "stopped" and relay.task_count == 0
        assert await reader.read() == b""  # the relay's session was cut
        writer.close()
        reader, writer = await _open_session(pop.port)
        assert pop.task_count == 1
    assert pop.task_count == 0
    assert await reader.read() == b""
    writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", pop.port)


async def test_ops_server_and_sender_are_services() -> None:
    ops = OpsServer("127.0.0.1", 0)
    async with ops:
        assert ops.running and ops.port != 0
    assert ops.phase == "stopped"
    taken = socket.create_server(("127.0.0.1", 0))
    try:
        busy = OpsServer("127.0.0.1", taken.getsockname()[1])
        with pytest.raises(OpsEndpointError):
            await busy.start()
        assert busy.phase == "stopped"
    finally:
        taken.close()
    sender = WebhookSender()
    async with sender:
        assert sender.running and not sender.session.closed
        session = sender.session
    assert session.closed and sender.phase == "stopped"
    await sender.close()  # the sender's old name for stop(): still idempotent


async def test_proxy_server_failed_start_closes_the_listener_it_had_bound(tmp_path: Path) -> None:
    config = ProxyConfig.model_validate(
        {
            "listeners": [
                {"name": "a", "host": "127.0.0.1", "port": 0},
                {
                    "name": "b",
                    "host": "127.0.0.1",
                    "port": 0,
                    "tls": "implicit",
                    "cert_file": str(tmp_path / "missing.crt"),
                    "key_file": str(tmp_path / "missing.key"),
                },
            ],
            "upstream": {"host": "127.0.0.1", "port": 1, "tls": "none"},
        }
    )
    server = ProxyServer(config)
    with pytest.raises(ProxyStartError, match="'b'"):
        await server.start()
    assert server.phase == "stopped" and not await server.ready()
    assert server.addresses  # "a" was bound before "b" failed ...
    host, port = server.addresses["a"]
    with pytest.raises(OSError):  # ... and is closed again
        await asyncio.open_connection(host, port)
