"""One lifecycle for every long-lived server object: start, ready, stop.

Theory of operation
-------------------
aiosmtpd's `Controller` idea, for asyncio code: a `Service` subclass writes only what is its
own — `_start()` (bind, open sessions, spawn tasks), `_stop(grace)` (close listeners) and
`_finish()` (what must wait until the last connection is gone) — and the base owns the rules
every server here had written for itself:

* `start()` runs `_start()`. If it fails half-way (the second of two listeners cannot bind),
  `_stop(0)` undoes what was set up and the error propagates unchanged; the service is then
  stopped. Starting a running service does nothing; a stopped one may be started again (a
  test restarting a server on its port).
* `running` is true from the end of a successful `start()` until `stop()` begins;
  `wait_ready()` waits for it (a test or a supervisor polling nothing). A server's own
  readiness check (the proxy's: every listener serving) builds on it.
* `stop(grace)` is idempotent and safe to call concurrently: the first call runs `_stop(grace)`
  and then ends the tracked tasks, later calls wait for that and return. Stopping a service
  that never started does nothing.
* Connection tasks are registered with `track(task)`. The one shutdown path for them: wait up
  to `grace` seconds for them to finish by themselves, cancel whatever is left, and wait for
  the cancelled tasks, so nothing outlives `stop()`. If the caller of `stop()` is itself
  cancelled while it waits (an operator's second signal), the remaining tasks are cancelled
  and awaited all the same before the cancellation propagates.

`async with service:` is `start()` ... `stop()`. Subclasses that expose other names (the
webhook sender's `close()`) alias them to `stop()`.

This module imports nothing from `bridge`, so every layer may use it.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Literal, Self

__all__ = ["Service", "ServiceStateError"]

Phase = Literal["new", "starting", "running", "stopping", "stopped"]


class ServiceStateError(RuntimeError):
    """`start()` was called while the service starts or stops (a bug), or `wait_ready()` on a
    service that stopped."""


class Service:
    """Base class: subclasses implement `_start()` and `_stop(grace)`; see the module docstring."""

    def __init__(self) -> None:
        self._phase: Phase = "new"
        self._tasks: set[asyncio.Task[None]] = set()
        self._ready_event: asyncio.Event | None = None
        self._stopped_event: asyncio.Event | None = None

    # -- what subclasses write -----------------------------------------------------------------
    async def _start(self) -> None:
        """Set everything up; may raise (then `_stop(0)` runs)."""

    async def _stop(self, grace: float | None) -> None:
        """Stop accepting new work (close listeners). Tracked tasks are ended by the base."""

    async def _finish(self) -> None:
        """Last step, after every tracked task has ended (e.g. `Server.wait_closed()`)."""

    def _grace(self, grace: float | None) -> float:
        """How long tracked tasks get to finish when `stop()` is given no grace."""
        return 0.0 if grace is None else grace

    # -- the lifecycle ------------------------------------------------------------------------
    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def running(self) -> bool:
        """Started and not stopping: what a readiness check builds on."""
        return self._phase == "running"

    @property
    def stopping(self) -> bool:
        """True from the moment `stop()` begins (new connections should be refused)."""
        return self._phase in ("stopping", "stopped")

    async def start(self) -> None:
        if self._phase == "running":
            return
        if self._phase not in ("new", "stopped"):
            raise ServiceStateError(f"{type(self).__name__} cannot start: it is {self._phase}")
        if self._phase == "stopped":
            self._ready_event = self._stopped_event = None
        self._phase = "starting"
        try:
            await self._start()
        except BaseException:
            self._phase = "stopping"
            try:
                await self._shutdown(0.0)
            finally:
                self._phase = "stopped"
                self._events()[1].set()
            raise
        self._phase = "running"
        self._events()[0].set()

    async def wait_ready(self) -> None:
        """Return once `start()` has succeeded; raise `ServiceStateError` if it never will."""
        if self._phase == "running":
            return
        if self._phase in ("stopping", "stopped"):
            raise ServiceStateError(f"{type(self).__name__} is {self._phase}")
        ready, stopped = self._events()
        waiters = [asyncio.ensure_future(ready.wait()), asyncio.ensure_future(stopped.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if not self.running:  # stopped (or a failed start) while we waited
            raise ServiceStateError(f"{type(self).__name__} is {self._phase}")

    async def stop(self, grace: float | None = None) -> None:
        if self._phase == "new":
            self._phase = "stopped"
            self._events()[1].set()
            return
        if self._phase in ("stopping", "stopped"):
            await self._events()[1].wait()
            return
        self._phase = "stopping"
        try:
            await self._shutdown(self._grace(grace), grace)
        finally:
            self._phase = "stopped"
            self._events()[1].set()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- tracked tasks --------------------------------------------------------------------------
    def track(self, task: asyncio.Task[None]) -> None:
        """Register a connection task: `stop()` gives it the grace period, then cancels it."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def task_count(self) -> int:
        return len(self._tasks)

    async def _shutdown(self, wait: float, grace: float | None = 0.0) -> None:
        try:
            await self._stop(grace)
        finally:
            try:
                await self._end_tasks(wait)
            finally:
                await self._finish()

    async def _end_tasks(self, wait: float) -> None:
        try:
            if self._tasks and wait > 0:
                await asyncio.wait(set(self._tasks), timeout=wait)
        finally:
            while self._tasks:
                left = set(self._tasks)
                for task in left:
                    task.cancel()
                await asyncio.gather(*left, return_exceptions=True)

    def _events(self) -> tuple[asyncio.Event, asyncio.Event]:
        if self._ready_event is None or self._stopped_event is None:
            self._ready_event, self._stopped_event = asyncio.Event(), asyncio.Event()
        return self._ready_event, self._stopped_event
