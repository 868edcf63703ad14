"""CPU cost of the POP3 framing, in process, no sockets: the client's replies and the relay's.

    python bench/framer_cost.py [--messages 2000] [--rounds 15] [--baseline DIR]

- client: 2,000 pipelined RETR replies (5 KB messages from `generate_messages`, dot-stuffed as
  a server sends them, fed in 64 KiB reads) read by `ClientConnection` through events
  (`next_event`, what every reply used before span mode), through span mode one reply at a
  time (`next_reply`) and a read at a time (`next_replies`, what batches use now). All give
  back the same bodies; the script checks it.
- relay: the proxy's sans-I/O `Relay` in TRANSACTION, one RETR at a time (command in, whole
  reply in, as a sequential client drives it) and 60 pipelined RETRs fed in 64 KiB reads.

Figures are CPU microseconds per message (process_time), the best of `--rounds` (this machine
is shared: the minimum is the figure least moved by others), each tree measured in its own
subprocess `--repeat` times, alternated. `--baseline DIR` adds another tree (e.g. `git archive
COMMIT | tar -x -C DIR`; one without span mode is measured through events only), so a change is
compared in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__" and os.environ.get("FRAMER_COST_TREE"):
    sys.path.insert(0, os.environ["FRAMER_COST_TREE"])
elif str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bridge.pop3.events import Command, DataChunk, EndOfMultiline, NeedData  # noqa: E402
from bridge.pop3.state import State  # noqa: E402
from bridge.pop3.wire import ResponseFramer, dot_stuff  # noqa: E402
from bridge.proxy.handler import ProxySession  # noqa: E402
from bridge.proxy.policy import Policy, PolicyRules  # noqa: E402
from bridge.proxy.relay import Relay  # noqa: E402
from bridge.testing.samples import generate_messages  # noqa: E402

READ = 64 * 1024


Case = tuple[Callable[[], Any], Callable[[Any], int]]  # (set-up, untimed; run it, timed)


def best(case: Case, rounds: int) -> float:
    """Least CPU microseconds per message over `rounds` runs (the run returns a count)."""
    prepare, run = case
    least = float("inf")
    for _ in range(rounds):
        state = prepare()
        start = time.process_time()
        count = run(state)
        least = min(least, (time.process_time() - start) / count)
    return least * 1e6


def client_cases(messages: list[bytes]) -> dict[str, Case]:
    from bridge.pop3.connection import ClientConnection

    wire = b"".join(b"+OK %d octets\r\n" % len(m) + dot_stuff(m) for m in messages)
    reads = [wire[i : i + READ] for i in range(0, len(wire), READ)]

    def connection() -> ClientConnection:
        conn = ClientConnection(line_ending="crlf")
        conn.receive_data(b"+OK ready\r\n")
        conn.next_event()
        conn._session.state = State.TRANSACTION  # as after a login
        for n in range(1, len(messages) + 1):
            conn.send(Command("RETR", (str(n),)))
        return conn

    def by_events(conn: ClientConnection) -> list[bytes]:
        feed, body = iter(reads), bytearray()
        bodies: list[bytes] = []
        while len(bodies) < len(messages):
            event = conn.next_event()
            if isinstance(event, NeedData):
                conn.receive_data(next(feed))
            elif isinstance(event, DataChunk):
                body += event.data
            elif isinstance(event, EndOfMultiline):
                bodies.append(bytes(body))
                body.clear()
        return bodies

    def by_spans(conn: ClientConnection, batches: bool = False) -> list[bytes]:
        # With `batches`, as `Channel._replies` reads a batch: every whole reply buffered at
        # once, else one.
        feed = iter(reads)
        bodies: list[bytes] = []
        while len(bodies) < len(messages):
            if batches:
                taken = conn.next_replies(len(messages) - len(bodies))
                if taken:
                    bodies += taken
                    continue
            got = conn.next_reply(1 << 20)
            if isinstance(got, NeedData):
                conn.receive_data(next(feed))
            else:
                assert got is not None
                bodies.append(got)
        return bodies

    def by_batches(conn: ClientConnection) -> list[bytes]:
        return by_spans(conn, batches=True)

    events: Case = (connection, lambda conn: len(by_events(conn)))
    if not hasattr(ClientConnection, "next_reply"):
        return {"client, events": events}
    if by_events(connection()) != by_spans(connection()) or by_spans(connection()) != messages:
        raise SystemExit("span mode and events gave different bodies")
    cases = {
        "client, events": events,
        "client, span mode": (connection, lambda c: len(by_spans(c))),
    }
    if hasattr(ClientConnection, "next_replies"):
        if by_batches(connection()) != messages:
            raise SystemExit("batch reads gave different bodies")
        cases["client, batch reads"] = (connection, lambda c: len(by_batches(c)))
    return cases


def relay_cases(messages: list[bytes]) -> dict[str, Case]:
    replies = [b"+OK %d octets\r\n" % len(m) + dot_stuff(m) for m in messages]

    def relay() -> Relay:
        made = Relay(
            session=ProxySession(Policy(PolicyRules())),
            upstream=ResponseFramer(line_ending="crlf", expect_greeting=False),
        )
        made._state.state = State.TRANSACTION  # as after a relayed login
        return made

    def sequential(r: Relay) -> int:
        for n, reply in enumerate(replies, 1):
            r.client_data(b"RETR %d\r\n" % n)
            r.take()
            r.upstream_data(reply)
            if len(r.take().exchanges) != 1:
                raise SystemExit("the relay did not answer a RETR")
        return len(replies)

    def pipelined(r: Relay) -> int:
        done = 0
        batch = replies[:60]
        r.client_data(b"".join(b"RETR %d\r\n" % n for n in range(1, len(batch) + 1)))
        r.take()
        wire = b"".join(batch)
        for i in range(0, len(wire), READ):
            r.upstream_data(wire[i : i + READ])
            done += len(r.take().exchanges)
        if done != len(batch):
            raise SystemExit("the relay did not answer every RETR")
        return done

    return {
        "relay, sequential RETR": (relay, sequential),
        "relay, 60 pipelined RETR": (relay, pipelined),
    }


def measure(messages: int, rounds: int, client: bool) -> dict[str, float]:
    mail = generate_messages(messages, seed=7, size=5000)
    cases = {**(client_cases(mail) if client else {}), **relay_cases(mail)}
    return {name: best(run, rounds) for name, run in cases.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--baseline", type=Path, metavar="DIR")
    ap.add_argument("--repeat", type=int, default=3, help="alternated runs of each tree")
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.json:
        print(json.dumps(measure(args.messages, args.rounds, client=True)))
        return 0
    trees = {"this tree": ROOT}
    if args.baseline is not None:
        trees[f"baseline ({args.baseline.name})"] = args.baseline.resolve()
    figures: dict[str, dict[str, float]] = {}
    for _ in range(args.repeat):  # alternated, so load changes hit both trees alike
        for label, tree in trees.items():
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--json",
                    "--messages",
                    str(args.messages),
                    "--rounds",
                    str(args.rounds),
                ],
                env={**os.environ, "FRAMER_COST_TREE": str(tree)},
                capture_output=True,
                text=True,
                check=True,
            )
            row = figures.setdefault(label, {})
            for name, value in json.loads(out.stdout).items():
                row[name] = min(row.get(name, value), value)
    rounds = args.rounds * args.repeat
    print(f"CPU us per message, best of {rounds} rounds; load {os.getloadavg()[0]:.1f}")
    names = sorted({name for row in figures.values() for name in row})
    print(f"  {'case':26}" + "".join(f"{tree:>22}" for tree in figures))
    for name in names:
        cells = "".join(
            f"{row[name]:22.2f}" if name in row else f"{'-':>22}" for row in figures.values()
        )
        print(f"  {name:26}{cells}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
