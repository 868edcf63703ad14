"""The one way a fetched message becomes an outbox row, for the poller and the proxy's tap alike.

Both feed raw RFC 5322 bytes (or, for a message over the size limit, only its headers) and get
the `NewMessage` that `Store.record` makes durable: the parsed payload in its Standard Webhooks
envelope, encoded once, with the id derived from account and UIDL. Keeping it in one place keeps
the two sources' payloads identical but for `source`.

Parsing MIME is most of the CPU a message costs, and mail is untrusted, so the work is split
by job (issue 18, issue 19):

- `rows`: which row a message becomes (deferred, built now, built with attachment links) and
  `isolated_row`, which sends every parse that must happen now to the parse workers;
- `deferred`: `DeferredPayload`, which builds a deferred row's body when it is delivered. Doing
  it then lets the fetch make the mailbox durable at the speed of the POP3 link and keeps a
  crash or a slow parse from holding a POP3 session open;
- `pool`: `ParsePool`, the worker processes that run each parse with a CPU-time and memory
  limit, and fall back to a headers-only payload (or no header read at all, for a message that
  killed its worker) instead of stalling or crash-looping.
"""

from bridge.outbox.deferred import BodyJob, BodySpec, DeferredPayload
from bridge.outbox.pool import ParseLimits, ParsePool, current_pool, run_jobs
from bridge.outbox.rows import (
    DEFER_MAX,
    DeferredRows,
    RowJob,
    RowParse,
    isolated_row,
    outbox_row,
    parsed_at_fetch,
    parsed_from,
)

__all__ = [
    "DEFER_MAX",
    "BodyJob",
    "BodySpec",
    "DeferredPayload",
    "DeferredRows",
    "ParseLimits",
    "ParsePool",
    "RowJob",
    "RowParse",
    "current_pool",
    "isolated_row",
    "outbox_row",
    "parsed_at_fetch",
    "parsed_from",
    "run_jobs",
]
