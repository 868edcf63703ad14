"""One SQL store for every backend: statements as data, a dialect, and a thin adapter per driver.

Theory of operation
-------------------
Every store method is written once, as a generator that *yields* statements and receives their
results (the sans-I/O idea of `bridge.pop3`, applied to SQL)::

    @read
    def seen_uidls(self, account: str) -> Tx[set[str]]:
        rows = yield Fetch("SELECT uidl FROM seen WHERE account = ?", (account,))
        return {r[0] for r in rows}

The adapter of a driver (`sqlite.SQLiteStore`, `postgres.PostgresStore`) runs such a generator
as one unit: SQLite drives it to the end on its database thread inside one `BEGIN IMMEDIATE`
(one thread hop per method, whatever the number of statements), PostgreSQL awaits each statement
on one pooled connection. The adapter owns only what differs by driver: connecting, running the
four operations below, and translating errors into `StoreFull` / `StoreUnavailable` /
`StoreError`.

The operations (the whole protocol an adapter implements):

* `Execute(sql, args)` -> rows changed; `Fetch(sql, args)` -> rows; `Many(sql, rows)` -> None
  (one statement, many argument rows); `Script(sql)` -> None (`;`-separated DDL, no arguments);
  `Native(fn)`, only ever yielded by the dialect of the same adapter, for what one driver does
  better natively (SQLite's streamed blobs).

Statements use `?` placeholders (the PostgreSQL adapter numbers them `$1`, `$2`, ...). What
SQLite and PostgreSQL spell differently goes through the `Dialect`: the schema's column types
(`{real}`, `{blob}`, ... from `schema.COLUMN_TYPES`), a list bound as one argument (`in_list`,
`array_table`: an array on PostgreSQL, a JSON array read by `json_each` on SQLite), bulk
inserts (`insert_many`: `unnest` on PostgreSQL, multi-row VALUES on SQLite; `insert_ids`, the
same with the new rows' ids: RETURNING on PostgreSQL, `lastrowid` on SQLite), the claim's row
locks (`skip_locked`) and the migration preamble. Upserts (`INSERT ... ON CONFLICT ... DO UPDATE ...
WHERE`), `RETURNING`, `count(*) FILTER (...)` and `AS MATERIALIZED` are written the same for
both (SQLite 3.35+).

Transactions: `@read` runs without one; `@write` runs its statements in a write transaction on
SQLite and with each statement committing on its own on PostgreSQL (for methods whose
statements are each safe alone); `@atomic` is all-or-nothing on both; `@bounded` is `@atomic`
for a body whose every statement changes few existing pages (`record`: inserts in chunks), which
SQLite may undo from memory (`sqlite.py`, "Statement journal").
"""

from __future__ import annotations

import abc
import functools
import logging
import re
from collections.abc import Callable, Collection, Coroutine, Generator, Sequence
from typing import Any, Concatenate, Generic, Literal, ParamSpec, TypeAlias, TypeVar, cast

from bridge.records import record
from bridge.store.base import NewMessage
from bridge.store.schema import COLUMN_TYPES, DIALECTS

__all__ = [
    "Columns",
    "Dialect",
    "Done",
    "Execute",
    "Fetch",
    "Many",
    "Mode",
    "Native",
    "Op",
    "Rows",
    "SQLPart",
    "Script",
    "Tx",
    "advance",
    "atomic",
    "bounded",
    "read",
    "write",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")
S = TypeVar("S", bound="SQLPart")

Rows: TypeAlias = Sequence[Sequence[Any]]
# (name, kind) of each column; kinds: text, bigint, real, bool, blob.
Columns: TypeAlias = Sequence[tuple[str, str]]


@record
class Execute:
    sql: str
    args: Sequence[Any] = ()


@record
class Fetch:
    sql: str
    args: Sequence[Any] = ()


@record
class Many:
    sql: str
    rows: Sequence[Sequence[Any]]


@record
class Script:
    sql: str


@record
class Native:
    """Run `fn` on the adapter's own connection object (only the adapter's dialect yields it)."""

    fn: Callable[[Any], Any]


Op: TypeAlias = Execute | Fetch | Many | Script | Native
# A store method's body: yields operations, is sent each one's result, returns the method's.
Tx: TypeAlias = Generator[Op, Any, T]
# "bounded": "atomic", and each of the body's statements changes few existing pages (inserts
# of at most a few hundred rows), which lets SQLite keep its statement journal in memory.
Mode = Literal["read", "write", "atomic", "bounded"]


@record
class Done(Generic[T]):
    """A store method's body has finished with `value`."""

    value: T


def advance(body: Tx[T], result: Any = None, *, first: bool = False) -> Op | Done[T]:
    """The body's next operation after `result` (or its first), or `Done` when it returned.

    Both adapters step bodies with this; a body that is `Done` at once (an empty batch) costs
    them no thread hop, round trip or transaction.
    """
    try:
        return next(body) if first else body.send(result)
    except StopIteration as done:
        return Done(cast(T, done.value))


class Dialect(abc.ABC):
    """How one database spells what the two spell differently (see the module docstring)."""

    name: str
    # Appended to the claim's SELECT, so concurrent claimers pass over each other's rows.
    skip_locked: str
    # (false, true) for a `bool` column, as the driver binds them at least cost; indexed by a
    # bool (`flags[value]`). `record` binds one per fetched message.
    flags: tuple[Any, Any] = (False, True)

    def ddl(self, text: str) -> str:
        """`text` with the schema's `{kind}` column types spelled for this database."""
        i = DIALECTS.index(self.name)
        return text.format(**{kind: spelled[i] for kind, spelled in COLUMN_TYPES.items()})

    @abc.abstractmethod
    def in_list(self, expr: str, kind: str) -> str:
        """`expr` is one of a list bound as ONE argument (`array(values)`) of `kind` values."""

    @abc.abstractmethod
    def array_table(self, kind: str) -> str:
        """A FROM item `t(v, n)` over a list bound as one argument: value and position."""

    @abc.abstractmethod
    def pairs_table(self, pairs: Sequence[tuple[str, str]]) -> tuple[str, tuple[Any, ...]]:
        """A FROM item `t(a, u)` over text pairs, and the arguments that bind them."""

    @abc.abstractmethod
    def array(self, values: Collection[Any]) -> Any:
        """The argument for `in_list` / `array_table`."""

    @abc.abstractmethod
    def insert_many(self, table: str, columns: Columns, rows: Rows, tail: str) -> Op:
        """INSERT `rows` ((name, kind) columns) with `tail` (e.g. `ON CONFLICT DO NOTHING`);
        the operation's result is None."""

    @abc.abstractmethod
    def insert_ids(self, table: str, columns: Columns, rows: Rows, tail: str) -> Op:
        """`insert_many` into a table whose `id` the database assigns, always increasing
        (`{serial}`); the result is `(id, first column's value)` of each row inserted now
        (`tail` may skip some: `ON CONFLICT ... DO NOTHING`), in no particular order."""

    def insert_bodies(self, rows: Sequence[tuple[int, NewMessage]]) -> Tx[None]:
        """Bodies of freshly recorded messages, keyed by their outbox rows' ids.

        Keyed by the row id, not by `msg_id` (schema version 6): ids only grow, so inserts
        append to the table's B-tree instead of dirtying a random page of an index per message.
        """
        yield self.insert_many(
            "bodies",
            (("id", "bigint"), ("payload", "blob"), ("raw", "blob")),
            [(row_id, m.payload, m.raw) for row_id, m in rows],
            "",
        )

    def migration_preamble(self) -> Tx[None]:
        """Statements run first in the migration transaction (locks, schema creation)."""
        return
        yield  # a generator that yields nothing


def _bind(
    mode: Mode,
) -> Callable[
    [Callable[Concatenate[S, P], Tx[T]]], Callable[Concatenate[S, P], Coroutine[Any, Any, T]]
]:
    def decorate(
        body: Callable[Concatenate[S, P], Tx[T]],
    ) -> Callable[Concatenate[S, P], Coroutine[Any, Any, T]]:
        @functools.wraps(body)
        async def method(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
            return await self._transact(body(self, *args, **kwargs), mode)

        return method

    return decorate


read = _bind("read")
write = _bind("write")
atomic = _bind("atomic")
bounded = _bind("bounded")


class SQLPart(abc.ABC):
    """What the parts of the SQL store (`seen.py`, `outbox.py`, `leases.py`, `accounts.py`)
    need from the adapter they are combined with in `sqlstore.SQLStore`."""

    dialect: Dialect
    # How the database is named in messages (path, or host:port/db, never a password).
    where: str

    @abc.abstractmethod
    async def _transact(self, body: Tx[T], mode: Mode) -> T:
        """Run `body` to its end against the database (see the module docstring)."""


_PLACEHOLDER = re.compile(r"\?")


@functools.lru_cache(maxsize=512)
def numbered(text: str) -> str:
    """`?` placeholders as `$1`, `$2`, ... (PostgreSQL's style)."""
    count = 0

    def number(_: re.Match[str]) -> str:
        nonlocal count
        count += 1
        return f"${count}"

    return _PLACEHOLDER.sub(number, text)
