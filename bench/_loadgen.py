"""Load generator: N concurrent POP3 sessions, each sending commands one at a time.

    python bench/_loadgen.py HOST PORT USER PASSWORD --sessions 500 --commands 20

Runs in its own process (so it never shares a GIL with what it measures) and prints one JSON
object: commands, seconds (the command phase only: every session has logged in before the
first command), commands_per_s, latency percentiles in ms, errors. Commands cycle through
STAT, UIDL 1, NOOP and RETR 1, so both single-line and multi-line replies are timed.

By default every session sends its next command as soon as the reply is in (a closed loop:
the machine is saturated and latency is mostly queueing, N in flight / throughput). With
`--interval S` each session sends one command every S seconds instead, from a random offset,
so the offered load is fixed (sessions / S commands per second) and, while the machine keeps
up, latency is the time a command takes rather than its place in a queue.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time

_CYCLE = (b"STAT", b"UIDL 1", b"NOOP", b"RETR 1")
_MULTI = {b"RETR 1"}


async def _reply(reader: asyncio.StreamReader, multi: bool) -> bytes:
    line = await reader.readuntil(b"\r\n")
    if not line.startswith(b"+OK"):
        raise RuntimeError(f"refused: {line[:80]!r}")
    if multi:
        await reader.readuntil(b"\r\n.\r\n")
    return line


async def _session(
    args: argparse.Namespace, ready: asyncio.Event, go: asyncio.Event, lat: list[float]
) -> None:
    reader, writer = await asyncio.open_connection(args.host, args.port, limit=1 << 20)
    try:
        await _reply(reader, False)
        for line in (b"USER " + args.user.encode(), b"PASS " + args.password.encode()):
            writer.write(line + b"\r\n")
            await _reply(reader, False)
        ready.set()
        await go.wait()
        loop = asyncio.get_running_loop()
        due = loop.time() + random.uniform(0, args.interval)
        for i in range(args.commands):
            if args.interval:
                await asyncio.sleep(max(0.0, due - loop.time()))
                due += args.interval
            cmd = _CYCLE[i % len(_CYCLE)]
            t = time.perf_counter()
            writer.write(cmd + b"\r\n")
            await _reply(reader, cmd in _MULTI)
            lat.append(time.perf_counter() - t)
        writer.write(b"QUIT\r\n")
        await _reply(reader, False)
    finally:
        writer.close()


async def _main(args: argparse.Namespace) -> dict[str, object]:
    lat: list[float] = []
    go = asyncio.Event()
    readies = [asyncio.Event() for _ in range(args.sessions)]
    sem = asyncio.Semaphore(64)  # connect in waves: a SYN flood tests accept queues, not proxies

    async def one(ready: asyncio.Event) -> None:
        async with sem:
            task = asyncio.ensure_future(_session(args, ready, go, lat))
            waiter = asyncio.ensure_future(ready.wait())
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        try:
            await task
        finally:
            waiter.cancel()

    tasks = [asyncio.ensure_future(one(r)) for r in readies]
    while not all(r.is_set() for r in readies):
        if any(t.done() and t.exception() for t in tasks):
            break
        await asyncio.sleep(0.01)
    start = time.perf_counter()
    go.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    seconds = time.perf_counter() - start
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    ms = sorted(x * 1000 for x in lat)

    def pct(p: float) -> float:
        return ms[min(len(ms) - 1, int(p * len(ms)))] if ms else float("nan")

    return {
        "sessions": args.sessions,
        "interval": args.interval,
        "commands": len(lat),
        "seconds": seconds,
        "commands_per_s": len(lat) / seconds if seconds else 0.0,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "mean_ms": statistics.fmean(ms) if ms else float("nan"),
        "errors": len(errors),
        "first_errors": errors[:3],
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("user")
    ap.add_argument("password")
    ap.add_argument("--sessions", type=int, default=500)
    ap.add_argument("--commands", type=int, default=20)
    ap.add_argument(
        "--interval", type=float, default=0.0, help="seconds between a session's commands"
    )
    args = ap.parse_args()
    random.seed(0)  # the same offsets every run
    print(json.dumps(asyncio.run(_main(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
