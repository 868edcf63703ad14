"""The parse worker `pop3bridge once` forks at start-up, before it reads its configuration.

Why. A spawned worker is a fresh interpreter that imports the parser: 80-110 ms of CPU, and
the poller starts it only once a UIDL listing shows new mail, so the first message's body
waited for it (bench/startup.py: the phase before the first POST was ~110 ms, nearly all of
it that wait). Forked at start-up, after this process imported the parser it needs anyway
(`bridge.outbox`), the worker is ready when the first message is and costs no interpreter.

Why a fork is safe here, when the pool never forks a worker from the running bridge (its
memory holds secrets, and its threads' locks would be inherited): `fork_worker` refuses unless
the configuration package has not been imported (so no configuration file, secrets directory
or `*_file` secret has been read; the environment is all the child holds, and a spawned
worker inherits that too) and this process runs a single thread.

The configured memory cap is not known yet at the fork: the child first waits for it on its
input (8 bytes, `take_forked`), then runs the same loop as a spawned worker
(`bridge.outbox._worker.main`), which sets the cap and the CPU-time handler before any job. A
pool of one worker adopts it; any other pool, settings without workers, or the end of the
command (`discard_forked`) close its input, and it exits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import sys
import threading
import time
from collections.abc import Mapping
from typing import IO

__all__ = ["ForkedWorker", "discard_forked", "fork_worker", "take_forked"]

_LIMIT = struct.Struct(">q")
_forked: ForkedWorker | None = None


class ForkedWorker:
    """The forked worker, with what `pool._Worker` uses of a `subprocess.Popen`."""

    def __init__(self, pid: int, stdin: IO[bytes], stdout: IO[bytes]) -> None:
        self.pid = pid
        self.stdin = stdin
        self.stdout = stdout
        self.returncode: int | None = None

    def kill(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def poll(self) -> int | None:
        if self.returncode is None:
            with contextlib.suppress(ChildProcessError):
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        """As `Popen.wait`, except that a `timeout` running out returns None (the pool's
        `_Worker.kill` waits 50 ms for a killed worker, then leaves it)."""
        if timeout is not None:
            deadline = time.monotonic() + timeout
            while self.poll() is None and time.monotonic() < deadline:
                time.sleep(0.001)
            return self.returncode
        if self.returncode is None:
            with contextlib.suppress(ChildProcessError):
                _, status = os.waitpid(self.pid, 0)
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def fork_worker(env: Mapping[str, str]) -> bool:
    """Fork the single parse worker now (module docstring); True if forked. Not when
    `POP3BRIDGE_POLLER__PARSE_WORKERS` already names another number of workers."""
    global _forked
    wanted = env.get("POP3BRIDGE_POLLER__PARSE_WORKERS", "1").strip()
    if wanted.isdigit() and int(wanted) != 1:
        return False
    if _forked is not None or threading.active_count() != 1:
        return False
    if any(name == "bridge.config" or name.startswith("bridge.config.") for name in sys.modules):
        return False
    from bridge.outbox import _worker  # the parser and the loop: imported here, not in the child

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()  # nothing buffered may be written twice
    request_r, request_w = os.pipe()
    answer_r, answer_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker
        try:
            os.close(request_w)
            os.close(answer_r)
            os.dup2(request_r, 0)
            os.dup2(answer_w, 1)
            os.close(request_r)
            os.close(answer_w)
            head = os.read(0, _LIMIT.size)
            while 0 < len(head) < _LIMIT.size:
                more = os.read(0, _LIMIT.size - len(head))
                if not more:
                    break
                head += more
            if len(head) == _LIMIT.size:  # adopted; else discarded (end of input)
                _worker.main(_LIMIT.unpack(head)[0])
        finally:
            os._exit(0)
    os.close(request_r)
    os.close(answer_w)
    _forked = ForkedWorker(pid, os.fdopen(request_w, "wb"), os.fdopen(answer_r, "rb"))
    return True


def take_forked(memory: int) -> ForkedWorker | None:
    """The forked worker, now given its memory cap, for a one-worker pool; None if none."""
    global _forked
    worker, _forked = _forked, None
    if worker is None:
        return None
    try:
        worker.stdin.write(_LIMIT.pack(memory))
        worker.stdin.flush()
    except OSError:  # it is gone: the pool spawns one instead
        _close(worker)
        return None
    return worker


def discard_forked() -> None:
    """Stop the forked worker unless a pool took it."""
    global _forked
    worker, _forked = _forked, None
    if worker is not None:
        _close(worker)


def _close(worker: ForkedWorker) -> None:
    for pipe in (worker.stdin, worker.stdout):
        with contextlib.suppress(OSError):
            pipe.close()
    worker.kill()
    worker.wait()
