"""A client that stops reading in the middle of a big RETR slows the upstream read down.

When the client's send buffer is full the proxy must stop reading the upstream until it
drains, or the whole message would pile up in the proxy (the session skips the drain wait
whenever the transport is not paused, so a mistake there would go unnoticed with fast
readers). A 40 MB message, a client that reads nothing for two seconds after RETR: the
proxy's RSS may grow by at most 16 MB, and the client still gets the message byte-exact
afterwards. Fails if the session never waits for the client to drain.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from bridge.pop3.wire import dot_stuff
from bridge.testing.samples import big_message
from tests.support.dovecot import DovecotServer, DovecotUser, free_port
from tests.support.rss import RssPeak

pytestmark = pytest.mark.dovecot

SIZE = 40 * 1024 * 1024
MAX_GROWTH = 16 * 1024 * 1024


def _start(tmp_path: Path, dovecot: DovecotServer) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    config = {
        "proxy": {
            "listeners": [{"name": "plain", "host": "127.0.0.1", "port": port}],
            "upstream": {"host": dovecot.host, "port": dovecot.pop3_port, "tls": "none"},
        },
        "ops": {"enabled": False},
        "logging": {"format": "json", "level": "WARNING"},
    }
    path = tmp_path / "proxy.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge", "proxy", "--config", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                if probe.recv(100).startswith(b"+OK"):
                    return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("proxy did not listen")


def _line(sock: socket.socket, buf: bytearray) -> bytes:
    while b"\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, "connection closed"
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\r\n")
    buf[:] = rest
    return line


def test_a_client_that_stops_reading_stops_the_upstream_read(
    dovecot: DovecotServer, dovecot_user: DovecotUser, tmp_path: Path
) -> None:
    message = big_message(SIZE, seed=3)
    dovecot.deliver(dovecot_user, message)
    proc, port = _start(tmp_path, dovecot)
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        buf = bytearray()
        assert _line(sock, buf).startswith(b"+OK")
        for line in (f"USER {dovecot_user.name}", f"PASS {dovecot_user.password}"):
            sock.sendall(line.encode() + b"\r\n")
            assert _line(sock, buf).startswith(b"+OK")
        with RssPeak(proc.pid) as rss:
            sock.sendall(b"RETR 1\r\n")
            time.sleep(2.0)  # read nothing: everything the proxy takes in now, it must hold
            received = bytearray(buf)
            while not received.endswith(b"\r\n.\r\n"):
                chunk = sock.recv(1 << 20)
                assert chunk, "proxy closed the connection mid-message"
                received += chunk
        status, _, body = bytes(received).partition(b"\r\n")
        assert status.startswith(b"+OK")
        assert body == dot_stuff(message)
        sock.sendall(b"QUIT\r\n")
        sock.close()
        assert rss.growth < MAX_GROWTH, f"RSS grew {rss.growth >> 20} MiB"
    finally:
        proc.terminate()
        proc.wait(20)
