"""Structured logging and metrics for proxy sessions: one JSON line per command/response pair.

Fields come from `Exchange` records the relay builds from parsed commands, so what can reach a
line is bounded by construction: the verb (a known word or ``OTHER``), arguments with secrets
replaced (`relay.loggable_args`), a status, a response code, sizes and times. Raw lines, bodies
and AUTH continuation lines are never handed to this module, so a too-long or garbage line
cannot be logged whole and message content cannot be logged at all. The process-wide
redacting filter (`bridge.ops.logging`) still scrubs every line on top.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from prometheus_client import Counter

from bridge.ops import metrics
from bridge.proxy.relay import Exchange

__all__ = ["SessionLog"]

log = logging.getLogger("bridge.proxy")

_METRIC_OUTCOME = {"ok": "ok", "err": "err", "denied": "denied"}
_BYTES_DOWN = metrics.PROXY_BYTES.labels("downstream")
_BYTES_UP = metrics.PROXY_BYTES.labels("upstream")
# Bounded: the verb label (a known POP3 verb or OTHER) and the outcome's label.
_COMMANDS = metrics.Series(metrics.PROXY_COMMANDS)


def _command_counter(label: str, outcome: str) -> Counter:
    return _COMMANDS(label, _METRIC_OUTCOME.get(outcome, "error"))


# (verb as the relay saw it, outcome) -> (its label, its counter), for known verbs only (so
# bounded like the labels): one dict hit per command instead of a label and a counter lookup.
_BY_VERB: dict[tuple[str, str], tuple[str, Counter]] = {}


def _verb_counter(verb: str, outcome: str) -> tuple[str, Counter]:
    hit = _BY_VERB.get((verb, outcome))
    if hit is None:
        label = metrics.verb_label(verb) if verb != "-" else "OTHER"
        hit = (label, _command_counter(label, outcome))
        if label != "OTHER":
            _BY_VERB[verb, outcome] = hit
    return hit


@dataclass(slots=True)
class SessionLog:
    session: str
    client: str
    listener: str
    log_commands: bool = True
    user: str | None = None
    upstream: str | None = None
    started: float = field(default_factory=time.monotonic)
    commands: int = 0
    bytes_down: int = 0
    bytes_up: int = 0

    def _base(self) -> dict[str, object]:
        return {
            "session": self.session,
            "client": self.client,
            "listener": self.listener,
            "user": self.user,
            "upstream": self.upstream,
        }

    def opened(self) -> None:
        metrics.PROXY_SESSIONS.labels(self.listener).inc()
        metrics.PROXY_SESSIONS_ACTIVE.labels(self.listener).inc()
        log.info("proxy session opened", extra={**self._base(), "event": "open"})

    def sent(self, *, downstream: int = 0, upstream: int = 0) -> None:
        if downstream:
            self.bytes_down += downstream
            _BYTES_DOWN.inc(downstream)
        if upstream:
            self.bytes_up += upstream
            _BYTES_UP.inc(upstream)

    def exchanges(self, batch: list[Exchange]) -> None:
        """`exchange` for each record, the command counters bumped once per (verb, outcome)."""
        if len(batch) == 1:
            self.exchange(batch[0])
            return
        counts: dict[Counter, int] = {}
        for ex in batch:
            label, counter = self._count(ex)
            counts[counter] = counts.get(counter, 0) + 1
            self._line(ex, label)
        for counter, n in counts.items():
            counter.inc(n)

    def exchange(self, ex: Exchange) -> None:
        label, counter = self._count(ex)
        counter.inc()
        self._line(ex, label)

    def _count(self, ex: Exchange) -> tuple[str, Counter]:
        """Count one command; returns its verb label and its (verb, outcome) counter, the
        counter not yet increased."""
        self.commands += 1
        verb, counter = _verb_counter(ex.verb, ex.outcome)
        if ex.outcome == "denied":
            metrics.PROXY_DENIED.labels(verb).inc()
        return verb, counter

    def _line(self, ex: Exchange, verb: str) -> None:
        level = logging.INFO if self.log_commands else logging.DEBUG
        if not log.isEnabledFor(level):
            return
        extra = {
            **self._base(),
            "event": "command",
            "verb": ex.verb if verb != "OTHER" or ex.verb == "-" else "OTHER",
            "arguments": list(ex.args) if verb != "OTHER" else [],
            "status": ex.outcome,
            "code": ex.code,
            "response_bytes": ex.response_bytes,
            "latency_ms": round(ex.latency * 1000, 3),
            "local": ex.local,
        }
        if ex.note:
            extra["reason"] = ex.note
        log.log(level, "proxy command", extra=extra)

    def closed(self, reason: str) -> None:
        metrics.PROXY_SESSIONS_ACTIVE.labels(self.listener).dec()
        log.info(
            "proxy session closed",
            extra={
                **self._base(),
                "event": "close",
                "reason": reason,
                "commands": self.commands,
                "bytes_to_client": self.bytes_down,
                "bytes_to_upstream": self.bytes_up,
                "duration_ms": round((time.monotonic() - self.started) * 1000, 1),
            },
        )
