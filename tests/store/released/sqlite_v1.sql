    CREATE TABLE seen (
        account     TEXT NOT NULL,
        uidl        TEXT NOT NULL,
        fingerprint TEXT NOT NULL DEFAULT '',
        seen_at     REAL NOT NULL,
        PRIMARY KEY (account, uidl)
    );
    CREATE INDEX seen_fingerprint ON seen (account, fingerprint);
    CREATE TABLE outbox (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        msg_id           TEXT NOT NULL UNIQUE,
        account          TEXT NOT NULL,
        uidl             TEXT NOT NULL,
        webhook          TEXT NOT NULL,
        size             INTEGER NOT NULL,
        state            TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
        attempts         INTEGER NOT NULL DEFAULT 0,
        created_at       REAL NOT NULL,
        next_attempt_at  REAL NOT NULL,
        claimed_by       TEXT,
        claim_until      REAL,
        last_error       TEXT,
        last_status      INTEGER,
        finished_at      REAL,
        delete_requested INTEGER NOT NULL DEFAULT 0,
        deleted_at       REAL
    );
    CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE state = 'pending';
    CREATE INDEX outbox_account ON outbox (account, uidl);
    CREATE INDEX outbox_dead ON outbox (finished_at, id) WHERE state = 'dead';
    CREATE TABLE bodies (
        msg_id  TEXT PRIMARY KEY REFERENCES outbox (msg_id) ON DELETE CASCADE,
        payload BLOB NOT NULL,
        raw     BLOB
    );
    CREATE TABLE leases (
        account    TEXT PRIMARY KEY,
        holder     TEXT NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE INDEX leases_holder ON leases (holder);
    CREATE TABLE replicas (
        holder     TEXT PRIMARY KEY,
        expires_at REAL NOT NULL
    );
    CREATE TABLE accounts (
        name       TEXT PRIMARY KEY,
        config     TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
