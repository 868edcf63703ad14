"""Watch what a `POP3Client` writes, to assert on round trips and batching."""

from __future__ import annotations

from bridge.pop3.client import POP3Client


def record_writes(client: POP3Client) -> list[bytes]:
    """Every write `client` makes from now on, in order, as one list entry per write call
    (the batching is what the tests check, so writes are not joined)."""
    writes: list[bytes] = []
    write = client._io.write

    def recorded(data: bytes) -> None:
        writes.append(data)
        write(data)

    client._io.write = recorded  # type: ignore[method-assign]
    return writes
