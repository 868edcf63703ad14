"""A minimal asyncio transport wrapper: buffered reads with a timeout, writes with back-pressure.

Streams (asyncio.StreamReader) would hide bytes in their own buffer across STLS; owning the buffer
here lets the client prove nothing arrived before the TLS handshake, and avoids copies: what
arrives is kept as the transport's chunks, and a read that finds one chunk returns it as it is
(the fetch stage's reads are mostly one chunk each; a bytearray buffer copied every byte in and
out again, two copies of each fetched message on the event loop).

Public: the POP3 client reads and writes through it, and so do both legs of the proxy (the
client's leg is accepted with `on_connect` and `half_close=True`; the upstream leg is the
client's own, taken over with `POP3Client.detach()`). What a server needs is a constructor
option, not a subclass.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import cast

from bridge.pop3.errors import ConnectionLost, ReadTimeout, TLSFailure

__all__ = ["StreamProtocol"]

_HIGH_WATER = 1 << 20  # pause reading when this much is buffered and unread


class StreamProtocol(asyncio.Protocol):
    """`read()` / `write()` / `drain()` over one transport.

    `on_connect` is called with the protocol once its transport exists (a server starts the
    session there). With `half_close=True` the transport stays open for writing after the
    peer's EOF: a client that half-closes after its last command still reads the replies.
    """

    def __init__(
        self,
        read_timeout: float | None,
        *,
        on_connect: Callable[[StreamProtocol], None] | None = None,
        half_close: bool = False,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        # Applies to every single read and to every wait for the send buffer to drain.
        self.read_timeout = read_timeout
        self._on_connect = on_connect
        self._half_close = half_close
        # The running loop, unless the caller has it at hand (each look-up is a getpid).
        self._loop = loop if loop is not None else asyncio.get_running_loop()
        # Received and not yet read: the transport's chunks, and their total size.
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._eof = False
        self._exc: BaseException | None = None
        self._reader: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._paused_reading = False
        # One timer per connection for `read_timeout` (see `read`): when the current read
        # gives up, and the loop's handle that checks it (None while none is armed).
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None

    # -- protocol callbacks ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's TCP and SSL transports implement the
        # whole Transport interface without subclassing asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        if self._on_connect is not None:
            self._on_connect(self)

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > _HIGH_WATER and self.transport and not self._paused_reading:
            self._paused_reading = True
            self.transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake_reader()
        return self._half_close

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._exc = exc
        if self._timer is not None:
            # Or the loop's timer heap keeps this protocol (and its buffer) until it fires.
            self._timer.cancel()
            self._timer = None
        self._wake_reader()
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def pause_writing(self) -> None:
        if self._drain is None or self._drain.done():
            self._drain = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def _expire(self) -> None:
        """The connection's read timer: fail the waiting read if its deadline has passed."""
        self._timer = None
        reader = self._reader
        if reader is None or reader.done() or self.read_timeout is None:
            return  # nothing waits: the next read arms a new timer
        if self._loop.time() < self._deadline:
            self._timer = self._loop.call_at(self._deadline, self._expire)
            return
        reader.set_exception(ReadTimeout(f"server sent nothing for {self.read_timeout:g} s"))

    def _wake_reader(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.set_result(None)

    # -- caller API ------------------------------------------------------------------------
    def buffered(self) -> int:
        return self._buffered

    async def read(self) -> bytes:
        """Everything received so far, waiting up to `read_timeout` for something; b"" at EOF.

        The timeout costs one timer per connection, not one per read: a read only moves
        `_deadline`, and the armed timer, when it fires, either fails the read that is still
        waiting past its deadline or re-arms itself for that read's deadline. An idle poll reads
        seven replies; arming and cancelling an `asyncio.timeout` for each was about a tenth of
        its CPU.
        """
        if not self._buffered and not self._eof:
            reader = self._reader = self._loop.create_future()
            timeout = self.read_timeout
            if timeout is not None:  # None: a proxy leg, which waits as long as it takes
                deadline = self._deadline = self._loop.time() + timeout
                timer = self._timer
                if timer is None or timer.when() > deadline:  # none armed, or a later one
                    if timer is not None:
                        timer.cancel()
                    self._timer = self._loop.call_at(deadline, self._expire)
            try:
                await reader
            finally:
                self._reader = None
        if self._buffered:
            chunks = self._chunks
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            chunks.clear()
            self._buffered = 0
            if self._paused_reading and self.transport is not None:
                self._paused_reading = False
                self.transport.resume_reading()
            return data
        if self._exc is not None:
            if isinstance(self._exc, ssl.SSLError):
                raise TLSFailure(f"TLS error: {self._exc.reason or self._exc}") from self._exc
            raise ConnectionLost(f"connection failed: {self._exc}") from self._exc
        return b""

    def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionLost("connection is closed")
        self.transport.write(data)

    @property
    def writing_paused(self) -> bool:
        """The transport's send buffer is over its high-water mark: `drain()` would wait."""
        return self._drain is not None and not self._drain.done()

    async def drain(self) -> None:
        timeout = self.read_timeout
        waiter = self._drain
        if waiter is None or waiter.done():
            return
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(waiter)
        except TimeoutError:
            raise ReadTimeout(f"server accepted no data for {timeout:g} s") from None
        if self.transport is None or self.transport.is_closing():
            raise ConnectionLost("connection closed while sending")
