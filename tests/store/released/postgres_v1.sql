    CREATE TABLE seen (
        account     text NOT NULL,
        uidl        text NOT NULL,
        fingerprint text NOT NULL DEFAULT '',
        seen_at     double precision NOT NULL,
        PRIMARY KEY (account, uidl)
    );
    CREATE INDEX seen_fingerprint ON seen (account, fingerprint);
    CREATE TABLE outbox (
        id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        msg_id           text NOT NULL UNIQUE,
        account          text NOT NULL,
        uidl             text NOT NULL,
        webhook          text NOT NULL,
        size             bigint NOT NULL,
        state            text NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
        attempts         integer NOT NULL DEFAULT 0,
        created_at       double precision NOT NULL,
        next_attempt_at  double precision NOT NULL,
        claimed_by       text,
        claim_until      double precision,
        last_error       text,
        last_status      integer,
        finished_at      double precision,
        delete_requested boolean NOT NULL DEFAULT false,
        deleted_at       double precision
    );
    CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE state = 'pending';
    CREATE INDEX outbox_account ON outbox (account, uidl);
    CREATE INDEX outbox_dead ON outbox (finished_at, id) WHERE state = 'dead';
    CREATE TABLE bodies (
        msg_id  text PRIMARY KEY REFERENCES outbox (msg_id) ON DELETE CASCADE,
        payload bytea NOT NULL,
        raw     bytea
    );
    CREATE TABLE leases (
        account    text PRIMARY KEY,
        holder     text NOT NULL,
        expires_at double precision NOT NULL
    );
    CREATE INDEX leases_holder ON leases (holder);
    CREATE TABLE replicas (
        holder     text PRIMARY KEY,
        expires_at double precision NOT NULL
    );
    CREATE TABLE accounts (
        name       text PRIMARY KEY,
        config     jsonb NOT NULL,
        created_at double precision NOT NULL,
        updated_at double precision NOT NULL
    );
