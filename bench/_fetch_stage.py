"""The poller's fetch stage of one source tree, in a process of its own, for `--baseline` runs.

    python -P bench/_fetch_stage.py TREE '{"host": ..., "port": ..., "user": ..., ...}'

Imports `bridge` from TREE (first on sys.path; with -P neither this script's folder nor the
current directory comes before it), runs `poll_account` for one plain POP3 account into a
fresh SQLite outbox in `db`, and prints one JSON line: seconds from connect to QUIT (after
`migrate()`, as the in-process contender), CPU seconds of the process over the same span
(its SQLite thread included), the counts, and the `bridge` it ran, so a run that picked up
the wrong tree is caught by the caller. Uses only what every tree since the fetch stage's
bench has had (`poll_account`, `AccountSpec`, `open_store`).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time


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
