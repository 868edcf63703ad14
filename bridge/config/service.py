"""The process-wide sections: `state` (the store), `poller`, the `ops` endpoint, `logging`."""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import Field, field_validator, model_validator

from bridge.config.base import Section
from bridge.config.units import Duration, Size

__all__ = ["LoggingConfig", "OpsConfig", "PollerConfig", "StateConfig"]


class StateConfig(Section):
    url: str = Field(
        default="sqlite:///var/lib/pop3bridge/state.db",
        description="Where seen UIDLs, the outbox and dead letters live: `sqlite:///abs/path.db`, "
        "`sqlite:///:memory:` (tests) or `postgresql://user@host/db` (needed for several "
        "replicas; put the password in `PGPASSWORD`, not in the URL).",
    )

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        scheme = value.split(":", 1)[0].lower() if ":" in value else ""
        if scheme not in ("sqlite", "postgresql", "postgres"):
            raise ValueError("expected a URL starting with sqlite:/// or postgresql://")
        return value


class PollerConfig(Section):
    max_concurrent_accounts: int = Field(default=20, ge=1, description="Accounts polled at once.")
    jitter: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Random spread of each poll, as a fraction of the interval.",
    )
    poll_tick: Duration = Field(
        default=1.0,
        ge=0,
        description="Polls start on a grid of this many seconds (at most a twentieth of the "
        "account's `poll_interval`; 0: off), each account still every `poll_interval` give or "
        "take half of it. Polls due in the same tick share the event loop's wake-ups, which "
        "saves CPU with thousands of accounts (BENCHMARKS.md §2).",
    )
    shutdown_grace: Duration = Field(
        default=10.0, description="On SIGTERM, seconds to finish polls and deliveries in flight."
    )
    delivery_concurrency: int = Field(default=16, ge=1, description="Webhook requests in flight.")
    parse_workers: int = Field(
        default=1,
        ge=0,
        le=64,
        description="Processes that parse MIME into webhook bodies, so untrusted mail never "
        "stalls the event loop (docs/security.md). 0 parses in the main process, without the "
        "time and memory limits: for tests and benchmarks, not for mail from strangers.",
    )
    parse_timeout: Duration = Field(
        default=30.0,
        gt=0,
        description="CPU seconds a parse worker may spend on one message (a 50 MB message "
        "takes a few); over it the message is delivered with headers only, the raw message "
        "attached and the reason in `parse_errors`.",
    )
    parse_memory_limit: Size = Field(
        default=2 * 1024**3,
        ge=256 * 1024**2,
        description="Address space of each parse worker process; a message that needs more "
        "is delivered like one over `parse_timeout`.",
    )
    replica_id: str | None = Field(
        default=None, description="This replica's lease holder id (default: hostname-pid)."
    )
    lease_ttl: Duration = Field(
        default=30.0,
        gt=0,
        description="Account lease lifetime with a shared PostgreSQL store: a dead replica's "
        "accounts move on within this plus one heartbeat.",
    )
    lease_heartbeat: Duration | None = Field(
        default=None,
        gt=0,
        description="Seconds between lease renewals (default: a third of lease_ttl).",
    )
    accounts_from_db: bool = Field(
        default=False, description="Also poll accounts added with `pop3bridge accounts add`."
    )
    accounts_refresh: Duration = Field(
        default=30.0,
        gt=0,
        description="Seconds between re-reads of the account list (database accounts added or "
        "removed are picked up without a restart).",
    )

    @model_validator(mode="after")
    def _heartbeat_inside_ttl(self) -> Self:
        if self.lease_heartbeat is not None and self.lease_heartbeat * 2 > self.lease_ttl:
            raise ValueError(
                f"lease_heartbeat ({self.lease_heartbeat:g}s) must be at most half of lease_ttl "
                f"({self.lease_ttl:g}s), so one failed renewal does not lose every lease"
            )
        return self


class OpsConfig(Section):
    enabled: bool = Field(
        default=True, description="Serve /healthz, /readyz, /metrics, /status and /."
    )
    host: str = Field(
        default="127.0.0.1", description="Bind address (the container image uses 0.0.0.0)."
    )
    port: int = Field(default=8080, ge=0, le=65535, description="Bind port (0: any free port).")


class RetentionConfig(Section):
    custody: Duration = Field(
        default=30 * 86400.0,
        gt=0,
        description="How long a message's custody trail (`pop3bridge trace`) is kept after its "
        "delivery.",
    )


class LoggingConfig(Section):
    format: Literal["json", "text"] = Field(
        default="json", description="`json` lines for machines, `text` for people."
    )
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", description="Lowest level written."
    )

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value
