"""Content served by signed link, in SQL (`LinkStore`); see bridge/attachments/server.py for
why content is decoded once at fetch and kept in pieces.

Rules kept here once for every backend:
* Content is written with its message, in `record`'s transaction (`insert_links`), one
  `LINK_CHUNK` piece per statement, so recording never holds a second copy of a big
  attachment. A message recorded again under the same id replaces what an earlier copy left.
* The sweep purges a part only when every link minted for it has expired AND its outbox row
  is neither pending nor dead (retries and replays still need the content): the chunks go,
  the record stays as a tombstone (410) for `LINK_TOMBSTONE_SECONDS`.
"""

from __future__ import annotations

from bridge.store.base import (
    LINK_CHUNK,
    LINK_TOMBSTONE_SECONDS,
    LinkStore,
    NewMessage,
    StoredLink,
)
from bridge.store.sql import Execute, Fetch, SQLPart, Tx, atomic, read

__all__ = ["LinkSQL", "insert_links"]

# Parts whose content the sweep may drop at `now` (both placeholders are `now`).
_EXPIRED = (
    "purged_at IS NULL AND expires_at <= ? AND NOT EXISTS (SELECT 1 FROM outbox o "
    "WHERE o.msg_id = links.msg_id AND o.state IN ('pending', 'dead'))"
)


def insert_links(m: NewMessage, now: float) -> Tx[None]:
    """The link records and content pieces of one freshly recorded message."""
    yield Execute("DELETE FROM link_chunks WHERE msg_id = ?", (m.msg_id,))
    yield Execute("DELETE FROM links WHERE msg_id = ?", (m.msg_id,))
    expires = m.links_expire if m.links_expire is not None else now
    for link in m.links:
        yield Execute(
            "INSERT INTO links (msg_id, part, size, sha256, content_type, filename, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                m.msg_id,
                link.part,
                link.size,
                link.sha256,
                link.content_type,
                link.filename,
                expires,
            ),
        )
        for seq, chunk in enumerate(link.chunks(LINK_CHUNK)):
            yield Execute(
                "INSERT INTO link_chunks (msg_id, part, seq, data) VALUES (?, ?, ?, ?)",
                (m.msg_id, link.part, seq, chunk),
            )


class LinkSQL(SQLPart, LinkStore):
    @read
    def stored_link(self, msg_id: str, part: int) -> Tx[StoredLink | None]:
        rows = yield Fetch(
            "SELECT msg_id, part, size, sha256, content_type, filename, expires_at, "
            "purged_at IS NOT NULL FROM links WHERE msg_id = ? AND part = ?",
            (msg_id, part),
        )
        return StoredLink.from_row(rows[0]) if rows else None

    @read
    def link_chunk(self, msg_id: str, part: int, seq: int) -> Tx[bytes | None]:
        rows = yield Fetch(
            "SELECT data FROM link_chunks WHERE msg_id = ? AND part = ? AND seq = ?",
            (msg_id, part, seq),
        )
        return bytes(rows[0][0]) if rows else None

    @atomic
    def purge_links(self, now: float) -> Tx[tuple[int, int]]:
        d = self.dialect
        rows = yield Fetch(
            f"UPDATE links SET purged_at = ? WHERE {_EXPIRED} RETURNING msg_id, part, size",
            (now, now),
        )
        for msg_id, part, _ in rows:
            yield Execute(
                "DELETE FROM link_chunks WHERE msg_id = ? AND part = ?", (msg_id, int(part))
            )
        if rows:
            yield Execute(
                "UPDATE bodies SET raw = NULL WHERE raw IS NOT NULL AND id IN "
                "(SELECT id FROM outbox WHERE deleted_at IS NOT NULL "
                f"AND {d.in_list('msg_id', 'text')})",
                (d.array({r[0] for r in rows}),),
            )
        yield Execute("DELETE FROM links WHERE purged_at < ?", (now - LINK_TOMBSTONE_SECONDS,))
        return len(rows), sum(int(r[2]) for r in rows)

    @read
    def link_bytes(self) -> Tx[int]:
        rows = yield Fetch("SELECT coalesce(sum(size), 0) FROM links WHERE purged_at IS NULL")
        return int(rows[0][0])
