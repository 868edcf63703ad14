"""`open_store(url)`: the one place that maps a `state.url` to a backend.

Backends are imported lazily so a SQLite deployment never needs asyncpg importable and vice
versa.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit, urlunsplit

from bridge.store.base import Store
from bridge.store.errors import StoreError

__all__ = ["open_store", "redact_url"]


def redact_url(url: str) -> str:
    """The URL with any password replaced, for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def sqlite_path(url: str) -> str:
    """Path of a `sqlite:` URL: `sqlite:///abs/path.db`, `sqlite:///:memory:`, `sqlite:rel.db`."""
    rest = url[len("sqlite:") :].split("?", 1)[0]
    if rest.startswith("//"):
        rest = rest[2:]  # `sqlite:///x` -> `/x` (the third slash is the root of an absolute path)
        if rest == "/:memory:":
            return ":memory:"
        if not rest.startswith("/"):
            # `sqlite://host/x` would silently be relative to the working directory.
            raise StoreError(
                f"state.url {url!r}: a sqlite URL has no host; use sqlite:///absolute/path.db"
            )
    if not rest:
        raise StoreError("state.url 'sqlite:' names no file; use sqlite:///absolute/path.db")
    if rest.startswith("//"):
        # `sqlite:////tmp/x` (`f"sqlite:///{absolute}"`) means /tmp/x; keep logs and errors
        # from showing `//tmp/x`.
        rest = "/" + rest.lstrip("/")
    return rest


def open_store(url: str) -> Store:
    """A store for `url` (`sqlite:///path`, `sqlite:///:memory:`, `postgresql://...`).

    PostgreSQL URLs may carry `?schema=NAME` to keep all tables in one schema (created on
    `migrate`); other query parameters are passed to the driver unchanged. Nothing connects
    until the first call (usually `migrate()`).
    """
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        from bridge.store.sqlite import SQLiteStore

        query = parse_qs(url.split("?", 1)[1]) if "?" in url else {}
        unknown = set(query) - {"synchronous"}
        if unknown:
            raise StoreError(
                f"state.url {url!r}: unknown sqlite option(s) {sorted(unknown)}; "
                "only ?synchronous=normal|full is understood"
            )
        synchronous = query.get("synchronous", ["normal"])[-1]
        return SQLiteStore(sqlite_path(url), synchronous=synchronous)
    if scheme in ("postgresql", "postgres"):
        from bridge.store.postgres import PostgresStore

        parts = urlsplit(url)
        query = parse_qs(parts.query, keep_blank_values=True)
        schema_values = query.pop("schema", None)
        schema = schema_values[-1] if schema_values else None
        rest = "&".join(f"{k}={v}" for k, vs in query.items() for v in vs)
        dsn = urlunsplit(parts._replace(query=rest))
        return PostgresStore(dsn, schema=schema)
    raise StoreError(
        f"state.url {redact_url(url)!r}: unsupported scheme {scheme!r}; "
        "use sqlite:///path/to/state.db or postgresql://user@host/db"
    )
