"""The poller's fetch stage of one source tree, in a process of its own, for `--baseline` runs.

    python -P bench/_fetch_stage.py TREE '{"host": ..., "port": ..., "user": ..., ...}'

Imports `bridge` from TREE (first on sys.path; with -P neither this script's folder nor the
current directory comes before it), runs `poll_account` for one plain POP3 account into a
fresh SQLite outbox in `db`, and prints one JSON line: seconds from connect to QUIT (after
`migrate()`, as the in-process contender), CPU seconds of the process over the same span
(its SQLite thread included), the counts, and the `bridge` it ran, so a run that picked up
the wrong tree is caught by the caller. Uses only what every tree since the fetch stage's
bench has had (`poll_account`, `AccountSpec`, `open_store`).

`"variant"` in the parameters measures the floor under the fetch stage (`--floor`), this tree
only: "insert" records each message as one row of (msg_id, raw) in a table of its own, one
transaction per group on the store's thread (the least a durable outbox could write);
"no store" records nothing; "no rows" records nothing and builds each row without the header
scan (fingerprint, Message-ID). What is left is POP3, framing and the fetch loop.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import time
from collections.abc import Sequence
from typing import Any


async def _run(args: dict[str, object]) -> dict[str, object]:
    from bridge.poller.poll import poll_account
    from bridge.poller.spec import AccountSpec
    from bridge.store import open_store

    spec = AccountSpec(
        name="bench",
        host=str(args["host"]),
        port=int(str(args["port"])),
        tls="none",
        allow_plaintext=True,
        username=str(args["user"]),
        password=str(args["password"]),
        webhook="main",
    )
    store = open_store(f"sqlite:///{args['db']}")
    await store.migrate()
    floor(store, str(args.get("variant", "full")))
    try:
        cpu = time.process_time()
        start = time.perf_counter()
        report = await poll_account(spec, store)
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu
        pending = await store.pending_count()
    finally:
        await store.close()
    return {"seconds": seconds, "cpu_s": cpu, "recorded": report.recorded, "pending": pending}


def floor(store: Any, variant: str) -> None:
    """Replace what `variant` leaves out (module docstring) of the fetch stage."""
    if variant == "full":
        return
    from bridge.poller import fetch
    from bridge.store.base import NewMessage

    async def nothing(messages: Sequence[Any], now: float, *, replay: bool = False) -> None:
        return None

    def insert(conn: sqlite3.Connection, messages: Sequence[Any]) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS floor (msg_id text PRIMARY KEY, raw blob)")
        conn.execute("BEGIN IMMEDIATE")
        for at in range(0, len(messages), 100):
            chunk = messages[at : at + 100]
            conn.execute(
                "INSERT INTO floor (msg_id, raw) VALUES " + ", ".join(["(?, ?)"] * len(chunk)),
                [v for m in chunk for v in (m.msg_id, m.raw)],
            )
        conn.execute("COMMIT")

    async def raw_rows(messages: Sequence[Any], now: float, *, replay: bool = False) -> None:
        await store._run(lambda conn: insert(conn, messages))

    def bare_row(spec: Any, uidl: str, raw: bytes, session: str | None) -> Any:
        return NewMessage(
            account=spec.name,
            uidl=uidl,
            msg_id="msg_" + uidl,
            webhook=spec.webhook,
            size=len(raw),
            fingerprint="",
            payload=b"\0",
            raw=raw,
            delete_after_delivery=False,
        )

    if variant == "insert":
        store.record = raw_rows
    elif variant in ("no store", "no rows"):
        store.record = nothing
        if variant == "no rows":
            fetch.deferred_account_rows = lambda spec, session: (
                lambda uidl, raw, size: bare_row(spec, uidl, raw, session)
            )
    else:
        raise SystemExit(f"unknown variant {variant!r}")


def main() -> int:
    tree, params = sys.argv[1], json.loads(sys.argv[2])
    sys.path.insert(0, tree)
    result = asyncio.run(_run(params))
    import bridge

    result["bridge"] = bridge.__file__
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
