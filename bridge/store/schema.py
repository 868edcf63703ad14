"""The schema, written once for every backend: each entry brings it from version i to i+1.

Never edit a released entry (databases in the field were made by it): append a new one. Types
that the databases spell differently are `{placeholders}` filled in by the dialect
(`COLUMN_TYPES`); everything else is plain SQL both understand. Version 1 is, column for
column, the schema the two separate backends shipped before they became one store
(tests/store/test_migrations.py opens databases made by that code).
"""

from __future__ import annotations

__all__ = ["COLUMN_TYPES", "DIALECTS", "MIGRATIONS"]

# The order of the spellings in COLUMN_TYPES.
DIALECTS = ("sqlite", "postgresql")

# The schema's `{kind}` column types, side by side: kind -> (SQLite, PostgreSQL).
COLUMN_TYPES: dict[str, tuple[str, str]] = {
    "real": ("REAL", "double precision"),
    "serial": (
        "INTEGER PRIMARY KEY AUTOINCREMENT",
        "bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    ),
    "bigint": ("INTEGER", "bigint"),
    "bool": ("INTEGER", "boolean"),
    "blob": ("BLOB", "bytea"),
    "json": ("TEXT", "jsonb"),
}

MIGRATIONS: tuple[str, ...] = (
    # 1: seen UIDLs, outbox + bodies, account leases + replicas, accounts.
    """
    CREATE TABLE seen (
        account     text NOT NULL,
        uidl        text NOT NULL,
        fingerprint text NOT NULL DEFAULT '',
        seen_at     {real} NOT NULL,
        PRIMARY KEY (account, uidl)
    );
    CREATE INDEX seen_fingerprint ON seen (account, fingerprint);
    CREATE TABLE outbox (
        id               {serial},
        msg_id           text NOT NULL UNIQUE,
        account          text NOT NULL,
        uidl             text NOT NULL,
        webhook          text NOT NULL,
        size             {bigint} NOT NULL,
        state            text NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
        attempts         integer NOT NULL DEFAULT 0,
        created_at       {real} NOT NULL,
        next_attempt_at  {real} NOT NULL,
        claimed_by       text,
        claim_until      {real},
        last_error       text,
        last_status      integer,
        finished_at      {real},
        delete_requested {bool} NOT NULL DEFAULT FALSE,
        deleted_at       {real}
    );
    CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE state = 'pending';
    CREATE INDEX outbox_account ON outbox (account, uidl);
    CREATE INDEX outbox_dead ON outbox (finished_at, id) WHERE state = 'dead';
    CREATE TABLE bodies (
        msg_id  text PRIMARY KEY REFERENCES outbox (msg_id) ON DELETE CASCADE,
        payload {blob} NOT NULL,
        raw     {blob}
    );
    CREATE TABLE leases (
        account    text PRIMARY KEY,
        holder     text NOT NULL,
        expires_at {real} NOT NULL
    );
    CREATE INDEX leases_holder ON leases (holder);
    CREATE TABLE replicas (
        holder     text PRIMARY KEY,
        expires_at {real} NOT NULL
    );
    CREATE TABLE accounts (
        name       text PRIMARY KEY,
        config     {json} NOT NULL,
        created_at {real} NOT NULL,
        updated_at {real} NOT NULL
    );
    """,
    # 2: "this account has been polled before" is a flag of its own, no longer the seen-UIDL
    # marker ' initialised' (a leading space, which no real UIDL has), which is moved over.
    """
    CREATE TABLE polled (
        account         text PRIMARY KEY,
        first_polled_at {real} NOT NULL
    );
    INSERT INTO polled (account, first_polled_at)
        SELECT account, seen_at FROM seen WHERE uidl = ' initialised';
    DELETE FROM seen WHERE uidl = ' initialised';
    """,
    # 3: content served by signed link (bridge/attachments). Not tied to the outbox row, which
    # `forget_missing` may drop while links to the message are still valid.
    """
    CREATE TABLE links (
        msg_id       text NOT NULL,
        part         integer NOT NULL,
        size         {bigint} NOT NULL,
        sha256       text NOT NULL,
        content_type text NOT NULL,
        filename     text,
        expires_at   {real} NOT NULL,
        purged_at    {real},
        PRIMARY KEY (msg_id, part)
    );
    CREATE INDEX links_held ON links (expires_at) WHERE purged_at IS NULL;
    CREATE TABLE link_chunks (
        msg_id text NOT NULL,
        part   integer NOT NULL,
        seq    integer NOT NULL,
        data   {blob} NOT NULL,
        PRIMARY KEY (msg_id, part, seq)
    );
    """,
    # 4: the custody trail (one row per event of a message; see base.CustodyEvent).
    """
    CREATE TABLE custody (
        id         {serial},
        msg_id     text NOT NULL,
        account    text NOT NULL,
        uidl       text NOT NULL,
        at         {real} NOT NULL,
        event      text NOT NULL,
        session    text,
        status     integer,
        message_id text,
        detail     text
    );
    CREATE INDEX custody_msg ON custody (msg_id, id);
    CREATE INDEX custody_uidl ON custody (account, uidl);
    CREATE INDEX custody_message_id ON custody (message_id) WHERE message_id IS NOT NULL;
    CREATE INDEX custody_delivered ON custody (at) WHERE event = 'delivered';
    """,
    # 5: no index of the seen set by fingerprint. Its keys are hashes, so every commit of a
    # batch of fetched mail dirtied most of its leaf pages: recording 2,000 messages into a
    # new SQLite database wrote 48.4 MB with it and 43.7 MB without, and the more mail the
    # set holds, the more pages each commit rewrites. Its one reader, `known_fingerprints`,
    # runs only when a poll suspects a mass UIDL change, and reads the account's rows by the
    # primary key (account, uidl) instead.
    """
    DROP INDEX IF EXISTS seen_fingerprint;
    """,
    # 6: bodies keyed by their outbox row's id instead of its msg_id. msg_id is a hash, so
    # each body's key went to a random page of the key's index and every commit of fetched
    # mail rewrote most of that index's leaf pages; the row ids only grow, so bodies now
    # append (on SQLite the id is the table's own rowid: no index at all). Every reader
    # reaches a body through its outbox row. Bodies whose row is gone (none, with the foreign
    # key enforced) are not copied.
    """
    CREATE TABLE bodies_v6 (
        id      {bigint} PRIMARY KEY REFERENCES outbox (id) ON DELETE CASCADE,
        payload {blob} NOT NULL,
        raw     {blob}
    );
    INSERT INTO bodies_v6 (id, payload, raw)
        SELECT o.id, b.payload, b.raw FROM bodies b JOIN outbox o ON o.msg_id = b.msg_id;
    DROP TABLE bodies;
    ALTER TABLE bodies_v6 RENAME TO bodies;
    """,
)
