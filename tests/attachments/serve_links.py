"""`python -m tests.attachments.serve_links STATE_URL PORT_FILE`: a process that only serves
links (the memory test measures its RSS); writes its port to PORT_FILE once listening."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from bridge.attachments.server import LinkServer
from bridge.store import open_store
from tests.attachments.support import minter


async def main(url: str, port_file: Path) -> None:
    store = open_store(url)
    await store.migrate()
    server = LinkServer(store, minter().signer, "127.0.0.1", 0, sweep_interval=3600)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        port_file.write_text(str(server.port))
        await stop.wait()
    await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
