"""Pipelined batches (RFC 2449 §6.6): a writer that sends through a bounded window of credit
while the caller reads the replies in order, as many at a time as have arrived.

At most `window` commands are unanswered. The writer sends whatever the window allows in one
write and then sleeps until a quarter of the window is free again, so a long batch costs a
write and a wake-up per dozen commands, not per command. The reader gives one credit back per
reply it has read in full, and hands on every reply already buffered in one list (a read
holds a dozen 5 KB messages): one await and one yield per read, not per reply. Neither side
can fill the other's buffers: the server's replies are consumed while commands are still
going out.

Failure rules (the caller's `abandon` implements them; the client aborts the connection): a
batch that ends early — an -ERR, the link dying, the caller no longer iterating — must not
leave replies in flight, since they would be read as answers to later commands. The writer's
own error is surfaced by the reader when the reader is the first to notice, and is marked as
seen either way so asyncio never reports it as "never retrieved".
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import TypeVar

from bridge.pop3.events import Command

__all__ = ["pipelined"]

T = TypeVar("T")


async def pipelined(
    commands: Sequence[Command],
    *,
    window: int,
    encode: Callable[[Command], bytes],
    write: Callable[[bytes], Awaitable[None]],
    replies: Callable[[int], Awaitable[Sequence[T]]],
    abandon: Callable[[], None],
) -> AsyncGenerator[Sequence[T], None]:
    """Send `commands` through a window of `window`; yield their replies in order, in lists.

    `encode` turns a command into its line (and records the expected reply); it may raise to
    stop the writer. `replies(i)` reads the whole replies from `commands[i]` on, at least one,
    only to commands already sent, and raises on -ERR. `abandon` is called when the batch does
    not finish (see the module docstring).
    """
    window = max(1, window)
    credit = window
    refill = max(1, window // 4)
    room = asyncio.Event()

    async def writer() -> None:
        nonlocal credit
        sent = 0
        while sent < len(commands):
            while credit <= 0:
                room.clear()
                await room.wait()
            take = min(credit, len(commands) - sent)
            credit -= take
            data = b"".join(encode(c) for c in commands[sent : sent + take])
            sent += take
            await write(data)

    task = asyncio.create_task(writer())
    # The reader may fail first (the link died under both): the writer's own error must
    # still count as seen, or asyncio logs it as "never retrieved" with a traceback.
    task.add_done_callback(_consume_error)
    done = False
    read = 0
    try:
        while read < len(commands):
            if task.done() and not task.cancelled() and (error := task.exception()) is not None:
                raise error
            values = await replies(read)
            read += len(values)
            credit += len(values)
            if credit >= refill:
                room.set()
            yield values
        done = True
        await task
    finally:
        if not task.done():
            task.cancel()
        if not done:
            abandon()


def _consume_error(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()
